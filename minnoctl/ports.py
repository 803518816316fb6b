"""Port allocation over supervisor's tables and functions (migrations supervisor/0003 and 0006).

The allocator itself is SQL (supervisor.allocate_port): a pool of free ports per range, hostname
and protocol, taken with FOR UPDATE SKIP LOCKED, kept in step with port_allocations by a trigger,
with the partial unique index on active ports as the last guard. So applications that call the
function directly get the same guarantees as minnoctl. This module resolves names, maps the
function's SQLSTATEs to one-line errors, and adds what needs this host: --verify-bind and `check`.
"""

from __future__ import annotations

import datetime as dt
import getpass
import re
import socket
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from minnoctl.connection import check_lengths
from minnoctl.errors import ExitCode, MinnoctlError, UsageError
from minnoctl.render_text import shown
from minnoctl.rows import one

if TYPE_CHECKING:
    import psycopg

PROTOCOLS = ("tcp", "udp")
ACTIVE = ("allocated", "in_use")
STATUSES = ("allocated", "in_use", "released", "active", "all")
BIND_TRIES = 64  # --verify-bind: ports skipped at most before giving up
BUSY_HOLD_S = 300  # a port found bound outside minnoctl stays out of the pool this long


class RangeFull(MinnoctlError):
    """No free port left in the range."""

    exit_code = ExitCode.RANGE_FULL


class PortTaken(MinnoctlError):
    """The port asked for is held, reserved, cooling down or bound outside minnoctl."""

    exit_code = ExitCode.PORT_TAKEN


class NotFound(MinnoctlError):
    """A project, range or allocation that does not exist."""

    exit_code = ExitCode.NOT_FOUND


# ---------------------------------------------------------------------------------------------
# Input


def check_port(port: int | None, option: str = "PORT") -> int | None:
    if port is not None and not 1 <= port <= 65535:
        raise UsageError(f"{option} {port} is not a port number — use 1-65535")
    return port


def check_protocol(protocol: str) -> str:
    value = protocol.strip().lower()
    if value not in PROTOCOLS:
        raise UsageError(f"--protocol {shown(protocol)} is not tcp or udp")
    return value


def check_hostname(hostname: str) -> str:
    value = hostname.strip().lower()
    # a name or an address (letters, digits, . - _ and IPv6's : [ ] %); its length: check_lengths
    if not re.fullmatch(r"[a-z0-9._:%\[\]-]+", value):
        raise UsageError(f"--hostname {shown(hostname)} is not a host name (letters, digits, '.', '-', '_' or an "
                         "IP address)")
    return value


def local_names() -> set[str]:
    names = {"localhost", "127.0.0.1", "::1", "0.0.0.0"}
    for name in (socket.gethostname(), socket.getfqdn()):
        if name:
            names.add(name.lower())
    return names


def is_local(hostname: str) -> bool:
    return hostname in local_names()


def require_supervisor(conn: "psycopg.Connection") -> None:
    if one(conn.execute("SELECT to_regproc('supervisor.reserve_port')"))[0] is None:
        raise MinnoctlError("the supervisor module (ports) is not installed or not up to date in this database — "
                            "run `minnoctl db init` or `minnoctl migrate`")


def project_id(conn: "psycopg.Connection", name: str) -> uuid.UUID:
    row = conn.execute("SELECT id FROM supervisor.projects WHERE name = %s", (name,)).fetchone()
    if row is None:
        known = [r[0] for r in conn.execute("SELECT name FROM supervisor.projects ORDER BY name LIMIT 20")]
        raise NotFound(f"unknown project {shown(name)} — the projects are: {', '.join(known) or '(none yet)'}")
    return row[0]


@dataclass(frozen=True)
class Range:
    id: uuid.UUID
    name: str
    start: int
    end: int
    active: bool
    cooldown_s: int


def _range_names(conn: "psycopg.Connection") -> str:
    names = [f"{r[0]} ({r[1]}-{r[2]})" for r in conn.execute(
        "SELECT range_name, start_port, end_port FROM supervisor.port_ranges WHERE is_active ORDER BY start_port")]
    return ", ".join(names) or "(none: add one with `minnoctl ports range add`)"


