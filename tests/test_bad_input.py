"""Bad input, by class (issue 15): one parser for durations and numbers with bounds, one length check
from the column's type, empty values that are never "all" or "none", one escaping of echoed values,
and the connection-limit error. Each case: one line on stderr, a documented exit code, no traceback,
and the database unchanged (a fingerprint of every table). Both servers."""

from __future__ import annotations

import uuid
from pathlib import Path

import psycopg
import pytest

from minnoctl import crypto
from minnoctl.errors import ExitCode

HOSTILE_ECHO = "a\n\x1b[31mX"


def fingerprint(url: str, conn: psycopg.Connection | None = None) -> dict[str, object]:
    """Every table's row count and an md5 of its rows, plus the server's list of databases: equal
    before and after means the command changed nothing. `conn`: an open connection to use."""
    if conn is None:
        with psycopg.connect(url, autocommit=True) as own:
            return fingerprint(url, own)
    tables = conn.execute(
        "SELECT format('%I.%I', table_schema, table_name) FROM information_schema.tables "
        "WHERE table_type = 'BASE TABLE' AND table_schema NOT IN ('pg_catalog', 'information_schema') "
        "ORDER BY 1").fetchall()
    parts = [f"SELECT {psycopg.sql.quote(t)}::text, count(*), md5(coalesce(string_agg(x::text, '|' "
             f"ORDER BY x::text), '')) FROM {t} x" for (t,) in tables]
    rows = conn.execute(" UNION ALL ".join(parts)).fetchall() if parts else []
    databases = conn.execute("SELECT array_agg(datname ORDER BY datname) FROM pg_database").fetchone()[0]
    return {"tables": rows, "databases": databases}


def folder_print(folder: Path) -> list[tuple[str, int]]:
    return sorted((p.name, p.stat().st_size) for p in folder.iterdir()) if folder.exists() else []


def one_line(result) -> str:
    """The outcome on stderr is one line at most (no traceback) and nothing raw reaches a terminal."""
    assert "Traceback" not in result.stderr, result.stderr
    assert "\x1b" not in result.stderr + result.stdout
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) <= 1, result.stderr
    return lines[0] if lines else ""


