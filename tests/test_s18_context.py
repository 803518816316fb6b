"""One context per command (issue 18, item 1): every command gets its settings and sessions from a
Context and hands a render.Result to the renderer, which alone knows the formats; a session's setup
is made in one place (connection.open_session) and nothing minnoctl sets on a connection it is
given outlives its use — checked on real servers, through the library as an application calls it."""

from __future__ import annotations

import ast
import io
import json
from pathlib import Path

import psycopg
import pytest

from minnoctl import cleanup, locks, render, tokens

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "minnoctl"
CLI = sorted((PACKAGE / "cli").glob("*.py"))


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), str(path))


def _source(path: Path) -> str:
    return path.read_text()


# -- the structure ------------------------------------------------------------------------------

def test_no_command_compares_the_format_prints_with_rich_or_opens_a_connection_itself():
    found = []
    for path in CLI:
        if path.name == "options.py":  # the --format option itself
            continue
        for node in ast.walk(_tree(path)):
            where = f"{path.relative_to(REPO)}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.Compare):
                names = [n.id for n in [node.left, *node.comparators] if isinstance(n, ast.Name)]
                if any(n in ("fmt", "out", "fmt_") for n in names):
                    found.append(f"{where}: compares the output format (render.Result / render.show decide)")
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                module = node.module if isinstance(node, ast.ImportFrom) else None
                names = [a.name for a in node.names]
                if (module or "").startswith("rich") or any(n.startswith("rich") for n in names):
                    found.append(f"{where}: imports Rich (render.py owns the console)")
                if module == "minnoctl.connection" and {"connect", "session", "open_session"} & set(names):
                    found.append(f"{where}: opens connections itself (Context.session)")
                if "psycopg" in names or (module or "").startswith("psycopg"):
                    found.append(f"{where}: imports psycopg")
            if isinstance(node, ast.Attribute) and node.attr in ("table", "emit_json") \
                    and isinstance(node.value, ast.Name) and node.value.id == "render":
                found.append(f"{where}: render.{node.attr}() (hand a render.Result to ctx.show)")
    assert not found, "\n".join(found)


def test_session_setup_is_made_in_one_place():
    """application_name and TimeZone are set by the connection module (and by the lock that names its
    holder, and cleanup's UTC block); psycopg.connect is called by the connection module alone (and by
    the embedded server's bootstrap, before any setting exists)."""
    allowed = {
        "set_config('application_name'": {"connection.py", "locks.py"},
        "set_config('TimeZone'": {"connection.py", "cleanup.py"},
        "SET TimeZone": set(),
        "psycopg.connect(": {"connection.py", "local.py"},
    }
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = _source(path)
        for needle, files in allowed.items():
            if needle in text and path.name not in files:
                found.append(f"{path.relative_to(REPO)}: {needle}")
    assert not found, "\n".join(found)


def test_every_command_that_connects_builds_its_context():
    """A command file that takes --database-url builds a Context (cli.context), never Settings alone."""
    found = []
    for path in CLI:
        text = _source(path)
        if path.name == "options.py":  # where the option is declared
            continue
        if "DatabaseUrl" in text and "context(" not in text:
            found.append(f"{path.relative_to(REPO)}: takes --database-url but builds no Context")
        if "import settings" in text:
            found.append(f"{path.relative_to(REPO)}: resolves settings apart from its Context")
    assert not found, "\n".join(found)


# -- the renderer does the formats --------------------------------------------------------------

def _shown(result: render.Result, fmt: str) -> str:
    out = io.StringIO()
    render.show(result, fmt, out=out)
    return out.getvalue()


def test_plain_shows_the_lone_value_and_the_others_the_table():
    row = {"port": 4001, "service": "api"}
    result = render.Result([row], list(row), document=row, value=4001)
    assert _shown(result, "plain") == "4001\n"
    assert json.loads(_shown(result, "json")) == row
    assert _shown(result, "csv") == "port,service\n4001,api\n"


def test_an_empty_result_is_an_empty_json_array_and_nothing_in_the_text_formats():
    result = render.Result([], ["kind", "id", "detail"], document=[], text=False)
    assert json.loads(_shown(result, "json")) == []
    for fmt in ("table", "plain", "csv", "tsv", "simple"):
        assert _shown(result, fmt) == "", fmt


