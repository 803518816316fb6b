"""minnoctl through a real PgBouncer in front of PostgreSQL 15: everything in session pooling;
`health`, `health --ready` and `ports` in transaction pooling, leaving nothing on the pooled server
connection that the application gets next."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import psycopg
import pytest

from minnoctl.local import _allow_traverse, _service_ids
from pgcluster import free_port
from test_seed import env_for

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
MODULES = "minno,chatbot,assistant,supervisor,slackbot"


class Bouncer:
    def __init__(self, folder: Path, backend_port: int, mode: str):
        self.folder, self.mode, self.port = folder, mode, free_port()
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "users.txt").write_text('"postgres" ""\n')
        ids = _service_ids()
        (folder / "pgbouncer.ini").write_text("\n".join([
            "[databases]",
            f"* = host=127.0.0.1 port={backend_port}",
            "[pgbouncer]",
            "listen_addr = 127.0.0.1",
            f"listen_port = {self.port}",
            f"unix_socket_dir = {folder}",
            "auth_type = trust",
            f"auth_file = {folder / 'users.txt'}",
            f"pool_mode = {mode}",
            # transaction pooling gets one server connection, so what one client leaves the next one
            # gets; session pooling needs two: a backup's pg_dump joins minnoctl's exported snapshot
            f"default_pool_size = {1 if mode == 'transaction' else 4}",
            "query_wait_timeout = 20",
            "max_client_conn = 50",
            f"logfile = {folder / 'pgbouncer.log'}",
            f"pidfile = {folder / 'pgbouncer.pid'}",
            *([f"user = {__import__('pwd').getpwuid(ids[0]).pw_name}"] if ids else []),
        ]) + "\n")
        if ids:
            _allow_traverse(folder)
            for path in (folder, *folder.iterdir()):
                os.chown(path, *ids)

    def start(self) -> "Bouncer":
        subprocess.run([PGBOUNCER, "-d", str(self.folder / "pgbouncer.ini")], check=True, capture_output=True)
        deadline = time.monotonic() + 10
        while True:
            try:
                psycopg.connect(self.url("postgres"), prepare_threshold=None).close()
                return self
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise AssertionError((self.folder / "pgbouncer.log").read_text()) from None
                time.sleep(0.1)

    def url(self, dbname: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def stop(self) -> None:
        pid = (self.folder / "pgbouncer.pid").read_text().strip()
        subprocess.run(["kill", pid], check=False)


def _bouncer(tmp_path_factory, pg15, mode: str):
    if not os.path.exists(PGBOUNCER):
        if os.environ.get("CI"):
            pytest.fail("pgbouncer is missing in CI: .ci/run must install it")
        pytest.skip("pgbouncer is not installed (apt-get install pgbouncer)")
    bouncer = Bouncer(tmp_path_factory.mktemp(f"pgbouncer_{mode}"), pg15.port, mode).start()
    return bouncer


@pytest.fixture(scope="module")
def session_pool(tmp_path_factory, pg15):
    bouncer = _bouncer(tmp_path_factory, pg15, "session")
    yield bouncer
    bouncer.stop()


@pytest.fixture(scope="module")
def transaction_pool(tmp_path_factory, pg15):
    bouncer = _bouncer(tmp_path_factory, pg15, "transaction")
    yield bouncer
    bouncer.stop()


@pytest.fixture
def pg15_db(pg15):
    import uuid

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg15.url("postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield name
    with psycopg.connect(pg15.url("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_every_job_through_pgbouncer_in_session_pooling(cli, session_pool, pg15_db, kek, tmp_path):
    env = env_for(session_pool.url(pg15_db), kek)
    steps = [
        ("db", "init", "--modules", MODULES, "--yes"),
        ("migrate", "--dry-run"),
        ("migrate", "verify"),
        ("seed", "--yes"),
        ("ports", "allocate", "--project", "odin", "--service", "bouncer", "--service-type", "api"),
        ("token", "rotate"),
        ("cleanup", "--quiet"),
        ("backup", "create", "--output-dir", str(tmp_path)),
        ("backup", "verify", "--output-dir", str(tmp_path), "--restore-test", "latest"),
        ("health", "--ready"),
    ]
    for args in steps:
        result = cli(*args, env=env)
        assert result.exit_code == 0, (args, result.stderr)
    result = cli("health", "--format", "json", env=env)
    doc = json.loads(result.stdout)
    failed = [c for c in doc["checks"] if c["value"].startswith("could not check")]
    assert not failed, failed
    assert {c["name"]: c["status"] for c in doc["checks"]}["migrations"] == "OK"


def test_health_and_ports_through_transaction_pooling_leave_the_server_connection_as_it_was(
        cli, transaction_pool, pg15, pg15_db, kek):
    direct = pg15.url(pg15_db)
    assert cli("db", "init", "--modules", MODULES, "--yes", env=env_for(direct)).exit_code == 0
    assert cli("seed", "--yes", env=env_for(direct, kek)).exit_code == 0
    env = env_for(transaction_pool.url(pg15_db))
    ready = cli("health", "--ready", env=env)
    assert ready.exit_code == 0, ready.stderr
    result = cli("health", "--format", "json", "--skip", "slow_queries", env=env)
    doc = json.loads(result.stdout)
    assert not [c for c in doc["checks"] if c["value"].startswith("could not check")], doc
    assert {c["name"]: c["status"] for c in doc["checks"]}["migrations"] == "OK"
    port = cli("ports", "allocate", "--project", "odin", "--service", "tx", "--service-type", "api",
               "--format", "plain", env=env)
    assert port.exit_code == 0 and port.stdout.strip().isdigit(), port.stderr
    again = cli("ports", "allocate", "--project", "odin", "--service", "tx", "--service-type", "api",
                "--format", "plain", env=env)
    assert again.stdout == port.stdout  # idempotent through the pool too
    # the one pooled server connection the application gets next has the server's defaults
    with psycopg.connect(transaction_pool.url(pg15_db), autocommit=True, prepare_threshold=None) as app:
        settings = {name: app.execute(f"SHOW {name}").fetchone()[0]
                    for name in ("statement_timeout", "lock_timeout", "transaction_read_only",
                                 "default_transaction_read_only")}
        assert settings == {"statement_timeout": "0", "lock_timeout": "0", "transaction_read_only": "off",
                            "default_transaction_read_only": "off"}
        app.execute("CREATE TABLE public.app_writes (x int)")  # and it can write
