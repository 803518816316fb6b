"""Review of issue 16: regressions found in review, each failing before its fix."""

from __future__ import annotations

import psycopg
import pytest

from minnoctl import drift
from minnoctl.config import parse_url
from test_yoyo_compat import env_for, names_for, stems, yoyo


def test_an_asyncpg_url_keeps_its_other_query_values_as_libpq_reads_them():
    # ?ssl= becomes ?sslmode=; the other parameters must reach libpq unchanged: an encoded space
    # stays a space (not '+'), a literal '+' stays '+'
    url = ("postgresql+asyncpg://u:p@h:5432/db?ssl=require&options=-c%20statement_timeout%3D5s"
           "&application_name=a+b")
    plain = url.replace("+asyncpg", "").replace("ssl=", "sslmode=")
    assert parse_url(url, "DATABASE_URL") == parse_url(plain, "DATABASE_URL")
    assert parse_url(url, "DATABASE_URL")["options"] == "-c statement_timeout=5s"


def test_a_migration_stock_yoyo_applied_is_in_the_drift_baseline_once_adopted(cli, migrated, any_server):
    names = names_for(any_server)
    env = env_for(migrated)
    last = stems(["slackbot"])[-1]
    back = cli("migrate", "rollback", "--steps", "1", "--yes", env=env)
    assert back.exit_code == 0, back.stderr
    yoyo("apply", migrated, names)  # stock yoyo applies it again
    run = cli("migrate", env=env)
    assert run.exit_code == 0, run.stderr
    assert "applied by stock yoyo" in run.stderr and f"slackbot/{last}" in run.stderr
    with psycopg.connect(migrated) as conn:
        report = drift.check(conn)
    # the table and functions yoyo's run created are the migration's, not "not managed by minnoctl"
    assert report.differences == []


def test_db_init_on_a_database_without_schema_public_is_one_line(cli, database):
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("DROP SCHEMA public")
    result = cli("db", "init", "--modules", "minno", env=env_for(database))
    assert "Traceback" not in result.stderr and "bug in minnoctl" not in result.stderr, result.stderr
    assert result.exit_code == 0, result.stderr  # minno needs nothing of public; stock yoyo's tables are skipped
    assert "no schema public" in result.stderr


def test_db_init_force_that_fails_midway_keeps_the_app_roles_record(cli, migrated, any_server, tmp_path):
    import json
    import shutil
    from pathlib import Path

    from test_app import _roles, drop_new_roles
    from test_migrate import init_args

    before = _roles(any_server.admin_url)
    try:
        made = cli("app", "create", "chatbot", "--format", "json", env=env_for(migrated))
        assert made.exit_code == 0, made.stderr
        broken = tmp_path / "migrations"
        shutil.copytree(Path(__file__).resolve().parents[1] / "migrations", broken)
        (broken / "chatbot" / "0005_review_fails.sql").write_text(
            "-- fails\n-- depends: 0004_cleanup_indexes\n\nSET LOCAL search_path = chatbot, public;\nSELECT 1/0;\n")
        (broken / "chatbot" / "0005_review_fails.rollback.sql").write_text(
            "SET LOCAL search_path = chatbot, public;\n")
        failed = cli(*init_args(migrated), "--force", env=env_for(migrated, broken))
        assert failed.exit_code != 0
        with psycopg.connect(migrated) as conn:  # the schemas were dropped, the app roles' record was not
            assert conn.execute("SELECT role FROM minnoctl.app_roles").fetchall() == [("chatbot_app",)]
        again = cli(*init_args(migrated), env=env_for(migrated))  # the set repaired: init completes it
        assert again.exit_code == 0, again.stderr
        [record] = json.loads(cli("app", "list", "--format", "json", env=env_for(migrated)).stdout)
        assert (record["role"], record["status"]) == ("chatbot_app", "complete"), record
    finally:
        drop_new_roles(any_server.admin_url, [migrated], before)


