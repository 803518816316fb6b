"""`minnoctl config show`."""

from __future__ import annotations

import typer

from minnoctl.cli.options import DatabaseUrl, Format

config_app = typer.Typer(help="Show the effective configuration and where each value comes from.\n\n"
                         "Example: minnoctl config show", no_args_is_help=True)


@config_app.command("show")
def show(fmt: Format = "table", database_url: DatabaseUrl = None) -> None:
    """Print the effective settings and the source of each; the password is masked.

    Example: minnoctl config show --format json
    """
    from minnoctl import render
    from minnoctl.cli import settings as load

    s = load(database_url)
    database = (f"embedded PostgreSQL in {s.minno_home / 'pgdata'}" if s.embedded else s.display_url())
    rows = [{"setting": "database", "value": database, "source": s.source}]
    rows += [{"setting": k, "value": v.value, "source": v.source} for k, v in s.values.items()]
    render.table(rows, ["setting", "value", "source"], fmt)


def register(app: typer.Typer) -> None:
    app.add_typer(config_app, name="config")