def pick_range(conn: "psycopg.Connection", range_name: str | None, service_type: str | None) -> Range:
    """--range NAME, or the active range serving --service-type (metadata.service_types, or its
    name), or the only active range."""
    cols = "id, range_name, start_port, end_port, is_active, cooldown_seconds"
    if range_name is not None:
        row = conn.execute(f"SELECT {cols} FROM supervisor.port_ranges WHERE range_name = %s", (range_name,)).fetchone()
        if row is None:
            raise NotFound(f"unknown port range {shown(range_name)} — the active ranges are: {_range_names(conn)}")
        if not row[4]:
            raise UsageError(f"port range {shown(range_name)} is disabled — use another: {_range_names(conn)}")
        return Range(*row)
    if service_type is not None:
        row = conn.execute(
            f"""SELECT {cols} FROM supervisor.port_ranges
                 WHERE is_active AND (metadata->'service_types' ? %s OR range_name = %s)
                 ORDER BY start_port LIMIT 1""", (service_type, service_type)).fetchone()
        if row is None:
            raise NotFound(f"no active port range serves service type {shown(service_type)} — give --range, or tag a "
                           f"range with `minnoctl ports range add ... --service-type {service_type}` "
                           f"(ranges: {_range_names(conn)})")
        return Range(*row)
    rows = conn.execute(f"SELECT {cols} FROM supervisor.port_ranges WHERE is_active ORDER BY start_port").fetchall()
    if len(rows) == 1:
        return Range(*rows[0])
    if not rows:
        raise NotFound("there is no active port range — add one: minnoctl ports range add NAME --start N --end M")
    raise UsageError(f"say which range: --range NAME or --service-type TYPE (ranges: {_range_names(conn)})")


def _sql_error(exc: Exception, conn: "psycopg.Connection | None" = None, *, project: str | None = None,
               range_name: str | None = None, service_type: str | None = None) -> MinnoctlError | None:
    """supervisor's port SQLSTATEs as minnoctl errors; the name errors are rebuilt by the same
    lookups that list what exists (they run after the failed statement, in a new transaction)."""
    state = getattr(exc, "sqlstate", None)
    diag = getattr(exc, "diag", None)
    message = (diag.message_primary if diag else None) or str(exc)
    if state in ("MP001", "MP009", "MP010", "MP011", "MP012") and conn is not None:
        try:
            if state == "MP009":
                project_id(conn, project or "")
            pick_range(conn, range_name, service_type)
        except MinnoctlError as named:
            return named
    if state == "MP001":
        return UsageError(f"{message} — see `minnoctl ports range list`")
    if state == "MP002":
        return RangeFull(f"{message} — release ports (`minnoctl ports list`), wait for recently released ones "
                         "to cool down, or add a range")
    if state == "MP004":
        return UsageError(message)
    if state in ("MP005", "MP006", "MP007", "MP008"):
        return PortTaken(f"{message} — choose another port, or leave --port out for the lowest free one")
    return None


# ---------------------------------------------------------------------------------------------
# Allocate / release / list


@dataclass
class Allocation:
    port: int
    project: str
    service: str
    range: str
    hostname: str
    protocol: str
    state: str  # new | existing
    lease_expires_at: dt.datetime | None = None
    skipped: tuple[int, ...] = ()  # --verify-bind: ports found bound outside minnoctl


def can_bind(port: int, protocol: str) -> bool:
    """Whether this host lets a new socket bind the port (on every IPv4 address)."""
    kind = socket.SOCK_STREAM if protocol == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as sock:
        if protocol == "tcp":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do: TIME_WAIT is free
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def _holder(conn: "psycopg.Connection", port: int, hostname: str, protocol: str) -> str:
    row = conn.execute(
        """SELECT a.service_name, p.name FROM supervisor.port_allocations a JOIN supervisor.projects p
             ON p.id = a.project_id WHERE a.port_number = %s AND a.hostname = %s AND a.protocol = %s
              AND a.status IN ('allocated', 'in_use')""", (port, hostname, protocol)).fetchone()
    return f"service {row[0]} of project {row[1]}" if row else "another allocation made at the same moment"


