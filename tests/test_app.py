"""`minnoctl app`: the applications' login roles, used as the applications use them — connected
with the URL of the env file, running the documents' unqualified SQL — on both servers."""

from __future__ import annotations

import json
import os
import stat
import uuid
from pathlib import Path

import psycopg
import pytest

from minnoctl.errors import ExitCode
from test_migrate import init_args
from test_seed import env_for, one_error_line


def _roles(admin_url: str) -> set[str]:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        return {r[0] for r in conn.execute("SELECT rolname FROM pg_roles").fetchall()}


def drop_new_roles(admin_url: str, db_urls: list[str], before: set[str]) -> None:
    """Drop the roles a test made (cluster-wide), after revoking what they hold in its databases."""
    new = _roles(admin_url) - before
    for url in db_urls:
        try:
            with psycopg.connect(url, autocommit=True) as conn:
                for role in new:
                    conn.execute(f'DROP OWNED BY "{role}"')
        except psycopg.OperationalError:
            pass  # the database is gone already
    with psycopg.connect(admin_url, autocommit=True) as conn:
        for role in new:
            conn.execute(f'DROP ROLE IF EXISTS "{role}"')


@pytest.fixture
def db(migrated, any_server):
    """A migrated database; the roles the test makes are dropped afterwards."""
    before = _roles(any_server.admin_url)
    yield migrated
    drop_new_roles(any_server.admin_url, [migrated], before)


def create(cli, url: str, *args: str, input: str | None = None):
    result = cli("app", "create", *args, "--format", "json", env=env_for(url), input=input)
    return result


def env_url(path: Path) -> str:
    text = path.read_text()
    assert text.startswith("DATABASE_URL=") and text.endswith("\n") and text.count("\n") == 1, text
    value = text[len("DATABASE_URL="):].strip()
    return value[1:-1] if value.startswith("'") else value


def password_of(url: str) -> str:
    from urllib.parse import unquote, urlsplit

    return unquote(urlsplit(url).password or "")


def app_connect(url: str) -> psycopg.Connection:
    return psycopg.connect(url, autocommit=True, prepare_threshold=None)


