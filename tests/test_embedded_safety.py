"""The embedded server is private to its owner, with real servers and real processes:
two servers under two MINNO_HOMEs run as two OS users, so one's superuser (which can run programs
as its server's OS user) cannot log in to the other nor read its files; running as root opens no
folder above MINNO_HOME; a directory or symlink planted where a socket directory would go is not
used; a MINNO_HOME that cannot work is one line and creates nothing; Ctrl-C during start-up leaves
no half-started server."""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import psycopg
import pytest

from minnoctl import local
from minnoctl.errors import ExitCode
from minnoctl.local import Embedded, bin_dir

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (service users, another OS user)")


def postmaster_owner(info: local.ServerInfo) -> str:
    return psutil.Process(info.pid).username()


@pytest.fixture
def homes(tmp_path: Path):
    made: list[Path] = []

    def make(name: str) -> Path:
        home = tmp_path / name
        made.append(home)
        return home

    yield make
    for home in made:
        local.remove(home)  # stops its server, removes its data and (as root) its private directory and user


def from_program(conn: psycopg.Connection, command: str) -> str:
    """Run a shell command through the server (COPY FROM PROGRAM: as the server's OS user)."""
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS out (n serial, line text)")
    conn.execute("TRUNCATE out")
    # tabs and backslashes would be COPY's column separators and escapes: make them spaces
    conn.execute(f"COPY out (line) FROM PROGRAM $cmd$ ( {command} 2>&1; echo rc=$? ) | tr '\\t\\\\' '  ' $cmd$")
    return "\n".join(r[0] or "" for r in conn.execute("SELECT line FROM out ORDER BY n"))


@root_only
def test_one_servers_superuser_cannot_reach_another_server(homes):
    a, b = Embedded(homes("a")), Embedded(homes("b"))
    info_a, _ = a.ensure_running(hold=False)
    info_b, _ = b.ensure_running(hold=False)
    user_a, user_b = postmaster_owner(info_a), postmaster_owner(info_b)
    assert user_a != user_b and "root" not in (user_a, user_b)
    psql = bin_dir() / "psql"
    with psycopg.connect(**info_a.params(), autocommit=True) as conn:
        # a's superuser connects to b's socket with b's own connection settings: refused
        out = from_program(conn, f"{psql} -X -At -h {info_b.socket_dir} -U postgres -d postgres -c 'SELECT 42'")
        assert "rc=0" not in out and "42" not in out.splitlines(), out
        # nor can it read b's data files
        out = from_program(conn, f"ls {info_b.pgdata.resolve()}")
        assert "rc=0" not in out and "PG_VERSION" not in out, out
        # its own server it reaches, so the refusals above are about b
        assert "rc=0" in from_program(conn, f"{psql} -X -At -h {info_a.socket_dir} -U postgres -d postgres "
                                            "-c 'SELECT 42'")
    # each socket directory is owned by its server's user, mode 0700
    for info, user in ((info_a, user_a), (info_b, user_b)):
        st = os.lstat(info.socket_dir)
        assert pwd.getpwuid(st.st_uid).pw_name == user and st.st_mode & 0o077 == 0


@root_only
def test_root_opens_no_folder_above_minno_home(tmp_path, homes):
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    private.chmod(0o700)
    home = homes("private/h")
    Embedded(home).ensure_running(hold=False)
    assert private.stat().st_mode & 0o777 == 0o700
    assert home.stat().st_mode & 0o077 == 0


def _old_socket_dir(home: Path) -> Path:
    """Where minnoctl before 0.x put the socket of a long MINNO_HOME: a predictable name in /tmp."""
    digest = hashlib.sha256(str(home.absolute() / "pgdata").encode()).hexdigest()[:12]
    return Path("/tmp") / f"minnoctl-{digest}"


