"""The shell completion scripts in completions/ are current, and completion really works: the app
answers Typer's `complete_<shell>` requests the way each script asks, and the committed bash (and,
where installed, zsh and fish) script completes in a real shell. No database is needed."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
COMPLETIONS = REPO / "completions"

_spec = importlib.util.spec_from_file_location("completions_generate", COMPLETIONS / "generate.py")
generate = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(generate)

TOP_LEVEL = ["db", "migrate", "seed", "backup", "token", "ports", "cleanup", "health", "local", "config"]
BACKUP = ["create", "list", "verify", "restore", "prune"]


@pytest.fixture(scope="module")
def rendered() -> dict[str, str]:
    return generate.render_all()


def test_committed_scripts_are_current(rendered):
    stale = generate.stale(rendered)
    assert not stale, (f"stale completion scripts in completions/: {', '.join(stale)}; "
                       "run `python completions/generate.py` and commit the result")


def test_check_names_a_stale_or_missing_file(rendered, tmp_path):
    for name, text in rendered.items():
        (tmp_path / name).write_text(text)
    assert generate.stale(rendered, tmp_path) == []
    with (tmp_path / "_minnoctl").open("a") as f:
        f.write("x")
    (tmp_path / "minnoctl.ps1").unlink()
    assert generate.stale(rendered, tmp_path) == ["_minnoctl", "minnoctl.ps1"]


def test_scripts_name_minnoctl_and_no_path_of_this_machine(rendered):
    assert rendered["_minnoctl"].startswith("#compdef minnoctl\n")  # compinit reads the first line
    assert "complete -o default -F _minnoctl_completion minnoctl" in rendered["minnoctl.bash"]
    assert "complete --command minnoctl " in rendered["minnoctl.fish"]
    assert "Register-ArgumentCompleter -Native -CommandName minnoctl " in rendered["minnoctl.ps1"]
    for text in rendered.values():
        assert "_MINNOCTL_COMPLETE" in text
        for path in generate._machine_paths():
            assert path not in text


def _complete(tmp_path: Path, **env: str) -> list[str]:
    result = generate.run_minnoctl(generate.clean_env(**env), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def complete_bash(tmp_path: Path, *words: str) -> list[str]:
    """What the bash script's function gets back for the command line `words` (the last one being
    the word under the cursor): it passes COMP_WORDS joined by its IFS (a newline) and COMP_CWORD."""
    return _complete(tmp_path, _MINNOCTL_COMPLETE="complete_bash", COMP_WORDS="\n".join(words),
                     COMP_CWORD=str(len(words) - 1))


def test_bash_completes_the_top_level_commands(tmp_path):
    offered = complete_bash(tmp_path, "minnoctl", "")
    assert set(TOP_LEVEL) <= set(offered), offered
    assert not [w for w in offered if w.startswith("-")]
    assert complete_bash(tmp_path, "minnoctl", "ba") == ["backup"]
    assert "--database-url" in complete_bash(tmp_path, "minnoctl", "--")


def test_bash_completes_the_backup_subcommands(tmp_path):
    assert complete_bash(tmp_path, "minnoctl", "backup", "") == BACKUP


@pytest.mark.parametrize("shell", ["zsh", "fish", "powershell"])
def test_other_shells_complete_the_backup_subcommands(tmp_path, shell):
    env = {"_MINNOCTL_COMPLETE": f"complete_{shell}", "_TYPER_COMPLETE_ARGS": "minnoctl backup "}
    if shell == "fish":
        env["_TYPER_COMPLETE_FISH_ACTION"] = "get-args"
    if shell == "powershell":
        env["_TYPER_COMPLETE_WORD_TO_COMPLETE"] = ""
    out = "\n".join(_complete(tmp_path, **env))
    for name in BACKUP:
        assert (f'"{name}":' if shell == "zsh" else f"{name}\t" if shell == "fish" else f"{name}:::") in out


@pytest.fixture
def shim(tmp_path: Path) -> dict[str, str]:
    """An environment whose PATH finds a `minnoctl` that runs this checkout with this Python."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "minnoctl"
    exe.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m minnoctl "$@"\n')
    exe.chmod(0o755)
    env = generate.clean_env()
    env["PATH"] = f"{bin_dir}:{env.get('PATH', '/usr/bin:/bin')}"
    return env


def needs(shell: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(sys.platform == "win32" or not shutil.which(shell), reason=f"needs {shell}")


def run_shell(argv: list[str], script: str, env: dict[str, str], cwd: Path) -> str:
    """Run `script` (its {completions} filled in) with `argv` + [script]; return its stdout."""
    script = textwrap.dedent(script).replace("{completions}", str(COMPLETIONS))
    result = subprocess.run([*argv, script], check=False, env=env, cwd=cwd, capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout


@needs("bash")
def test_bash_script_registers_and_completes_in_bash(shim, tmp_path):
    out = run_shell(["bash", "--norc", "--noprofile", "-c"], """
        source "{completions}/minnoctl.bash"
        complete -p minnoctl
        COMP_WORDS=(minnoctl backup ""); COMP_CWORD=2
        _minnoctl_completion minnoctl
        printf 'reply:%s\\n' "${COMPREPLY[@]}"
        """, shim, tmp_path).splitlines()
    assert out[0] == "complete -o default -F _minnoctl_completion minnoctl"
    assert [line.removeprefix("reply:") for line in out[1:]] == BACKUP


@needs("zsh")
def test_zsh_script_autoloads_from_fpath(shim, tmp_path):
    # compinit registers _minnoctl from its `#compdef` first line. Called twice as two Tabs would:
    # with Typer's script the first call only defines _minnoctl_completion and compdefs it.
    out = run_shell(["zsh", "-f", "-c"], """
        fpath=("{completions}" $fpath); autoload -Uz compinit && compinit -u -D
        print -r -- "registered:${_comps[minnoctl]}"
        _arguments() { print -r -- "$@" }
        words=(minnoctl backup ''); CURRENT=3
        ${_comps[minnoctl]}; ${_comps[minnoctl]}
        """, shim, tmp_path)
    assert "registered:_minnoctl\n" in out
    for name in BACKUP:
        assert f'"{name}":' in out


@needs("fish")
def test_fish_script_completes_in_fish(shim, tmp_path):
    out = run_shell(["fish", "--no-config", "-c"],
                    'source "{completions}/minnoctl.fish"; complete -C "minnoctl backup "', shim, tmp_path)
    assert sorted(line.split("\t")[0] for line in out.splitlines()) == sorted(BACKUP)
