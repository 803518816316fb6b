"""`minnoctl health`."""

from __future__ import annotations

from typing import Annotated

import typer

from minnoctl.cli.options import DatabaseUrl, format_option
from minnoctl.formats import FORMATS

HealthFormat = format_option(("table", "json", "nagios", *[f for f in FORMATS if f not in ("table", "json")]))


def health(
    live: Annotated[bool, typer.Option("--live", help="Only connect and run SELECT 1 (for liveness probes).")] = False,
    fmt: HealthFormat = "table",
    database_url: DatabaseUrl = None,
) -> None:
    """Check the database; exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.

    Example: minnoctl health --live --format json

    The full report (migrations, locks, vacuum, backups, tokens, ports) is not built yet;
    today `--live` connects, runs SELECT 1 and prints the server version and round-trip time.
    """
    from minnoctl import health as logic
    from minnoctl import render
    from minnoctl.cli import settings

    if not live:
        render.error("the full health report is not built yet; use `minnoctl health --live`")
        raise typer.Exit(int(logic.Status.UNKNOWN))
    report = logic.live(settings(database_url))
    if report.error:
        render.error(report.error)
    if fmt == "nagios":
        typer.echo(report.nagios())
    elif fmt == "json":
        render.emit_json(report.as_dict())
    elif not report.error:
        render.table([c.as_dict() for c in report.checks], ["name", "status", "value", "hint"], fmt,
                     styles={"status": _status_style})
    raise typer.Exit(int(report.status))


def _status_style(value: str) -> str:
    return {"OK": "green", "WARNING": "yellow", "CRITICAL": "bold red"}.get(value, "magenta")


def register(app: typer.Typer) -> None:
    app.command("health", help=health.__doc__)(health)