@root_only
def test_a_planted_socket_directory_or_symlink_is_not_used(tmp_path):
    """As a normal OS user whose MINNO_HOME is too long for a socket path: the socket directory
    an attacker pre-created at the old predictable place (a symlink to their own folder) is not used."""
    user = f"mt{os.getpid() % 100000}"
    subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", user], check=True,
                   capture_output=True)
    entry = pwd.getpwnam(user)
    owner_root = tmp_path / "owner"
    owner_root.mkdir()
    os.chown(owner_root, entry.pw_uid, entry.pw_gid)
    local._allow_traverse(tmp_path)
    # the user runs this interpreter: its venv and its base installation (e.g. pyenv's under a
    # /root that is 0700 on some machines) must be reachable, as the test clusters' binaries are
    for prefix in {sys.prefix, sys.base_prefix, os.path.dirname(os.path.realpath(sys.executable))}:
        local._allow_traverse(Path(prefix))
    home = owner_root / ("x" * 90) / "home"
    planted_target = tmp_path / "attacker"
    planted_target.mkdir(mode=0o777)
    planted_target.chmod(0o777)
    planted = _old_socket_dir(home)
    if planted.is_symlink() or planted.exists():
        planted.unlink() if planted.is_symlink() else os.rmdir(planted)
    planted.symlink_to(planted_target)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "MINNO_"))}
    env |= {"MINNO_HOME": str(home), "HOME": str(owner_root)}
    as_user = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": [], "env": env, "cwd": str(owner_root)}
    try:
        result = subprocess.run([sys.executable, "-m", "minnoctl", "local", "start", "--format", "json"],
                                capture_output=True, text=True, timeout=120, **as_user)
        assert result.returncode == 0, result.stderr
        state = json.loads((home / "server.json").read_text())
        socket_dir = Path(state["socket_dir"])
        assert socket_dir != planted and planted_target not in socket_dir.resolve().parents
        st = os.lstat(socket_dir)
        assert not os.path.islink(socket_dir) and st.st_uid == entry.pw_uid and st.st_mode & 0o077 == 0
        assert list(planted_target.iterdir()) == []
        # and the owner's commands use it
        health = subprocess.run([sys.executable, "-m", "minnoctl", "health", "--live"], capture_output=True,
                                text=True, timeout=60, **as_user)
        assert health.returncode == 0, health.stderr
    finally:
        subprocess.run([sys.executable, "-m", "minnoctl", "local", "stop"], capture_output=True, timeout=60,
                       **as_user)
        planted.unlink(missing_ok=True)
        subprocess.run(["userdel", user], capture_output=True)


@pytest.mark.parametrize("kind", ["a file", "a quote", "a comma"])
def test_a_minno_home_that_cannot_work_is_one_line_and_creates_nothing(run_minnoctl, tmp_path, kind):
    if kind == "a file":
        home = tmp_path / "home-file"
        home.write_text("not a directory\n")
    else:
        home = tmp_path / ("it's" if kind == "a quote" else "a,b") / "home"
    before = sorted(p.name for p in tmp_path.rglob("*"))
    for args in (["health", "--live"], ["local", "start"], ["local", "status"]):
        result = run_minnoctl(*args, home=home)
        assert result.returncode in (ExitCode.CONFIG, ExitCode.EMBEDDED), (args, result.stderr)
        assert "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "MINNO_HOME" in result.stderr
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
    if kind == "a file":
        assert home.read_text() == "not a directory\n"


def _children(pid: int) -> set[str]:
    try:
        return {p.name() for p in psutil.Process(pid).children(recursive=True)}
    except psutil.Error:
        return set()


def _server_processes(home: Path) -> list[int]:
    found = []
    for proc in psutil.process_iter(["name"]):
        try:
            if proc.info["name"] == "postgres" and str(home) in " ".join(proc.cmdline()) or (
                    proc.info["name"] == "postgres" and (home / "pgdata").exists()
                    and Path(proc.cwd()) == (home / "pgdata").resolve()):
                found.append(proc.pid)
        except psutil.Error:
            continue
    return found