def allocate(conn: "psycopg.Connection", *, project: str, service: str, range_name: str | None = None,
             service_type: str | None = None, hostname: str = "localhost", protocol: str = "tcp",
             port: int | None = None, lease_s: float | None = None, verify_bind: bool = False) -> Allocation:
    """The service's port: its existing allocation, or a new one (the port asked for, or the lowest
    free one). `conn` is an autocommit connection. Without --verify-bind it is one statement, one
    round trip (supervisor.allocate_service_port), which is what keeps it fast under contention."""
    import psycopg

    hostname, protocol = check_hostname(hostname), check_protocol(protocol)
    check_port(port, "--port")
    if not service.strip():
        raise UsageError("--service must not be empty")
    if verify_bind and not is_local(hostname):
        raise UsageError(f"--verify-bind checks this host only, and {shown(hostname)} is not this host "
                         f"({', '.join(sorted(local_names() - {'0.0.0.0'}))})")
    lease = dt.timedelta(seconds=lease_s) if lease_s is not None else None
    call = ("SELECT port, state, range_name, lease_expires_at FROM supervisor.allocate_service_port("
            "%s, %s, %s, %s, %s, %s, %s, %s)")
    args = (project, range_name, service_type, service, hostname, protocol, port, lease)
    skipped: list[int] = []
    try:
        if not verify_bind:
            got, state, rname, lease_at = one(conn.execute(call, args))
        else:
            with conn.transaction():
                for _ in range(BIND_TRIES):
                    got, state, rname, lease_at = one(conn.execute(call, args))
                    if state == "existing" or can_bind(got, protocol):
                        break
                    if port is not None:
                        raise PortTaken(f"port {got}/{protocol} is bound on this host by a process outside "
                                        "minnoctl — stop it, or leave --port out for the lowest free port")
                    skipped.append(got)
                    # not handed out: back to the pool, held out for a while, and try the next
                    conn.execute(
                        "DELETE FROM supervisor.port_allocations a USING supervisor.projects p "
                        "WHERE p.id = a.project_id "
                        "AND p.name = %s AND a.service_name = %s AND a.hostname = %s AND a.protocol = %s "
                        "AND a.status IN ('allocated', 'in_use')", (project, service, hostname, protocol))
                    conn.execute("UPDATE supervisor.port_pool SET available_at = now() + make_interval(secs => %s) "
                                 "WHERE hostname = %s AND protocol = %s AND port_number = %s",
                                 (BUSY_HOLD_S, hostname, protocol, got))
                else:
                    raise RangeFull(f"the first {BIND_TRIES} free ports of range {rname} are all bound on this "
                                    "host by processes outside minnoctl")
    except psycopg.errors.UndefinedFunction:
        require_supervisor(conn)
        raise
    except psycopg.errors.UniqueViolation:
        if port is None:
            raise
        holder = _holder(conn, port, hostname, protocol)
        raise PortTaken(f"port {port}/{protocol} on {hostname} is held by {holder} — choose another port, or "
                        "leave --port out for the lowest free one") from None
    except psycopg.errors.StringDataRightTruncation:  # named from the catalog; the statement changed nothing
        check_lengths(conn, "supervisor.port_allocations", {
            "service_name": ("--service", service), "hostname": ("--hostname", hostname),
            "service_type": ("--service-type", service_type)})
        raise
    except psycopg.Error as exc:
        mapped = _sql_error(exc, conn, project=project, range_name=range_name, service_type=service_type)
        if mapped is None:
            raise
        raise mapped from None
    return Allocation(got, project, service, rname, hostname, protocol, state, lease_at, tuple(skipped))


def release(conn: "psycopg.Connection", *, port: int | None = None, hostname: str = "localhost",
            protocol: str | None = None, project: str | None = None, service: str | None = None
            ) -> list[dict[str, Any]]:
    """Release active allocations: of PORT on a hostname (and protocol; both when not given), or of a
    project's service. Idempotent: nothing active is not an error. Returns what was released."""
    hostname = check_hostname(hostname)
    protocols = [check_protocol(protocol)] if protocol else list(PROTOCOLS)
    check_port(port)
    if (port is None) == (project is None):
        raise UsageError("say what to release: PORT, or --project NAME --service NAME")
    if project is not None and not service:
        raise UsageError("--project goes with --service")
    require_supervisor(conn)
    with conn.transaction():
        if port is not None:
            where = "a.port_number = %s AND a.hostname = %s AND a.protocol = ANY(%s)"
            params = [port, hostname, protocols]
        else:
            assert project is not None  # one of port and project is given (checked above)
            pid = project_id(conn, project)
            where, params = "a.project_id = %s AND a.service_name = %s", [pid, service]
            if protocol:
                where += " AND a.protocol = ANY(%s)"
                params.append(protocols)
        rows = conn.execute(
            f"""UPDATE supervisor.port_allocations a SET status = 'released', released_at = now()
                  FROM supervisor.projects p
                 WHERE p.id = a.project_id AND a.status IN ('allocated', 'in_use') AND {where}
             RETURNING a.port_number, p.name, a.service_name, a.hostname, a.protocol""", params).fetchall()
    return [{"port": r[0], "project": r[1], "service": r[2], "hostname": r[3], "protocol": r[4]} for r in rows]


