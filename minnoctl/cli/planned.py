"""The command groups of the product whose commands have not landed yet.

Each is listed in `minnoctl --help` with its one-line description and says it is not built yet;
running it exits with FAILURE and one line, whatever options it is given.
"""

from __future__ import annotations

import typer

from minnoctl.errors import NotBuiltError

PLANNED = {
}


def _planned(name: str, description: str):
    def command(ctx: typer.Context) -> None:
        raise NotBuiltError(f"`minnoctl {name}` is not built yet in this version of minnoctl")

    command.__doc__ = f"{description} Not built yet.\n\nExample: minnoctl {name} --help"
    return command


def register(app: typer.Typer, names: tuple[str, ...]) -> None:
    for name in names:
        description = PLANNED[name]
        settings = {"ignore_unknown_options": True, "allow_extra_args": True}
        short = f"{description} [not built yet]"
        app.command(name, context_settings=settings, short_help=short)(_planned(name, description))

