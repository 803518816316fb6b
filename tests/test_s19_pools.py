"""Issue 19, item 4 "Pools": behind PgBouncer in transaction mode, shared with another client (round
robin over two server connections), the commands that need a server session of their own (migrate,
db init, seed, cleanup, token rotate) are refused with one line naming MINNO_DIRECT_URL, before any
change; with MINNO_DIRECT_URL they run on the server directly. Either way no advisory lock is left
stranded on a pooled server connection and no session setting leaks into the application's."""

from __future__ import annotations

import os
import threading
import time
import uuid

import psycopg
import pytest

from test_pgbouncer import MODULES, PGBOUNCER, Bouncer
from test_seed import env_for, one_error_line

NAMESPACE = 0x4D494E4E  # locks.NAMESPACE
WATCHED = ("search_path", "lock_timeout", "statement_timeout", "client_connection_check_interval",
           "idle_in_transaction_session_timeout")
PASSWORD = "s3cret-pooled-pw"


def small_pool(tmp_path_factory, pg15, mode: str, size: int, extra: str = ""):
    if not os.path.exists(PGBOUNCER):
        pytest.skip("pgbouncer is not installed (apt-get install pgbouncer)")
    bouncer = Bouncer(tmp_path_factory.mktemp(f"pgbouncer_{mode}_{size}"), pg15.port, mode)
    ini = bouncer.folder / "pgbouncer.ini"
    text = "\n".join(f"default_pool_size = {size}" if line.startswith("default_pool_size") else line
                     for line in ini.read_text().splitlines())
    ini.write_text(text + "\n" + extra)
    return bouncer.start()


@pytest.fixture(scope="module")
def shared_pool(tmp_path_factory, pg15):
    """PgBouncer in transaction mode over two server connections, handed out round robin."""
    bouncer = small_pool(tmp_path_factory, pg15, "transaction", 2, "server_round_robin = 1\n")
    yield bouncer
    bouncer.stop()


@pytest.fixture(scope="module")
def one_server_pools(tmp_path_factory, pg15):
    """A transaction pool and a session pool of one server connection each (PgBouncer's LIFO)."""
    tx = small_pool(tmp_path_factory, pg15, "transaction", 1)
    session = small_pool(tmp_path_factory, pg15, "session", 1)
    yield tx, session
    tx.stop()
    session.stop()


