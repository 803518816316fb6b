"""Every example of the README's "Examples" block (the ```sh block under "## Commands") runs as
written, in order, with bash, on a fresh embedded home after the Quick start (`db init`, then
`seed`), and exits as its comment says (0 unless stated). One embedded server, one pass."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from minnoctl import crypto

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent  # the venv's bin: `minnoctl` on the PATH, as `. .venv/bin/activate` gives

# Lines that cannot run here, each with the reason (keep this tiny).
SKIPPED = {
    "MINNO_DATABASE_URL=postgresql://app@db.internal/minno minnoctl health --ready":
        "needs the host db.internal: the line shows pointing minnoctl at another server",
}
# Lines whose comment documents another exit code than 0.
EXIT_CODES = {
    # nothing listens on the seeded allocations here
    "minnoctl ports check                         "
    "# is something listening on this host's allocated ports? exit 1 when one is not": 1,
}


# Checks of `health` not green on a fresh embedded database for reasons outside the seed data, being
# fixed under issue 17 item 2 (health's own part): the embedded build without pg_stat_statements
# (slow_queries UNKNOWN), and the cache-hit ratio of a database that has only just been filled.
# A health example that exits 1 or 3 passes only when these are all that is not OK.
def readme_block(heading: str, after: str) -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text.split(f"\n{heading}\n", 1)[1]
    block = re.search(rf"{re.escape(after)}\s*```sh\n(.*?)\n```", section, re.S)
    assert block, f"no ```sh block after {after!r} under {heading}"
    return [ln for ln in block.group(1).splitlines() if ln.strip()]


def quick_start() -> list[str]:
    """The Quick start's set-up commands: one line each, that put minnoctl on the PATH."""
    text = (REPO / "README.md").read_text().split("\n## Quick start\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)\n```", text, re.S)


def test_the_quick_start_is_two_lines_and_puts_minnoctl_on_the_path():
    blocks = quick_start()
    assert len(blocks) == 2 and all("\n" not in b for b in blocks), blocks
    assert ". .venv/bin/activate" in blocks[0] and "minnoctl db init" in blocks[0]
    text = (REPO / "README.md").read_text().split("\n## Quick start\n", 1)[1].split("\n## ", 1)[0]
    assert "`minnoctl seed`" in text


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A fresh embedded home, a working folder with what the examples read, and the environment."""
    from minnoctl.local import Embedded, remove

    root = tmp_path_factory.mktemp("readme")
    home = root / "home"
    work = root / "work"
    work.mkdir()
    (work / "token.txt").write_text("xoxb-readme-example-token\n")
    (work / "pw.txt").write_text("readme-example-password-0123456789\n")
    (work / "new.key").write_text(crypto.encode_key(crypto.generate_key()) + "\n")
    # `migrate new` writes into the project's migrations folder: a copy, never the checkout
    shutil.copytree(REPO / "migrations", root / "migrations")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MINNO_", "PG"))}
    env.update(PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", MINNO_HOME=str(home),
               XDG_DATA_HOME=str(root / "data"), MINNOCTL_MIGRATIONS_DIR=str(root / "migrations"),
               MINNO_MASTER_KEY=crypto.encode_key(crypto.generate_key()))
    yield work, env
    Embedded(home).stop(wait_s=10)
    remove(home)


def run(line: str, work: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-o", "pipefail", "-c", line], cwd=work, env=env, capture_output=True,
                          text=True, timeout=180, stdin=subprocess.DEVNULL)


def test_every_example_runs_as_written(site):
    work, env = site
    for line in ("minnoctl db init", "minnoctl seed"):  # the Quick start
        done = run(line, work, env)
        assert done.returncode == 0, (line, done.stderr)
    lines = readme_block("## Commands", "Examples:")
    assert set(SKIPPED) <= set(lines) and set(EXIT_CODES) <= set(lines)
    failed = []
    for line in lines:
        if line in SKIPPED:
            continue
        done = run(line, work, env)
        if done.returncode != EXIT_CODES.get(line, 0) or "Traceback" in done.stderr:
            failed.append(f"{line}\n  exit {done.returncode}: {done.stderr.strip()[-600:]}")
    assert not failed, "\n".join(failed)
