"""`minnoctl config show`."""

from __future__ import annotations

import typer

from minnoctl.cli.options import DatabaseUrl, Format

config_app = typer.Typer(help="Show the effective configuration and where each value comes from.\n\n"
                         "Example: minnoctl config show", no_args_is_help=True)


@config_app.command("show")
def show(fmt: Format = "table", database_url: DatabaseUrl = None) -> None:
    """Print every setting minnoctl reads, its value and its source; secrets masked.

    The database and its connection settings, the master keys (by fingerprint only), the backup
    folder, the environment, the embedded home, migrations and seeds folders, the PostgreSQL client
    tools, health thresholds set by variables, --traceback and NO_COLOR. A source is `default`, a
    variable's name, `.env: NAME` (the .env file in the working directory works like its variable;
    the environment wins) or an option.

    Example: minnoctl config show --format json
    """
    from minnoctl import config, render
    from minnoctl.cli import context

    ctx = context(database_url, fmt)
    ctx.show(render.Result(config.report(ctx.settings), ["setting", "value", "source"]))


def register(app: typer.Typer) -> None:
    app.add_typer(config_app, name="config")