def list_allocations(conn: "psycopg.Connection", *, project: str | None = None, status: str = "active"
                     ) -> list[dict[str, Any]]:
    if status not in STATUSES:
        raise UsageError(f"--status {shown(status)} is not one of: {', '.join(STATUSES)}")
    require_supervisor(conn)
    clauses: list[str] = []
    params: list[Any] = []
    if project is not None:
        clauses.append("a.project_id = %s")
        params.append(project_id(conn, project))
    if status == "active":
        clauses.append("a.status IN ('allocated', 'in_use')")
    elif status != "all":
        clauses.append("a.status = %s")
        params.append(status)
    where = " AND ".join(clauses) or "true"
    rows = conn.execute(
        f"""SELECT a.port_number, a.protocol, a.hostname, p.name, a.service_name, a.service_type, r.range_name,
                   a.status, a.allocated_at, a.lease_expires_at, a.released_at
              FROM supervisor.port_allocations a
              JOIN supervisor.projects p ON p.id = a.project_id
              JOIN supervisor.port_ranges r ON r.id = a.port_range_id
             WHERE {where} ORDER BY a.port_number, a.hostname, a.protocol, a.allocated_at""", params).fetchall()
    keys = ("port", "protocol", "hostname", "project", "service", "service_type", "range", "status",
            "allocated_at", "lease_expires_at", "released_at")
    return [dict(zip(keys, r)) for r in rows]


# ---------------------------------------------------------------------------------------------
# Ranges


def list_ranges(conn: "psycopg.Connection") -> list[dict[str, Any]]:
    """Every range; utilisation from supervisor.port_range_utilization (active ranges)."""
    require_supervisor(conn)
    rows = conn.execute(
        """SELECT r.range_name, r.start_port, r.end_port, r.end_port - r.start_port + 1, u.allocated_ports,
                  u.reserved_ports, u.utilization_percent, r.is_active, r.cooldown_seconds,
                  coalesce((SELECT string_agg(t, ',') FROM jsonb_array_elements_text(
                      CASE WHEN jsonb_typeof(r.metadata->'service_types') = 'array'
                           THEN r.metadata->'service_types' ELSE '[]' END) t), ''), r.description
             FROM supervisor.port_ranges r
             LEFT JOIN supervisor.port_range_utilization u ON u.range_id = r.id
            ORDER BY r.is_active DESC, r.start_port""").fetchall()
    keys = ("range", "start", "end", "total", "allocated", "reserved", "utilization_percent", "active",
            "cooldown_s", "service_types", "description")
    return [dict(zip(keys, r)) for r in rows]


def add_range(conn: "psycopg.Connection", name: str, start: int, end: int, *, description: str | None = None,
              service_types: list[str] | None = None, cooldown_s: float = 60) -> dict[str, Any]:
    import psycopg
    from psycopg.types.json import Jsonb

    if not name.strip():
        raise UsageError("the range name must not be empty")
    check_port(start, "--start")
    check_port(end, "--end")
    if start > end:
        raise UsageError(f"--start {start} is after --end {end}")
    require_supervisor(conn)
    metadata = {"service_types": service_types} if service_types else {}
    try:
        with conn.transaction():
            conn.execute("""INSERT INTO supervisor.port_ranges (range_name, start_port, end_port, description,
                                   metadata, cooldown_seconds) VALUES (%s, %s, %s, %s, %s, %s)""",
                         (name, start, end, description, Jsonb(metadata), int(cooldown_s)))
    except psycopg.errors.StringDataRightTruncation:
        check_lengths(conn, "supervisor.port_ranges", {"range_name": ("NAME", name)})
        raise
    except psycopg.errors.UniqueViolation:
        raise UsageError(f"a port range named {shown(name)} already exists — see `minnoctl ports range list`") from None
    except psycopg.errors.ExclusionViolation:
        with conn.transaction():
            other = conn.execute(
                "SELECT range_name, start_port, end_port FROM supervisor.port_ranges WHERE is_active "
                "AND int4range(start_port, end_port, '[]') && int4range(%s, %s, '[]') ORDER BY start_port LIMIT 1",
                (start, end)).fetchone()
        what = f"range {other[0]} ({other[1]}-{other[2]})" if other else "another active range"
        raise UsageError(f"{start}-{end} overlaps {what} — choose ports outside it, or disable it first") from None
    return {"range": name, "start": start, "end": end, "total": end - start + 1, "cooldown_s": int(cooldown_s),
            "service_types": ",".join(service_types or []), "description": description}


