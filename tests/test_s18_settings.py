"""All settings through the settings object (issue 18 item 2): every environment variable minnoctl
reads is declared in config.SETTINGS, read through config (env_value, environment(), the child
environments), and documented in the README's generated table."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

from minnoctl import config

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"

ALLOWED = {"minnoctl/config.py"}  # the one reader

_ENV_ATTRS = {"environ", "environb", "getenv", "getenvb", "putenv", "unsetenv"}


def _sources() -> list[Path]:
    files = sorted((ROOT / "minnoctl").rglob("*.py")) + sorted((ROOT / "migrations").rglob("*.py"))
    assert len(files) > 20
    return files


def _environment_uses(tree: ast.AST) -> list[tuple[int, str]]:
    """os.environ / os.getenv / os.putenv / ..., `from os import environ`, and `environ.get(...)`."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in _ENV_ATTRS:
            found.append((node.lineno, f"….{node.attr}"))
        elif isinstance(node, ast.ImportFrom) and node.module in ("os", "posix", "nt"):
            found += [(node.lineno, f"from os import {a.name}") for a in node.names if a.name in _ENV_ATTRS]
        elif isinstance(node, ast.Name) and node.id in _ENV_ATTRS:
            found.append((node.lineno, node.id))
    return found


def test_no_environment_reads_outside_config():
    offenders = []
    for path in _sources():
        rel = path.relative_to(ROOT).as_posix()
        if rel in ALLOWED:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=rel)
        offenders += [f"{rel}:{line}: {what}" for line, what in _environment_uses(tree)]
    assert not offenders, ("the environment is read outside minnoctl/config.py — declare the variable in "
                           "config.SETTINGS and read it with config.env_value() (a child process's "
                           "environment: config.child_environment()):\n" + "\n".join(offenders))


def test_pending_files_still_exist_and_config_reads_the_environment():
    for rel in ALLOWED:
        assert (ROOT / rel).is_file(), rel
    assert _environment_uses(ast.parse((ROOT / "minnoctl/config.py").read_text(encoding="utf-8")))


def _literal_reads(tree: ast.AST) -> list[tuple[int, str]]:
    """Names given as string literals to env_value(), ctx.value(), Environment.get() / [] / in, and
    config's own look.get(): the receivers of get/[] are the ones called env, look or *environment*."""

    def envish(node: ast.AST) -> bool:
        text = ast.unparse(node)
        return any(word in text.lower() for word in ("env", "look"))

    def literal(node: ast.AST) -> str | None:
        return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None

    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args and literal(node.args[0]):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if name == "env_value" or (name == "value" and isinstance(func, ast.Attribute) and
                                       ast.unparse(func.value) in ("ctx", "context", "self")) or \
                    (name in ("get", "source") and isinstance(func, ast.Attribute) and envish(func.value)):
                found.append((node.lineno, literal(node.args[0])))
        elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load) and literal(node.slice) and \
                envish(node.value):  # env["LC_ALL"] = "C" sets a child's variable, it reads none
            found.append((node.lineno, literal(node.slice)))
        elif isinstance(node, ast.Compare) and literal(node.left) and len(node.ops) == 1 and \
                isinstance(node.ops[0], (ast.In, ast.NotIn)) and envish(node.comparators[0]):
            found.append((node.lineno, literal(node.left)))
    return found


def test_every_literal_name_read_is_declared():
    names, undeclared = set(), []
    for path in _sources():
        rel = path.relative_to(ROOT).as_posix()
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=rel)
        for line, name in _literal_reads(tree):
            if not name.isupper():
                continue  # a dict key of some other mapping (params.get("host"), ...)
            names.add(name)
            if config.declared(name) is None:
                undeclared.append(f"{rel}:{line}: {name}")
    assert not undeclared, "read but not declared in config.SETTINGS:\n" + "\n".join(undeclared)
    # the scan sees the reads it is meant to see
    assert {"MINNO_BACKUP_DIR", "MINNOCTL_PG_BINDIR", "MINNOCTL_SEEDS_DIR", "MINNOCTL_MIGRATIONS_DIR",
            "XDG_RUNTIME_DIR", "DB_SSL_MODE", "MINNO_HOME", "MINNOCTL_TRACEBACK"} <= names


