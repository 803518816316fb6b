"""The only place that opens psycopg 3 connections and the only place that builds the yoyo URL.

Connections never use server-side prepared statements (prepare_threshold=None), so minnoctl works
behind PgBouncer in transaction mode — except the commands that need a session of their own
(NEEDS_SESSION), which go to MINNO_DIRECT_URL or are refused there. A failed connection becomes a
ConnectError whose one-line message names the target (password masked) and what to check.
pg_dump, pg_restore and psql get the very same connection from tool_connection().
"""

from __future__ import annotations

import re
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from collections.abc import Iterator
from urllib.parse import quote, urlencode

from minnoctl.config import APPLICATION_NAME, Settings, child_environment, display_url, load_settings, scrub
from minnoctl.errors import ConfigError, ConnectError, ExitCode
from minnoctl.render_text import shown

if TYPE_CHECKING:
    import psycopg


def resolve(settings: Settings) -> dict[str, str]:
    """The libpq keywords for the target, starting the embedded server when none is configured."""
    if not settings.embedded:
        return dict(settings.params)
    from minnoctl import local

    info, started = local.Embedded(settings.minno_home).ensure_running()
    local.announce(info, started)
    return info.params()


def connect_kwargs(settings: Settings, params: dict[str, str], **overrides: str | None) -> dict[str, str]:
    """Everything passed to libpq: the target plus timeouts, application name and options."""
    kwargs = dict(params)
    kwargs.update({k: v for k, v in overrides.items() if v is not None})
    kwargs.setdefault("connect_timeout", str(settings.connect_timeout_s))
    kwargs["application_name"] = APPLICATION_NAME
    options = []
    if settings.statement_timeout_ms is not None:
        options.append(f"-c statement_timeout={settings.statement_timeout_ms}")
    if settings.idle_timeout_ms is not None:
        options.append(f"-c idle_session_timeout={settings.idle_timeout_ms}")
    if options:
        kwargs["options"] = " ".join(filter(None, [kwargs.get("options"), *options]))
    return kwargs


@dataclass(frozen=True)
class ToolConnection:
    """How pg_dump, pg_restore and psql reach the target: `conninfo` for their --dbname, `env` as
    their whole environment."""

    conninfo: str
    env: dict[str, str]

    @property
    def dbname_option(self) -> str:
        return f"--dbname={self.conninfo}"


# libpq's display character of the options that are never shown: "*" a password, "D" a debug option
# (scram_client_key and scram_server_key among them, each as good as the password)
_HIDDEN = (b"*", b"D")


def tool_connection(settings: Settings, *, dbname: str | None = None,
                    server: "psycopg.Connection | None" = None) -> ToolConnection:
    """The connection psycopg makes, for a libpq program, pinned to the server psycopg reaches:
    `server`, a connection made with these settings (backup create's snapshot session, whose
    snapshot pg_dump joins), else one opened here for the question. psycopg tries the hosts of a
    list, and each address of a name, in turn, and moves on after any failure (load_balance_hosts
    shuffles them); libpq stops at the first server that answers with a refusal (no such database,
    a wrong password). The tool gets psycopg's server: its host, address and port. A tool is a
    session of its own (backup's): MINNO_DIRECT_URL's server when it is set, as open_session()."""
    if settings.direct is not None:
        settings = settings.direct
    kwargs = connect_kwargs(settings, resolve(settings), dbname=dbname)
    if server is None:
        with connect(settings, dbname=dbname, autocommit=True) as probe:
            kwargs.update(_reached(probe, kwargs))
    else:
        kwargs.update(_reached(server, kwargs))
    return for_tools(kwargs, settings.source)


def _reached(conn: "psycopg.Connection", kwargs: dict[str, str]) -> dict[str, str]:
    """host, hostaddr and port of the one server `conn` reached; no host where only hostaddr was
    given (verify-full checks the certificate against a host name, and there was none)."""
    info = conn.info
    pinned = {"port": str(info.port)}
    if info.hostaddr:
        pinned["hostaddr"] = info.hostaddr
    if kwargs.get("host") or not kwargs.get("hostaddr"):
        pinned["host"] = info.host
    return pinned


