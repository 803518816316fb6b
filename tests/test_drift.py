"""Drift of the live schema from what the migrations built (minnoctl.drift): `migrate verify`,
`health`'s schema_drift check and `migrate`'s refusal, on both servers. The damage is done with
SQL, as drizzle-kit push and stock yoyo do it (see test_drizzle_kit_push for the real tool)."""

from __future__ import annotations

import json

import psycopg
import pytest

from minnoctl import drift, migrate
from minnoctl.config import load_settings
from minnoctl.errors import ExitCode

# the damage, what verify names, and health's status
DAMAGE = {
    "index": (["DROP INDEX chatbot.idx_messages_role"],
              "index chatbot.idx_messages_role is missing", "WARNING"),
    "check": (["ALTER TABLE chatbot.messages DROP CONSTRAINT messages_role_check",
               "ALTER TABLE chatbot.messages ADD CONSTRAINT messages_role_check "
               "CHECK (role IN ('user', 'assistant', 'system', 'tool'))"],
              "constraint chatbot.messages.messages_role_check differs: recorded CHECK", "WARNING"),
    "archive": (["DROP TABLE chatbot.messages_archive", "DROP TABLE chatbot.conversations_archive"],
                "table chatbot.messages_archive is missing", "CRITICAL"),
    "copy": (["CREATE TABLE public.workspaces (LIKE minno.workspaces INCLUDING ALL)"],
             "public.workspaces copies minno.workspaces", "WARNING"),
    "trigger": (["ALTER TABLE chatbot.conversations DISABLE TRIGGER update_conversations_updated_at"],
                "trigger chatbot.conversations.update_conversations_updated_at is disabled (it was enabled)",
                "WARNING"),
    "function": (["CREATE OR REPLACE FUNCTION chatbot.update_updated_at_column() RETURNS trigger "
                  "LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$"],
                 "function chatbot.update_updated_at_column() differs", "WARNING"),
    "column": (["ALTER TABLE chatbot.messages DROP COLUMN metadata CASCADE"],
               "column chatbot.messages.metadata is missing", "CRITICAL"),
}


def env_for(url: str) -> dict[str, str]:
    return {"MINNO_DATABASE_URL": url}


