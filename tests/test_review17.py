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
