"""The wheel carries migrations/ and seeds/ inside the package, and a non-editable install works
from any directory (resources are read with importlib.resources, never relative to the repo)."""

from __future__ import annotations

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
    assert "minnoctl/seeds/__init__.py" in names
    repo_sql = sorted(p.relative_to(REPO / "migrations").as_posix() for p in (REPO / "migrations").glob("*/*.sql"))
    wheel_sql = sorted(n[len("minnoctl/migrations/"):] for n in names
                       if n.startswith("minnoctl/migrations/") and n.endswith(".sql"))
    assert wheel_sql == repo_sql
    repo_seeds = sorted(p.name for p in (REPO / "seeds").glob("*.json"))
    wheel_seeds = sorted(n[len("minnoctl/seeds/"):] for n in names if n.startswith("minnoctl/seeds/") and n.endswith(".json"))
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
            "print(r.migrations()); print(r.seeds())")
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
    assert Path(str(resources.seeds())).resolve() == (REPO / "seeds").resolve()
