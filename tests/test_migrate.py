"""`db init` and `migrate`: idempotence, dry runs, rollback, drift, failures, locking, kill -9,
non-transactional migrations, --force, missing extensions — against real servers and processes."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from conftest import PG15_MODULES, modules_for
from minnoctl.errors import ExitCode

REPO_MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
MODULE_SCHEMAS = ("minno", "chatbot", "assistant", "supervisor", "knowledge", "slackbot")


def schemas(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        return {r[0] for r in conn.execute("SELECT nspname FROM pg_namespace")}


def catalog_size(url: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT count(*) FROM pg_class").fetchone()[0]


@pytest.fixture
def set_copy(tmp_path: Path) -> Path:
    """A copy of the migration set the test may edit (MINNOCTL_MIGRATIONS_DIR points at it)."""
    copy = tmp_path / "migrations"
    shutil.copytree(REPO_MIGRATIONS, copy)
    return copy


def env_for(url: str, set_dir: Path | None = None) -> dict[str, str]:
    env = {"MINNO_DATABASE_URL": url}
    if set_dir is not None:
        env["MINNOCTL_MIGRATIONS_DIR"] = str(set_dir)
    return env


def init_args(url: str) -> list[str]:
    from conftest import Target

    mods = modules_for(Target("x", url))
    return ["db", "init", "--yes"] + (["--modules", mods] if mods else [])


def test_init_creates_everything_and_a_second_run_says_there_is_nothing_to_do(cli, database):
    first = cli(*init_args(database), env=env_for(database))
    assert first.exit_code == 0, first.stderr
    assert "minno/0001_core" in first.stdout
    assert {"minno", "chatbot", "assistant", "supervisor", "slackbot", "minnoctl"} <= schemas(database)
    second = cli(*init_args(database), env=env_for(database))
    assert second.exit_code == 0
    assert second.stdout == ""
    assert "nothing to do" in second.stderr


def test_verbose_lists_every_object_created(cli, database):
    result = cli(*init_args(database), "--verbose", "--format", "json", env=env_for(database))
    assert result.exit_code == 0, result.stderr
    import json

    doc = json.loads(result.stdout)
    created = {(o["kind"], o["name"]) for o in doc["created"]}
    assert ("table", "minno.workspaces") in created
    assert ("trigger", "chatbot.update_conversations_updated_at") in created or any(
        k == "trigger" for k, _ in created)
    assert ("schema", "minnoctl") in created


def test_dry_run_prints_the_plan_changes_nothing_and_exit_code_says_pending(cli, database):
    before = catalog_size(database)
    result = cli("migrate", "--dry-run", "--exit-code", "--format", "plain", env=env_for(database))
    assert result.exit_code == ExitCode.PENDING, result.stderr
    assert "minno/0001_core" in result.stdout and "CREATE TABLE" in result.stdout
    assert catalog_size(database) == before
    assert "minnoctl" not in schemas(database)
    as_json = cli("migrate", "--dry-run", "--format", "json", env=env_for(database))
    import json

    pending = json.loads(as_json.stdout)["pending"]
    assert pending[0]["id"] == "minno/0001_core" and pending[0]["transactional"] is True
    assert "sql" in pending[0]


def test_dry_run_on_an_up_to_date_database_exits_zero(cli, migrated):
    result = cli("migrate", "--dry-run", "--exit-code", env=env_for(migrated))
    assert result.exit_code == 0, result.stderr
    assert "up to date" in result.stderr and result.stdout == ""


def test_exit_code_needs_dry_run(cli, migrated):
    result = cli("migrate", "--exit-code", env=env_for(migrated))
    assert result.exit_code == ExitCode.USAGE


def test_status_lists_applied_and_pending_with_who_and_when(cli, database):
    cli("db", "init", "--modules", "chatbot", env=env_for(database))
    result = cli("migrate", "status", "--format", "json", env=env_for(database))
    import json

    rows = {r["id"]: r for r in json.loads(result.stdout)}
    assert rows["chatbot/0001_conversations"]["state"] == "applied"
    assert rows["chatbot/0001_conversations"]["applied_by"]
    assert rows["chatbot/0001_conversations"]["applied_at"]
    assert rows["slackbot/0001_tables"]["state"] == "pending"
    # without --modules, migrate keeps to the installed modules
    again = cli("migrate", env=env_for(database))
    assert again.exit_code == 0 and "up to date" in again.stderr


def test_rolling_everything_back_leaves_no_module_schema_and_init_works_again(cli, migrated):
    result = cli("migrate", "rollback", "--steps", "1000", "--yes", env=env_for(migrated))
    assert result.exit_code == 0, result.stderr
    assert not set(MODULE_SCHEMAS) & schemas(migrated)
    again = cli(*init_args(migrated), env=env_for(migrated))
    assert again.exit_code == 0, again.stderr
    assert {"minno", "chatbot", "slackbot"} <= schemas(migrated)


def test_rollback_to_keeps_that_migration(cli, migrated):
    result = cli("migrate", "rollback", "--to", "minno/0001_core", "--yes", env=env_for(migrated))
    assert result.exit_code == 0, result.stderr
    assert schemas(migrated) & set(MODULE_SCHEMAS) == {"minno"}


def test_rollback_without_yes_and_without_a_terminal_refuses(cli, migrated):
    result = cli("migrate", "rollback", env=env_for(migrated))
    assert result.exit_code == ExitCode.NOT_CONFIRMED
    assert "--yes" in result.stderr
    assert "slackbot" in schemas(migrated)


def test_drift_edited_missing_and_renamed_are_reported_and_block_migrate(cli, database, set_copy):
    env = env_for(database, set_copy)
    assert cli("db", "init", "--modules", "chatbot", env=env).exit_code == 0
    first = sorted((set_copy / "chatbot").glob("0001_*.sql"))[0]
    first.write_text(first.read_text() + "\n-- an edit after it was applied\n")
    verify = cli("migrate", "verify", "--format", "json", env=env)
    assert verify.exit_code == ExitCode.DRIFT
    assert '"edited"' in verify.stdout
    refused = cli("migrate", "--modules", "slackbot", env=env)
    assert refused.exit_code == ExitCode.DRIFT
    assert "migrate verify" in refused.stderr
    assert "slackbot" not in schemas(database)
    allowed = cli("migrate", "--modules", "slackbot", "--allow-drift", env=env)
    assert allowed.exit_code == 0, allowed.stderr
    # rename the minno migration: the record no longer matches a file, but its content does
    core = set_copy / "minno" / "0001_core.sql"
    core.rename(set_copy / "minno" / "0001_renamed_core.sql")
    (set_copy / "minno" / "0001_core.rollback.sql").rename(set_copy / "minno" / "0001_renamed_core.rollback.sql")
    verify = cli("migrate", "verify", env=env)
    assert "renamed" in verify.stdout and "minno/0001_renamed_core" in verify.stdout
    shutil.rmtree(set_copy / "slackbot")
    verify = cli("migrate", "verify", env=env)
    assert "missing" in verify.stdout


def test_a_failed_migration_leaves_the_database_as_before_and_names_file_and_statement(cli, database, set_copy):
    env = env_for(database, set_copy)
    assert cli("db", "init", "--modules", "chatbot", env=env).exit_code == 0
    (set_copy / "chatbot" / "0099_broken.sql").write_text(
        "-- creates a table, then fails\nCREATE TABLE half_done (id int);\nINSERT INTO no_such_table VALUES (1);\n")
    (set_copy / "chatbot" / "0099_broken.rollback.sql").write_text("DROP TABLE half_done;\n")
    result = cli("migrate", env=env)
    assert result.exit_code == ExitCode.MIGRATION_FAILED
    line = result.stderr.strip().splitlines()[-1]
    assert "chatbot/0099_broken" in line and "statement 2 of 0099_broken.sql" in line
    assert "INSERT INTO no_such_table" in line and "as it was before" in line
    with psycopg.connect(database) as conn:
        assert conn.execute("SELECT to_regclass('chatbot.half_done')").fetchone()[0] is None
        recorded = conn.execute("SELECT count(*) FROM minnoctl.migrations WHERE id LIKE '%broken'").fetchone()[0]
        assert recorded == 0
    assert "Traceback" not in result.stderr


def test_a_non_transactional_concurrent_index_migration_applies_and_rolls_back(cli, database, set_copy):
    env = env_for(database, set_copy)
    assert cli("db", "init", "--modules", "chatbot", env=env).exit_code == 0
    (set_copy / "chatbot" / "0099_concurrent.sql").write_text(
        "-- transactional: false\n-- an index built without blocking writes\n"
        "DROP INDEX CONCURRENTLY IF EXISTS idx_messages_created_at_cc;\n"
        "CREATE INDEX CONCURRENTLY idx_messages_created_at_cc ON messages (created_at);\n")
    (set_copy / "chatbot" / "0099_concurrent.rollback.sql").write_text(
        "-- transactional: false\nDROP INDEX CONCURRENTLY IF EXISTS idx_messages_created_at_cc;\n")
    result = cli("migrate", "--format", "json", env=env)
    assert result.exit_code == 0, result.stderr
    with psycopg.connect(database) as conn:
        valid = conn.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = "
                             "'chatbot.idx_messages_created_at_cc'::regclass").fetchone()[0]
        assert valid is True
    back = cli("migrate", "rollback", "--yes", env=env)
    assert back.exit_code == 0, back.stderr
    with psycopg.connect(database) as conn:
        assert conn.execute("SELECT to_regclass('chatbot.idx_messages_created_at_cc')").fetchone()[0] is None


def _sleeping_set(set_copy: Path, seconds: int) -> None:
    (set_copy / "chatbot" / "0099_sleep.sql").write_text(
        f"-- a slow migration\nCREATE TABLE slow_marker (id int);\nSELECT pg_sleep({seconds});\n")
    (set_copy / "chatbot" / "0099_sleep.rollback.sql").write_text("DROP TABLE slow_marker;\n")


def _spawn_migrate(url: str, set_copy: Path, *args: str) -> subprocess.Popen:
    env = dict(os.environ, **env_for(url, set_copy))
    return subprocess.Popen([sys.executable, "-m", "minnoctl", "migrate", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_for_sleep(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            # the migration's file is one query: match the sleep anywhere in it, not in this poll
            if conn.execute("SELECT 1 FROM pg_stat_activity WHERE query LIKE '%%pg_sleep(%%' AND state = 'active' "
                            "AND pid <> pg_backend_pid() AND datname = current_database()").fetchone():
                return
            time.sleep(0.05)
    raise AssertionError("the slow migration never started")


def test_two_migrates_at_once_one_applies_the_other_reports_the_lock(database, set_copy, run_minnoctl):
    env = env_for(database, set_copy)
    assert run_minnoctl("db", "init", "--modules", "chatbot", env=env).returncode == 0
    _sleeping_set(set_copy, 3)
    first = _spawn_migrate(database, set_copy)
    _wait_for_sleep(database)
    second = run_minnoctl("migrate", "--lock-timeout", "0.5", env=env)
    assert second.returncode == ExitCode.LOCK_HELD
    line = second.stderr.strip().splitlines()[-1]
    assert "minnoctl migrate pid=" in line and "since" in line
    out, err = first.communicate(timeout=60)
    assert first.returncode == 0, err
    with psycopg.connect(database) as conn:
        assert conn.execute(
            "SELECT count(*) FROM minnoctl.migrations WHERE id = 'chatbot/0099_sleep'").fetchone()[0] == 1


def test_status_and_dry_run_take_no_lock(database, set_copy, run_minnoctl):
    env = env_for(database, set_copy)
    assert run_minnoctl("db", "init", "--modules", "chatbot", env=env).returncode == 0
    _sleeping_set(set_copy, 3)
    first = _spawn_migrate(database, set_copy)
    try:
        _wait_for_sleep(database)
        started = time.monotonic()
        assert run_minnoctl("migrate", "status", env=env).returncode == 0
        assert run_minnoctl("migrate", "--dry-run", env=env).returncode == 0
        assert time.monotonic() - started < 2.5  # neither waited for the 3 s migration
    finally:
        first.communicate(timeout=60)


def test_kill_9_during_a_migration_then_a_new_migrate_completes(database, set_copy, run_minnoctl):
    env = env_for(database, set_copy)
    assert run_minnoctl("db", "init", "--modules", "chatbot", env=env).returncode == 0
    _sleeping_set(set_copy, 30)
    victim = _spawn_migrate(database, set_copy)
    _wait_for_sleep(database)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    _sleeping_set(set_copy, 0)  # the same migration, no longer slow (an edit of a pending file is no drift)
    started = time.monotonic()
    result = run_minnoctl("migrate", "--lock-timeout", "20", env=env)
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 15  # not held up for the killed run's 30 s
    with psycopg.connect(database) as conn:
        assert conn.execute(
            "SELECT count(*) FROM minnoctl.migrations WHERE id = 'chatbot/0099_sleep'").fetchone()[0] == 1
        assert conn.execute("SELECT to_regclass('chatbot.slow_marker')").fetchone()[0] is not None


def test_force_drops_only_minnoctls_schemas(cli, migrated):
    with psycopg.connect(migrated, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA app_private")
        conn.execute("CREATE TABLE app_private.keep_me (id int)")
        conn.execute("CREATE TABLE public.keep_me_too (id int)")
        conn.execute("INSERT INTO minno.workspaces (slack_team_id, slack_team_name) VALUES ('T1', 'one')")
    refused = cli("db", "init", "--force", env=env_for(migrated))
    assert refused.exit_code == ExitCode.NOT_CONFIRMED
    with psycopg.connect(migrated) as conn:
        assert conn.execute("SELECT count(*) FROM minno.workspaces").fetchone()[0] == 1
    args = init_args(migrated) + ["--force"]
    result = cli(*args, env=env_for(migrated))
    assert result.exit_code == 0, result.stderr
    with psycopg.connect(migrated) as conn:
        assert conn.execute("SELECT count(*) FROM minno.workspaces").fetchone()[0] == 0
        assert conn.execute("SELECT to_regclass('app_private.keep_me')").fetchone()[0] is not None
        assert conn.execute("SELECT to_regclass('public.keep_me_too')").fetchone()[0] is not None


def test_knowledge_without_pgvector_stops_before_changing_anything(cli, pg15_novector):
    pg15 = pg15_novector
    import uuid

    name = f"nov_{uuid.uuid4().hex[:8]}"
    url = pg15.url(name)
    result = cli("db", "init", env=env_for(url))  # the database does not exist yet: it is not created either
    assert result.exit_code == ExitCode.EXTENSION
    line = result.stderr.strip().splitlines()[-1]
    assert "'vector'" in line and "knowledge" in line and "--modules" in line and "nothing was changed" in line
    with psycopg.connect(pg15.url("postgres")) as conn:
        assert conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None
    with psycopg.connect(pg15.url("postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    existing = cli("db", "init", env=env_for(url))  # an existing database is left untouched too
    assert existing.exit_code == ExitCode.EXTENSION
    assert not (set(MODULE_SCHEMAS) | {"minnoctl"}) & schemas(url)
    ok = cli("db", "init", "--modules", PG15_MODULES, env=env_for(url))
    assert ok.exit_code == 0, ok.stderr
    assert "knowledge" not in schemas(url)


def test_init_creates_the_database_when_the_role_may(cli, server):
    import uuid

    url = server.url(f"new_{uuid.uuid4().hex[:8]}")
    result = cli("db", "init", "--modules", "minno", env=env_for(url))
    assert result.exit_code == 0, result.stderr
    assert "minno" in schemas(url)


def test_unknown_module_is_a_usage_error(cli, database):
    result = cli("db", "init", "--modules", "minno,nope", env=env_for(database))
    assert result.exit_code == ExitCode.USAGE
    assert "unknown module 'nope'" in result.stderr
    assert "minnoctl" not in schemas(database)


def test_migrate_new_writes_the_next_numbered_pair(cli, set_copy):
    result = cli("migrate", "new", "Add user index!", "--module", "chatbot",
                 env={"MINNOCTL_MIGRATIONS_DIR": str(set_copy)})
    assert result.exit_code == 0, result.stderr
    forward, back = (Path(p) for p in result.stdout.split())
    numbers = sorted(int(p.name[:4]) for p in (set_copy / "chatbot").glob("*.sql") if ".rollback" not in p.name)
    assert forward.name == f"{numbers[-1]:04d}_add_user_index.sql" and forward.exists()
    assert back.name == forward.name.replace(".sql", ".rollback.sql") and back.exists()
    bad = cli("migrate", "new", "x", "--module", "nope", env={"MINNOCTL_MIGRATIONS_DIR": str(set_copy)})
    assert bad.exit_code == ExitCode.USAGE


def test_init_says_so_when_the_role_may_not_create_the_database(cli, pg15):
    from pgcluster import PASSWORD

    url = pg15.url("not_there_yet", "pwuser", PASSWORD)  # pwuser has no CREATEDB
    result = cli("db", "init", "--modules", "minno", env=env_for(url))
    assert result.exit_code == ExitCode.NO_DATABASE
    line = result.stderr.strip().splitlines()[-1]
    assert "may not create it" in line and "not_there_yet" in line
    assert PASSWORD not in result.stderr
