"""Stock yoyo and minnoctl on the same database (minnoctl/yoyo_compat.py, migrations/README.md).

Stock yoyo is the installed CLI (.venv-test/bin/yoyo) run as a real process with --batch, pointed
at the module folders in registry order, with the postgresql+psycopg URL of connection.yoyo_url.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest

from conftest import modules_for
from minnoctl import migrate, modules, yoyo_compat
from minnoctl.config import load_settings
from minnoctl.connection import yoyo_url
from minnoctl.errors import ExitCode, MinnoctlError

ROOT = Path(__file__).resolve().parents[1]
MIGRATIONS = ROOT / "migrations"
YOYO = Path(sys.executable).parent / "yoyo"
YOYO_TABLES = {"_yoyo_log", "_yoyo_migration", "_yoyo_version", "yoyo_lock"}


def names_for(target) -> list[str]:
    chosen = modules_for(target)
    return [m.name for m in modules.MODULES] if chosen is None else chosen.split(",")


def yoyo(command: str, url: str, names: list[str], *extra: str, root: Path = MIGRATIONS) -> subprocess.CompletedProcess:
    settings = load_settings(env={"MINNO_DATABASE_URL": url})
    args = [str(YOYO), command, "--batch", "--no-config-file", "--database", yoyo_url(settings),
            *extra, *(str(root / n) for n in names)]
    result = subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def yoyo_list(url: str, names: list[str], root: Path = MIGRATIONS) -> dict[str, str]:
    """{yoyo id: 'A' or 'U'} from `yoyo list`."""
    out = yoyo("list", url, names, root=root).stdout
    return {m.group(2): m.group(1) for m in re.finditer(r"^([AU])\s+(\S+)\s+\S", out, re.M)}


def stems(names: list[str]) -> list[str]:
    return [yoyo_compat.yoyo_id(f) for f in migrate.load_set() if f.module in names]


def public_objects(url: str) -> set[str]:
    """Everything in schema public but yoyo's own tables and extension members."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            """SELECT c.relkind::text || ' ' || c.relname FROM pg_class c
                WHERE c.relnamespace = 'public'::regnamespace
                  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e')
               UNION ALL
               SELECT 'function ' || p.proname FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace
                  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e')
               UNION ALL
               SELECT 'type ' || t.typname FROM pg_type t WHERE t.typnamespace = 'public'::regnamespace
                  AND t.typrelid = 0 AND t.typelem = 0
                  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = t.oid AND d.deptype = 'e')""").fetchall()
    allowed = {f"r {t}" for t in YOYO_TABLES} | {f"i {t}_pkey" for t in YOYO_TABLES}
    return {r[0] for r in rows} - allowed


def module_tables(url: str) -> dict[str, set[str]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT table_schema, table_name FROM information_schema.tables WHERE table_schema = "
                            "ANY(%s)", ([m.schema for m in modules.MODULES],)).fetchall()
    out: dict[str, set[str]] = {}
    for schema, table in rows:
        out.setdefault(schema, set()).add(table)
    return out


def yoyo_columns(url: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT table_name, column_name, ordinal_position, data_type, character_maximum_length, is_nullable "
            "FROM information_schema.columns WHERE table_schema = 'public' AND table_name LIKE '\\_yoyo%%' "
            "ORDER BY 1, 3").fetchall()


def env_for(url: str, migrations_dir: Path | None = None) -> dict[str, str]:
    env = {"MINNO_DATABASE_URL": url}
    if migrations_dir is not None:
        env["MINNOCTL_MIGRATIONS_DIR"] = str(migrations_dir)
    return env


# ---------------------------------------------------------------------------------------------
# The set itself


def test_every_file_sets_its_schema_and_yoyo_order_matches_the_registry():
    files = migrate.load_set()
    assert len({yoyo_compat.yoyo_id(f) for f in files}) == len(files)
    position = {yoyo_compat.yoyo_id(f): i for i, f in enumerate(files)}
    for module in modules.MODULES:
        own = [f for f in files if f.module == module.name]
        for n, mf in enumerate(own):
            for path in (mf.path, mf.rollback_path):
                text = path.read_text(encoding="utf-8")
                body = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("--")]
                word = "SET LOCAL" if mf.transactional else "SET"
                assert body[0] == f"{word} search_path = {module.schema}, public;", path
            directives, _ = migrate._leading(mf.sql())
            depends = directives.get("depends", "").split()
            if n:
                assert yoyo_compat.yoyo_id(own[n - 1]) in depends, f"{mf.id}: -- depends: on its predecessor"
            else:
                body = [line for line in mf.sql().splitlines() if line.strip() and not line.startswith("--")]
                assert body[1] == f"CREATE SCHEMA IF NOT EXISTS {module.schema};", mf.id
                assert mf.rollback_path.read_text().rstrip().endswith(f"DROP SCHEMA IF EXISTS {module.schema};")
                for dep in module.depends:
                    assert any(d in {yoyo_compat.yoyo_id(f) for f in files if f.module == dep} for d in depends), \
                        f"{mf.id}: -- depends: on a migration of {dep}"
            for d in depends:  # minnoctl's registry order satisfies yoyo's
                assert position[d] < position[yoyo_compat.yoyo_id(mf)], f"{mf.id} depends on later {d}"


def test_superseded_checksums_lead_to_the_files_as_they_are():
    current = {f.checksum for f in migrate.load_set()}
    ends = {yoyo_compat.current_checksum(old) for old in yoyo_compat.SUPERSEDED}
    assert ends <= current, "a file changed since its SUPERSEDED entry: add old -> new to yoyo_compat.SUPERSEDED"


def test_load_set_refuses_the_same_stem_in_two_module_folders(tmp_path):
    copy = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, copy)
    for suffix in (".sql", ".rollback.sql"):
        shutil.copy(copy / "minno" / f"0001_core{suffix}", copy / "chatbot" / f"0001_core{suffix}")
    (copy / "chatbot" / "0001_conversations.sql").rename(copy / "chatbot" / "0009_conversations.sql")
    (copy / "chatbot" / "0001_conversations.rollback.sql").rename(copy / "chatbot" / "0009_conversations.rollback.sql")
    with pytest.raises(MinnoctlError) as caught:
        migrate.load_set(copy)
    message = str(caught.value)
    assert "\n" not in message and "minno/0001_core.sql" in message and "chatbot/0001_core.sql" in message


def test_migrate_new_refuses_a_name_another_module_has(cli, tmp_path):
    copy = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, copy)
    # chatbot's next number is 0005, and supervisor has 0005_field_key_guard
    result = cli("migrate", "new", "field key guard", "--module", "chatbot", env={"MINNOCTL_MIGRATIONS_DIR": str(copy)})
    assert result.exit_code == ExitCode.USAGE
    assert "0005_field_key_guard.sql already exists in module supervisor" in result.stderr
    assert not (copy / "chatbot" / "0005_field_key_guard.sql").exists()
    ok = cli("migrate", "new", "add user index", "--module", "chatbot", env={"MINNOCTL_MIGRATIONS_DIR": str(copy)})
    assert ok.exit_code == 0, ok.stderr
    forward = copy / "chatbot" / "0005_add_user_index.sql"
    assert "-- depends: 0004_cleanup_indexes\n" in forward.read_text()
    assert "\nSET LOCAL search_path = chatbot, public;\n" in forward.read_text()
    assert migrate.load_set(copy)  # the new pair is a valid member of the set


# ---------------------------------------------------------------------------------------------
# Both runners on one database


def test_after_db_init_stock_yoyo_sees_everything_applied_and_applies_nothing(migrated, any_server):
    names = names_for(any_server)
    assert yoyo_list(migrated, names) == {s: "A" for s in stems(names)}
    before = module_tables(migrated)
    yoyo("apply", migrated, names)
    assert module_tables(migrated) == before
    assert public_objects(migrated) == set()
    with psycopg.connect(migrated) as conn:
        assert conn.execute("SELECT max(version) FROM public._yoyo_version").fetchone()[0] == 2
        logged = conn.execute("SELECT count(*) FROM public._yoyo_log WHERE operation = 'apply'").fetchone()[0]
    assert logged == len(stems(names))


def test_yoyo_apply_builds_every_module_in_its_schema_and_minnoctl_adopts_it(cli, database, any_server):
    names = names_for(any_server)
    if "knowledge" in names:
        with psycopg.connect(database, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION vector")
    yoyo("apply", database, names)
    assert public_objects(database) == set()
    built = module_tables(database)
    assert set(built) == {modules.get(n).schema for n in names}
    assert "oauth_tokens" in built["minno"] and "user_tokens" in built["assistant"]
    assert yoyo_list(database, names) == {s: "A" for s in stems(names)}

    dry = cli("migrate", "--dry-run", "--exit-code", env=env_for(database))
    assert dry.exit_code == 0, dry.stderr
    assert "nothing to apply" in dry.stderr
    assert f"will be adopted {len(stems(names))} migration(s) applied by stock yoyo" in dry.stderr
    verify = cli("migrate", "verify", env=env_for(database))
    assert verify.exit_code == 0, verify.stdout + verify.stderr
    with psycopg.connect(database) as conn:  # read-only so far
        assert conn.execute("SELECT to_regclass('minnoctl.migrations')").fetchone()[0] is None

    run = cli("migrate", env=env_for(database))
    assert run.exit_code == 0, run.stderr
    assert "adopted" in run.stderr and "nothing to apply" in run.stderr
    status = json.loads(cli("migrate", "status", "--format", "json", env=env_for(database)).stdout)
    assert {r["state"] for r in status if r["module"] in names} == {"applied"}
    assert cli("migrate", "verify", env=env_for(database)).exit_code == 0
    again = cli("migrate", env=env_for(database))
    assert "adopted" not in again.stderr
    assert module_tables(database) == built


def test_minnoctls_yoyo_tables_are_the_ones_stock_yoyo_makes(migrated, database):
    yoyo("list", database, ["minno"])  # stock yoyo makes its tables on first use
    assert yoyo_columns(migrated) == yoyo_columns(database)


def test_a_stock_yoyo_rollback_is_pending_again_for_minnoctl(cli, migrated, any_server):
    names = names_for(any_server)
    last = stems(["slackbot"])[-1]
    yoyo("rollback", migrated, names, "--revision", last)
    assert yoyo_list(migrated, names)[last] == "U"
    env = env_for(migrated)
    dry = cli("migrate", "--dry-run", "--exit-code", "--format", "json", env=env)
    assert dry.exit_code == ExitCode.PENDING, dry.stderr
    assert [p["id"] for p in json.loads(dry.stdout)["pending"]] == [f"slackbot/{last}"]
    assert "rolled back by stock yoyo" in dry.stderr
    run = cli("migrate", env=env)
    assert run.exit_code == 0, run.stderr
    assert "rolled back by stock yoyo" in run.stderr and f"slackbot/{last}" in run.stdout
    assert yoyo_list(migrated, names)[last] == "A"
    assert cli("migrate", "verify", env=env).exit_code == 0


def test_minnoctl_rollback_removes_yoyos_row_and_the_last_one_the_schema(cli, migrated, any_server):
    names = names_for(any_server)
    env = env_for(migrated)
    result = cli("migrate", "rollback", "--to", "supervisor/0006_port_pool" if "knowledge" in names
                 else "assistant/0004_assistant_field_key_guard", "--yes", env=env)
    assert result.exit_code == 0, result.stderr
    listed = yoyo_list(migrated, names)
    assert {s for s, state in listed.items() if state == "U"} == set(stems(["slackbot"] + (
        ["knowledge"] if "knowledge" in names else ["supervisor"])))
    assert "slackbot" not in module_tables(migrated)
    with psycopg.connect(migrated) as conn:
        assert conn.execute("SELECT to_regnamespace('slackbot')").fetchone()[0] is None


def test_a_role_that_may_not_create_in_public_gets_one_warning_and_its_migrations(cli, database, any_server):
    role = f"r_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute(f"GRANT CREATE ON DATABASE {conn.info.dbname} TO {role}")
        conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")  # the PostgreSQL 15+ default, made sure
    params = psycopg.conninfo.conninfo_to_dict(database)
    params["user"] = role
    params.pop("password", None)
    url = psycopg.conninfo.make_conninfo("", **params)
    try:
        result = cli("db", "init", "--modules", "chatbot", env=env_for(url))
        assert result.exit_code == 0, result.stderr
        warnings = [line for line in result.stderr.splitlines() if "stock yoyo" in line]
        assert len(warnings) == 1 and "may not create tables in schema public" in warnings[0], result.stderr
        assert "chatbot/0004_cleanup_indexes" in result.stdout
        with psycopg.connect(database) as conn:
            assert conn.execute("SELECT to_regclass('public._yoyo_migration')").fetchone()[0] is None
        # once it may, the next migrate writes yoyo's rows for what is applied
        with psycopg.connect(database, autocommit=True) as conn:
            conn.execute(f"GRANT CREATE ON SCHEMA public TO {role}")
        again = cli("migrate", env=env_for(url))
        assert again.exit_code == 0, again.stderr
        assert "in yoyo's bookkeeping" in again.stderr
        assert set(yoyo_list(database, ["minno", "chatbot"]).values()) == {"A"}
    finally:
        with psycopg.connect(database, autocommit=True) as conn:
            conn.execute(f"REASSIGN OWNED BY {role} TO CURRENT_USER")
            conn.execute(f"DROP OWNED BY {role}")
            conn.execute(f"DROP ROLE {role}")


# ---------------------------------------------------------------------------------------------
# Upgrading from the previous minnoctl (commit 6f52152)


def _previous_release(tmp_path: Path) -> Path:
    old = tmp_path / "previous"
    old.mkdir()
    archive = subprocess.run(["git", "archive", "6f52152", "minnoctl", "migrations"], cwd=ROOT, capture_output=True,
                             check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
    return old


def test_a_database_the_previous_minnoctl_migrated_is_adopted_without_drift(cli, database, any_server, tmp_path):
    names = names_for(any_server)
    old = _previous_release(tmp_path)
    env = dict(os.environ, MINNO_DATABASE_URL=database, MINNOCTL_MIGRATIONS_DIR=str(old / "migrations"),
               PYTHONPATH=str(old))
    chosen = modules_for(any_server)
    built = subprocess.run([sys.executable, "-m", "minnoctl", "db", "init",
                            *(["--modules", chosen] if chosen else [])],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    with psycopg.connect(database) as conn:
        assert conn.execute("SELECT count(*) FROM minnoctl.migrations WHERE id = "
                            "'assistant/0004_field_key_guard'").fetchone()[0] == 1
        assert conn.execute("SELECT to_regclass('public._yoyo_migration')").fetchone()[0] is None

    new_env = env_for(database)
    dry = cli("migrate", "--dry-run", env=new_env)
    assert dry.exit_code == 0, dry.stderr
    assert "drift:" not in dry.stderr and "will be adopted" in dry.stderr, dry.stderr
    verify = cli("migrate", "verify", env=new_env)
    assert verify.exit_code == 0, verify.stdout + verify.stderr
    assert "will be adopted" in verify.stderr

    run = cli("migrate", env=new_env)
    assert run.exit_code == 0, run.stderr
    assert "assistant/0004_field_key_guard -> assistant/0004_assistant_field_key_guard" in run.stderr
    with psycopg.connect(database) as conn:
        recorded = dict(conn.execute("SELECT id, checksum FROM minnoctl.migrations").fetchall())
    current = {f.id: f.checksum for f in migrate.load_set() if f.module in names}
    assert {i: recorded[i] for i in current if i in recorded} == {i: c for i, c in current.items() if i in recorded}
    assert "assistant/0004_field_key_guard" not in recorded
    assert set(yoyo_list(database, names).values()) == {"A"}
    assert cli("migrate", "verify", env=new_env).exit_code == 0
    assert public_objects(database) == set()


def test_a_real_edit_of_an_applied_file_is_still_drift(cli, database, any_server, tmp_path):
    old = _previous_release(tmp_path)
    env = dict(os.environ, MINNO_DATABASE_URL=database, MINNOCTL_MIGRATIONS_DIR=str(old / "migrations"),
               PYTHONPATH=str(old))
    built = subprocess.run([sys.executable, "-m", "minnoctl", "db", "init", "--modules", "chatbot"], cwd=tmp_path,
                           env=env, capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    copy = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, copy)
    edited = copy / "chatbot" / "0003_archive.sql"
    edited.write_text(edited.read_text() + "\n-- an edit\n")
    verify = cli("migrate", "verify", env=env_for(database, copy))
    assert verify.exit_code == ExitCode.DRIFT
    assert "chatbot/0003_archive" in verify.stdout


def test_yoyo_orders_the_set_by_its_depends_whatever_the_order_of_the_folders(cli, database, any_server):
    names = names_for(any_server)
    if "knowledge" in names:
        with psycopg.connect(database, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION vector")
    yoyo("apply", database, sorted(names))  # assistant, chatbot, ... before minno
    assert yoyo_list(database, names) == {s: "A" for s in stems(names)}
    assert public_objects(database) == set()
    run = cli("migrate", env=env_for(database))
    assert run.exit_code == 0 and "nothing to apply" in run.stderr, run.stderr


def test_the_last_rollback_keeps_a_schema_holding_foreign_objects_with_minnoctls_message(cli, database):
    env = env_for(database)
    assert cli("db", "init", "--modules", "chatbot", env=env).exit_code == 0
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("CREATE TABLE chatbot.mine (id int)")
        last_minno = conn.execute("SELECT id FROM minnoctl.migrations WHERE module = 'minno' ORDER BY seq DESC "
                                  "LIMIT 1").fetchone()[0]
    result = cli("migrate", "rollback", "--to", last_minno, "--yes", env=env)
    assert result.exit_code == ExitCode.MIGRATION_FAILED
    assert "schema chatbot still holds objects that its migrations did not create" in result.stderr
    assert "Traceback" not in result.stderr
    with psycopg.connect(database) as conn:  # 0001's rollback failed whole: it stays applied, tables and all
        assert conn.execute("SELECT count(*) FROM minnoctl.migrations WHERE id = 'chatbot/0001_conversations'"
                            ).fetchone()[0] == 1
        assert conn.execute("SELECT to_regclass('chatbot.conversations')").fetchone()[0] is not None


def test_db_init_force_forgets_yoyos_rows_with_the_schemas_and_runs_everything_again(cli, database):
    env = env_for(database)
    assert cli("db", "init", "--modules", "chatbot", env=env).exit_code == 0
    again = cli("db", "init", "--modules", "chatbot", "--force", "--yes", env=env)
    assert again.exit_code == 0, again.stderr
    assert "adopted" not in again.stderr and "chatbot/0001_conversations" in again.stdout
    assert "conversations" in module_tables(database)["chatbot"]
    assert set(yoyo_list(database, ["minno", "chatbot"]).values()) == {"A"}
    with psycopg.connect(database) as conn:
        ops = conn.execute("SELECT operation, count(*) FROM public._yoyo_log GROUP BY 1 ORDER BY 1").fetchall()
    n = len(stems(["minno", "chatbot"]))
    assert ops == [("apply", 2 * n), ("rollback", n)]