def test_settings_declare_every_variable_once():
    names = [s.name for s in config.SETTINGS]
    assert len(names) == len(set(names))
    for s in config.SETTINGS:
        assert s.purpose and s.used_by and s.group, s.name
        assert "|" not in s.purpose + s.default + s.used_by, f"{s.name}: a | would split the README's row"
    for name in (*config.URL_VARS, *config.DB_VARS, *config.PG_VARS, "DB_SSL_MODE", "DB_SSL_ENABLED",
                 "DB_SSL_REJECT_UNAUTHORIZED", "DB_SSL_CA", "DB_SSL_CERT", "DB_SSL_KEY", "DB_CONNECTION_TIMEOUT",
                 "DB_STATEMENT_TIMEOUT", "DB_QUERY_TIMEOUT", "DB_IDLE_TIMEOUT", "DB_POOL_SIZE", "MINNO_HOME",
                 "MINNO_MASTER_KEY", "MINNO_MASTER_KEY_FILE", "MINNO_NEW_MASTER_KEY", "MINNO_NEW_MASTER_KEY_FILE",
                 "MINNO_BACKUP_DIR", "MINNOCTL_PG_BINDIR", "MINNOCTL_SEEDS_DIR", "MINNOCTL_MIGRATIONS_DIR",
                 "MINNO_ENV", "APP_ENV", "NODE_ENV", "MINNOCTL_HEALTH_ONLY", "MINNOCTL_HEALTH_SKIP",
                 "MINNOCTL_TRACEBACK", "NO_COLOR", "TERM", "XDG_RUNTIME_DIR"):
        assert config.declared(name) is not None, name
    secrets = {s.name for s in config.SETTINGS if s.secret}
    assert {"DB_PASSWORD", "PGPASSWORD", "MINNO_MASTER_KEY", "MINNO_NEW_MASTER_KEY", *config.URL_VARS} <= secrets
    assert "MINNO_HOME" not in secrets
    # every health threshold's variable is declared (module checks' thresholds included)
    from minnoctl.health import registry

    for t in registry.thresholds().values():
        assert config.declared(t.env) is not None, t.env


def test_an_undeclared_name_is_a_programming_error(monkeypatch, tmp_path):
    monkeypatch.setenv("MINNO_NOT_DECLARED", "x")
    (tmp_path / ".env").write_text("MINNO_NOT_DECLARED=y\n")
    for read in (lambda: config.env_value("MINNO_NOT_DECLARED"),
                 lambda: config.env_value("MINNO_NOT_DECLARED", {"MINNO_NOT_DECLARED": "x"}),
                 lambda: config.env_value("MINNO_NOT_DECLARED", cwd=tmp_path),
                 lambda: config.environment(cwd=tmp_path).get("MINNO_NOT_DECLARED"),
                 lambda: config.environment(cwd=tmp_path)["MINNO_NOT_DECLARED"],
                 lambda: "MINNO_NOT_DECLARED" in config.environment(cwd=tmp_path),
                 lambda: config.environment(cwd=tmp_path).source("MINNO_NOT_DECLARED")):
        with pytest.raises(config.UndeclaredVariable, match="SETTINGS"):
            read()
    assert not issubclass(config.UndeclaredVariable, KeyError)  # Mapping.get would swallow a KeyError
    # the pattern entries take their own names only
    assert config.declared("MINNOCTL_HEALTH_LONG_QUERY_WARNING") is not None
    assert config.declared("MINNOCTL_HEALTHY") is None
    assert not config.declared("PGSSLMODE").read  # libpq reads it, not minnoctl: passed on, never read
    with pytest.raises(config.UndeclaredVariable, match="libpq"):
        config.env_value("PGSSLMODE", {"PGSSLMODE": "require"})


