"""Regenerate the shell completion scripts in this folder from the app itself.

    python completions/generate.py          # write the four scripts
    python completions/generate.py --check  # write nothing; exit 1 naming each stale script

Each script is what a user's shell gets from `_MINNOCTL_COMPLETE=source_<shell> minnoctl`: the app
runs in a subprocess with that variable set, in a clean environment (PATH, HOME and, on Windows,
SYSTEMROOT, plus PYTHONPATH=<this checkout> so the working tree's minnoctl is the one that answers).
It runs as `python -m minnoctl`, whose prog_name is "minnoctl" exactly like the console script's
(minnoctl.cli.main and MinnoctlGroup.main both pass it), so the scripts name `minnoctl`.

Typer 0.28 accepts source_bash, source_zsh, source_fish, source_powershell and source_pwsh (the last
two print the same script); see typer/completion.py shell_complete and typer/_completion_shared.py.

Run it with a Python that has minnoctl's dependencies (e.g. the project's virtualenv).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
COMPLETE_VAR = "_MINNOCTL_COMPLETE"

# file in completions/ -> the shell name Typer takes after "source_" / "complete_"
SCRIPTS = {
    "minnoctl.bash": "bash",
    "_minnoctl": "zsh",
    "minnoctl.fish": "fish",
    "minnoctl.ps1": "powershell",
}

_KEEP = ("PATH", "HOME", "SYSTEMROOT")


def clean_env(**extra: str) -> dict[str, str]:
    """The environment minnoctl runs in here: nothing of the caller's but PATH, HOME, SYSTEMROOT."""
    env = {name: os.environ[name] for name in _KEEP if name in os.environ}
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env


def run_minnoctl(env: dict[str, str], cwd: Path = REPO) -> subprocess.CompletedProcess:
    """Run the app (no arguments) as a real process, the way a completion script calls it."""
    return subprocess.run([sys.executable, "-m", "minnoctl"], check=False, env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=60)


def _machine_paths() -> list[str]:
    """Absolute paths of this machine that must never end up in a committed script."""
    paths = {str(REPO), sys.prefix, sys.base_prefix, sys.executable, str(Path.home())}
    return sorted(p for p in paths if p and p != os.sep)


def render(shell: str) -> str:
    """The completion script for `shell`, as Typer prints it, normalised (see below)."""
    result = run_minnoctl(clean_env(**{COMPLETE_VAR: f"source_{shell}"}))
    if result.returncode != 0 or not result.stdout.strip():
        raise SystemExit(f"generate.py: `{COMPLETE_VAR}=source_{shell} minnoctl` failed "
                         f"(exit {result.returncode}):\n{result.stderr}")
    # Typer's templates start with a newline and click's echo adds one at the end, so the raw output
    # begins with a blank line. Strip it as Typer's own --show-completion/--install-completion do
    # (get_completion_script strips): zsh's compinit autoloads a file on $fpath only when its first
    # line is `#compdef`, so the raw zsh script would never be picked up from there. The result is
    # byte for byte what `minnoctl --show-completion` prints in that shell.
    # Nothing else is changed: Typer 0.28 embeds no machine-specific path (the scripts call
    # `minnoctl` by name, bash's as `$1`, the command word), which the check below makes sure of.
    text = result.stdout.strip() + "\n"
    for path in _machine_paths():
        if path in text:
            raise SystemExit(f"generate.py: the {shell} script contains a path of this machine ({path}); "
                             "normalise it in render() before committing")
    return text


def render_all() -> dict[str, str]:
    """Every script: file name -> content."""
    return {name: render(shell) for name, shell in SCRIPTS.items()}


def stale(scripts: dict[str, str], directory: Path = HERE) -> list[str]:
    """The file names in `directory` that are missing or differ from `scripts`."""
    out = []
    for name, text in scripts.items():
        path = directory / name
        if not path.is_file() or path.read_bytes() != text.encode():
            out.append(name)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Regenerate minnoctl's shell completion scripts.")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 naming each stale script, 0 when all are current")
    args = parser.parse_args(argv)
    scripts = render_all()
    if args.check:
        names = stale(scripts)
        for name in names:
            print(f"stale: completions/{name}")
        if names:
            print("run `python completions/generate.py` to regenerate", file=sys.stderr)
        return 1 if names else 0
    for name, text in scripts.items():
        (HERE / name).write_bytes(text.encode())
        print(f"wrote completions/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
