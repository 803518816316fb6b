"""SQL the catalog checks share (a helper of this package, not a check: the registry skips `_` files)."""

from __future__ import annotations


def user_schemas_sql(alias: str = "n.nspname") -> str:
    """A condition keeping `alias` to the user's schemas: no catalog, TOAST or temporary schema."""
    return (f"{alias} NOT IN ('pg_catalog', 'information_schema', 'pg_toast') AND {alias} NOT LIKE 'pg_temp%' "
            f"AND {alias} NOT LIKE 'pg_toast_temp%'")