def test_declared_names_still_read_from_the_environment_and_env_file(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MINNO_BACKUP_DIR", raising=False)
    (tmp_path / ".env").write_text("MINNO_BACKUP_DIR=/from/file\nXDG_RUNTIME_DIR=/from/file\nNO_COLOR=1\n")
    assert config.env_value("MINNO_BACKUP_DIR") == ("/from/file", ".env: MINNO_BACKUP_DIR")
    monkeypatch.setenv("MINNO_BACKUP_DIR", "/from/env")
    assert config.env_value("MINNO_BACKUP_DIR") == ("/from/env", "MINNO_BACKUP_DIR")
    # the process's own variables count from the environment only
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.delenv("TERM", raising=False)
    assert config.env_value("XDG_RUNTIME_DIR") is None
    assert config.environment().get("XDG_RUNTIME_DIR") is None
    assert not config.plain_terminal()
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/1")
    assert config.env_value("XDG_RUNTIME_DIR") == ("/run/user/1", "XDG_RUNTIME_DIR")
    monkeypatch.setenv("TERM", "dumb")
    assert config.plain_terminal()
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.setenv("NO_COLOR", "")  # no-color.org: set, even empty
    assert config.plain_terminal()
    assert config.plain_terminal({"TERM": "dumb"}) and not config.plain_terminal({})


def test_child_environments(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("PGHOST=from-file\n")
    monkeypatch.setenv("PGPORT", "6543")
    monkeypatch.setenv("MINNO_S18_OTHER", "kept")
    tools = config.child_environment()
    assert tools["PGPORT"] == "6543" and tools["MINNO_S18_OTHER"] == "kept" and "PGHOST" not in tools
    tools["PGPORT"] = "1"  # a copy
    assert os.environ["PGPORT"] == "6543"
    server = config.child_environment(libpq=False)
    assert server["MINNO_S18_OTHER"] == "kept" and not [k for k in server if k.startswith("PG")]
    # an unreadable .env does not matter to the process's own environment
    (tmp_path / ".env").write_text("not a line\n")
    assert config.child_environment()["PGPORT"] == "6543"
    assert config.process_environment().get("PGPORT") == "6543"
    assert config.process_environment().source("PGPORT") == "PGPORT"


def test_the_readme_settings_table_is_generated_from_settings():
    text = README.read_text(encoding="utf-8")
    assert text.count(config.README_START) == 1 and text.count(config.README_END) == 1
    assert config.readme_with_table(text) == text, (
        "the README's table of variables differs from config.SETTINGS — regenerate it with "
        "`python -m minnoctl.readme --write` (it rewrites the generated tables between their markers)")
    table = text[text.index(config.README_START):text.index(config.README_END)]
    for s in config.SETTINGS:
        assert f"`{s.name}`" in table, s.name


def test_write_readme_rewrites_the_generated_tables(tmp_path):
    from minnoctl.readme import main

    current = README.read_text(encoding="utf-8")
    stale = current.replace("| `DB_POOL_SIZE` |", "| `DB_POOL_SIZE_OLD` |").replace("| `xid_age` |", "| `xid_old` |")
    assert stale != current
    copy = tmp_path / "README.md"
    copy.write_text(stale, encoding="utf-8")
    assert main(["--write", str(copy)]) == 0
    assert copy.read_text(encoding="utf-8") == current
    assert main(["--write", str(copy)]) == 0  # current: unchanged
    assert copy.read_text(encoding="utf-8") == current


def test_config_show_lists_the_settings(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from minnoctl.cli import app

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MINNO_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MINNO_BACKUP_DIR", "/srv/backups")
    monkeypatch.setenv("NO_COLOR", "1")
    for name in (*config.URL_VARS, *config.DB_VARS, *config.PG_VARS):
        monkeypatch.delenv(name, raising=False)
    result = CliRunner().invoke(app, ["config", "show", "--format", "json"])
    assert result.exit_code == 0, result.output
    assert '"/srv/backups"' in result.output and '"MINNO_BACKUP_DIR"' in result.output
