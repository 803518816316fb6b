"""`minnoctl health`."""

from __future__ import annotations

from typing import Annotated

import typer

from minnoctl.cli.options import DatabaseUrl, format_option
from minnoctl.formats import FORMATS

HealthFormat = Annotated[str, format_option(("table", "json", "nagios", "openmetrics",
                                             *[f for f in FORMATS if f not in ("table", "json")]))]


def _names(values: list[str] | None, variable: str) -> list[str]:
    """Option values, else the variable (comma or space separated), for cron lines that set it once."""
    from minnoctl.config import env_value

    if values:
        return values
    return [v for v in (env_value(variable) or ("",))[0].replace(",", " ").split() if v]


def health(
    live: Annotated[bool, typer.Option("--live", help="Only connect and run SELECT 1 (liveness probes).")] = False,
    ready: Annotated[bool, typer.Option("--ready", help="Connected, not in recovery, migrations up to date "
                                        "(readiness probes).")] = False,
    only: Annotated[list[str] | None, typer.Option(
        "--only", help="Run only these checks (repeatable, or comma-separated; default MINNOCTL_HEALTH_ONLY).",
        show_default=False)] = None,
    skip: Annotated[list[str] | None, typer.Option(
        "--skip", help="Leave these checks out (repeatable, or comma-separated; default MINNOCTL_HEALTH_SKIP).",
        show_default=False)] = None,
    threshold: Annotated[list[str] | None, typer.Option(
        "--threshold", "-t", help="NAME=VALUE: another threshold, e.g. long-query-warning=2m, port-range-warning=90, "
        "backup-age-warning=2d, database-size-warning=50GB, or off; repeatable. Each has a variable too "
        "(MINNOCTL_HEALTH_LONG_QUERY_WARNING=2m). --list shows them all.", show_default=False)] = None,
    hints: Annotated[bool, typer.Option("--hints", help="Print only the maintenance SQL the findings call for "
                                        "(ANALYZE, VACUUM, REINDEX), for psql -f; it is never run. The status "
                                        "goes to stderr and the exit code is 0.")] = False,
    list_checks: Annotated[bool, typer.Option("--list",
                                              help="List the checks, their thresholds and variables.")] = False,
    backup_dir: Annotated[str | None, typer.Option(
        "--backup-dir", help="Where the backups are (default MINNO_BACKUP_DIR, else ./backups).",
        show_default=False)] = None,
    serve: Annotated[str | None, typer.Option(
        "--serve", metavar="ADDRESS", help="Serve /metrics (OpenMetrics), /livez and /readyz over HTTP on "
        "HOST:PORT or :PORT, e.g. 127.0.0.1:9187, until SIGTERM or SIGINT (exit 0).", show_default=False)] = None,
    cache_for: Annotated[str, typer.Option(
        "--cache-for", metavar="DURATION", help="With --serve: how long one health run answers /metrics "
        "(one run at a time).")] = "30s",
    fmt: HealthFormat = "table",
    database_url: DatabaseUrl = None,
) -> None:
    """Check the database and its jobs; exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.

    One row per check: status, observed value, threshold and what to do. Covers the server
    (connections, long and blocked queries, wraparound, sequences, indexes, vacuum, slots) and
    this database's own jobs (migrations, cleanup, backups, tokens, secrets, keys, port ranges).
    A check that lacks a privilege is UNKNOWN with the reason; one whose extension this server
    cannot have is N/A (counted as OK) unless asked for with --only or a threshold; an unreachable
    server is CRITICAL. The overall status is the worst: CRITICAL, then WARNING, then UNKNOWN.

    Example: minnoctl health --format nagios --skip slow_queries -t backup-age-warning=2d

    --format openmetrics prints the report for Prometheus (node_exporter's textfile collector);
    --serve :9187 serves it at /metrics, with /livez and /readyz for probes.
    """
    from minnoctl import render
    from minnoctl.errors import UsageError

    try:
        if serve is not None:
            _serve(serve, cache_for, live, ready, only, skip, threshold, hints, list_checks, backup_dir,
                   database_url)
        _health(live, ready, only, skip, threshold, hints, list_checks, backup_dir, fmt, database_url)
    except UsageError as exc:
        if not render.plugin_unknown(exc.message, fmt):
            raise
        raise typer.Exit(3) from None


def precheck(options: dict) -> None:
    """A fleet run's check of the options before any target runs (cli/fleet.py): the same usage
    errors as one run's, once — under --format nagios the plugin's UNKNOWN line, exit 3."""
    from minnoctl import health as logic
    from minnoctl import render
    from minnoctl.errors import UsageError

    try:
        _check_probes(options["live"], options["ready"], options["only"], options["skip"], options["hints"],
                      options["list_checks"])
        logic.thresholds(options["threshold"] or [])
        if not (options["live"] or options["ready"]) and not logic.select(
                _names(options["only"], "MINNOCTL_HEALTH_ONLY"), _names(options["skip"], "MINNOCTL_HEALTH_SKIP")):
            raise UsageError("--skip left no check to run")
    except UsageError as exc:
        if not render.plugin_unknown(exc.message, options["fmt"]):
            raise
        raise typer.Exit(3) from None