def test_cells_change_every_text_format_and_json_keeps_the_value():
    rows = [{"key": 1, "by_column": {"a.b": 2, "c.d": 3}}]
    result = render.Result(rows, ["key", "by_column"], cells={"by_column": lambda d: ", ".join(
        f"{k}={v}" for k, v in d.items())})
    assert json.loads(_shown(result, "json")) == [{"key": 1, "by_column": {"a.b": 2, "c.d": 3}}]
    assert _shown(result, "csv") == 'key,by_column\n1,"a.b=2, c.d=3"\n'
    assert "a.b=2, c.d=3" in _shown(result, "plain")
    assert rows[0]["by_column"] == {"a.b": 2, "c.d": 3}  # the caller's rows are not changed


def test_a_listing_follows_the_table_in_the_text_formats_and_is_in_the_json_document():
    result = render.Result([{"id": "m1", "module": "x"}], ["id", "module"],
                           listing=[("m1  [x, transactional]", "m1 (transactional)", "SELECT 1;\n")],
                           document={"pending": [{"id": "m1", "sql": "SELECT 1;\n"}]})
    table = _shown(result, "table")  # not a terminal: tabulate's simple, then the SQL
    assert table.splitlines()[0].split() == ["id", "module"]
    assert table.endswith("\n-- m1 (transactional)\nSELECT 1;\n")
    assert _shown(result, "plain").endswith("\n-- m1 (transactional)\nSELECT 1;\n")
    assert "SELECT 1" not in _shown(result, "csv")
    assert json.loads(_shown(result, "json")) == {"pending": [{"id": "m1", "sql": "SELECT 1;\n"}]}


def test_tables_before_the_main_one_and_nagios():
    result = render.Result([{"n": 1}], ["n"], before=[render.Result([{"w": "T1"}], ["w"], title="workspaces")],
                           document={"n": 1, "workspaces": [{"w": "T1"}]}, nagios="MINNOCTL OK - fine")
    assert _shown(result, "csv") == "w\nT1\nn\n1\n"
    assert json.loads(_shown(result, "json")) == {"n": 1, "workspaces": [{"w": "T1"}]}
    assert _shown(result, "nagios") == "MINNOCTL OK - fine\n"
    assert _shown(render.Result([{"n": 1}], ["n"]), "nagios") == "1\n"  # no line of its own: plain
    out = io.StringIO()
    assert render.plugin_unknown("bad | arg", "nagios", out=out) and out.getvalue() == "MINNOCTL UNKNOWN - bad / arg\n"
    assert not render.plugin_unknown("bad", "json")


# -- nothing minnoctl sets outlives its use of a connection it is given -------------------------

@pytest.fixture
def app_conn(migrated):
    """An application's own connection, with its own name and time zone."""
    with psycopg.connect(migrated, autocommit=True, application_name="the-app") as conn:
        conn.execute("SET TimeZone = 'America/New_York'")
        yield conn


def _state(conn) -> tuple[str, str]:
    return tuple(conn.execute("SELECT current_setting('application_name'), current_setting('TimeZone')").fetchone())


def test_cleanup_on_an_applications_connection_gives_back_its_name_and_time_zone(app_conn):
    plans = cleanup.plan(app_conn, only=[], skip=[], ages={})
    rows = cleanup.list_tasks(app_conn, plans)
    assert rows and _state(app_conn) == ("the-app", "America/New_York")
    result = cleanup.run(app_conn, plans, dry_run=True)
    assert result.status in ("ok", "nothing") or result.tasks
    assert _state(app_conn) == ("the-app", "America/New_York")


def test_a_lock_names_its_holder_while_held_and_not_after(app_conn, migrated):
    with psycopg.connect(migrated, autocommit=True) as other:
        with locks.advisory_lock(app_conn, "seed", 0):
            name = other.execute("SELECT application_name FROM pg_stat_activity WHERE pid = %s",
                                 (app_conn.info.backend_pid,)).fetchone()[0]
            assert name.startswith("minnoctl seed pid=")
            with pytest.raises(Exception) as refused:
                with locks.advisory_lock(other, "seed", 0):
                    pass
            assert "minnoctl seed pid=" in str(refused.value)
        assert _state(app_conn)[0] == "the-app"
        assert other.execute("SELECT current_setting('application_name')").fetchone()[0] != "minnoctl seed"
        with tokens.keyring_lock(app_conn):
            pass
        assert _state(app_conn)[0] == "the-app"


def test_a_commands_session_is_named_when_it_connects(migrated):
    """The name is a startup parameter (seen in pg_stat_activity before any statement), not a SET."""
    from minnoctl.config import load_settings
    from minnoctl.connection import session

    settings = load_settings(env={"MINNO_DATABASE_URL": migrated})
    with session(settings, "ports", time_zone="UTC") as conn:
        startup = conn.pgconn.parameter_status(b"application_name").decode()
        assert startup.startswith("minnoctl ports pid=")
        assert _state(conn) == (startup, "UTC")