def furnish(url: str) -> str:
    """A project `alpha`, a port range `ci` (41000-41009) and a Slack workspace `T1`."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO supervisor.projects (name, path) VALUES ('alpha', '/srv/alpha')")
        conn.execute("INSERT INTO supervisor.port_ranges (range_name, start_port, end_port, cooldown_seconds) "
                     "VALUES ('ci', 41000, 41009, 1)")
        conn.execute("INSERT INTO minno.workspaces (id, slack_team_id, slack_team_name) VALUES (%s, 'T1', 'one')",
                     (uuid.uuid4(),))
    return url


@pytest.fixture
def db(migrated):
    return furnish(migrated)


@pytest.fixture
def run(cli, db, kek, tmp_path):
    env = {"MINNO_DATABASE_URL": db, "MINNO_MASTER_KEY": crypto.encode_key(kek.key),
           "MINNO_BACKUP_DIR": str(tmp_path / "backups")}

    def go(*args: str, input: str | None = None, **extra: str):
        return cli(*args, env={**env, **extra}, input=input)
    return go


def refused(run, db, args, *, code=ExitCode.USAGE, phrases=(), input=None, **env) -> str:
    before = fingerprint(db)
    result = run(*args, input=input, **env)
    line = one_line(result)
    assert result.exit_code == code, (args, result.exit_code, result.stderr)
    for phrase in phrases:
        assert phrase in line, line
    assert fingerprint(db) == before
    return line


ALLOC = ["ports", "allocate", "-p", "alpha", "-s", "api", "-r", "ci"]
RESERVE = ["ports", "reserve", "-p", "alpha", "-s", "api", "-r", "ci"]
RANGE_ADD = ["ports", "range", "add", "grpc", "--start", "50000", "--end", "50009"]


OVERFLOWS = [
    (ALLOC + ["--lease", "999999999999d"], ["--lease", "'999999999999d'", "10 years"]),
    (ALLOC + ["--lease", "1e400"], ["--lease", "'1e400'"]),
    (ALLOC + ["--lease", "nan"], ["--lease", "'nan'"]),
    (ALLOC + ["--lease", "9" * 400 + "s"], ["--lease"]),
    (RESERVE + ["--ttl", "999999999999d"], ["--ttl", "10 years"]),
    (RESERVE + ["--ttl", "inf"], ["--ttl", "'inf'"]),
    (RANGE_ADD + ["--cooldown", "999999999999d"], ["--cooldown", "10 years"]),
    (RANGE_ADD + ["--cooldown", "-1s"], ["--cooldown"]),
    (["cleanup", "--dry-run", "--older-than", "chatbot-conversations=1e308"], ["--older-than", "days"]),
    (["cleanup", "--dry-run", "--older-than", "chatbot-conversations=99999999"], ["--older-than", "3650"]),
    (["cleanup", "--dry-run", "--max-runtime", "nan"], ["--max-runtime", "'nan'"]),
    (["cleanup", "--dry-run", "--max-runtime", "inf"], ["--max-runtime", "'inf'"]),
    (["token", "list", "--expiring-within", "nan"], ["--expiring-within", "'nan'"]),
    (["token", "list", "--expiring-within", "inf"], ["--expiring-within", "'inf'"]),
    (["token", "list", "--expiring-within", "1e400"], ["--expiring-within", "'1e400'"]),
    (["token", "list", "--expiring-within", "-1"], ["--expiring-within", "'-1'"]),
    (["token", "rotate", "--dry-run", "--max-runtime", "nan"], ["--max-runtime"]),
    (["backup", "prune", "--keep-last", "1", "--keep-days", "nan"], ["--keep-days", "'nan'"]),
    (["backup", "prune", "--keep-last", "1", "--keep-days", "1e400"], ["--keep-days"]),
    (["backup", "prune", "--keep-last", "99999999999999999999999"], ["--keep-last"]),
    (["ports", "check", "--timeout", "nan"], ["--timeout", "'nan'", "0.01 s to 30 s"]),
    (["health", "-t", "connections-warning=nan"], ["connections-warning", "'nan'"]),
    (["health", "-t", "long-query-warning=999999999999d"], ["long-query-warning", "10 years"]),
    (["health", "-t", "database-size-warning=1e400"], ["database-size-warning"]),
    (["health", "-t", "dead-tuples-min=999999999999999999999999"], ["dead-tuples-min"]),
    (["seed", "--scale", "999999999999", "--yes"], ["--scale", "10000000"]),
    (["seed", "--lock-timeout", "nan", "--yes"], ["--lock-timeout", "'nan'"]),
    (["migrate", "--lock-timeout", "inf"], ["--lock-timeout", "'inf'"]),
    (["db", "init", "--lock-timeout", "nan"], ["--lock-timeout"]),
    (["migrate", "rollback", "--steps", "99999999999999999999999"], ["--steps"]),
    (["token", "retire", "99999999999999999999"], ["KEY"]),
    (["token", "retire", "9" * 5000], ["KEY"]),  # past int()'s own digit limit
    (ALLOC + ["--port", "9" * 5000], ["--port"]),
    (["token", "rotate", "--batch-size", "1e400"], ["--batch-size"]),
]


def test_overflowing_durations_and_numbers_are_one_line_exit_2(run, db):
    for args, phrases in OVERFLOWS:
        refused(run, db, args, phrases=phrases)


def test_local_stop_wait_nan_is_refused_before_anything_stops(run, db, tmp_path):
    # its own MINNO_HOME: on today's code nan was accepted and the server there would have stopped
    refused(run, db, ["local", "stop", "--wait", "nan"], phrases=["--wait"], MINNO_HOME=str(tmp_path / "h"))


ENV_OVERFLOWS = [
    ("DB_STATEMENT_TIMEOUT", "999999999999h"),
    ("DB_STATEMENT_TIMEOUT", "nan"),
    ("DB_IDLE_TIMEOUT", "1e400"),
    ("DB_CONNECTION_TIMEOUT", "99999999999999999999999"),
    ("DB_POOL_SIZE", "99999999999999999999999"),
]


def test_environment_durations_are_bounded_too(run, db):
    for name, value in ENV_OVERFLOWS:
        line = refused(run, db, ["token", "list"], code=ExitCode.CONFIG, phrases=[name], **{name: value})
        assert "at most" in line or "from" in line


LONG = "x" * 300


TOO_LONG = [
    (["token", "put", "--workspace", "T1", "--provider", LONG, "--access-token-file", "-"], "--provider", 50),
    (ALLOC[:4] + ["-s", LONG, "-r", "ci"], "--service", 255),
    (["ports", "range", "add", LONG, "--start", "50000", "--end", "50009"], "NAME", 100),
    (ALLOC + ["--hostname", LONG], "--hostname", 255),
    (RESERVE + ["--ttl", "1h", "-s", LONG], "--service", 255),
]


def test_strings_longer_than_their_column_are_one_line_with_the_limit(run, db):
    for args, option, limit in TOO_LONG:
        line = refused(run, db, args, input="secret-token\n", phrases=[option, str(limit)])
        assert "StringDataRightTruncation" not in line


def test_a_server_side_truncation_is_one_line(run, db):
    """Where a value reaches a varchar column by a path no check covers (here a project's name
    of 300 characters), the server's 22001 is still one line, exit 2."""
    from minnoctl.cli import _server_refusal

    with psycopg.connect(db, autocommit=True) as conn:
        try:
            conn.execute("INSERT INTO supervisor.projects (name, path) VALUES (%s, '/x')", (LONG,))
        except psycopg.errors.StringDataRightTruncation as exc:
            mapped = _server_refusal(exc)
    assert mapped is not None and mapped[1] == ExitCode.USAGE and "too long" in mapped[0]


