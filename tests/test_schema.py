"""After init, everything the five documents name exists under the names they give, and their
example queries run — on the embedded PostgreSQL 18 and on Debian's PostgreSQL 15 (no pgvector,
so no knowledge module there)."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import psycopg
import pytest

import spec

SPEC_FILES = sorted(m.name for m in pkgutil.iter_modules([str(Path(spec.__file__).parent)]))


def load(name: str):
    return importlib.import_module(f"spec.{name}")


def skip_without(conn: psycopg.Connection, module: str) -> None:
    present = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (module,)).fetchone()
    if module == "knowledge" and not present:
        pytest.skip("knowledge needs pgvector, which this server lacks")
    assert present, f"schema {module} is missing"


def test_every_module_has_an_expected_objects_file():
    modules = {load(name).MODULE for name in SPEC_FILES}
    assert modules == set(spec.MODULES)


@pytest.mark.parametrize("name", SPEC_FILES)
def test_catalog_has_every_named_object(migrated, name):
    expected = load(name)
    schema = expected.MODULE
    with psycopg.connect(migrated) as conn:
        skip_without(conn, schema)
        columns: dict[str, set[str]] = {}
        for table, column in conn.execute(
                "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = %s",
                (schema,)):
            columns.setdefault(table, set()).add(column)
        for table, cols in expected.TABLES.items():
            assert table in columns, f"{schema}.{table} is missing"
            missing = set(cols) - columns[table]
            assert not missing, f"{schema}.{table} lacks columns {sorted(missing)}"
        indexes = {r[0] for r in conn.execute("SELECT indexname FROM pg_indexes WHERE schemaname = %s", (schema,))}
        assert set(expected.INDEXES) <= indexes, f"missing indexes {sorted(set(expected.INDEXES) - indexes)}"
        invalid = conn.execute(
            "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND NOT i.indisvalid",
            (schema,)).fetchall()
        assert invalid == []
        views = {r[0] for r in conn.execute("SELECT viewname FROM pg_views WHERE schemaname = %s", (schema,))}
        assert set(expected.VIEWS) <= views, f"missing views {sorted(set(expected.VIEWS) - views)}"
        functions = {r[0] for r in conn.execute(
            "SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = %s",
            (schema,))}
        assert set(expected.FUNCTIONS) <= functions, f"missing functions {sorted(set(expected.FUNCTIONS) - functions)}"
        triggers = {r[0] for r in conn.execute(
            "SELECT t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND NOT t.tgisinternal",
            (schema,))}
        assert set(expected.TRIGGERS) <= triggers, f"missing triggers {sorted(set(expected.TRIGGERS) - triggers)}"


@pytest.mark.parametrize("name", SPEC_FILES)
def test_documents_example_queries_run(migrated, name):
    expected = load(name)
    schema = expected.MODULE
    with psycopg.connect(migrated) as conn:
        skip_without(conn, schema)
        for query in expected.EXAMPLE_QUERIES:
            with conn.transaction(force_rollback=True):
                conn.execute(f"SET LOCAL search_path TO {schema}, public")
                try:
                    conn.execute(query)
                except psycopg.Error as exc:
                    pytest.fail(f"{schema}: {query.strip()[:200]!r} failed: {exc}")


def test_functions_do_not_depend_on_the_callers_search_path(migrated):
    with psycopg.connect(migrated) as conn:
        rows = conn.execute(
            "SELECT n.nspname, p.proname, p.proconfig FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname IN ('minno', 'chatbot', 'assistant', 'supervisor', 'knowledge', 'slackbot')").fetchall()
    assert rows
    loose = [f"{s}.{f}" for s, f, config in rows if not any(c.startswith("search_path=") for c in (config or []))]
    assert loose == []


def test_no_object_lands_outside_the_module_schemas(migrated):
    with psycopg.connect(migrated) as conn:
        stray = conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'v', 'i', 'S', 'm')").fetchall()
    # but stock yoyo's bookkeeping, which minnoctl writes in public too (minnoctl/yoyo_compat.py)
    yoyo = {"_yoyo_log", "_yoyo_log_pkey", "_yoyo_migration", "_yoyo_migration_pkey", "_yoyo_version",
            "_yoyo_version_pkey"}
    assert [r for r in stray if r[0] not in yoyo] == []