def for_tools(kwargs: dict[str, str], source: str) -> ToolConnection:
    """The libpq keywords psycopg is given (`kwargs`, from `source`) as a tool's --dbname conninfo
    and environment. psycopg hands libpq its keywords as one conninfo string, and libpq fills what
    they leave open from the service file (`service` or PGSERVICE), then from the PG* variables,
    then from the passfile. A tool given the same keywords as its --dbname conninfo (a conninfo
    there is parsed, not taken for a name) and the same process environment makes that same
    choice, keyword for keyword — target_session_attrs, channel_binding, sslcrl, passfile, service
    and the rest included. The keywords as PG* variables would not: a service file beats the
    variables, where psycopg's keywords beat it.

    The conninfo is on the tool's command line, so it holds no secret: the options libpq never
    shows (password, sslpassword, ...) go in their environment variable (PGPASSWORD), and one that
    has none is refused here, before the tool runs. The one difference left: a password given to
    minnoctl loses, in the tool, to a password the service file itself holds. A keyword the tool's
    own libpq is too old to know makes it fail ("invalid connection option") rather than ignore it.
    LC_ALL=C: the tools' messages are parsed in English."""
    from psycopg import pq
    from psycopg.conninfo import make_conninfo

    options = {opt.keyword.decode(): opt for opt in pq.Conninfo.get_defaults()}
    env = child_environment()  # what libpq reads in this process, psycopg's libpq included
    shown_keywords = {}
    for keyword, value in kwargs.items():
        option = options.get(keyword)
        if option is None or option.dispchar not in _HIDDEN:
            shown_keywords[keyword] = value
        elif option.envvar:
            env[option.envvar.decode()] = value
        else:
            raise ConfigError(f"{keyword} (in {source}) cannot be passed to pg_dump, pg_restore or psql: libpq "
                              "reads it from no environment variable, and on their command line it would show in "
                              f"`ps` — leave {keyword} out of the settings for backups")
    env["LC_ALL"] = "C"
    return ToolConnection(make_conninfo("", **shown_keywords), env)


def connect(
    settings: Settings | None = None,
    *,
    dbname: str | None = None,
    autocommit: bool = False,
    application_name: str | None = None,
) -> "psycopg.Connection":
    """Open a connection to the configured database (or to `dbname` on the same server).
    `application_name`: the session's name, sent when connecting (a startup parameter, not a SET:
    a pooler keeps it with this client's connection)."""
    import psycopg

    settings = settings or load_settings()
    params = resolve(settings)
    kwargs: dict[str, Any] = connect_kwargs(settings, params, dbname=dbname)  # psycopg's ConnParam values
    if application_name:
        kwargs["application_name"] = application_name
    try:
        conn = psycopg.connect(autocommit=autocommit, prepare_threshold=None, **kwargs)
    except psycopg.OperationalError as exc:
        raise classify(exc, kwargs, settings) from None
    opened = getattr(_watched, "opened", None)
    if opened is not None:  # a fleet run's target: its connections, to cancel at its timeout
        opened.append(conn)
    return conn


_watched = threading.local()


@contextmanager
def watching(opened: list) -> Iterator[list]:
    """Every connection `connect()` opens in this thread while the block runs is appended to
    `opened` (minnoctl/fleet.py cancels a timed-out target's statements through them)."""
    _watched.opened = opened
    try:
        yield opened
    finally:
        _watched.opened = None


# The purposes whose session must stay on one server connection from start to end: they hold
# session advisory locks (one run at a time, released by the server if the run dies) and the
# migration runner's session settings (lock_timeout, search_path for a migration that runs outside a
# transaction). Behind a transaction-mode pool each transaction may get another server connection:
# a lock would be taken on one and left there (the "unlock" goes to another), a SET would stay on a
# server connection the application gets next. So these go to MINNO_DIRECT_URL when it is set, and
# are refused behind a transaction pool (open_session). Every other command keeps its state to one
# transaction (SET LOCAL, transaction-scoped locks) or has none, and works through any pool.
NEEDS_SESSION = {"migrate": "migrate", "db-init": "db init", "seed": "seed", "cleanup": "cleanup",
                 "token-rotate": "token rotate",
                 # pg_dump joins the exported snapshot of backup's session, which sets its own timeouts;
                 # pg_restore --single-transaction and the restore test's database need one server too
                 "backup": "backup"}
