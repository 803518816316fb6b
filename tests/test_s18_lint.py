"""Issue 18: the code is linted (ruff) and type-checked (mypy) with the configuration in pyproject.toml.

Both tools come with the `test` extra; they run from this interpreter's environment, in the repository's
root, so they read [tool.ruff] and [tool.mypy] there (which say what they check)."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(tool: list[str], timeout: int = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *tool], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_ruff_finds_nothing() -> None:
    proc = run(["ruff", "check", "--no-cache", "--output-format", "concise"])
    assert proc.returncode == 0, f"ruff check found problems:\n{proc.stdout}{proc.stderr}"


def test_mypy_finds_nothing(tmp_path_factory) -> None:
    # a cache of its own under the test's temporary folder: nothing is written into the work tree
    cache = tmp_path_factory.mktemp("mypy-cache")
    proc = run(["mypy", "--cache-dir", str(cache)])
    assert proc.returncode == 0, f"mypy found problems:\n{proc.stdout}{proc.stderr}"
