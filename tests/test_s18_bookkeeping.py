"""minnoctl's own tables are a migration set (minnoctl/bookkeeping.py, minnoctl/bookkeeping_sql/):
databases an older minnoctl built are adopted, a later migration that adds a column runs, cron's
cleanup runs no DDL once they are up to date (seen by the server: an event trigger and
pg_stat_statements), two first runs at once apply them once (real processes), read-only runs never
try DDL, and a rollback of every module keeps them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import psycopg
import pytest

from conftest import Target, modules_for
from minnoctl import bookkeeping
from minnoctl.errors import ExitCode, LockHeldError

REPO = Path(__file__).resolve().parent.parent

# What minnoctl created before its tables were migrations (main at 4183c36): migrate.BOOKKEEPING_DDL,
# run before every migrate and every cleanup, apps.APP_ROLES_DDL at the first `app create`, and
# drift.BASELINE_DDL at the first migration. Copied, so the test keeps building the old layout.
OLD_DDL = (
    "CREATE SCHEMA IF NOT EXISTS minnoctl",
    """CREATE TABLE IF NOT EXISTS minnoctl.migrations (
        id           text PRIMARY KEY,
        module       text NOT NULL,
        checksum     text NOT NULL,
        applied_at   timestamptz NOT NULL DEFAULT now(),
        applied_by   text NOT NULL,
        applied_host text NOT NULL,
        seq          bigint GENERATED ALWAYS AS IDENTITY
    )""",
    """CREATE TABLE IF NOT EXISTS minnoctl.migration_log (
        seq          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        migration_id text NOT NULL,
        operation    text NOT NULL CHECK (operation IN ('apply', 'rollback')),
        checksum     text NOT NULL,
        at           timestamptz NOT NULL DEFAULT now(),
        by_user      text NOT NULL,
        host         text NOT NULL,
        duration_ms  double precision NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS minnoctl.cleanup_runs (
        id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        started_at  timestamptz NOT NULL DEFAULT now(),
        finished_at timestamptz,
        status      text NOT NULL CHECK (status IN ('running', 'ok', 'partial', 'failed')),
        dry_run     boolean NOT NULL,
        rows        bigint NOT NULL DEFAULT 0,
        tasks       jsonb NOT NULL DEFAULT '[]',
        error       text,
        by_user     text NOT NULL,
        host        text NOT NULL,
        pid         integer NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS minnoctl.settings (
        name    text PRIMARY KEY,
        value   text NOT NULL,
        set_at  timestamptz NOT NULL DEFAULT now(),
        set_by  text NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS minnoctl.app_roles (
        role        text PRIMARY KEY,
        modules     text[] NOT NULL,
        allow_ddl   boolean NOT NULL DEFAULT false,
        created_at  timestamptz NOT NULL DEFAULT now(),
        updated_at  timestamptz NOT NULL DEFAULT now(),
        updated_by  text NOT NULL DEFAULT current_user
    )""",
    """CREATE TABLE IF NOT EXISTS minnoctl.schema_baseline (
        module       text PRIMARY KEY,
        migration_id text NOT NULL,
        fingerprint  jsonb NOT NULL,
        recorded_at  timestamptz NOT NULL DEFAULT now()
    )""",
)
OLD_TABLES = {"migrations", "migration_log", "cleanup_runs", "settings", "app_roles", "schema_baseline"}

ADD_COLUMN = ("-- table: cleanup_runs\n-- a later change to one of minnoctl's tables, the ordinary way\n"
              "ALTER TABLE minnoctl.cleanup_runs ADD COLUMN note text;\n")


def env_for(url: str) -> dict[str, str]:
    return {"MINNO_DATABASE_URL": url}


def init_args(url: str) -> list[str]:
    mods = modules_for(Target("x", url))
    return ["db", "init", "--yes"] + (["--modules", mods] if mods else [])


def build_old(url: str) -> None:
    """The database as minnoctl before this change left it: every table, some rows, no record."""
    with psycopg.connect(url, autocommit=True) as conn:
        for ddl in OLD_DDL:
            conn.execute(ddl)
        conn.execute("INSERT INTO minnoctl.settings (name, value, set_by) VALUES ('environment', 'staging', 'old')")
        conn.execute("INSERT INTO minnoctl.cleanup_runs (status, dry_run, by_user, host, pid, finished_at) "
                     "VALUES ('ok', false, 'old', 'old-host', 1, now())")


def recorded(url: str) -> list[tuple[str, str]]:
    with psycopg.connect(url, autocommit=True) as conn:
        if conn.execute("SELECT to_regclass('minnoctl.bookkeeping_migrations')").fetchone()[0] is None:
            return []
        return conn.execute("SELECT id, checksum FROM minnoctl.bookkeeping_migrations ORDER BY id").fetchall()


def columns(url: str) -> dict[str, list[tuple]]:
    """minnoctl's tables with their columns, types, defaults and nullability, and their constraints."""
    with psycopg.connect(url, autocommit=True) as conn:
        out: dict[str, list[tuple]] = {}
        for table, *col in conn.execute(
                "SELECT table_name, column_name, data_type, column_default, is_nullable, is_identity "
                "FROM information_schema.columns WHERE table_schema = 'minnoctl' "
                "ORDER BY table_name, ordinal_position"):
            out.setdefault(table, []).append(tuple(col))
        for table, con in conn.execute(
                "SELECT c.conrelid::regclass::text, pg_get_constraintdef(c.oid) FROM pg_constraint c "
                "JOIN pg_namespace n ON n.oid = c.connamespace WHERE n.nspname = 'minnoctl' ORDER BY 1, 2"):
            out.setdefault(table.removeprefix("minnoctl."), []).append(("constraint", con))
        return out


def shipped(*tables: str) -> list[str]:
    """The ids of the shipped files of the record, `tables` (CORE by default)."""
    wanted = {bookkeeping.RECORD, *(tables or bookkeeping.CORE)}
    return [f.id for f in bookkeeping.load() if f.table in wanted]


DB_INIT = (*bookkeeping.CORE, "schema_baseline")  # what db init needs: app_roles waits for the first app create


# ---------------------------------------------------------------------------------------------
# adopting what an older minnoctl built


def test_db_init_adopts_the_tables_an_older_minnoctl_created_and_records_the_set(cli, database, migrated):
    build_old(database)
    result = cli(*init_args(database), env=env_for(database))
    assert result.exit_code == 0, result.stderr
    assert [r[0] for r in recorded(database)] == shipped(*DB_INIT)
    assert recorded(database) == [(f.id, f.checksum) for f in bookkeeping.load() if f.id in shipped(*DB_INIT)]
    with psycopg.connect(database, autocommit=True) as conn:  # the rows it held are still there
        assert conn.execute("SELECT value FROM minnoctl.settings WHERE name = 'environment'").fetchone() == ("staging",)
        assert conn.execute("SELECT by_user FROM minnoctl.cleanup_runs").fetchall() == [("old",)]
    # the files build exactly the old layout (plus their record): a database built either way is the same
    with psycopg.connect(migrated, autocommit=True) as conn:
        assert conn.execute("SELECT to_regclass('minnoctl.app_roles')").fetchone()[0] is None
        assert bookkeeping.ensure(conn, ("app_roles",)) == ["0007_app_roles"]
    assert columns(migrated) == columns(database)
    assert set(columns(database)) == OLD_TABLES | {"bookkeeping_migrations"}
    again = cli(*init_args(database), env=env_for(database))
    assert again.exit_code == 0 and "nothing to do" in again.stderr
    assert len(recorded(database)) == len(shipped(*DB_INIT))


def test_cleanup_and_app_create_adopt_a_database_an_older_minnoctl_migrated(cli, migrated):
    """An older minnoctl's migrated database: no record and, before any `app create`, no app_roles.
    cleanup (autocommit) and app create (inside its own transaction) each bring the tables up."""
    with psycopg.connect(migrated, autocommit=True) as conn:
        conn.execute("DROP TABLE minnoctl.bookkeeping_migrations")
    result = cli("cleanup", env=env_for(migrated))
    assert result.exit_code == 0, result.stderr
    assert [r[0] for r in recorded(migrated)] == shipped()
    with psycopg.connect(migrated, autocommit=True) as conn:
        assert conn.execute("SELECT to_regclass('minnoctl.app_roles')").fetchone()[0] is None
        conn.execute("DROP TABLE minnoctl.bookkeeping_migrations")
    created = cli("app", "create", "chatbot", "--format", "json", env=env_for(migrated))
    assert created.exit_code == 0, created.stderr
    assert {"0001_bookkeeping_migrations", "0007_app_roles"} <= {r[0] for r in recorded(migrated)}
    listed = json.loads(cli("app", "list", "--format", "json", env=env_for(migrated)).stdout)
    assert [a["role"] for a in listed] == ["chatbot_app"]


# ---------------------------------------------------------------------------------------------
# a later migration


@pytest.fixture
def later_set(tmp_path: Path) -> Path:
    """The shipped set and a later migration that adds a column."""
    folder = tmp_path / "bookkeeping_sql"
    folder.mkdir()
    for f in bookkeeping.load():
        (folder / f"{f.id}.sql").write_text(f.sql, encoding="utf-8")
    (folder / "0900_cleanup_runs_note.sql").write_text(ADD_COLUMN, encoding="utf-8")
    return folder


def has_note(url: str) -> bool:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute("SELECT 1 FROM information_schema.columns WHERE table_schema = 'minnoctl' "
                            "AND table_name = 'cleanup_runs' AND column_name = 'note'").fetchone() is not None


def test_a_later_migration_adds_a_column_to_a_database_that_has_the_table(cli, migrated, database, later_set):
    # a database of this minnoctl: only the new file runs
    with psycopg.connect(migrated, autocommit=True) as conn:
        assert bookkeeping.ensure(conn, folder=later_set) == ["0900_cleanup_runs_note"]
        assert bookkeeping.ensure(conn, folder=later_set) == []
    assert has_note(migrated)
    # an older minnoctl's database: adopted, then the column added, in one go
    build_old(database)
    with psycopg.connect(database, autocommit=True) as conn:
        assert bookkeeping.ensure(conn, folder=later_set) == [*shipped(), "0900_cleanup_runs_note"]
        conn.execute("INSERT INTO minnoctl.cleanup_runs (status, dry_run, by_user, host, pid, note) "
                     "VALUES ('ok', false, 'new', 'h', 2, 'a column CREATE TABLE IF NOT EXISTS never adds')")
    assert has_note(database)
    assert [r[0] for r in recorded(database)] == [*shipped(), "0900_cleanup_runs_note"]
    # the shipped set alone, afterwards (an older minnoctl binary again): nothing to do, nothing undone
    result = cli("cleanup", env=env_for(migrated))
    assert result.exit_code == 0, result.stderr
    assert has_note(migrated)


def test_a_table_dropped_by_hand_is_built_again_by_all_its_files(cli, migrated, later_set):
    with psycopg.connect(migrated, autocommit=True) as conn:
        bookkeeping.ensure(conn, folder=later_set)
        conn.execute("DROP TABLE minnoctl.cleanup_runs")
        assert bookkeeping.ensure(conn, folder=later_set) == ["0004_cleanup_runs", "0900_cleanup_runs_note"]
    assert has_note(migrated)
    # schema_baseline, which drift records again from the live schema when it is gone
    with psycopg.connect(migrated, autocommit=True) as conn:
        conn.execute("DROP TABLE minnoctl.schema_baseline")
    result = cli("migrate", env=env_for(migrated))
    assert result.exit_code == 0, result.stderr
    with psycopg.connect(migrated, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM minnoctl.schema_baseline").fetchone()[0] > 0


def test_a_failing_migration_leaves_the_tables_and_the_record_as_they_were(migrated, later_set):
    (later_set / "0901_broken.sql").write_text("-- table: cleanup_runs\n"
                                               "ALTER TABLE minnoctl.cleanup_runs ADD COLUMN other text;\n"
                                               "ALTER TABLE minnoctl.no_such_table ADD COLUMN x text;\n")
    with psycopg.connect(migrated, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.UndefinedTable):
            bookkeeping.ensure(conn, folder=later_set)
        assert [f.id for f in bookkeeping.pending(conn, bookkeeping.load(later_set))] == [
            "0900_cleanup_runs_note", "0901_broken"]
    assert not has_note(migrated)


# ---------------------------------------------------------------------------------------------
# cron's cleanup: no DDL once up to date, seen by the server


DDL_LOG = """
CREATE TABLE public.ddl_seen (at timestamptz DEFAULT clock_timestamp(), tag text, query text);
CREATE FUNCTION public.ddl_seen() RETURNS event_trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.ddl_seen (tag, query) VALUES (tg_tag, current_query());
END $$;
CREATE EVENT TRIGGER ddl_seen ON ddl_command_start EXECUTE FUNCTION public.ddl_seen();
"""


def ddl_seen(url: str) -> list[str]:
    with psycopg.connect(url, autocommit=True) as conn:
        return [r[0] for r in conn.execute("SELECT tag FROM public.ddl_seen ORDER BY at")]


def xact_lock_calls(url: str) -> int | None:
    """How often this database ran the bookkeeping lock's query (pg_stat_statements), or None
    where the server does not preload it."""
    with psycopg.connect(url, autocommit=True) as conn:
        try:
            return conn.execute(
                "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE query LIKE %s AND dbid = "
                "(SELECT oid FROM pg_database WHERE datname = current_database())",
                ("%pg_try_advisory_xact_lock%",)).fetchone()[0]
        except psycopg.errors.ObjectNotInPrerequisiteState:
            return None


def test_cron_cleanup_runs_no_ddl_and_takes_no_lock_when_the_tables_are_up_to_date(migrated, run_minnoctl):
    with psycopg.connect(migrated, autocommit=True) as conn:
        try:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            # an empty table: the suite's server has run thousands of statements in hundreds of
            # databases by now, and a full one evicts the least used entries (this test's own)
            conn.execute("SELECT pg_stat_statements_reset()")
        except psycopg.Error:
            pass  # not on this server: the event trigger is the evidence
        conn.execute(DDL_LOG)
    for _ in range(2):  # as cron runs it: a real process each time
        run = run_minnoctl("cleanup", env=env_for(migrated))
        assert run.returncode == 0, run.stderr
    assert ddl_seen(migrated) == []
    assert xact_lock_calls(migrated) in (0, None)
    with psycopg.connect(migrated, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM minnoctl.cleanup_runs WHERE status = 'ok'").fetchone()[0] == 2
        # the trigger sees what it must: an older minnoctl's database (no record) is brought up once
        conn.execute("DROP TABLE minnoctl.bookkeeping_migrations")
    assert ddl_seen(migrated) == ["DROP TABLE"]
    run = run_minnoctl("cleanup", env=env_for(migrated))
    assert run.returncode == 0, run.stderr
    seen = ddl_seen(migrated)
    assert "CREATE TABLE" in seen and len(seen) > 2
    calls = xact_lock_calls(migrated)
    assert calls is None or calls >= 1
    run = run_minnoctl("cleanup", env=env_for(migrated))
    assert run.returncode == 0, run.stderr
    assert ddl_seen(migrated) == seen
    assert xact_lock_calls(migrated) == calls


# ---------------------------------------------------------------------------------------------
# two first runs at once


def test_a_run_that_finds_another_one_upgrading_waits_for_it_and_then_has_nothing_to_do(database, run_minnoctl):
    """One session brings the tables up and has not committed; a real `minnoctl cleanup` started
    then waits for the bookkeeping lock, and after the commit finds them up to date (no error, no
    second record)."""
    first = psycopg.connect(database)  # not autocommit: ensure runs in this open transaction
    try:
        assert bookkeeping.ensure(first) == shipped()
        env = dict(os.environ, **env_for(database))
        proc = subprocess.Popen([sys.executable, "-m", "minnoctl", "cleanup"], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            time.sleep(2.0)
            assert proc.poll() is None, proc.communicate()  # waiting for the lock
            with psycopg.connect(database, autocommit=True) as conn:
                assert conn.execute("SELECT to_regclass('minnoctl.cleanup_runs')").fetchone()[0] is None
            first.commit()
            _, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 0, err
    finally:
        first.close()
    assert [r[0] for r in recorded(database)] == shipped()
    with psycopg.connect(database, autocommit=True) as conn:
        assert conn.execute("SELECT status FROM minnoctl.cleanup_runs").fetchall() == [("ok",)]


def test_a_wait_for_the_bookkeeping_lock_is_bounded_and_names_the_holder(database):
    with psycopg.connect(database) as first, psycopg.connect(database, autocommit=True) as second:
        first.execute("SET application_name = 'the first run'")
        bookkeeping.ensure(first)
        started = time.monotonic()
        with pytest.raises(LockHeldError) as caught:
            bookkeeping.ensure(second, wait_s=0.5)
        assert time.monotonic() - started < 5
        assert "bookkeeping lock is held by the first run" in caught.value.message
        first.rollback()
        assert bookkeeping.ensure(second) == shipped()


ENSURE_AT_ONCE = """
import os, sys, time
import psycopg
from minnoctl import bookkeeping
go = sys.argv[2]
while not os.path.exists(go):
    time.sleep(0.005)
with psycopg.connect(sys.argv[1], autocommit=True) as conn:
    print(",".join(bookkeeping.ensure(conn)))
"""


def test_first_runs_at_once_on_a_fresh_database_all_succeed_and_apply_the_set_once(database, tmp_path, any_server):
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", ENSURE_AT_ONCE, database, str(go)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    env = dict(os.environ, **env_for(database))
    # and the commands themselves: db init (under the migrate lock) and cron's cleanup (under its own)
    commands = [subprocess.Popen([sys.executable, "-m", "minnoctl", *args], env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
                for args in (init_args(database), ["cleanup"])]
    time.sleep(1.0)  # every process imported and waiting
    go.touch()
    outputs = [p.communicate(timeout=120) for p in procs + commands]
    for p, (_out, err) in zip(procs + commands, outputs):
        assert p.returncode == 0, err
    applied_by = [out.strip() for out, _ in outputs[:len(procs)] if out.strip()]
    assert len(applied_by) <= 1  # one of them applied it, or db init or cleanup did
    assert [r[0] for r in recorded(database)] == shipped(*DB_INIT)
    with psycopg.connect(database, autocommit=True) as conn:
        tables = conn.execute("SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                              "WHERE n.nspname = 'minnoctl' AND c.relkind = 'r'").fetchone()[0]
        assert tables == len(DB_INIT) + 1


# ---------------------------------------------------------------------------------------------
# read-only runs never try DDL


def test_dry_run_and_health_on_a_read_only_session_never_try_ddl_on_tables_that_are_behind(database, run_minnoctl):
    build_old(database)  # the tables are there but the record is not: behind
    read_only = {**env_for(database), "PGOPTIONS": "-c default_transaction_read_only=on"}
    dry = run_minnoctl("cleanup", "--dry-run", env=read_only)
    assert dry.returncode == 0, dry.stderr
    health = run_minnoctl("health", "--format", "json", env=read_only)
    assert "Traceback" not in health.stderr and "read-only" not in health.stdout + health.stderr, health.stderr
    checks = {c["name"]: c for c in json.loads(health.stdout)["checks"]}
    assert "cleanup" in checks, checks
    # a real run on a read-only session fails as it always did: one line, no traceback
    real = run_minnoctl("cleanup", env=read_only)
    assert real.returncode == ExitCode.FAILURE and "Traceback" not in real.stderr
    assert "read-only" in real.stderr
    assert recorded(database) == []


# ---------------------------------------------------------------------------------------------
# rollback and db init --force


def test_rolling_back_every_module_keeps_minnoctls_own_tables(cli, migrated):
    before = recorded(migrated)
    result = cli("migrate", "rollback", "--steps", "1000", "--yes", env=env_for(migrated))
    assert result.exit_code == 0, result.stderr
    assert [r[0] for r in recorded(migrated)] == [r[0] for r in before] == shipped(*DB_INIT)
    assert set(columns(migrated)) == {*DB_INIT, "bookkeeping_migrations"}
    with psycopg.connect(migrated, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM minnoctl.migrations").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM minnoctl.migration_log WHERE operation = 'rollback'").fetchone()[0]
    again = cli(*init_args(migrated), env=env_for(migrated))
    assert again.exit_code == 0, again.stderr
    assert recorded(migrated) == before


def test_db_init_force_builds_minnoctls_tables_again_and_records_the_set(cli, migrated):
    result = cli(*init_args(migrated), "--force", env=env_for(migrated))
    assert result.exit_code == 0, result.stderr
    assert [r[0] for r in recorded(migrated)] == shipped(*DB_INIT)


# ---------------------------------------------------------------------------------------------
# the wheel


def test_the_wheel_carries_the_set_and_an_installed_copy_reads_it(tmp_path):
    # built from a copy of the sources: an in-tree build/ keeps what an earlier build put there
    source = tmp_path / "source"
    for name in ("minnoctl", "migrations"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    out = tmp_path / "dist"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(source)],
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    (wheel,) = out.glob("minnoctl-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    repo = sorted(p.name for p in (REPO / "minnoctl" / bookkeeping.FOLDER).glob("*.sql"))
    assert repo and sorted(n.rsplit("/", 1)[1] for n in names
                           if n.startswith(f"minnoctl/{bookkeeping.FOLDER}/")) == repo
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = "import minnoctl.bookkeeping as b; print(b.__file__); print(','.join(f.id for f in b.load()))"
    shown = subprocess.run([sys.executable, "-c", code], cwd=elsewhere, capture_output=True, text=True,
                           env=dict(os.environ, PYTHONPATH=str(target)))
    assert shown.returncode == 0, shown.stderr
    path, ids = shown.stdout.split()
    assert path.startswith(str(target)) and ids.split(",") == [f.id for f in bookkeeping.load()]
    shutil.rmtree(target)