def disable_range(conn: "psycopg.Connection", name: str) -> tuple[bool, int]:
    """(changed, active allocations left in it). Idempotent."""
    require_supervisor(conn)
    with conn.transaction():
        row = conn.execute("SELECT id, is_active FROM supervisor.port_ranges WHERE range_name = %s FOR UPDATE",
                           (name,)).fetchone()
        if row is None:
            raise NotFound(f"unknown port range {shown(name)} — see `minnoctl ports range list`")
        if row[1]:
            conn.execute("UPDATE supervisor.port_ranges SET is_active = false WHERE id = %s", (row[0],))
        left = one(conn.execute("SELECT count(*) FROM supervisor.port_allocations WHERE port_range_id = %s "
                                "AND status IN ('allocated', 'in_use')", (row[0],)))[0]
    return bool(row[1]), left


# ---------------------------------------------------------------------------------------------
# Reserve / check


def reserve(conn: "psycopg.Connection", *, project: str, service: str, ttl_s: float, range_name: str | None = None,
            service_type: str | None = None, port: int | None = None) -> dict[str, Any]:
    import psycopg

    check_port(port, "--port")
    require_supervisor(conn)
    who = f"{getpass.getuser()}@{socket.gethostname()}"
    try:
        with conn.transaction():
            pid = project_id(conn, project)
            rng = pick_range(conn, range_name, service_type)
            got = one(conn.execute("SELECT supervisor.reserve_port(%s, %s, %s, %s, %s, %s)",
                                   (pid, rng.id, service, dt.timedelta(seconds=ttl_s), who, port)))[0]
            expires = one(conn.execute("SELECT max(expires_at) FROM supervisor.port_reservations WHERE project_id = %s "
                                       "AND service_name = %s AND port_number = %s", (pid, service, got)))[0]
    except psycopg.errors.StringDataRightTruncation:
        check_lengths(conn, "supervisor.port_reservations", {"service_name": ("--service", service)})
        raise
    except psycopg.Error as exc:
        mapped = _sql_error(exc)
        if mapped is None:
            raise
        raise mapped from None
    return {"port": got, "project": project, "service": service, "range": rng.name, "expires_at": expires,
            "reserved_by": who}


def _probe(port: int, protocol: str, timeout_s: float) -> tuple[str, int, str | None]:
    """(status, response ms, error) of this host's port: is something listening (tcp) / bound (udp)."""
    started = time.perf_counter()
    if protocol == "udp":
        bound = not can_bind(port, "udp")
        ms = int((time.perf_counter() - started) * 1000)
        return ("healthy", ms, None) if bound else ("unhealthy", ms, "nothing is bound to the port")
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout_s):
            pass
    except TimeoutError:
        return "timeout", int(timeout_s * 1000), f"no answer within {timeout_s:g} s"
    except OSError as exc:
        return "unhealthy", int((time.perf_counter() - started) * 1000), exc.strerror or exc.__class__.__name__
    return "healthy", int((time.perf_counter() - started) * 1000), None


def check(conn: "psycopg.Connection", *, project: str | None = None, timeout_s: float = 0.5) -> list[dict[str, Any]]:
    """Probe this host's active allocations and record each result in port_health_checks."""
    require_supervisor(conn)
    params: list[Any] = [sorted(local_names())]
    where = "a.hostname = ANY(%s) AND a.status IN ('allocated', 'in_use')"
    if project is not None:
        where += " AND a.project_id = %s"
        params.append(project_id(conn, project))
    rows = conn.execute(
        f"""SELECT a.id, a.port_number, a.protocol, a.hostname, p.name, a.service_name
              FROM supervisor.port_allocations a JOIN supervisor.projects p ON p.id = a.project_id
             WHERE {where} ORDER BY a.port_number""", params).fetchall()
    results = []
    for alloc_id, port, protocol, hostname, proj, service in rows:
        status, ms, error = _probe(port, protocol, timeout_s)
        results.append({"port": port, "protocol": protocol, "hostname": hostname, "project": proj, "service": service,
                        "status": status, "response_ms": ms, "error": error, "_id": alloc_id})
    with conn.transaction():
        for r in results:
            conn.execute("INSERT INTO supervisor.port_health_checks (port_allocation_id, check_type, status, "
                         "response_time_ms, error_message) VALUES (%s, %s, %s, %s, %s)",
                         (r["_id"], r["protocol"], r["status"], r["response_ms"], r["error"]))
            if r["status"] == "healthy":
                conn.execute("UPDATE supervisor.port_allocations SET last_used_at = now() WHERE id = %s", (r["_id"],))
    for r in results:
        del r["_id"]
    return results