def test_create_one_module_gives_a_role_that_runs_the_documents_unqualified_sql(cli, db, tmp_path):
    result = create(cli, db, "chatbot")
    assert result.exit_code == 0, result.stderr
    [record] = json.loads(result.stdout)
    assert record["role"] == "chatbot_app" and record["modules"] == ["chatbot"]
    assert record["search_path"] == "chatbot, minno, public"
    assert record["password"] == "generated"
    env_file = Path(record["env_file"])
    assert env_file == tmp_path / "chatbot_app.env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    url = env_url(env_file)
    password = password_of(url)
    assert len(password) >= 32
    assert password not in result.stdout + result.stderr
    assert ":" not in record["url"].split("//", 1)[1].split("@", 1)[0]  # no password in the printed URL
    assert record["url"].startswith("postgresql://chatbot_app@")
    with app_connect(url) as app:
        assert app.execute("SELECT current_user").fetchone()[0] == "chatbot_app"
        assert app.execute("SHOW search_path").fetchone()[0] == "chatbot, minno, public"
        cid = app.execute("INSERT INTO conversations (user_id) VALUES ('U1') RETURNING id").fetchone()[0]
        app.execute("INSERT INTO messages (conversation_id, role, content) VALUES (%s, 'user', 'hi')", (cid,))
        assert app.execute("SELECT count(*) FROM messages WHERE conversation_id = %s", (cid,)).fetchone()[0] == 1
        app.execute("UPDATE conversations SET metadata = '{\"a\": 1}' WHERE id = %s", (cid,))
        app.execute("DELETE FROM conversations WHERE id = %s", (cid,))
        for forbidden in ("SELECT * FROM minno.encryption_keys", "SELECT * FROM minno.oauth_tokens",
                          "SELECT * FROM minno.workspaces", "SELECT * FROM assistant.user_tokens",
                          "SELECT * FROM supervisor.secrets", "SELECT * FROM minnoctl.app_roles",
                          "CREATE TABLE chatbot.mine (x int)", "CREATE TABLE public.mine (x int)",
                          "TRUNCATE conversations"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                app.execute(forbidden)


def test_modules_with_encrypted_columns_read_the_wrapped_keys_and_nothing_else_of_the_core(cli, db):
    result = create(cli, db, "assistant", "supervisor")
    assert result.exit_code == 0, result.stderr
    records = {r["role"]: r for r in json.loads(result.stdout)}
    assert set(records) == {"assistant_app", "supervisor_app"}
    assistant = env_url(Path(records["assistant_app"]["env_file"]))
    with app_connect(assistant) as app:
        app.execute("SELECT * FROM user_tokens")
        app.execute("SELECT * FROM sessions")
        app.execute("SELECT id, key_number, status FROM encryption_keys")  # through search_path minno
        for forbidden in ("SELECT * FROM minno.oauth_tokens", "SELECT * FROM minno.key_audit_log",
                          "SELECT * FROM supervisor.secrets", "DELETE FROM encryption_keys",
                          "UPDATE encryption_keys SET status = status", "SELECT * FROM minno.workspaces"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                app.execute(forbidden)
    supervisor = env_url(Path(records["supervisor_app"]["env_file"]))
    with app_connect(supervisor) as app:
        app.execute("SELECT * FROM secrets")
        app.execute("SELECT * FROM projects")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            app.execute("SELECT * FROM assistant.user_tokens")


def test_minno_reads_its_tables_but_never_writes_the_keyring(cli, db):
    result = create(cli, db, "minno")
    assert result.exit_code == 0, result.stderr
    [record] = json.loads(result.stdout)
    assert record["search_path"] == "minno, public"
    with app_connect(env_url(Path(record["env_file"]))) as app:
        app.execute("SELECT * FROM workspaces")
        app.execute("INSERT INTO workspaces (slack_team_id, slack_team_name) VALUES ('T1', 'one')")
        app.execute("SELECT * FROM oauth_tokens")
        app.execute("SELECT * FROM encryption_keys")
        for forbidden in ("INSERT INTO encryption_keys DEFAULT VALUES", "DELETE FROM encryption_keys",
                          "SELECT * FROM key_audit_log", "SELECT * FROM chatbot.conversations"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                app.execute(forbidden)


def test_db_init_force_drops_minnoctls_schemas_and_the_app_roles_come_back_with_their_grants(cli, db):
    first = create(cli, db, "chatbot")
    assert first.exit_code == 0
    url = env_url(Path(json.loads(first.stdout)[0]["env_file"]))
    result = cli(*init_args(db), "--force", env=env_for(db))
    assert result.exit_code == 0, result.stderr
    assert "re-applied the grants of app role(s) chatbot_app" in result.stderr
    with app_connect(url) as app:  # the same login works on the rebuilt tables
        app.execute("INSERT INTO conversations (user_id) VALUES ('U-after-force')")
    [record] = json.loads(cli("app", "list", "--format", "json", env=env_for(db)).stdout)
    assert (record["role"], record["status"]) == ("chatbot_app", "complete"), record
    again = create(cli, db, "chatbot")
    assert again.exit_code == 0 and json.loads(again.stdout)[0]["password"] == "unchanged", again.stderr


def test_one_role_for_several_modules_in_the_order_given(cli, db, any_server):
    from conftest import modules_for

    second = "knowledge" if modules_for(any_server) is None else "slackbot"
    role = f"svc_{uuid.uuid4().hex[:8]}"
    result = create(cli, db, "supervisor", second, "--role", role)
    assert result.exit_code == 0, result.stderr
    [record] = json.loads(result.stdout)
    assert record["role"] == role and record["modules"] == ["supervisor", second]
    assert record["search_path"] == f"supervisor, {second}, minno, public"
    with app_connect(env_url(Path(record["env_file"]))) as app:
        assert app.execute("SHOW search_path").fetchone()[0] == f"supervisor, {second}, minno, public"
        app.execute("INSERT INTO projects (name, path) VALUES ('odin', '/srv/odin')")
        app.execute("SELECT * FROM secrets")
        app.execute("SELECT * FROM encryption_keys")  # supervisor has encrypted columns
        if second == "knowledge":
            app.execute("SELECT * FROM learnings")
            app.execute("SELECT * FROM knowledge_coverage_by_project")
        else:
            app.execute("SELECT cleanup_expired_cache()")  # EXECUTE on its functions
            app.execute("SELECT * FROM active_sessions")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            app.execute("SELECT * FROM chatbot.messages")


def test_every_installed_module_gets_its_role_and_a_second_run_keeps_the_passwords(cli, db, tmp_path):
    from minnoctl import modules
    from minnoctl.config import load_settings
    from minnoctl.connection import connect

    with connect(load_settings(db), autocommit=True) as conn:
        from minnoctl import apps

        installed = [m.name for m in apps.installed(conn)]
    result = create(cli, db)
    assert result.exit_code == 0, result.stderr
    records = json.loads(result.stdout)
    assert [r["role"] for r in records] == [f"{n}_app" for n in installed]
    assert [r["modules"] for r in records] == [[n] for n in installed]
    assert all(r["password"] == "generated" for r in records)
    files = {r["role"]: Path(r["env_file"]) for r in records}
    assert all(p.parent == tmp_path and stat.S_IMODE(p.stat().st_mode) == 0o600 for p in files.values())
    before = {role: p.read_text() for role, p in files.items()}
    again = create(cli, db)
    assert again.exit_code == 0, again.stderr
    for record in json.loads(again.stdout):
        assert record["password"] == "unchanged" and record["env_file"] is None
    assert {role: p.read_text() for role, p in files.items()} == before
    for role, path in files.items():
        module = modules.get(role[:-len("_app")])
        with app_connect(env_url(path)) as app:
            tables = app.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                                 (module.schema,)).fetchall()
            assert tables
            for (table,) in tables:  # every table of its module, unqualified
                app.execute(f'SELECT * FROM "{table}" LIMIT 1')
    listed = cli("app", "list", "--format", "json", env=env_for(db))
    assert listed.exit_code == 0, listed.stdout
    doc = json.loads(listed.stdout)
    assert sorted(r["role"] for r in doc) == sorted(files)
    assert all(r["status"] == "complete" and r["missing"] == [] and r["extra"] == [] for r in doc), doc


def _migration_set_with_a_new_chatbot_table(tmp_path: Path) -> Path:
    import shutil

    from test_migrate import REPO_MIGRATIONS

    copy = tmp_path / "migrations"
    shutil.copytree(REPO_MIGRATIONS, copy)
    (copy / "chatbot" / "0099_test_app_notes.sql").write_text(
        "-- a table, a sequence and a function added after the app role was made\n"
        "SET LOCAL search_path = chatbot, public;\n"
        "CREATE TABLE notes (id serial PRIMARY KEY, body text NOT NULL);\n"
        "CREATE VIEW note_bodies AS SELECT body FROM notes;\n"
        "CREATE FUNCTION note_count() RETURNS bigint LANGUAGE sql SET search_path = chatbot, public\n"
        "    AS $$ SELECT count(*) FROM notes $$;\n"
        "REVOKE EXECUTE ON FUNCTION note_count() FROM PUBLIC;\n")
    (copy / "chatbot" / "0099_test_app_notes.rollback.sql").write_text(
        "SET LOCAL search_path = chatbot, public;\nDROP FUNCTION note_count();\nDROP VIEW note_bodies;\n"
        "DROP TABLE notes;\n")
    return copy


def test_grants_survive_a_later_migration_that_adds_a_table(cli, db, tmp_path):
    result = create(cli, db, "chatbot")
    assert result.exit_code == 0, result.stderr
    url = env_url(Path(json.loads(result.stdout)[0]["env_file"]))
    copy = _migration_set_with_a_new_chatbot_table(tmp_path)
    migrated = cli("migrate", env={**env_for(db), "MINNOCTL_MIGRATIONS_DIR": str(copy)})
    assert migrated.exit_code == 0, migrated.stderr
    assert "re-applied the grants of app role(s) chatbot_app" in migrated.stderr
    with app_connect(url) as app:
        app.execute("INSERT INTO notes (body) VALUES ('hello')")  # the table and its serial's sequence
        assert app.execute("SELECT body FROM note_bodies").fetchall() == [("hello",)]
        assert app.execute("SELECT note_count()").fetchone()[0] == 1  # EXECUTE although revoked from PUBLIC
        app.execute("UPDATE notes SET body = 'bye'")
        app.execute("DELETE FROM notes")
    listed = cli("app", "list", "--format", "json", env=env_for(db))
    assert listed.exit_code == 0 and json.loads(listed.stdout)[0]["status"] == "complete", listed.stdout


def test_default_privileges_alone_cover_a_table_made_by_the_migrating_role(cli, db):
    """Without minnoctl's re-apply (a table created by hand, as the migrating role)."""
    result = create(cli, db, "chatbot")
    url = env_url(Path(json.loads(result.stdout)[0]["env_file"]))
    with psycopg.connect(db, autocommit=True) as admin:
        admin.execute("CREATE TABLE chatbot.by_hand (id bigint GENERATED ALWAYS AS IDENTITY, x int)")
    with app_connect(url) as app:
        app.execute("INSERT INTO by_hand (x) VALUES (1)")
        assert app.execute("SELECT x FROM by_hand").fetchall() == [(1,)]


def test_a_role_dropped_by_hand_is_reported_by_migrate_and_list_not_recreated(cli, db, any_server, tmp_path):
    role = f"gone_{uuid.uuid4().hex[:8]}"
    assert create(cli, db, "chatbot", "--role", role).exit_code == 0
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(f'DROP OWNED BY "{role}"')
    with psycopg.connect(any_server.admin_url, autocommit=True) as conn:
        conn.execute(f'DROP ROLE "{role}"')
    copy = _migration_set_with_a_new_chatbot_table(tmp_path)
    migrated = cli("migrate", env={**env_for(db), "MINNOCTL_MIGRATIONS_DIR": str(copy)})
    assert migrated.exit_code == 0, migrated.stderr
    assert f"app role {role} (chatbot) is recorded but no longer exists" in migrated.stderr
    assert role not in _roles(any_server.admin_url)
    listed = cli("app", "list", "--format", "json", env=env_for(db))
    assert listed.exit_code == ExitCode.FAILURE
    [record] = json.loads(listed.stdout)
    assert record["status"] == "role missing" and record["exists"] is False
    dropped = cli("app", "drop", role, "--yes", env=env_for(db))
    assert dropped.exit_code == 0, dropped.stderr
    assert json.loads(cli("app", "list", "--format", "json", env=env_for(db)).stdout) == []


def test_list_names_missing_and_extra_grants_and_create_repairs_them(cli, db):
    assert create(cli, db, "chatbot").exit_code == 0
    with psycopg.connect(db, autocommit=True) as admin:
        admin.execute("REVOKE SELECT ON chatbot.messages FROM chatbot_app")
        admin.execute("GRANT SELECT ON minno.oauth_tokens TO chatbot_app")
        admin.execute("ALTER ROLE chatbot_app IN DATABASE " + admin.info.dbname + " SET search_path = public")
    listed = cli("app", "list", "--format", "json", env=env_for(db))
    assert listed.exit_code == ExitCode.FAILURE
    [record] = json.loads(listed.stdout)
    assert record["status"] == "incomplete" and record["search_path"] == "public"
    assert "SELECT on table chatbot.messages" in record["missing"]
    assert any(m.startswith("search_path chatbot, minno, public") for m in record["missing"])
    assert record["extra"] == ["SELECT on table minno.oauth_tokens"]
    table = cli("app", "list", env=env_for(db))
    assert "SELECT on table chatbot.messages" in table.stdout and "incomplete" in table.stdout
    repaired = create(cli, db, "chatbot")
    assert repaired.exit_code == 0, repaired.stderr
    [record] = json.loads(cli("app", "list", "--format", "json", env=env_for(db)).stdout)
    assert record["status"] == "complete", record


def test_allow_ddl_grants_create_and_leaving_it_out_takes_it_back(cli, db):
    result = create(cli, db, "chatbot", "--allow-ddl")
    assert result.exit_code == 0, result.stderr
    url = env_url(Path(json.loads(result.stdout)[0]["env_file"]))
    with app_connect(url) as app:
        app.execute("CREATE TABLE own_table (x int)")  # lands in chatbot, its first schema
        app.execute("INSERT INTO own_table VALUES (1)")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            app.execute("CREATE TABLE minno.nope (x int)")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            app.execute("CREATE TABLE minnoctl.nope (x int)")
    again = create(cli, db, "chatbot")  # the role owns a table in its own schema: still an app role
    assert again.exit_code == 0, again.stderr
    with app_connect(url) as app:
        assert app.execute("SELECT x FROM chatbot.own_table").fetchall() == [(1,)]  # its own table keeps working
        app.execute("TRUNCATE own_table")  # an owner's right, not revoked
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            app.execute("CREATE TABLE another (x int)")
    [listed] = json.loads(cli("app", "list", "--format", "json", env=env_for(db)).stdout)
    # its own table's rights are not extra
    assert (listed["status"], listed["allow_ddl"]) == ("complete", False), listed


def test_a_table_one_app_makes_itself_is_not_missing_from_the_other_apps_of_its_module(cli, db):
    """An app with --allow-ddl makes its own table (spec 002's `migrations`): the module's other
    logins are still complete — minnoctl grants what its migrations made, not another app's tables."""
    assert create(cli, db, "assistant").exit_code == 0
    ddl = create(cli, db, "assistant", "--role", "assistant_ddl_app", "--allow-ddl")
    assert ddl.exit_code == 0, ddl.stderr
    with app_connect(env_url(Path(json.loads(ddl.stdout)[0]["env_file"]))) as app:
        app.execute("CREATE TABLE IF NOT EXISTS migrations (id SERIAL PRIMARY KEY, "
                    "filename VARCHAR(255) UNIQUE NOT NULL, executed_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP)")
    listed = cli("app", "list", "--format", "json", env=env_for(db))
    assert listed.exit_code == 0, listed.stdout
    assert {r["role"]: r["status"] for r in json.loads(listed.stdout)} == {
        "assistant_app": "complete", "assistant_ddl_app": "complete"}
    again = create(cli, db, "assistant")  # what keep_grants does after every migration, too
    assert again.exit_code == 0, again.stderr
    with psycopg.connect(db) as admin:
        assert not admin.execute("SELECT has_table_privilege('assistant_app', 'assistant.migrations', 'SELECT')"
                                 ).fetchone()[0]  # the other app's table is not granted by minnoctl
    listed = cli("app", "list", "--format", "json", env=env_for(db))
    assert listed.exit_code == 0 and all(r["status"] == "complete" for r in json.loads(listed.stdout)), listed.stdout


def test_an_apps_own_login_can_run_the_readiness_probe_and_read_nothing_else_of_minnoctl(cli, db):
    """`minnoctl health --ready` with the application's own URL (a readiness probe in the app's
    pod): it reads which migrations are applied, and nothing else of minnoctl's bookkeeping."""
    result = create(cli, db, "chatbot")
    assert result.exit_code == 0, result.stderr
    url = env_url(Path(json.loads(result.stdout)[0]["env_file"]))
    probe = cli("health", "--ready", "--format", "json", env={"MINNO_DATABASE_URL": url})
    assert probe.exit_code == 0, probe.stdout + probe.stderr
    assert {c["name"]: c["status"] for c in json.loads(probe.stdout)["checks"]}["migrations"] == "OK"
    with app_connect(url) as app:
        for table in ("minnoctl.settings", "minnoctl.app_roles", "minnoctl.cleanup_runs"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                app.execute(f"SELECT * FROM {table}")
    [listed] = json.loads(cli("app", "list", "--format", "json", env=env_for(db)).stdout)
    assert listed["status"] == "complete", listed


@pytest.mark.parametrize("fmt", ["table", "plain", "csv", "github", "json"])
def test_every_format_shows_the_url_without_the_password(cli, db, fmt):
    result = cli("app", "create", "chatbot", "--new-password", "--format", fmt, env=env_for(db))
    assert result.exit_code == 0, result.stderr
    password = password_of(env_url(Path("chatbot_app.env")))
    assert password not in result.stdout + result.stderr
    assert "chatbot_app" in result.stdout and "generated" in result.stdout
    listed = cli("app", "list", "--format", fmt, env=env_for(db))
    assert listed.exit_code == 0 and "chatbot_app" in listed.stdout


def test_drop_revokes_forgets_and_drops_the_role(cli, db, any_server):
    role = f"drop_{uuid.uuid4().hex[:8]}"
    assert create(cli, db, "assistant", "--role", role).exit_code == 0
    refused = cli("app", "drop", role, env=env_for(db))  # no terminal, no --yes
    assert refused.exit_code == ExitCode.NOT_CONFIRMED
    assert role in _roles(any_server.admin_url)
    result = cli("app", "drop", role, "--yes", "--format", "json", env=env_for(db))
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == [{"role": role, "revoked": True, "dropped": True,
                                          "note": "revoked and dropped"}]
    assert role not in _roles(any_server.admin_url)
    with psycopg.connect(db, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM pg_default_acl d JOIN pg_namespace n ON n.oid = d.defaclnamespace "
                            "WHERE n.nspname = 'assistant' AND d.defaclacl::text LIKE %s",
                            (f"%{role}%",)).fetchone()[0] == 0
    missing = cli("app", "drop", role, "--yes", env=env_for(db))
    assert missing.exit_code == ExitCode.NOT_FOUND
    one_error_line(missing)


def test_drop_keeps_a_role_that_serves_another_database(cli, db, any_server):
    role = f"two_{uuid.uuid4().hex[:8]}"
    other = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(any_server.admin_url, autocommit=True) as conn:
        dbname = psycopg.conninfo.conninfo_to_dict(db)["dbname"]
        conn.execute(f'CREATE DATABASE "{other}" TEMPLATE "{dbname}"')
    try:
        other_url = any_server.url(other)
        assert create(cli, db, "chatbot", "--role", role).exit_code == 0
        assert create(cli, other_url, "chatbot", "--role", role).exit_code == 0
        result = cli("app", "drop", role, "--yes", "--format", "json", env=env_for(db))
        assert result.exit_code == 0, result.stderr
        [record] = json.loads(result.stdout)
        assert record["revoked"] is True and record["dropped"] is False
        assert other in record["note"]
        assert role in _roles(any_server.admin_url)
        with psycopg.connect(db, autocommit=True) as conn:
            assert not conn.execute("SELECT has_schema_privilege(%s, 'chatbot', 'USAGE')", (role,)).fetchone()[0]
        listed = json.loads(cli("app", "list", "--format", "json", env=env_for(other_url)).stdout)
        assert [r["status"] for r in listed] == ["complete"]  # the other database's grants are untouched
    finally:  # the role goes with the fixture's cleanup, once this database is gone
        with psycopg.connect(any_server.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{other}" WITH (FORCE)')


# ---------------------------------------------------------------------------------------------
# Bad input: one line, the documented exit code, nothing changed


@pytest.fixture
def small(database, any_server):
    """A database with only minno and chatbot installed; roles made are dropped afterwards."""
    from test_seed import env_for as env

    before = _roles(any_server.admin_url)
    from typer.testing import CliRunner

    from minnoctl.cli import app

    assert CliRunner().invoke(app, ["db", "init", "--modules", "chatbot", "--yes"], env=env(database)).exit_code == 0
    yield database
    drop_new_roles(any_server.admin_url, [database], before)


@pytest.mark.parametrize("args, stdin, code, says", [
    (["--role", "x_app"], None, ExitCode.USAGE, "--role needs the modules"),
    (["nosuch"], None, ExitCode.USAGE, "unknown module 'nosuch'"),
    (["slackbot"], None, ExitCode.NOT_FOUND, "module slackbot is not installed"),
    (["chatbot", "slackbot", "--role", "x_app"], None, ExitCode.NOT_FOUND, "not installed"),
    (["chatbot", "--role", "pg_mine"], None, ExitCode.USAGE, "reserved"),
    (["chatbot", "--role", "public"], None, ExitCode.USAGE, "reserved"),
    (["chatbot", "--role", "r" * 64], None, ExitCode.USAGE, "1 to 63 bytes"),
    (["chatbot", "--role", "é" * 32], None, ExitCode.USAGE, "1 to 63 bytes"),
    (["chatbot", "--role", "a\u200bb"], None, ExitCode.USAGE, "control character"),
    (["chatbot", "--role", "a\nb"], None, ExitCode.USAGE, "control character"),
    (["chatbot", "--role", ""], None, ExitCode.USAGE, "empty"),
    (["chatbot", "--role", "postgres"], None, ExitCode.USAGE, "superuser"),
    (["chatbot", "--password-stdin"], "\n", ExitCode.USAGE, "empty password"),
    (["chatbot", "--password-stdin"], "", ExitCode.USAGE, "empty password"),
    (["chatbot", "--password-stdin"], "a\x1bb\n", ExitCode.USAGE, "control character"),
    (["chatbot", "--password-stdin", "--new-password"], "pw-one-two\n", ExitCode.USAGE, "--new-password"),
    (["--password-stdin"], "pw-one-two\n", ExitCode.USAGE, "one role's password"),
    (["minno", "chatbot", "--password-stdin"], "pw-one-two\n", ExitCode.USAGE, "one role's password"),
    (["minno", "chatbot", "--env-file", "x.env"], None, ExitCode.USAGE, "--env-file names one file"),
    (["chatbot", "--env-file", "."], None, ExitCode.USAGE, "is a directory"),
    (["chatbot", "--env-file", "no/such/dir/x.env"], None, ExitCode.USAGE, "does not exist"),
    (["chatbot", "--env-file", "app.env"], None, ExitCode.USAGE, "already holds other settings"),
    (["chatbot", "--env-file", ""], None, ExitCode.USAGE, "empty"),
    (["chatbot", "--format", "yaml"], None, ExitCode.USAGE, "unknown format"),
    (["chatbot", "--nosuch"], None, ExitCode.USAGE, "--nosuch"),
])
def test_bad_input_is_one_line_and_changes_nothing(cli, small, any_server, tmp_path, args, stdin, code, says):
    (tmp_path / "app.env").write_text("NODE_ENV=production\nDATABASE_URL=postgresql://old@h/db\n")
    before_roles = _roles(any_server.admin_url)
    result = cli("app", "create", *args, env=env_for(small), input=stdin)
    assert result.exit_code == code, result.stderr
    assert says in one_error_line(result), result.stderr
    assert result.stdout == ""
    assert _roles(any_server.admin_url) == before_roles
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.env"]
    assert (tmp_path / "app.env").read_text().startswith("NODE_ENV=production")
    with psycopg.connect(small, autocommit=True) as conn:
        assert conn.execute("SELECT to_regclass('minnoctl.app_roles')").fetchone()[0] is None


@pytest.mark.parametrize("args, code, says", [
    (["drop"], ExitCode.USAGE, "Missing argument 'ROLE'"),
    (["drop", "pg_signal_backend", "--yes"], ExitCode.USAGE, "reserved"),
    (["drop", "nobody_app", "--yes"], ExitCode.NOT_FOUND, "not an app role of this database"),
    (["drop", "x" * 70, "--yes"], ExitCode.USAGE, "1 to 63 bytes"),
    (["list", "--format", "yaml"], ExitCode.USAGE, "unknown format"),
    (["drop", "nobody_app", "--format", "xml"], ExitCode.USAGE, "unknown format"),
])
def test_bad_input_to_list_and_drop(cli, small, args, code, says):
    result = cli("app", *args, env=env_for(small))
    assert result.exit_code == code, result.stderr
    assert says in one_error_line(result)


def test_drop_refuses_a_recorded_role_that_became_a_superuser(cli, small, any_server):
    role = f"su_{uuid.uuid4().hex[:8]}"
    assert create(cli, small, "chatbot", "--role", role).exit_code == 0
    with psycopg.connect(any_server.admin_url, autocommit=True) as conn:
        conn.execute(f'ALTER ROLE "{role}" SUPERUSER')
    for args in (["drop", role, "--yes"], ["create", "chatbot", "--role", role]):
        result = cli("app", *args, env=env_for(small))
        assert result.exit_code == ExitCode.USAGE
        assert "superuser" in one_error_line(result)
    assert role in _roles(any_server.admin_url)


def test_list_on_a_database_without_app_roles_is_empty(cli, small):
    result = cli("app", "list", "--format", "json", env=env_for(small))
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == []


# ---------------------------------------------------------------------------------------------
# minnoctl connected as an ordinary role (no superuser)


@pytest.fixture
def owner(any_server):
    """A database owned by a plain role that ran db init (minno, chatbot); yields a factory of its
    URL as that role, given whether the role has CREATEROLE."""
    made: list[tuple[str, str]] = []
    before = _roles(any_server.admin_url)

    def make(createrole: bool) -> str:
        from psycopg.conninfo import conninfo_to_dict, make_conninfo
        from typer.testing import CliRunner

        from minnoctl.cli import app

        user, name = f"adm_{uuid.uuid4().hex[:8]}", f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(any_server.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE ROLE "{user}" LOGIN {"CREATEROLE" if createrole else ""}')
            conn.execute(f'CREATE DATABASE "{name}" OWNER "{user}"')
        made.append((user, name))
        params = conninfo_to_dict(any_server.url(name)) | {"user": user}
        url = make_conninfo("", **params)
        init = CliRunner().invoke(app, ["db", "init", "--modules", "chatbot", "--yes"], env=env_for(url))
        assert init.exit_code == 0, init.stderr
        return url

    yield make
    with psycopg.connect(any_server.admin_url, autocommit=True) as conn:
        for _user, name in made:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    drop_new_roles(any_server.admin_url, [], before)


def test_without_createrole_one_line_says_what_to_ask_for(cli, owner, any_server):
    url = owner(createrole=False)
    before = _roles(any_server.admin_url)
    result = create(cli, url, "chatbot")
    assert result.exit_code == ExitCode.FAILURE
    assert ("creating a role needs CREATEROLE — ask an admin, or pass --role NAME of an existing role"
            in one_error_line(result))
    me = psycopg.conninfo.conninfo_to_dict(url)["user"]
    self_role = create(cli, url, "chatbot", "--role", me)
    assert self_role.exit_code == ExitCode.USAGE
    assert "minnoctl itself connects as it" in one_error_line(self_role)
    assert _roles(any_server.admin_url) == before


@pytest.mark.parametrize("held", [False, True], ids=["no-privilege", "privilege-without-grant-option"])
def test_a_grant_that_does_not_take_rolls_back_everything_even_create_role(cli, owner, any_server, tmp_path, held):
    url = owner(createrole=True)
    stranger = f"str_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url, autocommit=True) as conn:
        dbname = conn.info.dbname
    with psycopg.connect(any_server.url(dbname), autocommit=True) as admin:  # a table minnoctl's role does not own
        admin.execute(f'CREATE ROLE "{stranger}"')
        admin.execute("CREATE TABLE chatbot.stranger (x int)")
        admin.execute(f'ALTER TABLE chatbot.stranger OWNER TO "{stranger}"')
        if held:  # GRANT then only warns, and grants nothing: the check before commit catches it
            me = psycopg.conninfo.conninfo_to_dict(url)["user"]
            admin.execute(f'GRANT SELECT, INSERT, UPDATE, DELETE ON chatbot.stranger TO "{me}"')
    before = _roles(any_server.admin_url)
    result = create(cli, url, "chatbot")
    assert result.exit_code == ExitCode.FAILURE, result.stderr
    line = one_error_line(result)
    if held:
        assert "could not grant role 'chatbot_app'" in line and "on table chatbot.stranger" in line, line
    else:
        assert "permission denied" in line and "stranger" in line, line
    assert "nothing was changed" in line
    assert _roles(any_server.admin_url) == before  # CREATE ROLE rolled back with the rest
    assert list(tmp_path.iterdir()) == []
    with psycopg.connect(any_server.url(dbname), autocommit=True) as admin:
        admin.execute("DROP TABLE chatbot.stranger")
    ok = create(cli, url, "chatbot")  # a plain CREATEROLE owner can do it all
    assert ok.exit_code == 0, ok.stderr
    with app_connect(env_url(Path(json.loads(ok.stdout)[0]["env_file"]))) as app:
        app.execute("SELECT * FROM conversations")
    dropped = cli("app", "drop", "chatbot_app", "--yes", "--format", "json", env=env_for(url))
    assert dropped.exit_code == 0 and json.loads(dropped.stdout)[0]["dropped"] is True, dropped.stderr


# ---------------------------------------------------------------------------------------------
# Passwords really checked: a server where every TCP login but postgres's needs its password


@pytest.fixture(scope="module")
def scram(tmp_path_factory):
    from minnoctl.local import bin_dir
    from pgcluster import DEBIAN_PG15, Cluster

    binaries = DEBIAN_PG15 if (DEBIAN_PG15 / "initdb").exists() else bin_dir()
    cluster = Cluster("scram", binaries, tmp_path_factory.mktemp("scram"), ssl=True).start()
    (cluster.pgdata / "pg_hba.conf").write_text(
        "local all all trust\nhost all postgres 127.0.0.1/32 trust\nhostssl all all 127.0.0.1/32 scram-sha-256\n")
    with psycopg.connect(cluster.url("postgres"), autocommit=True) as conn:
        conn.execute("ALTER SYSTEM SET log_statement = 'all'")  # the password must not reach the server's log
        conn.execute("SELECT pg_reload_conf()")
    yield cluster
    cluster.stop()


@pytest.fixture
def scram_db(scram, cli):
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(scram.url("postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = scram.url(name, sslmode="require")
    assert cli("db", "init", "--modules", "chatbot,assistant", "--yes", env=env_for(url)).exit_code == 0
    yield url
    with psycopg.connect(scram.url("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        for role in ("chatbot_app", "assistant_app", "stdin_app"):
            conn.execute(f'DROP ROLE IF EXISTS "{role}"')


def _server_log(cluster) -> str:
    return (cluster.pgdata / "server.log").read_text(errors="replace")


def test_the_generated_password_logs_in_over_ssl_and_a_new_one_replaces_it(cli, scram, scram_db, tmp_path):
    first = create(cli, scram_db, "chatbot")
    assert first.exit_code == 0, first.stderr
    [record] = json.loads(first.stdout)
    assert record["url"] == f"postgresql://chatbot_app@127.0.0.1:{scram.port}/{scram_db.split('/')[-1].split('?')[0]}" \
                            "?sslmode=require"
    url = env_url(tmp_path / "chatbot_app.env")
    assert url.endswith("?sslmode=require")
    old_password = password_of(url)
    with app_connect(url) as app:
        assert app.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()[0] is True
        app.execute("SELECT * FROM conversations")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        app_connect(url.replace(old_password, "wrong" + old_password[5:])).close()
    unchanged = create(cli, scram_db, "chatbot")
    assert json.loads(unchanged.stdout)[0]["password"] == "unchanged"
    assert env_url(tmp_path / "chatbot_app.env") == url
    renewed = create(cli, scram_db, "chatbot", "--new-password")
    assert json.loads(renewed.stdout)[0]["password"] == "generated"
    new_url = env_url(tmp_path / "chatbot_app.env")
    assert stat.S_IMODE((tmp_path / "chatbot_app.env").stat().st_mode) == 0o600
    assert new_url != url
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        app_connect(url).close()
    with app_connect(new_url) as app:
        app.execute("SELECT * FROM messages")
    log_text = _server_log(scram)
    for password in (old_password, password_of(new_url)):
        assert password not in log_text
        assert password not in first.stdout + first.stderr + renewed.stdout + renewed.stderr
    assert "SCRAM-SHA-256$" in log_text  # what the server was sent instead


def test_a_password_from_stdin_with_url_special_characters(cli, scram, scram_db, tmp_path):
    password = "pä ss'w&rd:/@%#?x"
    target = tmp_path / "conf" / "db.env"
    target.parent.mkdir()
    result = create(cli, scram_db, "assistant", "--role", "stdin_app", "--password-stdin", "--env-file",
                    str(target), input=password + "\n")
    assert result.exit_code == 0, result.stderr
    [record] = json.loads(result.stdout)
    assert record["password"] == "from stdin" and record["env_file"] == str(target)
    assert password not in result.stdout + result.stderr
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in target.parent.iterdir()] == ["db.env"]  # no temporary file left behind
    url = env_url(target)
    assert password_of(url) == password
    with app_connect(url) as app:
        assert app.execute("SHOW search_path").fetchone()[0] == "assistant, minno, public"
        app.execute("SELECT * FROM user_tokens")
    from minnoctl.config import read_env_file  # minnoctl's own .env reader (shell quoting) reads it back

    assert read_env_file(target)["DATABASE_URL"] == url
    assert password not in _server_log(scram)
    again = create(cli, scram_db, "assistant", "--role", "stdin_app", "--password-stdin", "--env-file",
                   str(target), input="second-password\r\n")
    assert again.exit_code == 0, again.stderr
    with app_connect(env_url(target)) as app:
        assert app.execute("SELECT current_user").fetchone()[0] == "stdin_app"
    assert password_of(env_url(target)) == "second-password"


def test_an_app_writes_encrypted_fields_through_the_security_definer_guard(cli, db, kek):
    """The keyring guard (minno.reject_retired_field_keys) locks the key row FOR SHARE, which needs
    UPDATE on the keyring: as a SECURITY DEFINER trigger it runs as its owner, so the app needs only
    SELECT on minno.encryption_keys and no EXECUTE; an unknown key is refused by the guard itself."""
    from minnoctl import crypto

    with psycopg.connect(db, autocommit=True) as admin:
        crypto.create_data_key(admin, kek, name="app-test", status="active")
    result = create(cli, db, "assistant")
    assert result.exit_code == 0, result.stderr
    with app_connect(env_url(Path(json.loads(result.stdout)[0]["env_file"]))) as app:
        assert not app.execute("SELECT has_function_privilege('minno.reject_retired_field_keys()', 'EXECUTE')"
                               ).fetchone()[0]
        keyring = crypto.load_keyring(app, kek)  # reads the wrapped keys with the app's own grants
        token = keyring.encrypt("assistant", "user_tokens", "google_access_token", "U1", "ya29.token")
        app.execute("INSERT INTO user_tokens (user_id, google_access_token) VALUES ('U1', %s)", (token,))
        stored = app.execute("SELECT google_access_token FROM user_tokens WHERE user_id = 'U1'").fetchone()[0]
        assert keyring.decrypt_text("assistant", "user_tokens", "google_access_token", "U1", stored) == "ya29.token"
        unknown = "AQAAA+c" + token[7:]  # version 1, key number 999
        assert crypto.field_key_number(unknown) == 999
        with pytest.raises(psycopg.Error) as refused:
            app.execute("UPDATE user_tokens SET google_access_token = %s WHERE user_id = 'U1'", (unknown,))
        assert refused.value.sqlstate == "MK001", refused.value  # the guard ran, not a permission error


def test_another_admin_drops_a_role_with_every_default_privilege_it_was_given(cli, owner, any_server):
    url = owner(createrole=True)
    role = f"by_owner_{uuid.uuid4().hex[:8]}"
    assert create(cli, url, "chatbot", "--role", role).exit_code == 0
    dbname = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
    result = cli("app", "drop", role, "--yes", "--format", "json", env=env_for(any_server.url(dbname)))
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)[0]["dropped"] is True, result.stdout
    assert role not in _roles(any_server.admin_url)


def test_a_real_process_reads_the_password_from_a_pipe_and_never_prints_it(db, tmp_path):
    import subprocess
    import sys

    password = "Pipe-Secret-7391-xyz"
    role = f"proc_{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "MINNO_DATABASE_URL": db}
    proc = subprocess.run([sys.executable, "-m", "minnoctl", "app", "create", "slackbot", "--role", role,
                           "--password-stdin", "--format", "json"], input=password + "\n", capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert password not in proc.stdout + proc.stderr
    assert json.loads(proc.stdout)[0]["password"] == "from stdin"
    assert password_of(env_url(tmp_path / f"{role}.env")) == password
    bad = subprocess.run([sys.executable, "-m", "minnoctl", "--traceback", "app", "create", "slackbot", "--role",
                          role, "--password-stdin", "--new-password"], input=password + "\n", capture_output=True,
                         text=True, env=env, cwd=tmp_path, timeout=120)
    assert bad.returncode == ExitCode.USAGE
    assert password not in bad.stdout + bad.stderr


def test_a_restore_into_another_database_keeps_the_grants_and_app_create_sets_the_path_again(cli, db, any_server,
                                                                                               tmp_path):
    assert create(cli, db, "chatbot", "--env-file", str(tmp_path / "first.env")).exit_code == 0
    (tmp_path / "backups").mkdir()
    env = {**env_for(db), "MINNO_BACKUP_DIR": str(tmp_path / "backups")}
    made = cli("backup", "create", "--output-format", "json", env=env)
    assert made.exit_code == 0, made.stderr
    target = f"r_{uuid.uuid4().hex[:10]}"
    try:
        restored = cli("backup", "restore", json.loads(made.stdout)["file"], "--into", target, env=env)
        assert restored.exit_code == 0, restored.stderr
        copy = any_server.url(target)
        listed = cli("app", "list", "--format", "json", env=env_for(copy))
        assert listed.exit_code == ExitCode.FAILURE
        [record] = json.loads(listed.stdout)
        assert record["search_path"] is None and record["missing"] == [
            "search_path chatbot, minno, public (set: none)"], record  # every grant came back with the dump
        again = create(cli, copy, "chatbot")
        assert again.exit_code == 0 and json.loads(again.stdout)[0]["password"] == "unchanged", again.stderr
        assert json.loads(cli("app", "list", "--format", "json", env=env_for(copy)).stdout)[0]["status"] == "complete"
    finally:
        with psycopg.connect(any_server.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{target}" WITH (FORCE)')


def test_an_owner_of_the_schemas_without_create_on_the_database(cli, owner):
    """A managed server's database owned by someone else: minnoctl's role owns its schemas but may not
    create schemas; app create creates only what is missing (the record's table)."""
    url = owner(createrole=True)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'REVOKE CREATE ON DATABASE "{conn.info.dbname}" FROM CURRENT_USER, PUBLIC')
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("CREATE SCHEMA IF NOT EXISTS minnoctl")
    result = create(cli, url, "chatbot")
    assert result.exit_code == 0, result.stderr
    assert json.loads(cli("app", "list", "--format", "json", env=env_for(url)).stdout)[0]["status"] == "complete"