def _check_probes(live, ready, only, skip, hints, list_checks) -> None:
    from minnoctl.errors import UsageError

    if live and ready:
        raise UsageError("--live and --ready are two different probes — give one of them")
    if (live or ready) and (only or skip or hints or list_checks):
        raise UsageError(f"{'--live' if live else '--ready'} runs no other check: leave out --only, --skip, "
                         "--hints and --list")


def _health(live, ready, only, skip, threshold, hints, list_checks, backup_dir, fmt, database_url) -> None:
    import sys

    from minnoctl import health as logic
    from minnoctl import render
    from minnoctl.cli import context
    from minnoctl.errors import UsageError

    _check_probes(live, ready, only, skip, hints, list_checks)
    limits = logic.thresholds(threshold or [])
    if list_checks:  # no database: the registry and the thresholds in effect (nagios: shown plain)
        render.show(render.Result(logic.list_checks(limits), logic.LIST_COLUMNS), fmt)
        return
    ctx = context(database_url, fmt)
    if live:
        report = logic.live(ctx.settings)
    elif ready:
        report = logic.ready(ctx.settings)
    else:
        chosen = _names(only, "MINNOCTL_HEALTH_ONLY")
        names = logic.select(chosen, _names(skip, "MINNOCTL_HEALTH_SKIP"))
        if not names:
            raise UsageError("--skip left no check to run")
        report = logic.run(ctx.settings, limits=limits, names=names, backup_dir=backup_dir,
                           asked=logic.asked_for(chosen, threshold or []), server_checks=ctx.server_checks)
    if report.error:
        render.error(report.error)
    if hints:
        # only SQL on stdout (`health --hints > f.sql && psql -f f.sql`); the status on stderr
        sql = report.hints_sql()
        if not report.error:  # a server that did not answer: no script at all, the error and exit 2
            typer.echo("\n".join(sql) if sql else "-- nothing to do: no finding calls for maintenance SQL")
            print(f"minnoctl: health {report.summary()} — `minnoctl health` shows the checks", file=sys.stderr)
            raise typer.Exit(0)
    else:  # nagios: the plugin's one line; the rows only when the server answered (JSON: always)
        rows = [c.as_dict() for c in report.checks]
        if ctx.target is not None:  # a target's records say which checks are the whole server's
            specs = logic.registry.by_name()
            rows = [{**row, "scope": specs[row["name"]].scope if row["name"] in specs else "database"}
                    for row in rows]
        ctx.show(render.Result(rows, logic.COLUMNS, document=report.as_dict(),
                               styles={"status": logic.status_style}, nagios=report.nagios(),
                               openmetrics=report.openmetrics(),
                               text=report.shown_as_rows(fmt), footer=report.footer(fmt)))
    raise typer.Exit(int(report.status))


def _serve(address, cache_for, live, ready, only, skip, threshold, hints, list_checks, backup_dir,
           database_url) -> None:
    """`--serve ADDRESS`: the HTTP endpoint (health/serve.py) until a signal stops it, then exit 0."""
    from minnoctl import health as logic
    from minnoctl.cli import context
    from minnoctl.config import parse_duration
    from minnoctl.errors import UsageError
    from minnoctl.health import serve as server

    given = [name for name, on in (("--live", live), ("--ready", ready), ("--hints", hints),
                                   ("--list", list_checks)) if on]
    if given:
        raise UsageError(f"--serve answers /metrics, /livez and /readyz itself: leave out {', '.join(given)}")
    where = server.parse_address(address)
    seconds = parse_duration(cache_for, "--cache-for", allow_zero=True)
    limits = logic.thresholds(threshold or [])
    chosen = _names(only, "MINNOCTL_HEALTH_ONLY")
    names = logic.select(chosen, _names(skip, "MINNOCTL_HEALTH_SKIP"))
    if not names:
        raise UsageError("--skip left no check to run")
    settings = context(database_url, "plain").settings
    asked = logic.asked_for(chosen, threshold or [])

    def metrics() -> str:
        return logic.run(settings, limits=limits, names=names, backup_dir=backup_dir, asked=asked).openmetrics()

    server.serve(where, metrics, live=lambda: logic.live(settings).error is None,
                 ready=lambda: logic.ready(settings).status is logic.Status.OK, cache_for=seconds)
    raise typer.Exit(0)


def register(app: typer.Typer) -> None:
    app.command("health", help=health.__doc__)(health)