@pytest.fixture
def pg15_db(pg15):
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg15.url("postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield name
    with psycopg.connect(pg15.url("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class OtherClient:
    """A second application client of the pool: short transactions, all the time, so minnoctl's
    statements land on whichever server connection is free (as in production)."""

    def __init__(self, url: str):
        self.url, self.stop_flag = url, threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        with psycopg.connect(self.url, autocommit=True, prepare_threshold=None) as conn:
            while not self.stop_flag.is_set():
                conn.execute("SELECT 1")
                time.sleep(0.002)

    def __enter__(self) -> "OtherClient":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_flag.set()
        self.thread.join(10)


def stranded_locks(direct_url: str) -> list[tuple]:
    with psycopg.connect(direct_url, autocommit=True) as conn:
        return conn.execute("SELECT l.pid, l.objid, a.application_name FROM pg_locks l "
                            "LEFT JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' "
                            "AND l.classid = %s::oid", (NAMESPACE,)).fetchall()


def server_defaults(direct_url: str) -> dict[str, str]:
    with psycopg.connect(direct_url, autocommit=True) as conn:
        return {name: conn.execute(f"SHOW {name}").fetchone()[0] for name in WATCHED}


def pooled_settings(pool_url: str) -> list[dict[str, str]]:
    """What each of the pool's two server connections shows the application: two clients, each in a
    transaction, hold both at once."""
    conns = [psycopg.connect(pool_url, prepare_threshold=None) for _ in range(2)]
    try:
        seen = []
        for conn in conns:
            shown = {name: conn.execute(f"SHOW {name}").fetchone()[0] for name in WATCHED}
            shown["pid"] = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
            seen.append(shown)
        assert seen[0]["pid"] != seen[1]["pid"]
        return [{k: v for k, v in s.items() if k != "pid"} for s in seen]
    finally:
        for conn in conns:
            conn.rollback()
            conn.close()


def assert_pool_clean(shared_pool, pg15, db: str) -> None:
    assert stranded_locks(pg15.url(db)) == []
    defaults = server_defaults(pg15.url(db))
    assert pooled_settings(shared_pool.url(db)) == [defaults, defaults]


SESSION_COMMANDS = [("cleanup", "--quiet"), ("seed", "--yes"), ("token", "rotate"), ("cleanup", "--quiet"),
                    ("seed", "--yes"), ("migrate",), ("migrate", "rollback", "--steps", "1", "--yes"),
                    ("db", "init", "--modules", MODULES, "--yes")]


def test_session_commands_through_a_transaction_pool_are_refused_and_strand_nothing(
        cli, shared_pool, pg15, pg15_db, kek):
    direct = pg15.url(pg15_db)
    assert cli("db", "init", "--modules", MODULES, "--yes", env=env_for(direct)).exit_code == 0
    assert cli("seed", "--yes", env=env_for(direct, kek)).exit_code == 0
    pooled = env_for(shared_pool.url(pg15_db), kek)
    results = []
    with OtherClient(shared_pool.url(pg15_db)):
        for args in SESSION_COMMANDS:
            results.append((args, cli(*args, env=pooled)))
    # nothing left on the pooled server connections: no lock, no setting
    assert_pool_clean(shared_pool, pg15, pg15_db)
    # and a direct run afterwards is not blocked by a lock stranded there (exit 8 naming a gone holder)
    for args in (("cleanup", "--quiet"), ("seed", "--yes")):
        after = cli(*args, env=env_for(direct, kek))
        assert after.exit_code == 0, (args, after.stderr)
    for args, result in results:
        assert result.exit_code == 3, (args, result.exit_code, result.stderr)
        line = one_error_line(result)
        assert "MINNO_DIRECT_URL" in line and "transaction" in line, line
        assert f"127.0.0.1:{shared_pool.port}" in line, line
        assert result.stdout == ""


def test_db_init_through_a_transaction_pool_is_refused_before_any_change(cli, shared_pool, pg15, pg15_db, kek):
    with OtherClient(shared_pool.url(pg15_db)):
        result = cli("db", "init", "--modules", MODULES, "--yes", env=env_for(shared_pool.url(pg15_db)))
    assert_pool_clean(shared_pool, pg15, pg15_db)
    assert result.exit_code == 3, result.stderr
    assert "MINNO_DIRECT_URL" in one_error_line(result)
    with psycopg.connect(pg15.url(pg15_db)) as conn:  # nothing created
        schemas = [r[0] for r in conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%' "
            "AND nspname NOT IN ('public', 'information_schema')")]
    assert schemas == []
    # a database that does not exist yet is not created either
    missing = f"t_{uuid.uuid4().hex[:12]}"
    result = cli("db", "init", "--modules", "minno", "--yes", env=env_for(shared_pool.url(missing)))
    assert result.exit_code == 3, result.stderr
    assert "MINNO_DIRECT_URL" in one_error_line(result)
    with psycopg.connect(pg15.url("postgres")) as conn:
        assert conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (missing,)).fetchone() is None


def test_with_minno_direct_url_the_session_commands_run_on_the_server_and_leave_the_pool_clean(
        cli, shared_pool, pg15, pg15_db, kek, tmp_path):
    direct = pg15.url(pg15_db).replace("postgres@", f"postgres:{PASSWORD}@")  # trust: any password does
    env = env_for(shared_pool.url(pg15_db), kek, MINNO_DIRECT_URL=direct)
    steps = [("db", "init", "--modules", MODULES, "--yes"), ("migrate",), ("migrate", "--dry-run"),
             ("seed", "--yes"), ("token", "rotate"), ("cleanup", "--quiet"), ("seed", "--yes"),
             ("cleanup", "--quiet"), ("health", "--ready"),
             ("ports", "allocate", "--project", "odin", "--service", "direct", "--service-type", "api"),
             ("config", "show", "--format", "json")]
    outputs = []
    with OtherClient(shared_pool.url(pg15_db)):
        for args in steps:
            result = cli(*args, env=env)
            assert result.exit_code == 0, (args, result.stderr)
            outputs.append(result.stdout + result.stderr)
    assert_pool_clean(shared_pool, pg15, pg15_db)
    assert not [o for o in outputs if PASSWORD in o]
    shown = outputs[-1]
    assert "MINNO_DIRECT_URL" in shown and f"postgres:****@127.0.0.1:{pg15.port}/{pg15_db}" in shown, shown


def test_minno_direct_url_serves_the_session_commands_only(cli, shared_pool, pg15, pg15_db, kek):
    """health and ports keep the pooled URL; a session command goes to MINNO_DIRECT_URL (here a port
    nobody listens on: the error names it, its password masked)."""
    from pgcluster import free_port

    direct = pg15.url(pg15_db)
    assert cli("db", "init", "--modules", MODULES, "--yes", env=env_for(direct)).exit_code == 0
    assert cli("seed", "--yes", env=env_for(direct, kek)).exit_code == 0
    nowhere = f"postgresql://postgres:{PASSWORD}@127.0.0.1:{free_port()}/{pg15_db}"
    env = env_for(shared_pool.url(pg15_db), kek, MINNO_DIRECT_URL=nowhere)
    assert cli("health", "--ready", env=env).exit_code == 0
    port = cli("ports", "allocate", "--project", "odin", "--service", "pooled", "--service-type", "api",
               "--format", "plain", env=env)
    assert port.exit_code == 0 and port.stdout.strip().isdigit(), port.stderr
    result = cli("cleanup", "--quiet", env=env)
    assert result.exit_code == 4, result.stderr
    line = one_error_line(result)
    assert "refused" in line and "MINNO_DIRECT_URL" in line and PASSWORD not in line, line
    # MINNO_DIRECT_URL pointing at the pool itself is refused as the pool, password masked
    env = env_for(shared_pool.url(pg15_db), kek,
                  MINNO_DIRECT_URL=shared_pool.url(pg15_db).replace("postgres@", f"postgres:{PASSWORD}@"))
    result = cli("cleanup", "--quiet", env=env)
    assert result.exit_code == 3, result.stderr
    line = one_error_line(result)
    assert "MINNO_DIRECT_URL" in line and PASSWORD not in line and "****" in line, line
    assert_pool_clean(shared_pool, pg15, pg15_db)


def test_an_explicit_database_url_is_used_as_given(cli, shared_pool, pg15, pg15_db, kek):
    """--database-url names the target: MINNO_DIRECT_URL (which pairs with the environment's
    database) never redirects it; through the pool it is refused, saying so."""
    direct = pg15.url(pg15_db)
    assert cli("db", "init", "--modules", MODULES, "--yes", env=env_for(direct)).exit_code == 0
    env = env_for(direct, kek, MINNO_DIRECT_URL=direct)
    result = cli("cleanup", "--quiet", "--database-url", shared_pool.url(pg15_db), env=env)
    assert result.exit_code == 3, result.stderr
    assert "--database-url" in one_error_line(result)
    assert_pool_clean(shared_pool, pg15, pg15_db)


def test_a_one_server_transaction_pool_is_refused_and_a_one_server_session_pool_is_not(
        cli, one_server_pools, pg15, pg15_db, kek):
    """With one server connection, the probe's second client gets the transaction pool's (refused),
    and waits in vain for the session pool's, which minnoctl's own session keeps (not refused)."""
    tx, session = one_server_pools
    direct = pg15.url(pg15_db)
    assert cli("db", "init", "--modules", MODULES, "--yes", env=env_for(direct)).exit_code == 0
    refused = cli("cleanup", "--quiet", env=env_for(tx.url(pg15_db), kek))
    assert refused.exit_code == 3 and "MINNO_DIRECT_URL" in one_error_line(refused)
    for args in (("cleanup", "--quiet"), ("seed", "--yes"), ("migrate",)):
        result = cli(*args, env=env_for(session.url(pg15_db), kek))
        assert result.exit_code == 0, (args, result.stderr)
    assert stranded_locks(direct) == []


def test_the_probe_of_a_direct_connection_is_one_query_and_of_a_pool_sees_it(
        monkeypatch, one_server_pools, pg15, pg15_db):
    """A direct TCP connection is told by its own socket (no second client); a session pool passes
    and a transaction pool fails the probe."""
    from minnoctl import config, connection

    tx, session = one_server_pools
    direct = config.load_settings(pg15.url(pg15_db), env={})
    with connection.connect(direct, autocommit=True) as conn:
        with monkeypatch.context() as m:
            m.setattr(connection, "_second_opinion", lambda *a: pytest.fail("a second client for a direct server"))
            assert connection.session_is_pooled(conn, direct) is False
    for bouncer, pooled in ((tx, True), (session, False)):
        settings = config.load_settings(bouncer.url(pg15_db), env={})
        with connection.connect(settings, autocommit=True) as conn:
            assert connection.session_is_pooled(conn, settings) is pooled


def test_a_target_behind_a_transaction_pool_uses_its_direct_url(cli, shared_pool, pg15, pg15_db, kek, tmp_path):
    """A target of the targets file is never given MINNO_DIRECT_URL (that is the environment's
    database's): its own direct_url serves the session commands, health keeps the pool."""
    toml = tmp_path / "minnoctl.toml"
    toml.write_text(f'[targets.pooled]\nurl = "{shared_pool.url(pg15_db)}"\n')
    env = env_for(pg15.url("postgres"), kek, MINNO_DIRECT_URL=pg15.url("postgres"))
    with OtherClient(shared_pool.url(pg15_db)):
        refused = cli("cleanup", "--target", "pooled", env=env)
        assert refused.exit_code == 3, refused.stderr
        assert "give target pooled a direct_url" in refused.stderr and len(refused.stderr.splitlines()) == 1
        toml.write_text(f'[targets.pooled]\nurl = "{shared_pool.url(pg15_db)}"\ndirect_url = "{pg15.url(pg15_db)}"\n')
        for args in (("db", "init", "--modules", MODULES, "--yes"), ("cleanup", "--quiet"), ("health", "--ready")):
            result = cli(*args, "--target", "pooled", env=env)
            assert result.exit_code == 0, (args, result.stderr)
    assert_pool_clean(shared_pool, pg15, pg15_db)
    toml.write_text(f'[targets.pooled]\nurl = "{shared_pool.url(pg15_db)}"\n'
                    f'direct_url = "{pg15.url(pg15_db).replace("postgres@", "postgres:pw@")}"\n')
    inline = cli("cleanup", "--target", "pooled", env=env)
    assert inline.exit_code == 3 and "password written in its direct_url" in inline.stderr


def test_backup_through_a_transaction_pool_goes_to_the_direct_url_or_is_refused(cli, shared_pool, pg15, pg15_db,
                                                                                  kek, tmp_path):
    """backup create's snapshot session sets idle_in_transaction_session_timeout and pg_dump joins its
    exported snapshot: both need one server session, so backup is a session command too."""
    direct = pg15.url(pg15_db)
    assert cli("db", "init", "--modules", MODULES, "--yes", env=env_for(direct, kek)).exit_code == 0
    out = tmp_path / "b"
    out.mkdir()
    pooled = env_for(shared_pool.url(pg15_db), kek)
    with OtherClient(shared_pool.url(pg15_db)):
        refused = cli("backup", "create", "--output-dir", str(out), env=pooled)
        assert refused.exit_code == 3, refused.stdout + refused.stderr
        assert "MINNO_DIRECT_URL" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
        assert not list(out.iterdir())
        made = cli("backup", "create", "--output-dir", str(out), env={**pooled, "MINNO_DIRECT_URL": direct})
        assert made.exit_code == 0, made.stderr
        checked = cli("backup", "verify", "latest", "--output-dir", str(out), "--restore-test",
                      env={**pooled, "MINNO_DIRECT_URL": direct})
        assert checked.exit_code == 0, checked.stderr
    assert_pool_clean(shared_pool, pg15, pg15_db)
