"""Output formats (render.py) and the command-line surface: help, version, errors, no colour off a
terminal, passwords never shown. No database: `config show` does not connect."""

from __future__ import annotations

import csv
import datetime as dt
import decimal
import io
import json
import re
import sys
import uuid
from pathlib import Path

import pytest
import tabulate
import typer.main

from minnoctl import __version__, render
from minnoctl.cli import app
from minnoctl.formats import FORMATS

PASSWORD = "Zebra-Quokka-7391"
URL = f"postgresql://app:{PASSWORD}@db.example:5432/minno"
README = Path(__file__).resolve().parent.parent / "README.md"

GROUPS = ["db", "migrate", "app", "seed", "backup", "token", "ports", "cleanup", "health", "local", "config"]
# the commands still to be built, as the code declares them (shrinks as issues land)


def one_error_line(result) -> str:
    assert "Traceback" not in result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("minnoctl: error: ")
    return lines[0]


def render_to_string(rows, columns, fmt, **kwargs) -> str:
    out = io.StringIO()
    render.table(rows, columns, fmt, out=out, **kwargs)
    return out.getvalue()


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


# ---------------------------------------------------------------------------------------------
# render.table


def test_every_offered_tabulate_format_exists():
    assert render.TABULATE_FORMATS  # re-exported from formats.py
    for name in render.TABULATE_FORMATS:
        assert name in tabulate.tabulate_formats, name
    assert set(render.TABULATE_FORMATS) < set(render.FORMATS)
    assert render.FORMATS[:3] == ("table", "json", "csv")


def test_json_is_a_list_of_dicts_with_stable_types():
    when = dt.datetime(2024, 5, 1, 12, 30, 15, tzinfo=dt.UTC)
    ident = uuid.UUID("12345678-1234-5678-1234-567812345678")
    rows = [
        {"name": "a", "when": when, "amount": decimal.Decimal("1.10"), "id": ident, "n": 3, "none": None,
         "day": dt.date(2024, 5, 1), "ignored": "not a column"},
        {"name": "b", "when": None, "amount": decimal.Decimal("-0.0001"), "id": None, "n": 0, "none": None,
         "day": None},
    ]
    columns = ["name", "when", "amount", "id", "n", "none", "day"]
    doc = json.loads(render_to_string(rows, columns, "json"))
    assert isinstance(doc, list) and all(isinstance(r, dict) for r in doc)
    assert [list(r) for r in doc] == [columns, columns]
    assert doc[0] == {"name": "a", "when": "2024-05-01T12:30:15+00:00", "amount": "1.10",
                      "id": "12345678-1234-5678-1234-567812345678", "n": 3, "none": None, "day": "2024-05-01"}
    assert doc[1]["amount"] == "-0.0001" and doc[1]["when"] is None


def test_json_document_replaces_the_rows():
    doc = json.loads(render_to_string([{"a": 1}], ["a"], "json", document={"status": "OK", "at": dt.date(2024, 1, 2)}))
    assert doc == {"status": "OK", "at": "2024-01-02"}


def test_csv_round_trips_through_the_csv_module():
    rows = [
        {"name": "comma, inside", "note": 'a "quoted" word', "multi": "line one\nline two"},
        {"name": "plain", "note": None, "multi": dt.datetime(2024, 5, 1, 8, 0)},
        {"name": "numbers", "note": decimal.Decimal("12.50"), "multi": 1234567.891},
        {"name": "float noise", "note": 0.1 + 0.2, "multi": 3.0},
    ]
    text = render_to_string(rows, ["name", "note", "multi"], "csv")
    parsed = list(csv.reader(io.StringIO(text)))
    assert parsed == [
        ["name", "note", "multi"],
        ["comma, inside", 'a "quoted" word', "line one\nline two"],
        ["plain", "", "2024-05-01 08:00:00"],  # times in the one text style, to the second
        ["numbers", "12.50", "1234567.891"],  # floats are not rounded to 6 digits
        ["float noise", "0.3", "3"],
    ]
    assert '"comma, inside"' in text and '"a ""quoted"" word"' in text


def test_plain_with_one_column_prints_bare_values():
    rows = [{"name": "alpha"}, {"name": "beta gamma"}, {"name": None}, {"name": 42}]
    assert render_to_string(rows, ["name"], "plain") == "alpha\nbeta gamma\n\n42\n"
    assert render_to_string([], ["name"], "plain") == ""


def test_plain_with_several_columns_has_no_header():
    text = render_to_string([{"a": "x1", "b": "y1"}, {"a": "x2", "b": "y2"}], ["a", "b"], "plain")
    lines = text.splitlines()
    assert [ln.split() for ln in lines] == [["x1", "y1"], ["x2", "y2"]]