_PROBE_WAIT_S = 2.0  # how long the probe's second client waits for a server connection
_PROBE_ROUNDS = 3  # rounds of the probe through anything but a direct TCP connection


def open_session(settings: Settings, purpose: str | None = None, *, dbname: str | None = None,
                 autocommit: bool = True, time_zone: str | None = None,
                 command: str | None = None) -> "psycopg.Connection":
    """A connection with minnoctl's session settings, for a caller that keeps it open beyond one
    block (the migration runner, a rotation): named after `purpose` (`minnoctl <purpose> pid=…
    host=…`, so a second run can say who holds a lock), sent as the startup application_name;
    `time_zone` set for the session (cleanup compares the application's UTC timestamps in UTC).
    The one place a command's session is set up; the caller closes it.

    A purpose in NEEDS_SESSION connects to MINNO_DIRECT_URL when it is set (settings.direct), and
    stops with ConfigError before anything is set or changed when the server connection it reached
    is a transaction-mode pool's (session_is_pooled); the refusal names `command` (default: the
    purpose's command; db init runs the migrate session)."""
    from minnoctl import locks

    needs_session = purpose in NEEDS_SESSION
    if needs_session and settings.direct is not None:
        settings = settings.direct
    conn = connect(settings, dbname=dbname, autocommit=True,
                   application_name=locks.holder_name(purpose) if purpose else None)
    try:
        if needs_session and not settings.embedded and session_is_pooled(conn, settings, dbname):
            assert purpose is not None
            raise ConfigError(_pooled_message(command or NEEDS_SESSION[purpose], settings))
        if time_zone is not None:
            conn.execute("SELECT set_config('TimeZone', %s, false)", (time_zone,))
        conn.autocommit = autocommit
    except BaseException:
        conn.close()
        raise
    return conn


def session_is_pooled(conn: "psycopg.Connection", settings: Settings, dbname: str | None = None) -> bool:
    """Whether `conn` (autocommit) reaches PostgreSQL through a transaction- or statement-mode pool,
    whose server connections serve other clients between `conn`'s transactions. It reads only.

    A direct TCP connection is told by its socket: the server sees this client's own address and
    port (inet_client_addr/port) on the port it was reached at (one query, nothing more). Through
    anything else — a pool, a unix socket, NAT — a few rounds of: `conn`'s server connection
    (pg_backend_pid()) must stay the same across its transactions, a second client of the same
    settings must not get it, and it must have run nothing but `conn`'s own last query in between
    (pg_stat_activity). A session pool keeps one server connection per client for the client's
    life, so it (like a direct server) is never taken for a transaction pool."""
    import secrets

    marker = f"SELECT pg_backend_pid(), inet_client_addr()::text, inet_client_port(), inet_server_port() " \
             f"/* minnoctl pool probe {secrets.token_hex(8)} */"
    first, client_addr, client_port, server_port = conn.execute(marker).fetchone()  # type: ignore[misc]
    if _own_socket(conn, client_addr, client_port) and server_port == conn.info.port:
        return False
    for _ in range(_PROBE_ROUNDS):
        if conn.execute(marker).fetchone()[0] != first:  # type: ignore[index]
            return True  # round robin over the idle server connections
        other = _second_opinion(settings, dbname, first)
        if other == "waited":  # no server connection free, though `conn`'s is idle: it is kept for it
            return False
        if other is not None and (other[0] == first or other[1] not in (marker, None, "", "<insufficient privilege>")):
            return True  # a second client got it, or another client used it in between
    return False


def _own_socket(conn: "psycopg.Connection", addr: str | None, port: int | None) -> bool:
    """Whether the server's view of its client (`addr`, `port`) is this connection's own socket."""
    import ipaddress
    import os
    import socket

    if addr is None or port is None:  # a unix socket
        return False
    try:
        with socket.socket(fileno=os.dup(conn.pgconn.socket)) as sock:
            local = sock.getsockname()
        mine, seen = ipaddress.ip_address(local[0]), ipaddress.ip_address(addr.split("/")[0])
    except (OSError, ValueError, IndexError, TypeError):
        return False
    mapped = [getattr(a, "ipv4_mapped", None) or a for a in (mine, seen)]
    return mapped[0] == mapped[1] and int(local[1]) == int(port)


