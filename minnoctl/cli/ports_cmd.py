"""`minnoctl ports ...` (alias `minnoctl port ...`): allocate, release, list, reserve and check ports."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Annotated, Any
from collections.abc import Iterator

import typer

from minnoctl.cli.options import DatabaseUrl, Duration, Format, note as _note

ports_app = typer.Typer(help="Allocate, release and inspect service ports (alias: port).\n\n"
                        "Example: minnoctl ports allocate --project odin --service api --format plain",
                        no_args_is_help=True)
range_app = typer.Typer(help="Port ranges: list (utilisation), add, disable.\n\n"
                        "Example: minnoctl ports range list", no_args_is_help=True)

Project = Annotated[str, typer.Option("--project", "-p", help="The project's name (supervisor.projects).")]
Service = Annotated[str, typer.Option("--service", "-s", help="The service's name within the project.")]
RangeName = Annotated[str | None, typer.Option("--range", "-r", help="The port range to take from.",
                                                  show_default=False)]
ServiceType = Annotated[str | None, typer.Option(
    "--service-type", help="Take from the range serving this type (api, web, database, ...); "
    "recorded on the allocation.", show_default=False)]
Hostname = Annotated[str, typer.Option("--hostname", "-H", help="The host the port is on.")]
Protocol = Annotated[str, typer.Option("--protocol", "-P", help="tcp or udp.")]



@contextmanager
def _session(database_url: str | None, fmt: str = "table") -> Iterator[tuple[Any, Any]]:
    """The command's context and a working session (named `minnoctl ports …`)."""
    from minnoctl.cli import context

    ctx = context(database_url, fmt)
    with ctx.session("ports") as conn:
        yield ctx, conn


def _one_of(range_name: str | None, service_type: str | None) -> None:
    from minnoctl.errors import UsageError

    if range_name is not None and service_type is not None:
        raise UsageError("use --range or --service-type, not both")


@ports_app.command("allocate")
def allocate(
    project: Project,
    service: Service,
    range_name: RangeName = None,
    service_type: ServiceType = None,
    hostname: Hostname = "localhost",
    protocol: Protocol = "tcp",
    port: Annotated[int | None, typer.Option("--port", help="This port rather than the lowest free one.",
                                                show_default=False)] = None,
    lease: Annotated[float | None, typer.Option("--lease", click_type=Duration(), help="Hold the port for this "
                                                   "long (30m, 2h, 1d; at most 10 years); allocating again renews "
                                                   "it; cleanup releases expired leases.", show_default=False)] = None,
    verify_bind: Annotated[bool, typer.Option("--verify-bind", help="This host only: skip ports that something "
                                              "outside minnoctl has bound.")] = False,
    fmt: Format = "table",
    database_url: DatabaseUrl = None,
) -> None:
    """Give the service the lowest free port of the range (or --port), or the one it already holds.

    Safe with any number of concurrent callers: no port is ever handed out twice. Exit 17 when the
    range is full, 18 when --port is taken (the holder is named), 19 for an unknown project or range.

    In scripts: PORT=$(minnoctl ports allocate ... --format plain) prints the port alone.

    Example: minnoctl ports allocate --project odin --service api --service-type api --format plain
    """
    from minnoctl import ports, render

    _one_of(range_name, service_type)
    with _session(database_url, fmt) as (ctx, conn):
        got = ports.allocate(conn, project=project, service=service, range_name=range_name,
                             service_type=service_type, hostname=hostname, protocol=protocol, port=port,
                             lease_s=lease, verify_bind=verify_bind)
    for skipped in got.skipped:
        _note("skipped port %d: bound on this host outside minnoctl", skipped)
    row = {"port": got.port, "project": got.project, "service": got.service, "range": got.range,
           "hostname": got.hostname, "protocol": got.protocol, "state": got.state,
           "lease_expires_at": got.lease_expires_at}
    ctx.show(render.Result([row], list(row), document=row, value=got.port))  # plain: the port alone


@ports_app.command("release")
def release(
    port: Annotated[int | None, typer.Argument(metavar="PORT", help="The port to release.", show_default=False)] = None,
    hostname: Hostname = "localhost",
    protocol: Annotated[str | None, typer.Option("--protocol", "-P", help="tcp or udp (default: both).",
                                                    show_default=False)] = None,
    project: Annotated[str | None, typer.Option("--project", "-p", help="With --service: release that "
                                                   "service's ports instead.", show_default=False)] = None,
    service: Annotated[str | None, typer.Option("--service", "-s", help="The service (with --project).",
                                                   show_default=False)] = None,
    fmt: Format = "table",
    database_url: DatabaseUrl = None,
) -> None:
    """Release a port (or a service's ports). Releasing a free port is not an error.

    A released port is handed out again only after its range's cooldown.

    Example: minnoctl ports release 4001 --protocol tcp
    """
    from minnoctl import ports, render

    with _session(database_url, fmt) as (ctx, conn):
        rows = ports.release(conn, port=port, hostname=hostname, protocol=protocol, project=project,
                             service=service)
    if not rows:
        _note("nothing to release: no active allocation matches")
    ctx.show(render.Result(rows, ["port", "protocol", "hostname", "project", "service"]))


