"""The one row of a query that always returns one (an aggregate, a function call, `SELECT current_user`).

psycopg's fetchone() says "a row or None"; these queries never return None, and one() says so once,
for the type checker, instead of at every call."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    import psycopg

Row = TypeVar("Row")


def one(cursor: psycopg.Cursor[Row]) -> Row:
    """The next row of the cursor; a query that returned none is a bug, reported as such."""
    row = cursor.fetchone()
    if row is None:
        raise AssertionError(f"the query returned no row: {getattr(cursor, 'query', None)!r}")
    return row