def _second_opinion(settings: Settings, dbname: str | None, pid: int) -> tuple[int, str | None] | str | None:
    """(its own backend pid, the last query of backend `pid`) from a second, short-lived client of
    the same settings; "waited" when it got no server connection within _PROBE_WAIT_S (a session
    pool that keeps `pid`'s for its client, all the others busy); None when it cannot tell."""
    import select

    try:
        probe = connect(settings, dbname=dbname, autocommit=True)
    except Exception:  # no second connection to be had: no evidence either way
        return None
    try:
        pg = probe.pgconn
        pg.send_query(f"SELECT pg_backend_pid(), (SELECT query FROM pg_stat_activity WHERE pid = {int(pid)})".encode())
        deadline = time.monotonic() + _PROBE_WAIT_S
        while pg.is_busy():
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([pg.socket], [], [], left)[0]:
                return "waited"
            pg.consume_input()
        result = pg.get_result()
        while pg.get_result() is not None:
            pass
        if result is None or result.ntuples != 1:
            return None
        own, query = result.get_value(0, 0), result.get_value(0, 1)
        return (int(own.decode()) if own is not None else -1), (query.decode() if query is not None else None)
    except Exception:  # the probe is only a second opinion
        return None
    finally:
        probe.close()


def _pooled_message(command: str, settings: Settings) -> str:
    """The one line of the refusal behind a transaction pool: the command, the pool, the setting."""
    target = f"{display_url(dict(settings.params))} (from {settings.source})"
    if settings.source == "--database-url":
        fix = "pass the server's own address (not the pool's) in --database-url"
    elif settings.source.endswith("MINNO_DIRECT_URL"):
        fix = "set MINNO_DIRECT_URL to the server's own address, not the pool's"
    elif settings.source.startswith("target "):  # a target of the targets file (minnoctl/targets.py)
        fix = (f"give {settings.source} a direct_url in the targets file: the server's own address, not the "
               "pool's" if not settings.source.endswith("direct_url") else
               f"make {settings.source} the server's own address, not the pool's")
    else:
        fix = ("set MINNO_DIRECT_URL to the server's own address (migrate, db init, seed, cleanup and token "
               "rotate use it; health, ports and the rest keep the pool)")
    return (f"minnoctl {command} needs a server session of its own (session advisory locks and settings), but "
            f"{target} is a transaction-mode pool (PgBouncer pool_mode=transaction: the server connection "
            f"changes between transactions); nothing was changed — {fix} and run it again")


@contextmanager
def session(settings: Settings, purpose: str | None = None, *, dbname: str | None = None, autocommit: bool = True,
            lock: str | None = None, lock_timeout: float = 0.0, lock_option: str | None = None,
            time_zone: str | None = None) -> Iterator["psycopg.Connection"]:
    """A working session for one command (Context.session): open_session()'s connection, with
    minnoctl's advisory lock `lock` held for the block when given; closed at the end, which ends
    every session-level setting and lock with it (behind a pooler too: the connection is never
    handed back with minnoctl's state on it)."""
    from minnoctl import locks

    conn = open_session(settings, purpose, dbname=dbname, time_zone=time_zone)
    try:
        if not autocommit:
            conn.autocommit = False
        if lock is None:
            yield conn
        else:
            if not autocommit:
                raise ValueError("an advisory lock is taken on an autocommit session")
            with locks.advisory_lock(conn, lock, lock_timeout, lock_option):
                yield conn
    finally:
        conn.close()