def test_migrate_resumes_a_non_transactional_migration_interrupted_part_way(cli, database, tmp_path):
    import shutil
    from pathlib import Path

    partial = tmp_path / "migrations"
    shutil.copytree(Path(__file__).resolve().parents[1] / "migrations", partial)
    for name in ("0004_cleanup_indexes.sql", "0004_cleanup_indexes.rollback.sql"):
        (partial / "chatbot" / name).unlink()
    first = cli("db", "init", "--yes", "--modules", "chatbot", env=env_for(database, partial))
    assert first.exit_code == 0, first.stderr
    # what a kill -9 during chatbot/0004's second CREATE INDEX CONCURRENTLY leaves: its first index
    # built, its second one invalid, and no record (the file's DROP INDEX ... IF EXISTS redoes both)
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("CREATE INDEX idx_conversations_updated_at ON chatbot.conversations (updated_at, id)")
    run = cli("migrate", env=env_for(database))
    assert run.exit_code == 0, run.stderr
    assert "chatbot/0004_cleanup_indexes" in run.stdout
    with psycopg.connect(database) as conn:
        assert drift.check(conn).drift == []


def test_health_as_an_app_login_has_no_traceback(cli, migrated, any_server):
    import json
    from pathlib import Path

    from test_app import _roles, drop_new_roles, env_url

    before = _roles(any_server.admin_url)
    try:
        made = cli("app", "create", "supervisor", "--format", "json", env=env_for(migrated))
        assert made.exit_code == 0, made.stderr
        url = env_url(Path(json.loads(made.stdout)[0]["env_file"]))
        for args in (["health", "--ready"], ["health", "--format", "json"], ["migrate", "verify"],
                     ["migrate", "status"], ["token", "verify"], ["app", "list"]):
            result = cli(*args, env={"MINNO_DATABASE_URL": url, "MINNO_MASTER_KEY": ""})
            assert "Traceback" not in result.stderr and "bug in minnoctl" not in result.stderr, (args, result.stderr)
    finally:
        drop_new_roles(any_server.admin_url, [migrated], before)


def test_every_encrypted_column_of_the_registry_is_guarded(migrated):
    from minnoctl import migrate, modules

    with psycopg.connect(migrated) as conn:
        installed = migrate.installed_modules(migrate.read_applied(conn))
        rows = conn.execute(
            """SELECT n.nspname, c.relname, t.tgargs, t.tgtype FROM pg_trigger t
                 JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE t.tgfoid = 'minno.reject_retired_field_keys'::regproc AND NOT t.tgisinternal""").fetchall()
    guarded = set()
    for schema, table, args, tgtype in rows:
        # row, before, ins, upd
        assert tgtype & 1 and tgtype & 2 and tgtype & 4 and tgtype & 16, (schema, table, tgtype)
        guarded |= {(schema, table, a.decode()) for a in args.split(b"\x00") if a}
    wanted = {(m.schema, c.table, c.column) for m in modules.MODULES if m.name in installed for c in m.encrypted}
    assert wanted <= guarded, wanted - guarded


@pytest.mark.parametrize("clean", [False, True])
def test_a_restored_backup_has_no_schema_drift(cli, migrated, any_server, tmp_path, clean):
    import json
    import uuid

    (tmp_path / "backups").mkdir()
    env = {**env_for(migrated), "MINNO_BACKUP_DIR": str(tmp_path / "backups")}
    made = cli("backup", "create", "--output-format", "json", env=env)
    assert made.exit_code == 0, made.stderr
    target = f"r_{uuid.uuid4().hex[:10]}"
    try:
        where = ["--clean", "--yes"] if clean else ["--into", target]
        restored = cli("backup", "restore", json.loads(made.stdout)["file"], *where, env=env)
        assert restored.exit_code == 0, restored.stderr
        with psycopg.connect(migrated if clean else any_server.url(target)) as conn:
            report = drift.check(conn)
        assert report.differences == [] and report.no_baseline == []
    finally:
        with psycopg.connect(any_server.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{target}" WITH (FORCE)')
