"""`cleanup --dry-run` writes nothing: it works for a role that may only SELECT, in read-only
transactions, and on a real streaming standby, and leaves every table as it was (cleanup_runs too)."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import uuid

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pgcluster import DEBIAN_PG15, free_port

APP_SCHEMAS = "nspname NOT LIKE 'pg\\_%' AND nspname NOT IN ('information_schema', 'public')"


def snapshot(url: str) -> dict[str, tuple[int, str]]:
    """Every table of minnoctl's and the modules' schemas: (row count, md5 of all rows)."""
    with psycopg.connect(url) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT format('%I.%I', n.nspname, c.relname) "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            f"WHERE c.relkind IN ('r', 'p') AND {APP_SCHEMAS} ORDER BY 1")]
        return {t: conn.execute(f"SELECT count(*), coalesce(md5(string_agg(x::text, ',' ORDER BY x::text)), '') "
                                f"FROM {t} x").fetchone() for t in tables}


def add_due_rows(url: str) -> None:
    old = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(days=200)
    with psycopg.connect(url, autocommit=True) as conn:
        cid = conn.execute("INSERT INTO chatbot.conversations (user_id, created_at, updated_at) VALUES ('u', %s, %s) "
                           "RETURNING id", (old, old)).fetchone()[0]
        conn.execute("INSERT INTO chatbot.messages (conversation_id, role, content, created_at) "
                     "VALUES (%s, 'user', 'hi', %s)", (cid, old))
        conn.execute("INSERT INTO slackbot.audit_logs (event_type, event_category, event_description, created_at) "
                     "SELECT 'e', 'c', 'd', %s FROM generate_series(1, 3)", (old,))
        # a real run before, so cleanup_runs has a row the dry run must leave alone
        conn.execute("INSERT INTO minnoctl.cleanup_runs (status, dry_run, by_user, host, pid, finished_at) "
                     "VALUES ('ok', false, 'cron', 'h', 1, now())")


@pytest.fixture
def readonly_url(migrated):
    """A login role that may only SELECT, whose every transaction is read-only."""
    role = f"ro_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(migrated, autocommit=True) as conn:
        conn.execute(f'CREATE ROLE "{role}" LOGIN')
        conn.execute(f'ALTER ROLE "{role}" SET default_transaction_read_only = on')
        for (schema,) in conn.execute(f"SELECT quote_ident(nspname) FROM pg_namespace WHERE {APP_SCHEMAS}").fetchall():
            conn.execute(f'GRANT USAGE ON SCHEMA {schema} TO "{role}"')
            conn.execute(f'GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO "{role}"')
    params = conninfo_to_dict(migrated)
    params["user"] = role
    yield make_conninfo("", **params)
    with psycopg.connect(migrated, autocommit=True) as conn:
        conn.execute(f'DROP OWNED BY "{role}"')
        conn.execute(f'ALTER ROLE "{role}" RESET ALL')
        # the role's session may still be closing on the server
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,))
    with psycopg.connect(**(conninfo_to_dict(migrated) | {"dbname": "postgres"}), autocommit=True) as conn:
        conn.execute(f'DROP ROLE IF EXISTS "{role}"')


def check_dry_run(cli, url: str) -> dict:
    result = cli("cleanup", "--dry-run", "--format", "json", env={"MINNO_DATABASE_URL": url})
    assert result.exit_code == 0, result.stderr
    assert "Traceback" not in result.stderr
    doc = json.loads(result.stdout)
    tasks = {t["task"]: t for t in doc["tasks"]}
    assert doc["dry_run"] is True and doc["run_id"] is None
    assert tasks["chatbot-conversations"]["rows"] == 1 and tasks["chatbot-conversations"]["archived"] == 2
    assert tasks["slackbot-audit-logs"]["rows"] == 3
    return doc


def test_dry_run_as_a_select_only_read_only_role_changes_nothing(cli, migrated, readonly_url):
    add_due_rows(migrated)
    before = snapshot(migrated)
    check_dry_run(cli, readonly_url)
    # --list too, and the plain dry run as the owner: still nothing written
    listed = cli("cleanup", "--list", "--format", "json", env={"MINNO_DATABASE_URL": readonly_url})
    assert listed.exit_code == 0, listed.stderr
    check_dry_run(cli, migrated)
    assert snapshot(migrated) == before


def test_dry_run_in_read_only_sessions_of_the_owner(cli, migrated):
    add_due_rows(migrated)
    before = snapshot(migrated)
    params = conninfo_to_dict(migrated) | {"options": "-c default_transaction_read_only=on"}
    check_dry_run(cli, make_conninfo("", **params))
    assert snapshot(migrated) == before
    # a real run in such a session is refused in one line, not with a traceback, and writes nothing
    real = cli("cleanup", env={"MINNO_DATABASE_URL": make_conninfo("", **params)})
    assert real.exit_code != 0 and "Traceback" not in real.stderr
    assert "read-only" in real.stderr
    assert snapshot(migrated) == before


def test_dry_run_on_a_streaming_standby(cli, pg15, tmp_path):
    """A real hot standby of the PostgreSQL 15 cluster (pg_basebackup -R), on another port."""
    from minnoctl import migrate, modules
    from minnoctl.config import load_settings
    from minnoctl.local import _allow_traverse, _service_ids

    from conftest import PG15_MODULES

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg15.url("postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
        if not conn.execute("SELECT 1 WHERE EXISTS (SELECT FROM pg_hba_file_rules WHERE 'replication' = ANY(database))"
                            ).fetchone():
            with open(pg15.pgdata / "pg_hba.conf", "a") as hba:
                hba.write("host replication all 127.0.0.1/32 trust\n")
            conn.execute("SELECT pg_reload_conf()")
    primary = pg15.url(name)
    standby_pgdata = tmp_path / "standby"
    port = free_port()
    ids = _service_ids()
    extra = {"user": ids[0], "group": ids[1], "extra_groups": [], "cwd": "/"} if ids else {}
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")} | {"LC_ALL": "C"}
    try:
        migrate.init(load_settings(env={"MINNO_DATABASE_URL": primary}), modules.parse_list(PG15_MODULES))
        add_due_rows(primary)
        before = snapshot(primary)
        if ids:
            _allow_traverse(tmp_path)
            os.chown(tmp_path, *ids)
        made = subprocess.run([str(DEBIAN_PG15 / "pg_basebackup"), "-D", str(standby_pgdata), "-R", "-X", "stream",
                               "-h", "127.0.0.1", "-p", str(pg15.port), "-U", "postgres", "-c", "fast"],
                              capture_output=True, text=True, env=env, timeout=60, **extra)
        assert made.returncode == 0, made.stderr
        with open(standby_pgdata / "postgresql.auto.conf", "a") as conf:
            conf.write(f"port = {port}\nunix_socket_directories = '{standby_pgdata}'\nhot_standby = on\n")
        started = subprocess.run([str(DEBIAN_PG15 / "pg_ctl"), "-D", str(standby_pgdata), "-l",
                                  str(standby_pgdata / "standby.log"), "-w", "-t", "30", "start"],
                                 capture_output=True, text=True, env=env, timeout=60, **extra)
        assert started.returncode == 0, started.stderr
        standby = f"postgresql://postgres@127.0.0.1:{port}/{name}"
        with psycopg.connect(standby) as conn:
            assert conn.execute("SELECT pg_is_in_recovery()").fetchone()[0] is True
        assert snapshot(standby) == before
        check_dry_run(cli, standby)
        assert snapshot(primary) == before
    finally:
        if (standby_pgdata / "postmaster.pid").exists():
            subprocess.run([str(DEBIAN_PG15 / "pg_ctl"), "-D", str(standby_pgdata), "-m", "immediate", "-w", "stop"],
                           capture_output=True, env=env, **extra)
        shutil.rmtree(standby_pgdata, ignore_errors=True)
        with psycopg.connect(pg15.url("postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