def first_line(text: str) -> str:
    """The first non-blank line of a server or driver message (errors are one line)."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[0] if lines else "unknown error"


def classify(exc: Exception, kwargs: dict[str, str], settings: Settings) -> ConnectError:
    """Turn a libpq connection failure into one line: what failed, against what, what to check."""
    target = f"{display_url(kwargs)} (from {settings.source})"
    raw = scrub(str(exc), settings.secrets() + [kwargs.get("password") or ""])
    text = raw.lower()
    sqlstate = getattr(exc, "sqlstate", None)
    user = kwargs.get("user") or "(default user)"
    dbname = kwargs.get("dbname") or "(default database)"
    host = kwargs.get("host") or "localhost"

    def err(kind: str, message: str, code: ExitCode) -> ConnectError:
        return ConnectError(message, kind=kind, exit_code=code)

    if sqlstate == "28P01" or "password authentication failed" in text:
        return err("wrong-password", f"password authentication failed for user {shown(user)} at {target} — "
                   "check the password in that setting, PGPASSWORD or ~/.pgpass", ExitCode.AUTH)
    if "no password supplied" in text or "password is required" in text:
        return err("no-password", f"the server asks a password for user {shown(user)} and none was given, at "
                                  f"{target} — "
                   "put it in the URL's environment variable, DB_PASSWORD, PGPASSWORD or ~/.pgpass "
                   "(never on the command line)", ExitCode.AUTH)
    if sqlstate == "3D000" or re.search(r'database ".*" does not exist', text):
        return err("no-database", f"database {shown(dbname)} does not exist at {target} — create it "
                   "(`minnoctl db init` does) or fix the database name", ExitCode.NO_DATABASE)
    if re.search(r'role ".*" does not exist', text):
        return err("no-role", f"role {shown(user)} does not exist at {target} — fix the user name or create the role",
                   ExitCode.AUTH)
    if "server does not support ssl" in text:
        return err("ssl-unsupported", f"SSL was required but the server does not support it, at {target} — "
                   "lower DB_SSL_MODE (prefer) or enable SSL on the server", ExitCode.UNREACHABLE)
    if "pg_hba.conf" in text and "no encryption" in text:
        return err("ssl-required", f"the server refuses connections without SSL, at {target} — "
                   "set DB_SSL_MODE=require (or verify-full with DB_SSL_CA)", ExitCode.AUTH)
    if "certificate verify failed" in text or "certificate" in text and "verif" in text:
        return err("ssl-verify", f"the server's SSL certificate could not be verified, at {target} — "
                   "set DB_SSL_CA to the CA that signed it, or use DB_SSL_MODE=require", ExitCode.UNREACHABLE)
    if "does not match host name" in text or "server certificate for" in text:
        return err("ssl-hostname", f"the server's SSL certificate does not match host {shown(host)}, at {target} — "
                   "connect by the name in the certificate or use DB_SSL_MODE=verify-ca", ExitCode.UNREACHABLE)
    if "ssl" in text and ("error" in text or "failed" in text):
        return err("ssl", f"SSL negotiation failed at {target}: {first_line(raw)} — check DB_SSL_MODE "
                   "and the certificate files", ExitCode.UNREACHABLE)
    if "client certificate" in text or "certificate authentication failed" in text:
        return err("client-cert", f"the server requires a valid client certificate for user {shown(user)}, at "
                                  f"{target} — "
                   "set DB_SSL_CERT and DB_SSL_KEY", ExitCode.AUTH)
    if "pg_hba.conf" in text:
        return err("hba-rejected", f"the server's pg_hba.conf rejects user {shown(user)} on database {shown(dbname)} "
                   f"from this host, at {target} — ask its administrator to allow it", ExitCode.AUTH)
    if "connection refused" in text:
        return err("refused", f"connection refused by {target} — is PostgreSQL running there and accepting "
                   "connections on that host and port?", ExitCode.UNREACHABLE)
    if ("could not translate host name" in text or "failed to resolve host" in text
            or "name or service not known" in text):
        return err("unknown-host", f"unknown host {shown(host)} in {target} — check the host name",
                   ExitCode.UNREACHABLE)
    if "timeout expired" in text or "timed out" in text:
        return err("timeout", f"no answer from {target} within {kwargs.get('connect_timeout')} s — check the host, "
                   "port and firewall, or raise DB_CONNECTION_TIMEOUT", ExitCode.UNREACHABLE)
    if "no such file or directory" in text and str(host).startswith("/"):
        return err("no-socket", f"no PostgreSQL socket at {target} — is the server running, and is the socket "
                   "directory right?", ExitCode.UNREACHABLE)
    if "invalid" in text and ("connection option" in text or "integer value" in text or "sslmode" in text):
        return err("bad-setting", f"invalid connection setting for {target}: {first_line(raw)}", ExitCode.CONFIG)
    limit = re.search(r'too many connections for (database|role) "([^"]*)"', raw)
    if limit:
        return err("too-many", f"the {limit.group(1)} {limit.group(2)} is at its connection limit, at {target} — "
                   f"close idle sessions of it, or raise it (ALTER {limit.group(1).upper()} ... CONNECTION LIMIT)",
                   ExitCode.UNREACHABLE)
    if "remaining connection slots are reserved" in text:
        return err("too-many", f"the server is at max_connections: the remaining slots are reserved (for "
                   f"superusers or pg_use_reserved_connections), at {target} — close idle sessions, put a pooler "
                   "(PgBouncer) in front, or raise max_connections", ExitCode.UNREACHABLE)
    if "too many clients" in text or "too many connections" in text or sqlstate == "53300":
        return err("too-many", f"the server is at max_connections (too many clients already), at {target} — "
                   "close idle sessions, put a pooler (PgBouncer) in front, or raise max_connections",
                   ExitCode.UNREACHABLE)
    if "the database system is starting up" in text or "shutting down" in text or sqlstate == "57P03":
        return err("not-ready", f"the server is starting up or shutting down, at {target} — try again shortly",
                   ExitCode.UNREACHABLE)
    return err("other", f"cannot connect to {target}: {first_line(raw)}", ExitCode.UNREACHABLE)


def yoyo_url(settings: Settings, params: dict[str, str] | None = None) -> str:
    """The yoyo-migrations URL for the target. yoyo's `postgresql+psycopg` scheme selects psycopg 3
    (plain `postgresql://` makes yoyo import psycopg2). yoyo passes query arguments straight to
    psycopg.connect, which is how unix-socket hosts, SSL and timeouts reach it."""
    params = dict(resolve(settings) if params is None else params)
    kwargs = connect_kwargs(settings, params)
    user = quote(kwargs.pop("user", "") or "", safe="")
    password = kwargs.pop("password", None)
    host = kwargs.pop("host", "") or ""
    port = kwargs.pop("port", "") or ""
    dbname = quote(kwargs.pop("dbname", "") or "", safe="")
    userinfo = user + (f":{quote(password, safe='')}" if password else "")
    netloc = f"{userinfo}@" if userinfo else ""
    if host and not host.startswith("/") and "," not in host:
        netloc += f"[{host}]" if ":" in host else host
        if port:
            netloc += f":{port}"
    else:
        if host:
            kwargs["host"] = host
        if port:
            kwargs["port"] = port
    query = urlencode(kwargs)
    return f"postgresql+psycopg://{netloc}/{dbname}" + (f"?{query}" if query else "")


def check_lengths(conn: "psycopg.Connection", table: str, values: dict[str, tuple[str, str | None]]) -> None:
    """The one length check of free text against its column: `values` maps a column of `table`
    ('schema.table') to (option, value); a value longer than the column's varchar(n) / char(n)
    (read from the catalog, so a migration that widens a column widens the check) is a UsageError
    naming the option and the limit, raised before anything is written."""
    from minnoctl.errors import UsageError
    schema, _, name = table.rpartition(".")
    limits: dict[str, int] = dict(conn.execute(
        "SELECT column_name, character_maximum_length FROM information_schema.columns WHERE table_schema = %s "
        "AND table_name = %s AND column_name = ANY(%s) AND character_maximum_length IS NOT NULL",
        (schema or "public", name, list(values))).fetchall())
    for column, (option, value) in values.items():
        limit = limits.get(column)
        if value is not None and limit is not None and len(value) > limit:
            raise UsageError(f"{option} {shown(value)} is too long: {len(value)} characters, and {table}.{column} "
                             f"holds at most {limit}")


def server_version(conn: "psycopg.Connection") -> str:
    """'18.1' style version of the connected server."""
    from minnoctl.rows import one

    return str(one(conn.execute("SHOW server_version"))[0]).split()[0]
