"""Issue 19 item 3, replicas: `minnoctl health` on a streaming hot standby and on its primary.

A real pair: Debian's PostgreSQL 15 as the primary (wal_level=replica, a `replication` line in
pg_hba.conf) and a hot standby made from it by `pg_basebackup -R`, streaming over loopback. Built
once for the module, both stopped at the end.
"""

from __future__ import annotations

import json
import os
import time

import psycopg
import pytest

from conftest import PG15_MODULES, _need_pg15
from minnoctl.local import _allow_traverse, _service_ids
from pgcluster import DEBIAN_PG15, Cluster

DB = "replica_test"


@pytest.fixture(scope="session")
def pair(tmp_path_factory: pytest.TempPathFactory):
    _need_pg15()
    primary = Cluster("primary", DEBIAN_PG15, tmp_path_factory.mktemp("primary"), ssl=False).start()
    standby = Cluster("standby", DEBIAN_PG15, tmp_path_factory.mktemp("standby"), ssl=False)
    try:
        # PostgreSQL 15's defaults stream already (wal_level = replica, max_wal_senders = 10)
        with open(primary.pgdata / "pg_hba.conf", "a") as fh:
            fh.write("host replication all 127.0.0.1/32 trust\n")
        result = primary._run([str(DEBIAN_PG15 / "pg_ctl"), "-D", str(primary.pgdata), "reload"])
        assert result.returncode == 0, result.stderr
        with psycopg.connect(**primary.admin_params(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {DB}")
        ids = _service_ids()
        standby.pgdata.mkdir(mode=0o700)
        if ids:
            _allow_traverse(standby.folder)
            os.chown(standby.pgdata, *ids)
        result = standby._run([str(DEBIAN_PG15 / "pg_basebackup"), "-R", "-D", str(standby.pgdata), "-h", "127.0.0.1",
                               "-p", str(primary.port), "-U", "postgres", "-X", "stream", "-c", "fast"])
        assert result.returncode == 0, result.stderr
        with open(standby.pgdata / "postgresql.conf", "a") as fh:  # later lines win over the primary's
            fh.write(f"port = {standby.port}\nunix_socket_directories = '{standby.pgdata}'\nhot_standby = on\n")
        result = standby._run([str(DEBIAN_PG15 / "pg_ctl"), "-D", str(standby.pgdata), "-l",
                               str(standby.pgdata / "server.log"), "-w", "-t", "60", "start"])
        assert result.returncode == 0, result.stderr + (standby.pgdata / "server.log").read_text()
        yield primary, standby
    finally:
        standby.stop()
        primary.stop()


def wait_replayed(primary: Cluster, standby: Cluster, timeout: float = 60) -> None:
    with psycopg.connect(**primary.admin_params(), autocommit=True) as conn:
        target = conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
    deadline = time.monotonic() + timeout
    with psycopg.connect(**standby.admin_params(), autocommit=True) as conn:
        while time.monotonic() < deadline:
            if conn.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (target,)).fetchone()[0]:
                return
            time.sleep(0.2)
    raise AssertionError(f"the standby did not replay up to {target} in {timeout} s")


@pytest.fixture(scope="session")
def initialised(pair):
    from typer.testing import CliRunner

    from minnoctl.cli import app

    primary, standby = pair
    result = CliRunner().invoke(app, ["db", "init", "--modules", PG15_MODULES],
                                env={"MINNO_DATABASE_URL": primary.url(DB)})
    assert result.exit_code == 0, result.stdout + result.stderr
    wait_replayed(primary, standby)
    return primary, standby


def health(cli, cluster: Cluster, *args: str, env: dict[str, str] | None = None) -> dict:
    result = cli("health", "--format", "json", *args, env={"MINNO_DATABASE_URL": cluster.url(DB), **(env or {})})
    doc = json.loads(result.stdout)
    return {c["name"]: c for c in doc["checks"]}


def test_the_standby_reports_its_lag_and_receiver(cli, initialised):
    _, standby = initialised
    checks = health(cli, standby)
    lag = checks["replication_lag"]
    assert lag["status"] == "OK", lag
    assert "streaming" in lag["value"], lag
    assert lag["metrics"]["replication_lag_bytes"] == 0 and lag["metrics"]["replication_lag_s"] == 0, lag
    assert "standby" in checks["server_version"]["value"]


def test_migrations_on_the_standby_are_judged_without_migrate_advice(cli, initialised):
    _, standby = initialised
    c = health(cli, standby)["migrations"]
    assert c["status"] == "OK" and "none pending" in c["value"], c
    assert "run `minnoctl migrate`" not in c["hint"], c


def test_a_pending_migration_on_the_standby_points_at_the_primary(cli, initialised, tmp_path):
    import shutil

    from test_migrate import REPO_MIGRATIONS

    primary, standby = initialised
    copy = tmp_path / "migrations"  # the set with one migration more: pending on both
    shutil.copytree(REPO_MIGRATIONS, copy)
    (copy / "chatbot" / "0099_test_replica.sql").write_text("CREATE TABLE chatbot.replica_note (id int);\n")
    (copy / "chatbot" / "0099_test_replica.rollback.sql").write_text("DROP TABLE chatbot.replica_note;\n")
    env = {"MINNOCTL_MIGRATIONS_DIR": str(copy)}
    c = health(cli, standby, env=env)["migrations"]
    assert c["status"] == "WARNING" and "1 pending" in c["value"], c
    assert "on the primary" in c["hint"] and "--dry-run`, then" not in c["hint"], c
    ready = cli("health", "--ready", "--format", "json", env={"MINNO_DATABASE_URL": standby.url(DB), **env})
    doc = {c["name"]: c for c in json.loads(ready.stdout)["checks"]}
    assert ready.exit_code == 2, ready.stdout
    assert doc["recovery"]["status"] == "CRITICAL" and "standby" in doc["recovery"]["value"], doc
    assert "on the primary" in doc["migrations"]["hint"], doc
    on_primary = health(cli, primary, env=env)["migrations"]  # the primary is still told to migrate
    assert "`minnoctl migrate`" in on_primary["hint"] and "on the primary" not in on_primary["hint"], on_primary


def test_pausing_replay_warns(cli, initialised):
    _, standby = initialised
    with psycopg.connect(**standby.admin_params(), autocommit=True) as conn:
        conn.execute("SELECT pg_wal_replay_pause()")
        try:
            c = health(cli, standby, "--only", "replication_lag")["replication_lag"]
        finally:
            conn.execute("SELECT pg_wal_replay_resume()")
    assert c["status"] == "WARNING" and "paused" in c["value"], c


def test_a_lag_threshold_of_zero_bytes_is_judged(cli, initialised):
    primary, standby = initialised
    with psycopg.connect(**standby.admin_params(), autocommit=True) as conn:
        conn.execute("SELECT pg_wal_replay_pause()")
        try:
            with psycopg.connect(primary.url(DB), autocommit=True) as p:
                p.execute("CREATE TABLE public.lag_filler AS SELECT g FROM generate_series(1, 20000) g")
                target = p.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not conn.execute(
                    "SELECT pg_last_wal_receive_lsn() >= %s::pg_lsn", (target,)).fetchone()[0]:
                time.sleep(0.2)
            c = health(cli, standby, "--only", "replication_lag", "-t", "replication-lag-bytes-critical=1kB")
            c = c["replication_lag"]
        finally:
            conn.execute("SELECT pg_wal_replay_resume()")
    assert c["status"] == "CRITICAL", c
    assert c["metrics"]["replication_lag_bytes"] > 1024, c
    with psycopg.connect(primary.url(DB), autocommit=True) as p:
        p.execute("DROP TABLE public.lag_filler")
    wait_replayed(primary, standby)


def test_the_primary_lists_its_standby(cli, initialised):
    primary, _ = initialised
    checks = health(cli, primary)
    c = checks["standbys"]
    assert c["status"] == "OK", c
    assert "1 standby" in c["value"] and "streaming" in c["value"] and "async" in c["value"], c
    assert c["metrics"]["standbys"] == 1, c
    lag = checks["replication_lag"]  # does not apply: skipped, as a check of a module not installed is
    assert lag["status"] == "OK" and "skipped: not a standby" in lag["value"], lag
    assert checks["dead_tuples"]["status"] == "OK"  # the primary judges its own tables
    expected = health(cli, primary, "--only", "standbys", "-t", "expected-standbys=2")["standbys"]
    assert expected["status"] == "CRITICAL" and "expected 2" in expected["value"], expected


def test_table_statistics_on_the_standby_are_not_a_plain_ok(cli, initialised):
    _, standby = initialised
    checks = health(cli, standby)
    for name in ("dead_tuples", "vacuum_analyze"):
        c = checks[name]
        assert c["status"] != "OK", c
        assert "on a standby" in c["value"] and "run health on the primary" in c["value"], c
    c = health(cli, standby)["standbys"]
    assert c["status"] == "OK" and "no standbys" in c["value"], c
