"""The wheel carries migrations/ (with each module's seed/ files) inside the package, and a non-editable install works
from any directory (resources are read with importlib.resources, never relative to the repo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(REPO)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    (path,) = out.glob("minnoctl-*.whl")
    return path


def test_wheel_contains_the_migration_set_and_seeds(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "minnoctl/migrations/__init__.py" in names
    repo_sql = sorted(p.relative_to(REPO / "migrations").as_posix() for p in (REPO / "migrations").rglob("*.sql"))
    wheel_sql = sorted(n[len("minnoctl/migrations/"):] for n in names
                       if n.startswith("minnoctl/migrations/") and n.endswith(".sql"))
    assert wheel_sql == repo_sql
    repo_seeds = sorted(p.relative_to(REPO / "migrations").as_posix()
                        for p in (REPO / "migrations").glob("*/seed/*.json"))
    wheel_seeds = sorted(n[len("minnoctl/migrations/"):] for n in names
                         if n.startswith("minnoctl/migrations/") and n.endswith(".json"))
    assert repo_seeds and wheel_seeds == repo_seeds
    assert any(n.endswith("entry_points.txt") for n in names)


def test_installed_wheel_runs_from_another_directory(wheel, tmp_path):
    target = tmp_path / "site"
    result = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                             str(wheel)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = ("import minnoctl, minnoctl.resources as r; print(minnoctl.__file__); "
            "print(r.migrations()); print(r.migrations() / 'chatbot' / 'seed')")
    env = dict(os.environ, PYTHONPATH=str(target))
    shown = subprocess.run([sys.executable, "-c", code], cwd=elsewhere, capture_output=True, text=True, env=env)
    assert shown.returncode == 0, shown.stderr
    module_file, migrations, seeds = shown.stdout.split()
    assert module_file.startswith(str(target))
    assert migrations.startswith(str(target)) and Path(migrations).is_dir()
    assert seeds.startswith(str(target)) and Path(seeds).is_dir()
    version = subprocess.run([sys.executable, "-m", "minnoctl", "--version"], cwd=elsewhere, capture_output=True,
                             text=True, env=env)
    assert version.stdout.strip() == "minnoctl 0.1.0"


def test_editable_install_reads_the_repository_folders():
    from minnoctl import resources

    assert Path(str(resources.migrations())).resolve() == (REPO / "migrations").resolve()
    assert (Path(str(resources.migrations() / "chatbot" / "seed")).resolve()
            == (REPO / "migrations" / "chatbot" / "seed").resolve())


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """The wheel installed with its dependencies (pip resolves them from the wheel's metadata, so a
    dependency missing from pyproject.toml fails here) in a new virtual environment outside the repo."""
    venv = tmp_path_factory.mktemp("wheel-venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    result = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    return venv / "bin" / "minnoctl"


def _run(minnoctl: Path, cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MINNO", "PG", "DATABASE_URL"))}
    return subprocess.run([str(minnoctl), *args], cwd=cwd, env=clean | env, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.slow
def test_the_installed_wheel_inits_seeds_and_checks_the_embedded_database(installed, tmp_path):
    """What a new user does after `pip install minnoctl`: no database configured, no repository."""
    home = tmp_path / "home"
    env = {"MINNO_HOME": str(home)}
    try:
        for args in (("db", "init", "--yes"), ("seed", "--yes")):
            result = _run(installed, tmp_path, env, *args)
            assert result.returncode == 0, (args, result.stderr)
        health = _run(installed, tmp_path, env, "health", "--format", "json")
        doc = json.loads(health.stdout)
        checks = {c["name"]: c for c in doc["checks"]}
        assert checks["migrations"]["status"] == "OK", checks["migrations"]
        assert checks["tokens"]["status"] == checks["secrets"]["status"] == "OK"  # the default seed is healthy
        assert health.returncode == health_code(doc["status"])
        status = json.loads(_run(installed, tmp_path, env, "local", "status", "--format", "json").stdout)
        assert status["running"] and status["pgdata"].startswith(str(home))
        applied = json.loads(_run(installed, tmp_path, env, "migrate", "status", "--format", "json").stdout)
        shipped = len(list((REPO / "migrations").glob("*/[0-9]*[0-9]_*.sql"))) - len(
            list((REPO / "migrations").glob("*/*.rollback.sql")))
        assert [m["state"] for m in applied] == ["applied"] * shipped
    finally:
        _run(installed, tmp_path, env, "local", "stop")
        from minnoctl.local import remove

        remove(home)  # as root the data lives outside the home, in a private directory of its own user


@pytest.mark.slow
def test_the_installed_wheel_against_a_configured_server(installed, tmp_path, pg15):
    import psycopg

    from minnoctl import crypto

    name = "wheel_test"
    with psycopg.connect(pg15.url("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
    env = {"MINNO_DATABASE_URL": pg15.url(name), "MINNO_MASTER_KEY": crypto.encode_key(crypto.generate_key())}
    try:
        steps = (("db", "init", "--yes", "--modules", "minno,chatbot,assistant,supervisor,slackbot"),
                 ("seed", "--yes"), ("health", "--ready"))
        for args in steps:
            result = _run(installed, tmp_path, env, *args)
            assert result.returncode == 0, (args, result.stderr)
        health = _run(installed, tmp_path, env, "health", "--format", "nagios")
        assert health.stdout.startswith("MINNOCTL "), health.stdout + health.stderr
        assert "migrations" not in health.stdout.split("|")[0]  # nothing wrong with the schema it shipped
    finally:
        with psycopg.connect(pg15.url("postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def health_code(status: str) -> int:
    return {"OK": 0, "WARNING": 1, "CRITICAL": 2, "UNKNOWN": 3}[status]