EMPTY = [
    (["migrate", "status", "--modules", ""], "--modules"),
    (["migrate", "--dry-run", "--modules", " , "], "--modules"),
    (["token", "put", "--workspace", "T1", "--provider", "slack", "--access-token-file", "-",
      "--expires-at", ""], "--expires-at"),
    (["token", "list", "--workspace", ""], "--workspace"),
    (["ports", "list", "--project", ""], "--project"),
]


def test_empty_values_are_usage_errors_not_all_or_none(run, db):
    for args, option in EMPTY:
        refused(run, db, args, input="secret-token\n", phrases=[option])


def test_expires_at_never_is_the_explicit_no_expiry(run, db):
    result = run("token", "put", "--workspace", "T1", "--provider", "slack", "--access-token-file", "-",
                 "--expires-at", "never", "--format", "json", input="secret-token\n")
    assert result.exit_code == 0, result.stderr
    with psycopg.connect(db) as conn:
        assert conn.execute("SELECT expires_at FROM minno.oauth_tokens").fetchall() == [(None,)]


BIDI = "\u202eevil"
ECHOED = [  # refused where it is parsed (a control character), or deep in the command (bidi)
    ["ports", "range", "disable", HOSTILE_ECHO],
    ["ports", "range", "disable", BIDI],
    ["ports", "allocate", "-p", BIDI, "-s", "api", "-r", "ci"],
    ["ports", "allocate", "-p", "alpha", "-s", "api", "-r", BIDI],
    ["token", "put", "--workspace", BIDI, "--provider", "slack", "--access-token-file", "-"],
    ["cleanup", "--dry-run", "--older-than", f"{BIDI}=3"],
    ["health", "-t", f"{BIDI}=3"],
    ["backup", "create", "--compress", BIDI],
    ["ports", "allocate", "-p", HOSTILE_ECHO, "-s", "api", "-r", "ci"],
    ["ports", "list", "--status", HOSTILE_ECHO],
    ["token", "list", "--expiring-within", HOSTILE_ECHO],
    ["cleanup", "--dry-run", "--only", HOSTILE_ECHO],
    ["health", "--only", HOSTILE_ECHO],
    ["migrate", "status", "--modules", HOSTILE_ECHO],
    ["backup", "verify", HOSTILE_ECHO],
    ["ports", "list", "--format", HOSTILE_ECHO],
]


def test_echoed_values_are_escaped(run, db):
    before = fingerprint(db)
    for args in ECHOED:
        result = run(*args, input="secret-token\n")
        line = one_line(result)
        assert result.exit_code in {int(c) for c in ExitCode} - {0, 70}, result.stderr
        assert "\\e[31mX" in line or "\\u202e" in line, (args, line)
    assert fingerprint(db) == before