def test_github_has_a_header_row():
    text = render_to_string([{"name": "a", "n": 1}, {"name": "bb", "n": 22}], ["name", "n"], "github")
    lines = text.splitlines()
    assert [c.strip() for c in lines[0].strip("|").split("|")] == ["name", "n"]
    assert set(lines[1]) <= set("|-: ") and "-" in lines[1]
    assert [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[2:]] == [["a", "1"], ["bb", "22"]]


def test_table_off_a_terminal_is_plain_text():
    text = render_to_string([{"name": "a", "status": "OK"}], ["name", "status"], "table",
                            styles={"status": lambda v: "green"})
    assert "\x1b[" not in text
    assert text.split() == ["name", "status", "------", "--------", "a", "OK"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_renders_the_values(fmt):
    text = render_to_string([{"setting": "timeout", "value": 10}], ["setting", "value"], fmt)
    assert "timeout" in text and "10" in text
    assert "\x1b[" not in text


@pytest.mark.parametrize("fmt", ["nope", "nagios", "JSON", ""])
def test_unknown_format_raises_value_error(fmt):
    with pytest.raises(ValueError, match="unknown format"):
        render_to_string([{"a": 1}], ["a"], fmt)


@pytest.fixture
def terminal(monkeypatch):
    """A function that makes stdout and stderr (fake) terminals and rebuilds the consoles.

    Called inside the test: pytest's own capture replaces sys.stdout between setup and call."""
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLUMNS"):
        monkeypatch.delenv(name, raising=False)

    def make() -> tuple[FakeTerminal, FakeTerminal]:
        out, err = FakeTerminal(), FakeTerminal()
        monkeypatch.setattr(sys, "stdout", out)
        monkeypatch.setattr(sys, "stderr", err)
        render.reset()
        return out, err

    yield make
    render.reset()


def _print_both() -> None:
    render.table([{"name": "a", "status": "OK"}], ["name", "status"], "table", styles={"status": lambda v: "green"})
    render.error("something failed")


def test_a_terminal_gets_colour(terminal):
    out, err = terminal()
    _print_both()
    assert "\x1b[" in out.getvalue()  # so that the NO_COLOR test below can fail
    assert "\x1b[" in err.getvalue()
    assert "something failed" in err.getvalue()


def test_no_color_means_no_escape_codes_even_in_a_terminal(terminal, monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    out, err = terminal()
    _print_both()
    assert "\x1b[" not in out.getvalue()
    assert out.getvalue().split() == ["name", "status", "a", "OK"]
    assert err.getvalue() == "minnoctl: error: something failed\n"


# ---------------------------------------------------------------------------------------------
# config show


def test_config_show_json_masks_the_password(cli):
    result = cli("config", "show", "--format", "json", env={"MINNO_DATABASE_URL": URL})
    assert result.exit_code == 0, result.stderr
    assert PASSWORD not in result.stdout + result.stderr
    doc = json.loads(result.stdout)
    assert doc[0] == {"setting": "database", "value": "postgresql://app:****@db.example:5432/minno",
                      "source": "MINNO_DATABASE_URL"}
    assert {"setting", "value", "source"} == set().union(*doc)
    assert {r["setting"] for r in doc} >= {"database", "connect_timeout", "pool_size", "minno_home"}


def test_config_show_csv(cli):
    result = cli("config", "show", "--format", "csv", env={"MINNO_DATABASE_URL": URL, "DB_POOL_SIZE": "4"})
    assert result.exit_code == 0, result.stderr
    assert PASSWORD not in result.stdout + result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    by_setting = {r["setting"]: r for r in rows}
    assert by_setting["database"]["value"] == "postgresql://app:****@db.example:5432/minno"
    assert by_setting["database"]["source"] == "MINNO_DATABASE_URL"
    assert by_setting["pool_size"] == {"setting": "pool_size", "value": "4", "source": "DB_POOL_SIZE"}


@pytest.mark.parametrize("fmt", ["plain", "github", "table"])
def test_config_show_text_formats(cli, fmt):
    result = cli("config", "show", "--format", fmt, env={"MINNO_DATABASE_URL": URL})
    assert result.exit_code == 0, result.stderr
    assert PASSWORD not in result.stdout + result.stderr
    assert "****" in result.stdout
    database = next(ln for ln in result.stdout.splitlines() if "database" in ln and "setting" not in ln)
    assert "postgresql://app:****@db.example:5432/minno" in database
    assert "MINNO_DATABASE_URL" in database
    first = result.stdout.splitlines()[0]
    assert ("setting" in first) is (fmt != "plain")
    if fmt == "github":
        assert first.startswith("| setting")


@pytest.mark.parametrize("fmt", FORMATS)
def test_config_show_never_prints_the_password_in_any_format(cli, fmt):
    result = cli("config", "show", "--format", fmt, env={"MINNO_DATABASE_URL": URL})
    assert result.exit_code == 0, result.stderr
    assert PASSWORD not in result.stdout + result.stderr
    assert "****" in result.stdout


def test_config_show_with_password_in_argv_warns_and_masks(cli):
    result = cli("config", "show", "--format", "json", "--database-url", URL)
    assert result.exit_code == 0
    assert PASSWORD not in result.stdout + result.stderr
    assert "visible to other users" in result.stderr
    assert json.loads(result.stdout)[0]["source"] == "--database-url"


def test_unknown_format_is_a_usage_error_naming_the_valid_ones(cli):
    result = cli("config", "show", "--format", "nope", env={"MINNO_DATABASE_URL": URL})
    assert result.exit_code == 2
    assert result.stdout == ""
    line = one_error_line(result)
    assert "'nope'" in line
    for fmt in FORMATS:
        assert re.search(rf"\b{re.escape(fmt)}\b", line), fmt
    assert PASSWORD not in line


# ---------------------------------------------------------------------------------------------
# No colour off a terminal


@pytest.mark.parametrize("env", [{}, {"NO_COLOR": "1"}], ids=["not-a-terminal", "NO_COLOR"])
def test_no_escape_codes_when_not_a_terminal(cli, env):
    result = cli("config", "show", env={"MINNO_DATABASE_URL": URL, **env})
    assert result.exit_code == 0
    assert "\x1b[" not in result.stdout + result.stderr
    assert "MINNO_DATABASE_URL" in result.stdout
    bad = cli("config", "show", env={"MINNO_DATABASE_URL": f"mysql://app:{PASSWORD}@db/minno", **env})
    assert bad.exit_code == 3
    line = one_error_line(bad)
    assert "\x1b[" not in bad.stdout + bad.stderr
    assert "scheme 'mysql'" in line and PASSWORD not in line
    usage = cli("config", "show", "--bogus", env=env)
    assert usage.exit_code == 2
    assert "\x1b[" not in usage.stdout + usage.stderr


# ---------------------------------------------------------------------------------------------
# Help, groups, planned commands


def _command_listing(help_text: str) -> dict[str, str]:
    """The `Commands:` section of a help page: name -> description (wrapped lines joined)."""
    section = help_text.split("\nCommands:\n", 1)[1]
    entries: dict[str, str] = {}
    current = None
    for line in section.splitlines():
        if not line.strip():
            break
        match = re.match(r"^  (\S+)\s+(.*)$", line)
        if match and not line.startswith("   "):
            current = match.group(1)
            entries[current] = match.group(2).strip()
        elif current:
            entries[current] += " " + line.strip()
    return entries


def test_help_lists_every_group_with_a_description(cli):
    result = cli("--help")
    assert result.exit_code == 0
    assert result.stderr == ""
    listing = _command_listing(result.stdout)
    assert list(listing) == GROUPS
    for name, description in listing.items():
        assert len(description) > 10, name
        assert "not built" not in description, (name, description)


def test_no_arguments_prints_the_help_and_exits_0(cli):
    result = cli()
    assert result.exit_code == 0
    assert result.stdout.startswith("Usage: minnoctl")
    assert result.stdout == cli("--help").stdout
    assert list(_command_listing(result.stdout)) == GROUPS
    assert result.stderr == ""


def test_port_is_an_alias_of_ports(cli):
    ports, port = cli("ports", "--yes"), cli("port", "--yes")
    assert (port.exit_code, port.stdout) == (ports.exit_code, ports.stdout) == (2, "")
    assert port.stderr.replace("minnoctl port ", "minnoctl ports ") == ports.stderr
    ports_help, port_help = cli("ports", "--help"), cli("port", "--help")
    assert port_help.exit_code == ports_help.exit_code == 0
    assert port_help.stdout.replace("minnoctl port ", "minnoctl ports ") == ports_help.stdout


def _walk(cmd, path):
    yield path, cmd
    for name, sub in getattr(cmd, "commands", {}).items():
        yield from _walk(sub, f"{path} {name}")


ALL_COMMANDS = list(_walk(typer.main.get_command(app), "minnoctl"))


def test_the_command_tree_is_complete():
    paths = {path for path, _ in ALL_COMMANDS}
    assert {f"minnoctl {g}" for g in GROUPS} <= paths
    assert {"minnoctl port", "minnoctl config show", "minnoctl local status", "minnoctl local start",
            "minnoctl local stop"} <= paths


@pytest.mark.parametrize("path, cmd", ALL_COMMANDS, ids=[p for p, _ in ALL_COMMANDS])
def test_every_command_has_an_example_in_its_help(path, cmd):
    assert cmd.help and "Example:" in cmd.help, path
    example = cmd.help.split("Example:", 1)[1].strip().splitlines()[0]
    assert example.startswith("minnoctl"), (path, example)


def test_every_command_is_in_the_readme_with_an_example():
    """Every command and subcommand appears in the README as a command line (in a code block or
    between backticks), and so does the example its --help gives."""
    readme = README.read_text()
    lines = re.findall(r"`([^`\n]+)`", readme) + [ln.strip() for ln in readme.splitlines()]
    for path, cmd in ALL_COMMANDS:
        if path == "minnoctl" or path.startswith("minnoctl port ") or path == "minnoctl port":
            continue  # the root, and the hidden alias of `minnoctl ports`
        used = [ln for ln in lines if re.search(rf"(^|\s|=\S+ ){re.escape(path)}(\s|$)", ln)]
        assert used, f"README.md never shows `{path}`"
        example = cmd.help.split("Example:", 1)[1].strip().splitlines()[0].strip()
        assert example in readme, f"README.md lacks the example of `{path} --help`: {example}"


def _options(cmd):
    return [p for p in cmd.params if p.param_type_name == "option" and not p.is_flag and p.nargs == 1
            and p.type.name in ("integer", "float", "integer range", "float range", "number")]


NUMERIC_OPTIONS = [(path, cmd, opt) for path, cmd in ALL_COMMANDS if not getattr(cmd, "commands", None)
                   for opt in _options(cmd)]


@pytest.mark.parametrize("path, cmd, opt", NUMERIC_OPTIONS, ids=[f"{p} {o.opts[0]}" for p, _, o in NUMERIC_OPTIONS])
def test_a_bad_value_is_named_as_the_user_typed_the_option(cli, path, cmd, opt):
    args = path.split()[1:] + [opt.opts[0], "not-a-number"]
    result = cli(*args)
    assert result.exit_code == 2, (args, result.stderr)
    line = one_error_line(result)
    # click quotes the option ('--jobs'); minnoctl's bounded numbers lead with it (--jobs 'x' is not ...)
    assert f"'{opt.opts[0]}'" in line or f"error: {opt.opts[0]} 'not-a-number'" in line, line
    assert opt.name not in line.replace(opt.opts[0], "") or opt.name == opt.opts[0].lstrip("-"), line


REQUIRED = [(path, cmd) for path, cmd in ALL_COMMANDS if not getattr(cmd, "commands", None)
            and any(p.required for p in cmd.params)]


@pytest.mark.parametrize("path, cmd", REQUIRED, ids=[p for p, _ in REQUIRED])
def test_a_missing_option_or_argument_is_named_as_in_the_usage(cli, path, cmd):
    result = cli(*path.split()[1:])
    assert result.exit_code == 2, result.stderr
    line = one_error_line(result)
    first = next(p for p in cmd.params if p.required)
    shown = first.opts[0] if first.param_type_name == "option" else first.metavar
    assert shown and f"'{shown}'" in line, line
    assert shown.isupper() or shown.startswith("-"), shown


# ---------------------------------------------------------------------------------------------
# Version and usage errors


def test_version(cli):
    result = cli("--version")
    assert result.exit_code == 0
    assert result.stdout == f"minnoctl {__version__}\n" == "minnoctl 0.1.0\n"


def test_version_in_a_real_process(run_minnoctl):
    result = run_minnoctl("--version", timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "minnoctl 0.1.0\n"
    assert result.stderr == ""


@pytest.mark.parametrize("argv, named, see", [
    (["nosuch"], "'nosuch'", "see 'minnoctl --help'"),
    (["--nosuch"], "--nosuch", "see 'minnoctl --help'"),
    (["--formt", "json"], "--formt", "see 'minnoctl --help'"),
    (["config", "show", "--formt", "json"], "--formt", "see 'minnoctl config show --help'"),
    (["config", "sho"], "'sho'", "see 'minnoctl config --help'"),
    (["health", "--lve"], "--lve", "see 'minnoctl health --help'"),
    (["local", "status", "-z"], "-z", "see 'minnoctl local status --help'"),
])
def test_unknown_command_or_option_is_one_usage_line(cli, argv, named, see):
    result = cli(*argv)
    assert result.exit_code == 2
    assert result.stdout == ""
    line = one_error_line(result)
    assert named in line
    assert see in line
