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
                          "SELECT * FROM supervisor.secrets", "SELECT * FROM minnoctl.migrations",
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
