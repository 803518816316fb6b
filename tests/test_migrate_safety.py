"""Issue 15 for `db init` and `migrate`, with real processes on both servers: the production guard on
db init --force, migrate rollback and lifting a production mark; --force that drops nothing outside
minnoctl's schemas; DDL that never stalls the application (lock timeout, retries, the blocker named);
concurrent db init of a new database; `migrate new` names; lock messages that name real options."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from collections.abc import Iterator

import psycopg
import pytest

from minnoctl import locks
from minnoctl.errors import ExitCode
import test_migrate

set_copy = test_migrate.set_copy  # the fixture: a copy of the migration set the test may edit


def env_for(url: str, set_dir: Path | None = None, **extra: str) -> dict[str, str]:
    env = {"MINNO_DATABASE_URL": url, **extra}
    if set_dir is not None:
        env["MINNOCTL_MIGRATIONS_DIR"] = str(set_dir)
    return env


def one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = [ln for ln in stderr.splitlines() if ln.startswith("minnoctl: error")]
    assert len(lines) == 1, stderr
    return lines[0]


def installed_modules(url: str) -> str:
    with psycopg.connect(url) as conn:
        return ",".join(r[0] for r in conn.execute("SELECT DISTINCT module FROM minnoctl.migrations"))


def workspace_rows(url: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT count(*) FROM minno.workspaces").fetchone()[0]


def applied_count(url: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT count(*) FROM minnoctl.migrations").fetchone()[0]


# ---------------------------------------------------------------------------------------------
# 1. the production guard


def test_production_guard_on_init_force_rollback_and_lifting_the_mark(migrated, run_minnoctl):
    mods = ["--modules", installed_modules(migrated)]
    env = env_for(migrated)
    with psycopg.connect(migrated, autocommit=True) as conn:
        conn.execute("INSERT INTO minno.workspaces (slack_team_id, slack_team_name) VALUES ('T1', 'one')")
    marked = run_minnoctl("db", "init", *mods, "--environment", "prod", env=env)
    assert marked.returncode == 0, marked.stderr
    applied = applied_count(migrated)
    for args in (["db", "init", *mods, "--force", "--yes"], ["migrate", "rollback", "--yes"],
                 ["db", "init", *mods, "--environment", "staging", "--yes"]):
        refused = run_minnoctl(*args, env=env)
        assert refused.returncode == ExitCode.PRODUCTION, (args, refused.stderr)
        line = one_error_line(refused.stderr)
        assert "production" in line and "--force-production" in line
        assert workspace_rows(migrated) == 1 and applied_count(migrated) == applied
    with psycopg.connect(migrated) as conn:
        assert conn.execute("SELECT value FROM minnoctl.settings WHERE name = 'environment'").fetchone()[0] == \
            "production"
    # the variables of this machine count too, on a database that is not marked
    lifted = run_minnoctl("db", "init", *mods, "--environment", "staging", "--force-production", "--yes", env=env)
    assert lifted.returncode == 0, lifted.stderr
    for var, args in (("MINNO_ENV", ["db", "init", *mods, "--force", "--yes"]),
                      ("APP_ENV", ["migrate", "rollback", "--yes"]),
                      ("NODE_ENV", ["db", "init", *mods, "--force", "--yes"])):
        refused = run_minnoctl(*args, env=env_for(migrated, **{var: "production"}))
        assert refused.returncode == ExitCode.PRODUCTION, (var, args, refused.stderr)
        assert f"{var}=production" in one_error_line(refused.stderr)
    assert workspace_rows(migrated) == 1 and applied_count(migrated) == applied
    # with the override and --yes a script goes on; without --yes it still asks (no terminal: exit 11)
    prod = env_for(migrated, MINNO_ENV="production")
    assert run_minnoctl("migrate", "rollback", "--force-production", env=prod).returncode == ExitCode.NOT_CONFIRMED
    back = run_minnoctl("migrate", "rollback", "--force-production", "--yes", env=prod)
    assert back.returncode == 0, back.stderr
    assert applied_count(migrated) == applied - 1
    again = run_minnoctl("db", "init", *mods, "--force", "--force-production", "--yes", env=prod)
    assert again.returncode == 0, again.stderr
    assert workspace_rows(migrated) == 0 and applied_count(migrated) == applied


def test_a_new_database_under_a_production_variable_is_guarded_too(any_server, run_minnoctl):
    url = any_server.url(f"newprod_{uuid.uuid4().hex[:8]}")
    try:
        refused = run_minnoctl("db", "init", "--modules", "minno", "--force", "--yes",
                               env=env_for(url, NODE_ENV="production"))
        assert refused.returncode == ExitCode.PRODUCTION, refused.stderr
        with psycopg.connect(any_server.admin_url) as conn:
            assert conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (_name(url),)).fetchone() is None
    finally:
        _drop(any_server, url)


# ---------------------------------------------------------------------------------------------
# 5. --force drops nothing outside minnoctl's schemas


def test_force_refuses_when_objects_outside_depend_on_minnoctls_schemas(migrated, run_minnoctl):
    mods = ["--modules", installed_modules(migrated)]
    with psycopg.connect(migrated, autocommit=True) as conn:
        conn.execute("CREATE VIEW public.team_names AS SELECT slack_team_name FROM minno.workspaces")
        conn.execute("CREATE TABLE public.notes (id int, conversation uuid REFERENCES chatbot.conversations (id), "
                     "body text)")
        conn.execute("CREATE SEQUENCE minno.extra_numbers")
        conn.execute("CREATE TABLE public.numbered (n bigint DEFAULT nextval('minno.extra_numbers'))")
        conn.execute("CREATE FUNCTION public.first_team() RETURNS minno.workspaces LANGUAGE sql "
                     "AS 'SELECT * FROM minno.workspaces LIMIT 1'")
        conn.execute("CREATE TABLE public.standalone (id int)")
        conn.execute("INSERT INTO minno.workspaces (slack_team_id, slack_team_name) VALUES ('T1', 'one')")
    applied = applied_count(migrated)
    refused = run_minnoctl("db", "init", *mods, "--force", "--yes", env=env_for(migrated))
    assert refused.returncode == ExitCode.FAILURE, refused.stderr
    line = one_error_line(refused.stderr)
    for phrase in ("view public.team_names", "public.notes", "public.numbered", "public.first_team", "--cascade"):
        assert phrase in line, (phrase, line)
    assert "standalone" not in line
    assert workspace_rows(migrated) == 1 and applied_count(migrated) == applied
    with psycopg.connect(migrated) as conn:
        assert conn.execute("SELECT count(*) FROM public.team_names").fetchone()[0] == 1
        assert conn.execute("SELECT count(*) FROM pg_constraint WHERE conrelid = 'public.notes'::regclass "
                            "AND contype = 'f'").fetchone()[0] == 1
    cascaded = run_minnoctl("db", "init", *mods, "--force", "--cascade", "--yes", env=env_for(migrated))
    assert cascaded.returncode == 0, cascaded.stderr
    assert "view public.team_names" in cascaded.stderr  # it says what else it dropped
    with psycopg.connect(migrated) as conn:
        assert conn.execute("SELECT to_regclass('public.team_names')").fetchone()[0] is None
        assert conn.execute("SELECT count(*) FROM pg_constraint WHERE conrelid = 'public.notes'::regclass "
                            "AND contype = 'f'").fetchone()[0] == 0
        assert conn.execute("SELECT to_regclass('public.standalone')").fetchone()[0] is not None
        assert conn.execute("SELECT to_regclass('public.notes')").fetchone()[0] is not None
    assert workspace_rows(migrated) == 0 and applied_count(migrated) == applied


# ---------------------------------------------------------------------------------------------
# 6. DDL never stalls the application


def _alter_set(set_copy: Path) -> None:
    (set_copy / "chatbot" / "0099_add_topic.sql").write_text(
        "-- adds a column\nALTER TABLE conversations ADD COLUMN topic text;\n")
    (set_copy / "chatbot" / "0099_add_topic.rollback.sql").write_text("ALTER TABLE conversations DROP COLUMN topic;\n")


@contextmanager
def _migrate(url: str, set_copy: Path, *args: str) -> Iterator[subprocess.Popen]:
    """`minnoctl migrate ARGS` as a real process, killed if the test ends before it does."""
    proc = subprocess.Popen([sys.executable, "-m", "minnoctl", "migrate", *args],
                            env=dict(os.environ, **env_for(url, set_copy)), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _wait_until_waiting(url: str, proc: subprocess.Popen, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"migrate ended ({proc.returncode}) before it waited: {proc.communicate()}")
            if conn.execute("SELECT 1 FROM pg_stat_activity WHERE application_name LIKE 'minnoctl migrate%%' "
                            "AND wait_event_type = 'Lock' AND datname = current_database()").fetchone():
                return
            time.sleep(0.02)
    raise AssertionError("migrate never waited for the lock")


def test_a_blocked_migration_never_stalls_readers_and_names_the_blocker(migrated, set_copy, run_minnoctl):
    _alter_set(set_copy)
    # session A: a reader holding its lock in an open transaction
    with psycopg.connect(migrated) as reader:
        reader.execute("LOCK TABLE chatbot.conversations IN ACCESS SHARE MODE")
        blocker_pid = reader.info.backend_pid
        with _migrate(migrated, set_copy, "--ddl-lock-timeout", "0.5") as migrate:
            _wait_until_waiting(migrated, migrate)
            # session C: the application reads the table while migrate waits for its ACCESS EXCLUSIVE lock
            with psycopg.connect(migrated, autocommit=True) as app:
                app.execute("SET statement_timeout = '5s'")
                started = time.monotonic()
                app.execute("SELECT count(*) FROM chatbot.conversations").fetchone()
                waited = time.monotonic() - started
            assert waited < 1.5, f"the application waited {waited:.1f} s behind migrate"
            out, err = migrate.communicate(timeout=60)
            assert migrate.returncode == ExitCode.MIGRATION_FAILED, err
            line = one_error_line(err)
            assert f"pid {blocker_pid}" in line and "LOCK TABLE chatbot.conversations" in line
            assert "chatbot/0099_add_topic" in line
    with psycopg.connect(migrated) as conn:
        assert conn.execute("SELECT count(*) FROM information_schema.columns WHERE table_schema = 'chatbot' "
                            "AND table_name = 'conversations' AND column_name = 'topic'").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM minnoctl.migrations WHERE id = 'chatbot/0099_add_topic'"
                            ).fetchone()[0] == 0
    result = run_minnoctl("migrate", "--ddl-lock-timeout", "0.5", env=env_for(migrated, set_copy))
    assert result.returncode == 0, result.stderr
    with psycopg.connect(migrated) as conn:
        assert conn.execute("SELECT count(*) FROM minnoctl.migrations WHERE id = 'chatbot/0099_add_topic'"
                            ).fetchone()[0] == 1


def test_a_migration_retries_and_applies_once_the_blocker_lets_go(migrated, set_copy):
    _alter_set(set_copy)
    with psycopg.connect(migrated) as reader:
        reader.execute("LOCK TABLE chatbot.conversations IN ACCESS SHARE MODE")
        with _migrate(migrated, set_copy, "--ddl-lock-timeout", "0.5") as migrate:
            _wait_until_waiting(migrated, migrate)
            time.sleep(0.7)  # the first try has timed out by now; a later one succeeds
            reader.rollback()
            out, err = migrate.communicate(timeout=60)
            assert migrate.returncode == 0, err
    with psycopg.connect(migrated) as conn:
        assert conn.execute("SELECT count(*) FROM minnoctl.migrations WHERE id = 'chatbot/0099_add_topic'"
                            ).fetchone()[0] == 1


def test_a_concurrent_index_waits_for_old_transactions_instead_of_timing_out(migrated, set_copy):
    (set_copy / "chatbot" / "0099_cc.sql").write_text(
        "-- transactional: false\nDROP INDEX CONCURRENTLY IF EXISTS idx_cc;\n"
        "CREATE INDEX CONCURRENTLY idx_cc ON conversations (updated_at);\n")
    (set_copy / "chatbot" / "0099_cc.rollback.sql").write_text(
        "-- transactional: false\nDROP INDEX CONCURRENTLY IF EXISTS idx_cc;\n")
    # an open transaction that writes: CREATE INDEX CONCURRENTLY waits for it
    with psycopg.connect(migrated) as old:
        old.execute("INSERT INTO chatbot.conversations (user_id) VALUES ('u')")
        with _migrate(migrated, set_copy, "--ddl-lock-timeout", "0.3") as migrate:
            _wait_until_waiting(migrated, migrate)
            time.sleep(1.5)  # five times the lock timeout
            assert migrate.poll() is None, migrate.communicate()
            with psycopg.connect(migrated, autocommit=True) as app:  # writers are not held up meanwhile
                app.execute("SET statement_timeout = '2s'")
                app.execute("INSERT INTO chatbot.conversations (user_id) VALUES ('w')")
            old.commit()
            out, err = migrate.communicate(timeout=60)
            assert migrate.returncode == 0, err
    with psycopg.connect(migrated) as conn:
        assert conn.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = 'chatbot.idx_cc'::regclass"
                            ).fetchone()[0] is True


def test_ddl_lock_timeout_is_checked(cli, migrated):
    for value in ("nan", "inf", "0", "-1", "1e400"):
        result = cli("migrate", "--ddl-lock-timeout", value, env=env_for(migrated))
        assert result.exit_code == ExitCode.USAGE, (value, result.stderr)
        assert "--ddl-lock-timeout" in result.stderr


# ---------------------------------------------------------------------------------------------
# 10. concurrent db init of one new database


def _name(url: str) -> str:
    from psycopg.conninfo import conninfo_to_dict

    return conninfo_to_dict(url)["dbname"]


def _drop(target, url: str) -> None:
    name = _name(url)
    with psycopg.connect(target.admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_concurrent_init_of_a_new_database_creates_it_once(any_server):
    url = any_server.url(f"race_{uuid.uuid4().hex[:8]}")
    try:
        env = dict(os.environ, **env_for(url))
        procs = [subprocess.Popen([sys.executable, "-m", "minnoctl", "db", "init", "--modules", "minno,chatbot"],
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(4)]
        outs = [p.communicate(timeout=120) for p in procs]
        for p, (_out, err) in zip(procs, outs):
            assert p.returncode == 0, err
            assert "Traceback" not in err
        assert sum("created the database" in err for _, err in outs) == 1, [e for _, e in outs]
        with psycopg.connect(url) as conn:
            ids = [r[0] for r in conn.execute("SELECT id FROM minnoctl.migrations")]
        assert len(ids) == len(set(ids)) and "chatbot/0001_conversations" in ids
    finally:
        _drop(any_server, url)


# ---------------------------------------------------------------------------------------------
# bad input: migrate new, lock messages


@pytest.mark.parametrize("name", ["x" * 300, "add_index\nDROP TABLE minno.workspaces;", "tab\there", "\x1b[31mred"])
def test_migrate_new_refuses_a_bad_name_and_writes_nothing(cli, set_copy, name):
    before = sorted(p.name for p in (set_copy / "chatbot").iterdir())
    result = cli("migrate", "new", name, "--module", "chatbot", env={"MINNOCTL_MIGRATIONS_DIR": str(set_copy)})
    assert result.exit_code == ExitCode.USAGE, result.stderr
    line = one_error_line(result.stderr)
    assert "\x1b" not in line
    assert sorted(p.name for p in (set_copy / "chatbot").iterdir()) == before


def test_lock_messages_name_only_options_the_command_has(migrated, run_minnoctl, kek):
    env = env_for(migrated)
    with psycopg.connect(migrated, autocommit=True) as holder:
        for purpose in ("cleanup", "migrate"):
            holder.execute("SELECT pg_advisory_lock(%s, %s)", (locks.NAMESPACE, locks.KEYS[purpose]))
        cleanup = run_minnoctl("cleanup", "--dry-run", env=env)
        assert cleanup.returncode == ExitCode.LOCK_HELD, cleanup.stderr
        line = one_error_line(cleanup.stderr)
        assert "cleanup lock is held" in line and "--lock-timeout" not in line
        migrate = run_minnoctl("migrate", "rollback", "--yes", "--lock-timeout", "0.2", env=env)
        assert migrate.returncode == ExitCode.LOCK_HELD, migrate.stderr
        assert "--lock-timeout" in one_error_line(migrate.stderr)