@pytest.mark.parametrize("during", ["initdb", "pg_ctl"])
def test_ctrl_c_during_start_up_leaves_no_half_started_server(run_minnoctl, homes, during):
    home = homes(f"int-{during}")
    env = dict(os.environ, MINNO_HOME=str(home))
    proc = subprocess.Popen([sys.executable, "-m", "minnoctl", "health", "--live"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while during not in _children(proc.pid):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == ["minnoctl: error: interrupted"], err
    time.sleep(0.5)
    state = json.loads((home / "server.json").read_text()) if (home / "server.json").exists() else {}
    running = _server_processes(home)
    # no server that minnoctl does not know it started: either none, or the one it recorded
    assert not running or state.get("pid") in running, (running, state)
    if not running:
        assert not (home / "pgdata" / "postmaster.pid").exists()
    # and the next command starts (or uses) the server normally
    again = run_minnoctl("health", "--live", home=home)
    assert again.returncode == 0, again.stderr


OLD_VERSION = "2efd0ba"  # the last commit whose local.py ran every root-run server as the shared user


def _old_local(tmp_path: Path):
    """minnoctl.local as an older version had it (from git), to make a home the way it did."""
    import importlib.util

    repo = Path(__file__).resolve().parent.parent
    source = subprocess.run(["git", "-C", str(repo), "show", f"{OLD_VERSION}:minnoctl/local.py"], capture_output=True,
                            text=True)
    if source.returncode != 0:
        pytest.skip(f"no git history with {OLD_VERSION} here")
    path = tmp_path / "old_local.py"
    path.write_text(source.stdout)
    spec = importlib.util.spec_from_file_location("old_local", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["old_local"] = module  # its dataclasses look their module up
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules["old_local"]
    return module


@root_only
def test_a_home_made_by_an_older_version_keeps_working_then_moves_to_its_own_user(run_minnoctl, tmp_path, homes):
    home = homes("old")
    old = _old_local(tmp_path).Embedded(home)
    info, _ = old.ensure_running(hold=False)
    assert postmaster_owner(info) == local.SERVICE_USER
    with psycopg.connect(**(info.params() | {"dbname": "minno"}), autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (v text)")
        conn.execute("INSERT INTO kept VALUES ('from the old version')")
    # while the old server runs, the new version uses it as it is (and says so)
    used = run_minnoctl("health", "--live", home=home)
    assert used.returncode == 0, used.stderr
    assert "using the embedded" in used.stderr and "shared user" in used.stderr
    assert run_minnoctl("local", "stop", home=home).returncode == 0
    # its next start moves the data to a private directory of a user of its own
    again = run_minnoctl("health", "--live", home=home)
    assert again.returncode == 0, again.stderr
    assert (home / "pgdata").is_symlink()
    new = Embedded(home).status()
    assert postmaster_owner(new) not in (local.SERVICE_USER, "root")
    assert (home / "pgdata").resolve().parent.parent == local.SERVICE_ROOT
    with psycopg.connect(**(new.params() | {"dbname": "minno"})) as conn:
        assert conn.execute("SELECT v FROM kept").fetchall() == [("from the old version",)]


@root_only
def test_binaries_others_cannot_reach_are_copied_not_opened(tmp_path):
    import shutil as sh

    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    private.chmod(0o700)
    for build in local.builds():  # each installed build: their wheels lay out their libraries apart
        # a site-packages others cannot reach (a venv under /root), laid out as the wheel installs it
        real = build.install
        site = private / build.name / "site-packages"
        sh.copytree(real, site / real.parent.name / "pginstall", symlinks=True)
        if (real.parent.parent / build.libs).is_dir():
            sh.copytree(real.parent.parent / build.libs, site / build.libs, symlinks=True)
        hidden = local.Build(build.name, site / real.parent.name / "pginstall")
        copy = local._public_install(hidden)
        try:
            assert private.stat().st_mode & 0o777 == 0o700  # not opened
            assert copy.parent.parent.parent == local.SERVICE_ROOT and local._public_install(hidden) == copy  # once
            user = pwd.getpwnam(local.SERVICE_USER) if local._service_ids() else None
            for tool in ("postgres", "initdb", "pg_ctl", "psql"):  # initdb and psql load the wheel's libpq
                ran = subprocess.run([str(copy / "bin" / tool), "--version"], capture_output=True, text=True,
                                     user=user.pw_uid, group=user.pw_gid, extra_groups=[], cwd="/")
                assert ran.returncode == 0 and "18" in ran.stdout, (build.name, tool, ran.stderr)
        finally:
            sh.rmtree(copy.parent.parent, ignore_errors=True)