def test_stored_values_with_escape_sequences_are_listed_escaped(run, db):
    """A value an application stored with a newline and ESC is shown escaped in tables and plain
    (csv keeps the newline, quoted, and escapes the ESC); JSON carries it exactly."""
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("UPDATE supervisor.port_ranges SET description = %s", (HOSTILE_ECHO,))
    for fmt in ("plain", "csv", "table", "github"):
        result = run("ports", "range", "list", "--format", fmt)
        assert result.exit_code == 0 and "\x1b" not in result.stdout and "\\e[31mX" in result.stdout, result.stdout
        assert fmt == "csv" or "a\\n\\e[31mX" in result.stdout  # csv quotes a newline; the others escape it
    import json

    document = json.loads(run("ports", "range", "list", "--format", "json").stdout)
    assert document[0]["description"] == HOSTILE_ECHO


def test_too_many_clients_is_the_connection_limit_error(cli, tmp_path):
    """A real server at max_connections: 'sorry, too many clients already' (53300) and 'remaining
    connection slots are reserved', each one line, exit 4, naming max_connections."""
    from pgcluster import DEBIAN_PG15, Cluster

    from minnoctl.local import bin_dir

    binaries = DEBIAN_PG15 if (DEBIAN_PG15 / "initdb").exists() else bin_dir()
    cluster = Cluster("full", binaries, tmp_path / "full", ssl=False).start()
    held = []
    try:
        with psycopg.connect(**cluster.admin_params(), autocommit=True) as conn:
            conn.execute("CREATE ROLE app LOGIN")
            conn.execute("ALTER SYSTEM SET max_connections = 4")
            conn.execute("ALTER SYSTEM SET superuser_reserved_connections = 1")
            if int(cluster.version.split(".")[0]) >= 16:
                conn.execute("ALTER SYSTEM SET reserved_connections = 0")
        restart = cluster._run([str(binaries / "pg_ctl"), "-D", str(cluster.pgdata), "-w", "restart",
                                "-l", str(cluster.pgdata / "server.log")])
        assert restart.returncode == 0, restart.stderr
        app_url = cluster.url("postgres", user="app")
        while True:  # the ordinary slots
            try:
                held.append(psycopg.connect(app_url))
            except psycopg.OperationalError:
                break
        result = cli("token", "list", env={"MINNO_DATABASE_URL": app_url})
        line = one_line(result)
        assert result.exit_code == ExitCode.UNREACHABLE, result.stderr
        assert "max_connections" in line and "reserved" in line, line
        held.append(psycopg.connect(**cluster.admin_params()))  # the superuser's reserved slot
        result = cli("token", "list", env={"MINNO_DATABASE_URL": cluster.url("postgres")})
        line = one_line(result)
        assert result.exit_code == ExitCode.UNREACHABLE, result.stderr
        assert "max_connections" in line and "too many clients" in line, line
        # and the database's own limit (a different message)
        for conn in held:
            conn.close()
        held.clear()
        with psycopg.connect(**cluster.admin_params(), autocommit=True) as conn:
            conn.execute("ALTER DATABASE pwdb CONNECTION LIMIT 1")
        held.append(psycopg.connect(cluster.url("pwdb", user="app")))
        result = cli("token", "list", env={"MINNO_DATABASE_URL": cluster.url("pwdb", user="app")})
        line = one_line(result)
        assert result.exit_code == ExitCode.UNREACHABLE, result.stderr
        assert "connection limit" in line and "pwdb" in line, line
    finally:
        for conn in held:
            conn.close()
        cluster.stop()


def test_a_refused_url_never_echoes_its_password(cli):
    """A --database-url refused for a control character is named, never echoed: it holds the
    password. Every error line is scrubbed of user:password@ as a second guard."""
    for url in ("postgresql://u:s3cretpw\t@h/db", "postgresql://u:s3cretpw@h/db?x=\x01", "host=h password=s3cretpw\n"):
        result = cli("config", "show", "--database-url", url)
        assert result.exit_code == 2, result.stderr
        assert "s3cretpw" not in result.stderr + result.stdout
        assert len(result.stderr.strip().splitlines()) == 1
