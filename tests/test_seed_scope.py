"""`seed` empties only the tables minnoctl's migrations created: an app's own tables in a module
schema (spec 002's runMigrations table `migrations`, spec 000's optional `audit_log`) keep their
rows, and a foreign key from an app table to a seeded table stops the seed with one clear line
and nothing changed. On both servers."""

from __future__ import annotations

import psycopg

from minnoctl import seed
from minnoctl.errors import ExitCode

APP_TABLES = (
    # spec 002's DatabaseService.runMigrations() bookkeeping
    "CREATE TABLE assistant.migrations (id SERIAL PRIMARY KEY, name VARCHAR(255) UNIQUE NOT NULL, "
    "executed_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP)",
    "INSERT INTO assistant.migrations (name) VALUES ('001_initial'), ('002_tokens')",
    # spec 000's optional audit table (no foreign key here: the FK case is its own test)
    "CREATE TABLE minno.audit_log (id BIGSERIAL PRIMARY KEY, workspace_id UUID, action TEXT NOT NULL, "
    "created_at TIMESTAMPTZ DEFAULT now())",
    "INSERT INTO minno.audit_log (action) VALUES ('login'), ('export'), ('logout')",
)


def env_for(url: str, kek) -> dict[str, str]:
    from minnoctl import crypto

    return {"MINNO_DATABASE_URL": url, "MINNO_MASTER_KEY": crypto.encode_key(kek.key)}


def count(url: str, table: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def execute(url: str, *statements: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def test_app_tables_keep_their_rows(migrated, cli, kek):
    execute(migrated, *APP_TABLES)
    result = cli("seed", "--yes", env=env_for(migrated, kek))
    assert result.exit_code == 0, result.stderr
    assert count(migrated, "assistant.migrations") == 2
    assert count(migrated, "minno.audit_log") == 3
    assert count(migrated, "minno.workspaces") > 0  # the seed itself went in
    with psycopg.connect(migrated) as conn:  # and its identity was not restarted
        assert conn.execute("SELECT max(id) FROM assistant.migrations").fetchone()[0] == 2
        target = seed.plan(conn, None)
    emptied = {f"{s}.{t}" for s, t in target.tables}
    assert "assistant.migrations" not in emptied and "minno.audit_log" not in emptied
    assert "minno.workspaces" in emptied and "chatbot.messages_archive" in emptied


def test_seeding_twice_keeps_app_rows(migrated, cli, kek):
    execute(migrated, *APP_TABLES)
    for _ in range(2):
        assert cli("seed", "--yes", env=env_for(migrated, kek)).exit_code == 0
    assert count(migrated, "assistant.migrations") == 2


def test_foreign_key_from_an_app_table_stops_the_seed(migrated, cli, kek):
    execute(migrated,
            "CREATE TABLE minno.audit_log (id BIGSERIAL PRIMARY KEY, "
            "workspace_id UUID REFERENCES minno.workspaces (id), action TEXT NOT NULL)",
            "INSERT INTO minno.workspaces (slack_team_id, slack_team_name) VALUES ('TAPP', 'app')",
            "INSERT INTO minno.audit_log (workspace_id, action) SELECT id, 'login' FROM minno.workspaces")
    result = cli("seed", "--yes", env=env_for(migrated, kek))
    assert result.exit_code == ExitCode.FAILURE, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("minnoctl: error")]
    assert len(lines) == 1, result.stderr
    assert "minno.audit_log" in lines[0] and "minno.workspaces" in lines[0] and "nothing was changed" in lines[0]
    assert count(migrated, "minno.audit_log") == 1
    assert count(migrated, "minno.workspaces") == 1  # nothing changed


def test_foreign_key_from_outside_the_module_schemas(migrated, cli, kek):
    execute(migrated,
            "CREATE TABLE public.app_notes (id int PRIMARY KEY, conversation_id UUID "
            "REFERENCES chatbot.conversations (id))")
    result = cli("seed", "--yes", "--modules", "chatbot", env=env_for(migrated, kek))
    assert result.exit_code == ExitCode.FAILURE, result.stderr
    assert "Traceback" not in result.stderr
    assert "public.app_notes" in result.stderr and "chatbot.conversations" in result.stderr


def test_managed_tables_follow_create_drop_and_rename(migrated, tmp_path, monkeypatch):
    """The parser: a table created, renamed and dropped by applied migrations; a function body's
    CREATE TABLE and a comment's do not count."""
    from minnoctl.seed import managed_from_sql

    sql = ("-- CREATE TABLE not_this (id int);\n"
           "CREATE TABLE IF NOT EXISTS a (id int);\n"
           "CREATE UNLOGGED TABLE \"B\" (id int);\n"
           "CREATE TEMP TABLE scratch (id int);\n"
           "CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $body$ "
           "BEGIN CREATE TABLE inner_t (id int); END $body$;\n"
           "ALTER TABLE a RENAME TO a2;\n"
           "ALTER TABLE a2 RENAME COLUMN id TO ident;\n"
           "CREATE TABLE other.elsewhere (id int);\n"
           "CREATE TABLE chatbot.qualified (id int);\n"
           "/* CREATE TABLE nor_this (id int); */\n"
           "CREATE TABLE gone (id int); DROP TABLE IF EXISTS gone, \"B\";\n")
    assert managed_from_sql(sql, "chatbot", set()) == {"a2", "qualified"}


def test_every_module_table_is_managed(migrated):
    """Against the real migration set: the parse finds exactly the tables the migrations built."""
    with psycopg.connect(migrated) as conn:
        managed = seed.managed_tables(conn)
        for m in seed.installed_modules(conn):
            live = {t for _, t in seed.schema_tables(conn, [m.schema])}
            assert managed[m.schema] == live, m.name