@ports_app.command("list")
def list_(
    project: Annotated[str | None, typer.Option("--project", "-p", help="Only this project.",
                                                   show_default=False)] = None,
    status: Annotated[str, typer.Option("--status", help="active (allocated or in_use), allocated, in_use, "
                                        "released or all.")] = "active",
    fmt: Format = "table",
    database_url: DatabaseUrl = None,
) -> None:
    """List port allocations.

    Example: minnoctl ports list --project odin --status all --format json
    """
    from minnoctl import ports, render

    with _session(database_url, fmt) as (ctx, conn):
        rows = ports.list_allocations(conn, project=project, status=status)
    ctx.show(render.Result(rows, ["port", "protocol", "hostname", "project", "service", "service_type", "range",
                                  "status", "allocated_at", "lease_expires_at", "released_at"]))


@ports_app.command("reserve")
def reserve(
    project: Project,
    service: Service,
    ttl: Annotated[float, typer.Option("--ttl", click_type=Duration(), help="How long the reservation holds "
                                       "(15m, 2h, 1d; at most 10 years).")],
    range_name: RangeName = None,
    service_type: ServiceType = None,
    port: Annotated[int | None, typer.Option("--port", help="This port rather than the lowest free one.",
                                                show_default=False)] = None,
    fmt: Format = "table",
    database_url: DatabaseUrl = None,
) -> None:
    """Hold a port for a service (on every host and protocol) until --ttl runs out; the service's
    next `allocate` takes it. Reserving again extends it.

    Example: minnoctl ports reserve --project consilio --service web --range web --ttl 2h
    """
    from minnoctl import ports, render

    _one_of(range_name, service_type)
    with _session(database_url, fmt) as (ctx, conn):
        row = ports.reserve(conn, project=project, service=service, ttl_s=ttl, range_name=range_name,
                            service_type=service_type, port=port)
    ctx.show(render.Result([row], list(row), document=row, value=row["port"]))  # plain: the port alone


@ports_app.command("check")
def check(
    project: Annotated[str | None, typer.Option("--project", "-p", help="Only this project.",
                                                   show_default=False)] = None,
    timeout: Annotated[float, typer.Option("--timeout", click_type=Duration(minimum=0.01, maximum=30),
                                           help="How long to wait for each port: a duration (500ms, 2s; a bare "
                                           "number is seconds), 10ms to 30s.")] = 0.5,
    fmt: Format = "table",
    database_url: DatabaseUrl = None,
) -> None:
    """Probe this host's allocated ports (is something listening?) and record each result in
    supervisor.port_health_checks. Exit 1 when any is not healthy.

    Example: minnoctl ports check --format json
    """
    from minnoctl import ports, render
    from minnoctl.errors import ExitCode

    with _session(database_url, fmt) as (ctx, conn):
        rows = ports.check(conn, project=project, timeout_s=timeout)
    if not rows:
        _note("no port of this host is allocated")
    ctx.show(render.Result(rows, ["port", "protocol", "hostname", "project", "service", "status", "response_ms",
                                  "error"], styles={"status": lambda v: "green" if v == "healthy" else "red"}))
    if any(r["status"] != "healthy" for r in rows):
        raise typer.Exit(int(ExitCode.FAILURE))


@range_app.command("list")
def range_list(fmt: Format = "table", database_url: DatabaseUrl = None) -> None:
    """Every range with its utilisation (supervisor.port_range_utilization), cooldown and service types.

    Example: minnoctl ports range list --format json
    """
    from minnoctl import ports, render

    with _session(database_url, fmt) as (ctx, conn):
        rows = ports.list_ranges(conn)
    ctx.show(render.Result(rows, ["range", "start", "end", "total", "allocated", "reserved", "utilization_percent",
                                  "active", "cooldown_s", "service_types", "description"]))


@range_app.command("add")
def range_add(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The range's name.")],
    start: Annotated[int, typer.Option("--start", help="First port of the range.")],
    end: Annotated[int, typer.Option("--end", help="Last port of the range (included).")],
    description: Annotated[str | None, typer.Option("--description", help="What the range is for.",
                                                       show_default=False)] = None,
    service_types: Annotated[str | None, typer.Option("--service-type", help="Comma-separated service "
                                                         "types it serves (for allocate --service-type).",
                                                         show_default=False)] = None,
    cooldown: Annotated[float, typer.Option("--cooldown", click_type=Duration(allow_zero=True),
                                            help="How long a released port stays out of automatic "
                                          "allocation (0 for none).")] = "60s",  # type: ignore[assignment]  # parsed by Duration, as given on the command line
    fmt: Format = "table",
    database_url: DatabaseUrl = None,
) -> None:
    """Add a port range. Active ranges may not overlap.

    Example: minnoctl ports range add grpc --start 50000 --end 50999 --service-type grpc --description "gRPC services"
    """
    from minnoctl import ports, render

    types = [t.strip() for t in (service_types or "").split(",") if t.strip()]
    with _session(database_url, fmt) as (ctx, conn):
        row = ports.add_range(conn, name, start, end, description=description, service_types=types,
                              cooldown_s=cooldown)
    ctx.show(render.Result([row], list(row), document=row))


@range_app.command("disable")
def range_disable(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The range's name.")],
    database_url: DatabaseUrl = None,
) -> None:
    """Disable a range: nothing more is allocated from it; its allocations stay until released.

    Example: minnoctl ports range disable legacy-mcp
    """
    from minnoctl import ports

    with _session(database_url) as (_ctx, conn):
        changed, left = ports.disable_range(conn, name)
    _note("range %s %s; %d active allocation(s) in it stay until released", name,
          "disabled" if changed else "was already disabled", left)


ports_app.add_typer(range_app, name="range")


def register(app: typer.Typer) -> None:
    app.add_typer(ports_app, name="ports")
    app.add_typer(ports_app, name="port", hidden=True)  # both spellings are in use