def execute(url: str, *statements: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def schema_check(cli, url: str):
    result = cli("health", "--only", "schema_drift", "--format", "json", env=env_for(url))
    check = json.loads(result.stdout)["checks"][0]
    return result, check


def test_clean_database_reports_nothing(migrated, cli):
    verify = cli("migrate", "verify", "--format", "json", env=env_for(migrated))
    assert verify.exit_code == 0, verify.stderr
    assert json.loads(verify.stdout) == []
    assert "the live schema what they built" in verify.stderr
    result, check = schema_check(cli, migrated)
    assert check["status"] == "OK", check
    assert result.exit_code == 0


def test_baseline_recorded_per_module(migrated):
    with psycopg.connect(migrated) as conn:
        baselines = drift.read_baselines(conn)
        applied = migrate.read_applied(conn)
    assert set(baselines) == migrate.installed_modules(applied)
    last = {a.module: a.id for a in applied.values()}
    assert {m: b[0] for m, b in baselines.items()} == last
    chatbot = baselines["chatbot"][1]
    assert "messages_archive" in chatbot["tables"]
    assert "messages.messages_role_check" in chatbot["constraints"]
    assert "idx_messages_role" in chatbot["indexes"]


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damage_is_reported(migrated, cli, case):
    statements, named, status = DAMAGE[case]
    execute(migrated, *statements)
    verify = cli("migrate", "verify", env=env_for(migrated))
    assert verify.exit_code == ExitCode.DRIFT, (verify.stdout, verify.stderr)
    assert named in " ".join(verify.stdout.split()), verify.stdout
    assert "Traceback" not in verify.stderr
    as_json = cli("migrate", "verify", "--format", "json", env=env_for(migrated))
    rows = json.loads(as_json.stdout)
    assert rows and all({"kind", "id", "detail"} <= set(r) for r in rows)
    assert any(named in r["detail"] for r in rows)
    result, check = schema_check(cli, migrated)
    assert check["status"] == status, check
    assert result.exit_code == {"WARNING": 1, "CRITICAL": 2}[status]


def test_alter_check_names_both_definitions(migrated):
    execute(migrated, *DAMAGE["check"][0])
    with psycopg.connect(migrated) as conn:
        report = drift.check(conn)
    [diff] = [d for d in report.drift if d.object == "constraint"]
    assert diff.name == "chatbot.messages.messages_role_check" and diff.change == "differs"
    assert "'tool'" in diff.detail.split(", live ")[1] and "'tool'" not in diff.detail.split(", live ")[0]


def test_archive_drop_names_each_table_once(migrated):
    execute(migrated, *DAMAGE["archive"][0])
    with psycopg.connect(migrated) as conn:
        report = drift.check(conn)
    assert sorted(d.detail for d in report.drift) == [
        "table chatbot.conversations_archive is missing", "table chatbot.messages_archive is missing"]


@pytest.mark.parametrize("case", ["index", "archive"])
def test_migrate_refuses_on_a_drifted_module(migrated, cli, tmp_path, case):
    """A pending migration of a drifted module: refused (exit 10, nothing applied) unless --allow-drift."""
    import shutil
    from pathlib import Path

    root = tmp_path / "set"
    shutil.copytree(Path(migrate.__file__).resolve().parent.parent / "migrations", root)
    (root / "chatbot" / "0099_extra.sql").write_text(
        "-- extra\nSET LOCAL search_path = chatbot, public;\nCREATE TABLE extra_t (id int);\n")
    (root / "chatbot" / "0099_extra.rollback.sql").write_text(
        "-- undo\nSET LOCAL search_path = chatbot, public;\nDROP TABLE extra_t;\n")
    execute(migrated, *DAMAGE[case][0])
    env = {**env_for(migrated), "MINNOCTL_MIGRATIONS_DIR": str(root)}
    refused = cli("migrate", env=env)
    assert refused.exit_code == ExitCode.DRIFT, refused.stderr
    assert "Traceback" not in refused.stderr
    assert DAMAGE[case][1] in refused.stderr and "migrate verify" in refused.stderr
    assert "--allow-drift" in refused.stderr
    with psycopg.connect(migrated) as conn:
        assert conn.execute("SELECT to_regclass('chatbot.extra_t')").fetchone()[0] is None
        assert "chatbot/0099_extra" not in migrate.read_applied(conn)
    allowed = cli("migrate", "--allow-drift", env=env)
    assert allowed.exit_code == 0, allowed.stderr
    with psycopg.connect(migrated) as conn:
        assert "chatbot/0099_extra" in migrate.read_applied(conn)


def test_copy_elsewhere_does_not_block_migrate(migrated):
    """A copy in public is reported, but the module's own schema is intact: migrate goes on."""
    execute(migrated, *DAMAGE["copy"][0])
    settings = load_settings(env=env_for(migrated))
    migrate.migrate(settings)  # no DriftError
    with psycopg.connect(migrated) as conn:
        assert [d.detail.split(" (")[0] for d in drift.check(conn).drift] == [
            "public.workspaces copies minno.workspaces"]


def test_app_tables_are_not_managed_not_drift(migrated, cli):
    """Spec 002's runMigrations table and spec 000's optional audit_log: listed, not drift."""
    execute(migrated,
            "CREATE TABLE assistant.migrations (id SERIAL PRIMARY KEY, name TEXT UNIQUE NOT NULL, "
            "applied_at TIMESTAMP DEFAULT NOW())",
            "CREATE INDEX migrations_applied ON assistant.migrations (applied_at)",
            "CREATE TABLE minno.audit_log (id BIGSERIAL PRIMARY KEY, workspace_id UUID "
            "REFERENCES minno.workspaces (id), action TEXT NOT NULL)")
    verify = cli("migrate", "verify", "--format", "json", env=env_for(migrated))
    assert verify.exit_code == 0, (verify.stdout, verify.stderr)
    assert json.loads(verify.stdout) == []
    assert "table assistant.migrations is not managed by minnoctl" in verify.stderr
    assert "table minno.audit_log is not managed by minnoctl" in verify.stderr
    assert "sequence" not in verify.stderr  # the serial's sequence belongs to the app's table
    result, check = schema_check(cli, migrated)
    assert check["status"] == "OK", check
    assert "not managed" in check["value"]


def test_backfill_for_a_database_migrated_without_baseline(migrated, cli):
    execute(migrated, "DROP TABLE minnoctl.schema_baseline")
    verify = cli("migrate", "verify", env=env_for(migrated))
    assert verify.exit_code == 0, verify.stderr
    assert "module chatbot: no current baseline" in verify.stderr
    _, check = schema_check(cli, migrated)
    assert check["status"] == "UNKNOWN" and "no baseline" in check["value"], check
    # damage done before the baseline exists is taken as it is: the documented limit
    execute(migrated, *DAMAGE["index"][0])
    ran = cli("migrate", env=env_for(migrated))
    assert ran.exit_code == 0, ran.stderr
    warnings = [ln for ln in ran.stderr.splitlines() if "no schema baseline" in ln]
    assert len(warnings) == len(migrate.installed_modules(_applied(migrated))), ran.stderr
    assert cli("migrate", "verify", env=env_for(migrated)).exit_code == 0
    execute(migrated, "DROP INDEX chatbot.idx_messages_metadata")
    again = cli("migrate", "verify", env=env_for(migrated))
    assert again.exit_code == ExitCode.DRIFT
    assert "index chatbot.idx_messages_metadata is missing" in again.stdout
    assert "idx_messages_role" not in again.stdout


def _applied(url: str):
    with psycopg.connect(url) as conn:
        return migrate.read_applied(conn)


def test_rollback_records_the_schema_it_leaves(migrated):
    settings = load_settings(env=env_for(migrated))
    done = migrate.rollback(settings, steps=1)
    with psycopg.connect(migrated) as conn:
        report = drift.check(conn)
        baselines = drift.read_baselines(conn)
        applied = migrate.read_applied(conn)
    assert report.drift == []
    module = done[0].split("/")[0]
    remaining = [a.id for a in applied.values() if a.module == module]
    if remaining:
        assert baselines[module][0] == remaining[-1]
    else:
        assert module not in baselines
    migrate.migrate(settings)
    with psycopg.connect(migrated) as conn:
        assert drift.check(conn).drift == []


def test_last_rollback_of_a_module_removes_its_baseline(database):
    settings = load_settings(env=env_for(database))
    from minnoctl import modules

    migrate.init(settings, modules.parse_list("minno,slackbot"))
    count = sum(1 for a in _applied(database).values() if a.module == "slackbot")
    migrate.rollback(settings, steps=count)
    with psycopg.connect(database) as conn:
        assert "slackbot" not in drift.read_baselines(conn)
        assert drift.check(conn).drift == []


def test_fingerprint_is_one_query_and_ignores_search_path(migrated):
    with psycopg.connect(migrated) as conn:
        conn.execute("SET search_path = chatbot, public")
        a = drift.fingerprints(conn, ["chatbot", "minno"])
        assert conn.execute("SHOW search_path").fetchone()[0] == "chatbot, public"
        conn.execute("SET search_path = public")
        b = drift.fingerprints(conn, ["chatbot", "minno"])
    assert a == b
    assert "chatbot.conversations" in a["chatbot"]["constraints"]["messages.messages_conversation_id_fkey"][1] or \
        any("REFERENCES chatbot.conversations" in v[1] for v in a["chatbot"]["constraints"].values())


def test_drizzle_kit_push(migrated, cli, tmp_path):
    """The real tool: spec 001's Drizzle schema (verbatim, its tables placed in the chatbot schema)
    pushed with drizzle-kit (pinned in tests/node, installed by .ci/run), which drops what the schema
    file does not declare. MINNOCTL_TEST_DRIZZLE_KIT may name another folder holding
    node_modules/.bin/drizzle-kit."""
    import os
    import subprocess
    from pathlib import Path

    from conftest import NODE_MODULES

    modules_dir = Path(os.environ["MINNOCTL_TEST_DRIZZLE_KIT"]) / "node_modules" \
        if os.environ.get("MINNOCTL_TEST_DRIZZLE_KIT") else NODE_MODULES
    tool = modules_dir / ".bin" / "drizzle-kit"
    if not tool.exists():
        if os.environ.get("CI"):
            pytest.fail("drizzle-kit is missing in CI: .ci/run must run `npm ci --prefix tests/node`")
        pytest.skip("drizzle-kit not installed (npm ci --prefix tests/node)")
    folder = tmp_path / "drizzle"
    folder.mkdir()
    (folder / "node_modules").symlink_to(modules_dir)  # the schema file imports drizzle-orm from here
    source = (Path(__file__).parent / "apps" / "vendored" / "001-schema.ts").read_text()
    source = source.replace("import { pgTable,", "import { pgSchema, pgTable,").replace("pgTable('", "chatbot.table('")
    source = source.replace("import { sql } from 'drizzle-orm';",
                            "import { sql } from 'drizzle-orm';\nexport const chatbot = pgSchema('chatbot');")
    (folder / "schema.ts").write_text(source)
    (folder / "drizzle.config.js").write_text(
        "module.exports = { dialect: 'postgresql', schema: './schema.ts', schemaFilter: ['chatbot'], "
        "dbCredentials: { url: process.env.DATABASE_URL } };\n")
    info = psycopg.conninfo.conninfo_to_dict(migrated)
    url = (f"postgresql://{info['user']}@localhost/{info['dbname']}?host={info['host']}"
           f"&port={info.get('port', '5432')}")
    pushed = subprocess.run([str(tool), "push", "--force"], cwd=folder, capture_output=True, text=True,
                            env=dict(os.environ, DATABASE_URL=url), timeout=180)
    assert pushed.returncode == 0, pushed.stdout[-2000:] + pushed.stderr[-2000:]
    verify = cli("migrate", "verify", "--format", "json", env=env_for(migrated))
    assert verify.exit_code == ExitCode.DRIFT
    details = {r["detail"] for r in json.loads(verify.stdout)}
    assert "table chatbot.messages_archive is missing" in details
    assert "constraint chatbot.messages.messages_role_check is missing" in details
    assert len([d for d in details if d.startswith("index chatbot.") and d.endswith(" is missing")]) == 9
    _, check = schema_check(cli, migrated)
    assert check["status"] == "CRITICAL", check
