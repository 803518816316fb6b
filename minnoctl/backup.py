"""Backups that are proven to restore: pg_dump with a manifest, verify, restore, prune.

A backup is whole or absent. The dump and its manifest are written under temporary names
(`.partial-PID-...`) in their directory and fsynced; then the dump and the manifest are renamed,
with SIGINT/SIGTERM held back for those two renames, and the directory fsynced. The manifest is
the commit point: a dump without its manifest is an orphan, never listed as a backup (`backup
list` shows it as an orphan, `prune` removes it). A failure or a signal removes the temporary
files; the next run sweeps those of a run that was killed (kill -9, power loss), and completes a
commit that a kill -9 cut between the two renames.

Beside the dump, `<name>.manifest.json` records its SHA-256, size, format, the server and pg_dump
versions, the migration state and the row count of every table — counted in the very snapshot
pg_dump dumps (pg_dump --snapshot), so a restore test can compare them exactly — and whose backup
it is: the server's system identifier and the database's real name (current_database(), not the
name in the URL, which a PgBouncer alias may change). `list`, `verify latest`, `prune` and
health's backup checks consider only the backups of the database they are connected to.

pg_dump, pg_restore, psql and decompressors die with minnoctl (PR_SET_PDEATHSIG) and are stopped
on SIGTERM/SIGINT. Restores into a new database go through a temporary database
(`minnoctl_tmp_<pid>_<host>_<random>`, marked with a COMMENT naming its owner process) renamed to
its final name when whole; the next run drops those whose owner process is gone, and only those.

On a Citus coordinator a dump is consistent across the nodes only if the cluster holds still: every
Citus table is locked IN SHARE MODE for the dump's duration (writes wait, reads go on) and no
two-phase commit may still be pending on a node when the snapshot is taken (_hold_cluster_still);
the distribution goes in the manifest and a restore over a Citus coordinator recreates it before
the data loads (_restore_distributed). README, "Backups of a Citus cluster".

pg_dump, pg_restore and psql connect exactly as psycopg does (connection.tool_connection): the
same keywords as their --dbname conninfo, the secrets in the environment, never argv (the password
must not show in `ps`). The tools are the embedded package's when their major version is at least
the server's, else the system's (MINNOCTL_PG_BINDIR picks a directory).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from collections.abc import Callable, Iterator

from minnoctl import modules
from minnoctl.connection import tool_connection
from minnoctl.errors import ExitCode, MinnoctlError, UsageError
from minnoctl.render_text import shown
from minnoctl.rows import one

if TYPE_CHECKING:
    import psycopg

    from minnoctl.config import Settings

log = logging.getLogger("minnoctl")

FORMATS = ("custom", "directory", "plain")
COMPRESSIONS = ("gzip", "lz4", "zstd", "none")
MANIFEST_SUFFIX = ".manifest.json"
PARTIAL_PREFIX = ".partial-"
LOCK_TIMEOUT_S = 30.0  # backup create --lock-timeout: how long a Citus backup waits for its locks


class BackupError(MinnoctlError):
    """A backup could not be written, or a file is not a whole, valid backup."""

    exit_code = ExitCode.BACKUP_INVALID


# ---------------------------------------------------------------------------------------------
# Signals and the processes minnoctl starts


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGINT during a backup command, raised where minnoctl is, so that every cleanup on
    the way out runs (children stopped, temporary files and databases removed). A KeyboardInterrupt,
    so psycopg cancels a running statement as it does for Ctrl-C."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


EXIT_ON_SIGNAL = {signal.SIGINT: 130, signal.SIGTERM: 143}  # 128 + the signal, as shells report it


@contextlib.contextmanager
def stopping_on_signals(what: str, outcome: str) -> Iterator[None]:
    """SIGTERM and SIGINT stop `what`: the first raises Stopped (later ones are ignored, so the
    cleanup is not cut short), and it leaves as one line, exit 143 or 130: "`what` stopped by
    SIGTERM; `outcome`"."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired: list[int] = []

    def handler(signum: int, frame: Any) -> None:
        if fired:
            return
        fired.append(signum)
        raise Stopped(signum)

    previous = {sig: signal.signal(sig, handler) for sig in EXIT_ON_SIGNAL}
    try:
        yield
    except KeyboardInterrupt as exc:
        signum = exc.signum if isinstance(exc, Stopped) else signal.SIGINT
        # arg-type: 130 and 143 are the shells' codes for a signal, deliberately not ExitCode members
        raise MinnoctlError(f"{what} stopped by {signal.Signals(signum).name}; {outcome}",
                            exit_code=EXIT_ON_SIGNAL[signal.Signals(signum)]) from None  # type: ignore[arg-type]
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _signals_held() -> "contextlib.AbstractContextManager[None]":
    """SIGINT and SIGTERM wait until the block is done (a commit step that must not be cut in two):
    the embedded server's own such block (local._uninterrupted)."""
    from minnoctl.local import _uninterrupted

    return _uninterrupted()


def _popen(args: list[str], **kwargs: Any) -> subprocess.Popen:
    """Start a tool that dies with minnoctl: on Linux PR_SET_PDEATHSIG (kill -9 of minnoctl kills it
    too); everywhere, the callers stop it on any exception (SIGTERM/SIGINT arrive as Stopped)."""
    if sys.platform.startswith("linux"):
        from minnoctl.local import _die_with

        kwargs["preexec_fn"] = _die_with(os.getpid())
    return subprocess.Popen(args, **kwargs)


def _stop(*procs: subprocess.Popen | None) -> None:
    """Stop children: SIGTERM (pg_restore and pg_dump cancel their statements on it), then SIGKILL."""
    running = [p for p in procs if p is not None and p.poll() is None]
    for proc in running:
        with contextlib.suppress(OSError):
            proc.terminate()
    deadline = time.monotonic() + 3
    for proc in running:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(OSError):
                proc.kill()
            proc.wait()


def _run(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run a tool to its end (stdout discarded, stderr kept), stopping it if minnoctl is stopped."""
    with tempfile.TemporaryFile() as err:
        proc = _popen(args, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        try:
            proc.wait()
        except BaseException:
            _stop(proc)
            raise
        err.seek(0)
        return subprocess.CompletedProcess(args, proc.returncode, "", err.read().decode(errors="replace"))


# ---------------------------------------------------------------------------------------------
# The tools


@dataclass(frozen=True)
class Tool:
    path: Path
    major: int
    version: str


def _version(path: Path) -> Tool | None:
    try:
        out = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"(\d+)(?:\.(\d+))?", out)
    return Tool(path, int(match.group(1)), out.strip().split(") ")[-1]) if match else None


def _candidates(name: str) -> list[Path]:
    from minnoctl.config import env_value

    forced = env_value("MINNOCTL_PG_BINDIR")  # the environment, else .env
    if forced:
        return [Path(forced[0]) / name]
    found = []
    try:
        from minnoctl.local import bin_dir

        found.append(bin_dir() / name)
    except MinnoctlError:
        pass
    found += sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True)
    on_path = shutil.which(name)
    if on_path:
        found.append(Path(on_path))
    return [p for p in found if p.exists()]


def find_tool(name: str, server_major: int, at_least: int | None = None) -> Tool:
    """`name` of the server's own major version when there is one, else the oldest newer one (the
    embedded package's, typically), and never older than `at_least` (the pg_dump that made an
    archive). A newer pg_restore talking to an older server sends settings it lacks (pg_restore 18
    sets transaction_timeout, which PostgreSQL 15 rejects), hence the exact match first."""
    floor = max(server_major, at_least or 0)
    seen, fitting = [], []
    for path in _candidates(name):
        tool = _version(path)
        if tool is None:
            continue
        if tool.major >= floor:
            fitting.append(tool)
        else:
            seen.append(f"{tool.major} at {path}")
    if fitting:
        exact = [t for t in fitting if t.major == server_major]
        return exact[0] if exact else min(fitting, key=lambda t: t.major)
    where = f" (found: {', '.join(seen)})" if seen else ""
    raise BackupError(f"no {name} of major version {floor} or later for this PostgreSQL {server_major} server"
                      f"{where}; nothing was written — install the PostgreSQL {server_major} client tools, or point "
                      "MINNOCTL_PG_BINDIR at their bin directory", exit_code=ExitCode.CONFIG)


# Extensions a dump leaves out where pg_dump can (17+): pg_stat_statements holds statistics, not
# data, is not a trusted extension (a restore by a role that is not a superuser fails on its CREATE
# EXTENSION, in restore's one transaction), and the embedded build creates it in every home.
UNRESTORABLE_EXTENSIONS = ("pg_stat_statements",)


# ---------------------------------------------------------------------------------------------
# Files


def backup_dir(option: str | None) -> Path:
    """--output-dir, MINNO_BACKUP_DIR, or ./backups (made if missing; the others must exist)."""
    from minnoctl.config import env_value

    found = None if option else env_value("MINNO_BACKUP_DIR")  # the environment, else .env
    chosen = option or (found[0] if found else None)
    where = "--output-dir" if option else found[1] if found else None
    path = Path(chosen or "backups").expanduser()
    if where is None and not path.exists():
        path.mkdir(mode=0o700)
    if not path.exists():
        raise UsageError(f"{where} {path} does not exist — create it, or choose another directory")
    if not path.is_dir():
        raise UsageError(f"{where or 'the backup directory'} {path} is not a directory")
    if not os.access(path, os.W_OK | os.X_OK):
        raise UsageError(f"{where or 'the backup directory'} {path} is not writable — fix its permissions or "
                         "choose another directory")
    return path


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(path: Path) -> None:
    if path.is_dir():
        for child in sorted(path.iterdir()):
            _fsync_tree(child)
        _fsync_dir(path)
    else:
        with path.open("rb") as f:
            os.fsync(f.fileno())


def checksum(path: Path) -> str:
    """SHA-256 of a file; of a directory backup, of its files' names and digests in name order."""
    if path.is_dir():
        outer = hashlib.sha256()
        for child in sorted(p for p in path.rglob("*") if p.is_file()):
            outer.update(f"{child.relative_to(path).as_posix()}\0{checksum(child)}\n".encode())
        return outer.hexdigest()
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def size_of(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def _disk_error(exc: OSError, folder: Path, what: str) -> BackupError:
    """A write that failed for want of room (a full disk, a quota, ulimit -f): one line, exit 1."""
    if exc.errno == errno.EFBIG:
        return BackupError(f"{what} hit the file-size limit (ulimit -f) writing to {folder}; nothing was kept — "
                           "raise the limit, or use --format directory", exit_code=ExitCode.FAILURE)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return BackupError(f"the disk is full: no space left in {folder} for {what}; nothing was kept — free "
                           "space or choose another --output-dir", exit_code=ExitCode.FAILURE)
    return BackupError(f"cannot write {what} in {folder}: {exc.strerror or exc}; nothing was kept",
                       exit_code=ExitCode.FAILURE)


def _partial(path: Path) -> Path:
    """This process's temporary name for `path`, in the same directory (a rename there is atomic)."""
    return path.with_name(f"{PARTIAL_PREFIX}{os.getpid()}-{path.name}")


def _write_json(tmp: Path, document: dict[str, Any]) -> None:
    """`document` into `tmp`, fsynced; `tmp` removed again if that fails (a full disk)."""
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(document, f, indent=2, default=str)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json_atomically(path: Path, document: dict[str, Any]) -> None:
    tmp = _partial(path)
    try:
        _write_json(tmp, document)
    except OSError as exc:
        raise _disk_error(exc, path.parent, f"the manifest {path.name}") from None
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _pid_alive(pid: int, started: float | None = None) -> bool:
    """Whether process `pid` runs here (and, given its start time, is the same process, not a reuse)."""
    import psutil

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return started is None or abs(proc.create_time() - float(started)) < 1.0
    except (psutil.Error, ValueError, TypeError):
        return False


def sweep_partials(folder: Path) -> list[Path]:
    """Remove the temporary files of backups whose process is gone (kill -9, power loss). A dump
    already renamed whose manifest was not (a kill -9 between the two renames) is completed when it
    matches that manifest, else removed: a backup is whole or absent."""
    removed = []
    for path in sorted(folder.glob(f"{PARTIAL_PREFIX}*")):
        match = re.match(rf"{re.escape(PARTIAL_PREFIX)}(\d+)-(.+)$", path.name)
        if match and _pid_alive(int(match.group(1))):
            continue
        if match and match.group(2).endswith(MANIFEST_SUFFIX):
            final_manifest = folder / match.group(2)
            dump = folder / match.group(2)[: -len(MANIFEST_SUFFIX)]
            if dump.exists() and not final_manifest.exists():
                if _completes(dump, path):
                    os.replace(path, final_manifest)
                    _fsync_dir(folder)
                    continue
                _remove(dump)
        _remove(path)
        removed.append(path)
    return removed


def _completes(dump: Path, manifest: Path) -> bool:
    try:
        doc = json.loads(manifest.read_text())
        return size_of(dump) == doc.get("size") and checksum(dump) == doc.get("sha256")
    except (OSError, ValueError, AttributeError):
        return False


# ---------------------------------------------------------------------------------------------
# create


def parse_compress(text: str | None, fmt: str) -> tuple[str, int | None]:
    if text is None:
        return ("gzip", None) if fmt != "plain" else ("none", None)
    method, _, level = text.partition(":")
    method = method.strip().lower()
    if method not in COMPRESSIONS:
        raise UsageError(f"--compress {shown(text)} is not one of gzip, lz4, zstd (optionally :LEVEL) or none")
    if level:
        if not level.isdigit():
            raise UsageError(f"--compress {shown(text)}: the level must be a whole number")
        top = {"gzip": 9, "lz4": 12, "zstd": 22}.get(method, 0)
        if not 1 <= int(level) <= top:
            raise UsageError(f"--compress {shown(text)}: the level for {method} is 1-{top}")
        return method, int(level)
    return method, None


def _compress_args(dump: Tool, fmt: str, method: str, level: int | None) -> list[str]:
    """pg_dump 16+ takes METHOD[:LEVEL]; older ones a gzip level only."""
    if dump.major >= 16:
        if method == "none" and fmt == "plain":
            return []
        return [f"--compress={method}" + (f":{level}" if level else "")]
    if method in ("lz4", "zstd"):
        raise UsageError(f"pg_dump {dump.major} ({dump.path}) compresses with gzip only — use --compress gzip "
                         "or none")
    if method == "none":
        return ["--compress=0"]
    return [f"--compress={level or 6}"] if (level or fmt == "plain") else []


def _extension(fmt: str, method: str) -> str:
    if fmt == "custom":
        return ".dump"
    if fmt == "directory":
        return ".dir"
    return {"gzip": ".sql.gz", "lz4": ".sql.lz4", "zstd": ".sql.zst"}.get(method, ".sql")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()[:40]


@dataclass
class Created:
    path: Path
    manifest: dict[str, Any]


def _snapshot_counts(conn: "psycopg.Connection", schemas: list[str] | None) -> dict[str, int]:
    where = "n.nspname = ANY(%s)" if schemas else "n.nspname NOT IN ('pg_catalog', 'information_schema') " \
                                                  "AND n.nspname NOT LIKE 'pg\\_%%'"
    tables = conn.execute(
        f"""SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND {where}
               AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e')
             ORDER BY 1, 2""", (schemas,) if schemas else ()).fetchall()
    return {f"{s}.{t}": one(conn.execute(f'SELECT count(*) FROM "{s}"."{t}"'))[0] for s, t in tables}


def _migration_state(conn: "psycopg.Connection") -> dict[str, Any]:
    from minnoctl import migrate

    applied = migrate.read_applied(conn)
    digest = hashlib.sha256("".join(f"{a.id}:{a.checksum}\n" for a in applied.values()).encode()).hexdigest()
    return {"count": len(applied), "checksum": digest, "ids": list(applied)}


def create(settings: "Settings", *, output_dir: str | None = None, fmt: str = "custom", jobs: int | None = None,
           compress: str | None = None, schema_only: bool = False, data_only: bool = False,
           chosen: list[modules.Module] | None = None, label: str | None = None,
           progress: Callable[[int], None] | None = None, lock_timeout: float = LOCK_TIMEOUT_S) -> Created:
    """pg_dump into the backup directory, with its manifest. On a Citus coordinator the dump is
    consistent across the nodes: writes to every Citus table wait for it (see _hold_cluster_still),
    `lock_timeout` seconds at most for the locks; its distribution goes in the manifest."""
    from minnoctl.connection import server_version, session

    if fmt not in FORMATS:
        raise UsageError(f"--format {shown(fmt)} is not one of: {', '.join(FORMATS)}")
    if schema_only and data_only:
        raise UsageError("use --schema-only or --data-only, not both")
    if jobs is not None and fmt != "directory":
        raise UsageError("--jobs needs --format directory (pg_dump dumps in parallel only into a directory)")
    method, level = parse_compress(compress, fmt)
    folder = backup_dir(output_dir)
    sweep_partials(folder)
    schemas = [m.schema for m in modules.with_dependencies(chosen)] if chosen else None

    with session(settings, "backup") as conn, contextlib.ExitStack() as held:  # an unreachable server
        version = server_version(conn)                                            # fails here, before any file
        major = conn.info.server_version // 10000
        dump = find_tool("pg_dump", major)
        owner = identity(conn)
        migrations = _migration_state(conn)
        cluster = citus_coordinator(conn)  # the one probe plain PostgreSQL pays
        # This session holds the snapshot pg_dump joins and then waits, idle in its transaction, for
        # as long as the dump takes: a role's idle_in_transaction_session_timeout (or PostgreSQL
        # 17's transaction_timeout) must not end it. SET: this session only, not the role.
        _no_idle_timeouts(conn)
        # a schema-only dump has no data to keep consistent: writes need not wait for it
        locked = _hold_cluster_still(settings, held, lock_timeout) if cluster and not schema_only else None
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        snapshot = one(conn.execute("SELECT pg_export_snapshot()"))[0]
        citus = _distribution(conn, schemas, locked) if cluster else None
        stamp = dt.datetime.now(dt.UTC)
        name = f"minno-{_slug(owner.database) or 'db'}-{stamp:%Y%m%dT%H%M%SZ}" + (f"-{_slug(label)}" if label else "")
        final = folder / (name + _extension(fmt, method))
        if final.exists() or manifest_path(final).exists():
            name += f"-{uuid.uuid4().hex[:6]}"
            final = folder / (name + _extension(fmt, method))
        tmp, mtmp = _partial(final), _partial(manifest_path(final))
        target = tool_connection(settings, server=conn)
        args = [str(dump.path), f"--format={fmt}", f"--file={tmp}", f"--snapshot={snapshot}", "--no-password",
                target.dbname_option]
        args += _compress_args(dump, fmt, method, level)
        if jobs:
            args.append(f"--jobs={jobs}")
        if dump.major >= 17:  # monitoring state, not data: its CREATE EXTENSION needs a superuser to restore
            args += [f"--exclude-extension={ext}" for ext in UNRESTORABLE_EXTENSIONS]
        if schema_only:
            args.append("--schema-only")
        if data_only:
            args.append("--data-only")
        for schema in schemas or []:
            args.append(f"--schema={schema}")
        env = target.env
        proc = None
        try:
            with tempfile.TemporaryFile() as errfile:
                old_umask = os.umask(0o077)
                try:
                    proc = _popen(args, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errfile)
                finally:
                    os.umask(old_umask)
                rows = _snapshot_counts(conn, schemas) if not schema_only else {}
                while proc.poll() is None:
                    if progress and tmp.exists():
                        progress(size_of(tmp))
                    time.sleep(0.05)
                errfile.seek(0)
                err = errfile.read().decode(errors="replace")
            try:
                conn.execute("COMMIT")
            except Exception as exc:  # pg_dump joined the snapshot at its start; it no longer needs it
                log.debug("the snapshot session ended early: %s", exc)
            held.close()  # a Citus cluster's writes go on as soon as pg_dump is done
            if proc.returncode != 0:
                raise _dump_error(proc.returncode, err, folder)
            try:
                _fsync_tree(tmp)
                tmp.chmod(0o700 if tmp.is_dir() else 0o600)
                manifest = {
                    "minnoctl_backup": 1, "file": final.name, "format": fmt, "compress": method,
                    "compress_level": level, "sha256": checksum(tmp), "size": size_of(tmp),
                    "created_at": stamp.isoformat(), "label": label,
                    "database": owner.database, "system_identifier": owner.system_identifier,
                    "connected_as": conn.info.dbname, "server_version": version,
                    "pg_dump": {"path": str(dump.path), "version": dump.version},
                    "schemas": schemas, "schema_only": schema_only, "data_only": data_only,
                    "migrations": migrations, "rows": rows, "verified_at": None, "restore_tested_at": None,
                }
                if citus is not None:
                    manifest["citus"] = citus
                _write_json(mtmp, manifest)
            except OSError as exc:
                raise _disk_error(exc, folder, f"the backup {final.name}") from None
            with _signals_held():  # the commit: both renames, never one without the other on a signal
                os.replace(tmp, final)
                os.replace(mtmp, manifest_path(final))  # the commit point
        except BaseException:
            _stop(proc)
            _remove(tmp)
            mtmp.unlink(missing_ok=True)
            raise
    _fsync_dir(folder)
    return Created(final, manifest)


def _no_idle_timeouts(conn: "psycopg.Connection") -> None:
    conn.execute("SET idle_in_transaction_session_timeout = 0")
    if conn.info.server_version >= 170000:
        conn.execute("SET transaction_timeout = 0")


# ---------------------------------------------------------------------------------------------
# Citus: a dump consistent across the nodes, and its distribution

_POLL_S = 0.1


def citus_coordinator(conn: "psycopg.Connection") -> bool:
    """Whether `conn`'s database is a Citus coordinator: one query on plain PostgreSQL, two on Citus."""
    if conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'citus'").fetchone() is None:
        return False
    return bool(one(conn.execute("SELECT citus_is_coordinator()"))[0])


def _shown_seconds(seconds: float) -> str:
    return f"{seconds:g}s" if seconds < 120 else f"{seconds / 60:g}min"


def _not_consistent(reason: str, exit_code: ExitCode = ExitCode.FAILURE) -> BackupError:
    return BackupError(f"cannot take a consistent backup of this Citus cluster: {reason}; nothing was written",
                       exit_code=exit_code)


def _hold_cluster_still(settings: "Settings", held: contextlib.ExitStack, lock_timeout: float) -> set[str]:
    """Make a Citus cluster hold still for a dump, in a session of its own kept open (`held`) until
    the dump is done: every table in pg_dist_partition locked IN SHARE MODE (writes wait, reads go
    on; Citus takes the lock on every node's copy of the table too, so a write through a worker
    waits as well), then no two-phase commit of this database still prepared on any node (one that
    committed on the coordinator but not yet on a worker would be seen by one snapshot and not by
    another). pg_dump's snapshot is taken only then: each worker's shards, read in their own
    snapshots, then hold the same data. `lock_timeout` bounds both waits. Returns the tables locked.

    Anything that prevents it — a lock not had in time (exit 8), a role that may not lock (exit 1),
    a node that does not answer (exit 4) — refuses, before any file is written."""
    import psycopg

    from minnoctl.connection import first_line, session

    lock = held.enter_context(session(settings, "backup"))
    _no_idle_timeouts(lock)
    tables = [r[0] for r in lock.execute(
        "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_dist_partition p JOIN pg_class c "
        "ON c.oid = p.logicalrelid JOIN pg_namespace n ON n.oid = c.relnamespace ORDER BY 1").fetchall()]
    wait = _shown_seconds(lock_timeout)
    ms = max(1, int(lock_timeout * 1000))
    try:
        lock.execute("BEGIN")
        if tables:
            # lock_timeout for each wait here, statement_timeout for the whole statement (the
            # workers' waits included, which the coordinator's lock_timeout does not bound)
            lock.execute(f"SET LOCAL lock_timeout = {ms}")
            lock.execute(f"SET LOCAL statement_timeout = {ms}")
            lock.execute(f"LOCK TABLE {', '.join(tables)} IN SHARE MODE")
            lock.execute("SET LOCAL statement_timeout = 0")
        deadline = time.monotonic() + lock_timeout
        while True:
            nodes = lock.execute(
                "SELECT n.nodename, n.nodeport, r.success, r.result FROM run_command_on_all_nodes("
                "$$SELECT count(*) FROM pg_prepared_xacts WHERE database = current_database()$$) r "
                "JOIN pg_dist_node n USING (nodeid)").fetchall()
            down = [f"{host}:{port} ({first_line(str(result))})" for host, port, ok, result in nodes if not ok]
            if down:
                raise _not_consistent(f"node {down[0]} does not answer — every node must be reachable",
                                      ExitCode.UNREACHABLE)
            pending = [f"{host}:{port}" for host, port, _ok, result in nodes if str(result).strip() != "0"]
            if not pending:
                return set(tables)
            if time.monotonic() >= deadline:
                raise BackupError(
                    f"a two-phase commit of this database is still prepared on {pending[0]} after --lock-timeout "
                    f"{wait}: a dump now could hold half of it; nothing was written — let Citus recover it (SELECT "
                    "recover_prepared_transactions() on the coordinator) and run it again",
                    exit_code=ExitCode.LOCK_HELD)
            time.sleep(_POLL_S)
    except (psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled):
        raise BackupError(f"could not lock this Citus cluster's {len(tables)} table(s) IN SHARE MODE within "
                          f"--lock-timeout {wait} (a write or a DDL holds them); nothing was written — run it again "
                          "when writes are fewer, or raise --lock-timeout", exit_code=ExitCode.LOCK_HELD) from None
    except psycopg.errors.InsufficientPrivilege as exc:
        raise _not_consistent(f"role '{lock.info.user}' may not lock its tables IN SHARE MODE ({first_line(str(exc))}) "
                              "— back up as the tables' owner, or take per-node physical backups (README)") from None
    except psycopg.Error as exc:
        code = ExitCode.UNREACHABLE if (exc.sqlstate or "").startswith("08") else ExitCode.FAILURE
        raise _not_consistent(first_line(str(exc)), code) from None


def _distribution(conn: "psycopg.Connection", schemas: list[str] | None, locked: set[str] | None) -> dict[str, Any]:
    """The distribution of the Citus tables in the dump, read in its snapshot: each table's type
    (distributed, reference, local: a citus local table; append, range, schema: recorded, not
    recreated), distribution column, colocation group and shard count. A table that was not locked
    (made or distributed between the lock and the snapshot) refuses: the dump could be inconsistent.
    `locked` None: a schema-only dump, which locks nothing."""
    rows = conn.execute(
        """SELECT n.nspname, c.relname, format('%I.%I', n.nspname, c.relname), p.partmethod::text, p.repmodel::text,
                  CASE WHEN p.partkey IS NULL THEN NULL ELSE column_to_column_name(p.logicalrelid, p.partkey) END,
                  p.colocationid, (SELECT count(*) FROM pg_dist_shard s WHERE s.logicalrelid = p.logicalrelid),
                  p.autoconverted
             FROM pg_dist_partition p JOIN pg_class c ON c.oid = p.logicalrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
            ORDER BY p.colocationid, p.logicalrelid""").fetchall()
    tables = []
    for schema, name, quoted, method, rep, column, colocation, shards, auto in rows:
        if schemas and schema not in schemas:
            continue
        if locked is not None and quoted not in locked:
            raise _not_consistent(f"table {schema}.{name} became a Citus table while the backup started — run it again")
        kind = {"h": "distributed", "a": "append", "r": "range"}.get(method)
        if kind is None:
            kind = "reference" if rep == "t" else "schema" if colocation else "local"
        entry: dict[str, Any] = {"table": f"{schema}.{name}", "schema": schema, "name": name, "type": kind}
        if kind in ("distributed", "append", "range", "schema"):
            entry |= {"column": column, "colocation_id": colocation, "shard_count": shards}
        if kind == "local":
            entry["autoconverted"] = bool(auto)
        tables.append(entry)
    version = one(conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'citus'"))[0]
    return {"version": version, "consistency": "writes to every Citus table waited (SHARE locks on every node) "
            "and no two-phase commit was pending when the snapshot was taken", "tables": tables}


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _dump_error(code: int, stderr: str, folder: Path) -> BackupError:
    text = stderr.strip().splitlines()
    first = next((ln for ln in text if "error" in ln.lower()), text[0] if text else "")
    low = stderr.lower()
    if code == -signal.SIGXFSZ or "file too large" in low:
        return BackupError(f"the backup hit the file-size limit (ulimit -f) writing to {folder}; nothing was kept — "
                           "raise the limit, or use --format directory", exit_code=ExitCode.FAILURE)
    if "no space left" in low:
        return BackupError(f"the disk is full: no space left in {folder}; nothing was kept — free space or "
                           "choose another --output-dir", exit_code=ExitCode.FAILURE)
    if "compression" in low and "not" in low and "support" in low:
        detail = re.sub(r"^pg_dump: error: ", "", first.strip())
        return BackupError(f"pg_dump cannot compress that way ({detail}); nothing was written — use --compress gzip",
                           exit_code=ExitCode.USAGE)
    return BackupError(f"pg_dump failed (exit {code}): {first.strip()}; nothing was kept", exit_code=ExitCode.FAILURE)


def manifest_path(backup: Path) -> Path:
    return backup.with_name(backup.name + MANIFEST_SUFFIX)


# ---------------------------------------------------------------------------------------------
# Whose backup


@dataclass(frozen=True)
class Identity:
    """A database of one server: its real name and the server's system identifier (None where the
    role may not read pg_control_system())."""

    database: str
    system_identifier: str | None

    def owns(self, manifest: dict[str, Any]) -> bool:
        """Whether a manifest is a backup of this database. The name must match; so must the system
        identifier when both sides have one. A manifest of an older minnoctl has none: it matches by
        the database name only (README, "Backups")."""
        if manifest.get("database") != self.database:
            return False
        theirs = manifest.get("system_identifier")
        return theirs is None or self.system_identifier is None or str(theirs) == self.system_identifier


def identity(conn: "psycopg.Connection") -> Identity:
    """The database `conn` really uses (current_database(): a PgBouncer alias names it otherwise)."""
    database = one(conn.execute("SELECT current_database()"))[0]
    system = None
    if one(conn.execute("SELECT has_function_privilege('pg_control_system()', 'EXECUTE')"))[0]:
        system = str(one(conn.execute("SELECT system_identifier FROM pg_control_system()"))[0])
    return Identity(database, system)


def identity_of(settings: "Settings") -> Identity:
    from minnoctl.connection import session

    with session(settings, "backup-list") as conn:  # one question, no session state: any pool will do
        return identity(conn)


# ---------------------------------------------------------------------------------------------
# list / verify


def read_manifest(backup: Path) -> dict[str, Any]:
    mpath = manifest_path(backup)
    if not backup.exists():
        raise UsageError(f"{backup} does not exist")
    try:
        doc = json.loads(mpath.read_text())
    except FileNotFoundError:
        raise BackupError(f"{backup} is not a minnoctl backup: it has no manifest ({mpath.name})") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BackupError(f"{mpath} is not a valid manifest (not JSON)") from None
    if not isinstance(doc, dict) or doc.get("minnoctl_backup") != 1 or "sha256" not in doc:
        raise BackupError(f"{mpath} is not a minnoctl backup manifest")
    return doc


def resolve_backup(text: str, output_dir: str | None = None, owner: Identity | None = None) -> Path:
    """A path, a name in the backup directory, or `latest`: the newest backup there of the database
    `owner` (for cron; every database's when None)."""
    if text == "latest" and not Path(text).exists():
        present = [r for r in list_backups(output_dir, owner) if r["status"] == "ok"]
        if not present:
            whose = f" of database {shown(owner.database)} on this server" if owner else ""
            raise UsageError(f"latest: there is no backup in {backup_dir(output_dir)}{whose} — see "
                             "`minnoctl backup list`")
        return backup_dir(output_dir) / present[0]["file"]
    path = Path(text).expanduser()
    if text.endswith(MANIFEST_SUFFIX):
        path = path.with_name(path.name[: -len(MANIFEST_SUFFIX)])
    if not path.exists() and not path.is_absolute() and path.parent == Path("."):
        try:
            candidate = backup_dir(output_dir) / path.name
        except UsageError:
            candidate = path
        if candidate.exists():
            path = candidate
    if not path.exists():
        raise UsageError(f"{text}: no such backup — see `minnoctl backup list`")
    return path


def manifests(folder: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Each readable manifest in `folder` with the backup it describes (which may be gone)."""
    for mpath in sorted(folder.glob(f"*{MANIFEST_SUFFIX}")):
        try:
            doc = json.loads(mpath.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(doc, dict):
            yield mpath.with_name(mpath.name[: -len(MANIFEST_SUFFIX)]), doc


_BACKUP_NAME = re.compile(r"^minno-.+\.(dump|dir|sql|sql\.gz|sql\.lz4|sql\.zst)$")
ORPHAN_GRACE_S = 60  # an older minnoctl writes the manifest just after renaming the dump


def orphans(folder: Path, owner: Identity | None = None) -> list[Path]:
    """Dumps without a manifest (left by an older minnoctl killed between the two): never a backup.
    An orphan has no manifest to say whose it is: with `owner`, those whose file name carries that
    database's name (minno-<name>-<time>...), so a prune for one database leaves the others' alone."""
    import glob

    found = []
    mine = re.compile(rf"minno-{re.escape(_slug(owner.database) or 'db')}-\d{{8}}T\d{{6}}Z") if owner else None
    for path in sorted(folder.glob("minno-*")):
        if not _BACKUP_NAME.match(path.name) or manifest_path(path).exists():
            continue
        if mine is not None and not mine.match(path.name):
            continue
        if list(folder.glob(f"{PARTIAL_PREFIX}*-{glob.escape(path.name)}{MANIFEST_SUFFIX}")):
            continue  # being committed, or completed by the next run's sweep
        found.append(path)
    return found


_EPOCH = dt.datetime.min.replace(tzinfo=dt.UTC)


def _when(text: Any) -> dt.datetime | None:
    """A manifest's ISO 8601 time as an aware datetime (UTC when it names no offset), so every
    output format shows it in its one style; None when absent or unreadable."""
    try:
        when = dt.datetime.fromisoformat(str(text).replace("Z", "+00:00")) if text else None
    except ValueError:
        return None
    return when.replace(tzinfo=dt.UTC) if when and when.tzinfo is None else when


def list_backups(output_dir: str | None = None, owner: Identity | None = None) -> list[dict[str, Any]]:
    """The backups of the database `owner` (every database's when None), newest first, then the
    orphans (dumps without a manifest; see orphans()). status: ok, missing (the manifest's file is
    gone) or orphan. Times are aware datetimes; size_bytes the dump's size in bytes."""
    folder = backup_dir(output_dir)
    rows = []
    for backup, doc in manifests(folder):
        if owner is not None and not owner.owns(doc):
            continue
        present = backup.exists()
        rows.append({"file": backup.name, "created_at": _when(doc.get("created_at")), "size_bytes": doc.get("size"),
                     "format": doc.get("format"), "label": doc.get("label"), "database": doc.get("database"),
                     "system_identifier": doc.get("system_identifier"),
                     "verified_at": _when(doc.get("verified_at")),
                     "restore_tested_at": _when(doc.get("restore_tested_at")),
                     "present": present, "status": "ok" if present else "missing"})
    rows.sort(key=lambda r: r["created_at"] or _EPOCH, reverse=True)
    for path in orphans(folder, owner):
        stat = path.stat()
        rows.append({"file": path.name, "created_at": dt.datetime.fromtimestamp(stat.st_mtime, dt.UTC),
                     "size_bytes": size_of(path), "format": None, "label": None, "database": None,
                     "system_identifier": None, "verified_at": None, "restore_tested_at": None, "present": True,
                     "status": "orphan"})
    return rows


def check_checksum(backup: Path, manifest: dict[str, Any]) -> None:
    size = size_of(backup)
    if size != manifest.get("size"):
        raise BackupError(f"{backup.name} is {size} bytes but its manifest says {manifest.get('size')}: it is "
                          "truncated or was changed — do not restore it")
    if checksum(backup) != manifest["sha256"]:
        raise BackupError(f"{backup.name} does not match its SHA-256 checksum: it was changed or damaged — do not "
                          "restore it")


def _dump_major(manifest: dict[str, Any]) -> int | None:
    match = re.search(r"(\d+)", str((manifest.get("pg_dump") or {}).get("version", "")))
    return int(match.group(1)) if match else None


def _restore_list(backup: Path, manifest: dict[str, Any], major: int | None = None) -> None:
    """pg_restore --list (custom, directory) or a full decompression (compressed plain)."""
    fmt = manifest.get("format")
    if fmt in ("custom", "directory"):
        tool = find_tool("pg_restore", major or int(str(manifest.get("server_version", "0")).split(".")[0]),
                         at_least=_dump_major(manifest))
        proc = _run([str(tool.path), "--list", str(backup)])
        if proc.returncode != 0:
            raise BackupError(f"pg_restore cannot read {backup.name}: "
                              f"{proc.stderr.strip().splitlines()[0] if proc.stderr.strip() else proc.returncode}")
        return
    method = manifest.get("compress")
    if method in ("gzip", "lz4", "zstd"):
        cmd = {"gzip": ["gzip", "-t"], "lz4": ["lz4", "-t"], "zstd": ["zstd", "-t", "-q"]}[method]
        proc = _run(cmd + [str(backup)])
        if proc.returncode != 0:
            raise BackupError(f"{backup.name} does not decompress: {proc.stderr.strip()[:200]}")


@dataclass
class Verified:
    backup: Path
    restore_tested: bool
    rows_compared: int = 0
    mismatches: list[str] | None = None


def verify(settings: "Settings | None", text: str, *, restore_test: bool = False,
           output_dir: str | None = None) -> Verified:
    """Checksum and pg_restore --list; with `restore_test` a restore into a temporary database whose
    rows are compared with the manifest. `latest` is the newest backup of the connected database."""
    owner = identity_of(settings) if settings is not None and text == "latest" else None
    backup = resolve_backup(text, output_dir, owner)
    manifest = read_manifest(backup)
    check_checksum(backup, manifest)
    _restore_list(backup, manifest)
    result = Verified(backup, restore_test)
    if restore_test:
        assert settings is not None  # a restore test connects: the command gives it the settings
        with _admin(settings) as conn:
            sweep_temporary(conn)
            scratch = _create_temporary(conn, f"verify --restore-test {backup.name}")
        try:
            _restore_into(settings, backup, manifest, scratch, test=True)
            result.rows_compared, result.mismatches = _compare_rows(settings, scratch, manifest)
        finally:
            _drop_database(settings, scratch)
        if result.mismatches:
            raise BackupError(f"restore test of {backup.name}: {len(result.mismatches)} table(s) differ from the "
                              f"manifest ({result.mismatches[0]}{', ...' if len(result.mismatches) > 1 else ''})")
    now = dt.datetime.now(dt.UTC).isoformat()
    manifest["verified_at"] = now
    if restore_test:
        manifest["restore_tested_at"] = now
    write_json_atomically(manifest_path(backup), manifest)
    return result


# ---------------------------------------------------------------------------------------------
# Databases: names, temporary ones and their sweep


def _admin(settings: "Settings"):
    from minnoctl.connection import open_session

    for maintenance in ("postgres", "template1"):
        try:
            return open_session(settings, "backup", dbname=maintenance)
        except MinnoctlError as exc:
            last = exc
    raise last


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


TMP_PREFIX = "minnoctl_tmp_"
_TMP_NAME = re.compile(rf"^{TMP_PREFIX}(\d+)_([0-9a-f]{{6}})_[0-9a-f]{{8}}$")
_DBNAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_$.-]*")


def check_database_name(name: str, option: str = "--into") -> str:
    """A database name as an identifier: never a connection string (`dbname=...`, `host=...`, a URL),
    which pg_restore and psql would follow to another database or server."""
    if not name or len(name.encode()) > 63 or not _DBNAME.fullmatch(name):
        raise UsageError(f"{option} {shown(name)} is not a database name — use 1 to 63 letters, digits, _, $, - "
                         "or . (a name, never a connection string)")
    if name.startswith(TMP_PREFIX):
        raise UsageError(f"{option} {shown(name)}: names starting with {TMP_PREFIX} are minnoctl's temporary "
                         "databases — choose another name")
    return name


def _host_tag() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]


def _create_temporary(conn: "psycopg.Connection", purpose: str) -> str:
    """A new empty database only this process uses: minnoctl_tmp_<pid>_<host>_<random>, its COMMENT
    naming the owner process (pid, host, start time), so a later run can tell a dead run's
    leftovers from a live run's. Signals wait for both statements. Without CREATEDB, one line
    saying so (_no_createdb)."""
    import psutil
    import psycopg
    from psycopg import sql

    command = "verify --restore-test" if purpose.startswith("verify") else "restore --into"
    allowed, role = one(conn.execute("SELECT rolsuper OR rolcreatedb, current_user FROM pg_roles "
                                     "WHERE rolname = current_user"))
    if not allowed:
        raise _no_createdb(command, role)
    name = f"{TMP_PREFIX}{os.getpid()}_{_host_tag()}_{uuid.uuid4().hex[:8]}"
    mark = json.dumps({"minnoctl_temporary": 1, "pid": os.getpid(), "host": socket.gethostname(),
                       "started": psutil.Process().create_time(), "for": purpose})
    with _signals_held():
        try:
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
        except psycopg.errors.InsufficientPrivilege:
            raise _no_createdb(command, role) from None
        conn.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(name), sql.Literal(mark)))
    return name


def _no_createdb(command: str, role: str) -> MinnoctlError:
    """backup verify --restore-test and restore --into create a database: without CREATEDB, say
    which privilege, which role (the one minnoctl connects as) and what to do."""
    quoted = role if re.fullmatch(r"[a-z_][a-z0-9_$]*", role) else _ident(role)
    return MinnoctlError(f"backup {command} needs the CREATEDB privilege (it restores into a new database), "
                         f"which role '{role}' that minnoctl connects as lacks — an administrator runs "
                         f"ALTER ROLE {quoted} CREATEDB, or on managed PostgreSQL connect as the provider's admin "
                         "role (it has CREATEDB) with --database-url; nothing was changed")


def sweep_temporary(conn: "psycopg.Connection") -> list[str]:
    """Drop the temporary databases of minnoctl runs on this host whose process is gone (killed while
    restoring), and only those: the name must be minnoctl's pattern with this host's tag, and a
    COMMENT, when there is one, minnoctl's mark of that same pid."""
    import psycopg
    from psycopg import sql

    dropped = []
    rows = conn.execute("SELECT datname, shobj_description(oid, 'pg_database') FROM pg_database "
                        "WHERE datname LIKE %s", (TMP_PREFIX.replace("_", r"\_") + "%",)).fetchall()
    for name, comment in rows:
        match = _TMP_NAME.match(name)
        if not match or match.group(2) != _host_tag():
            continue
        pid, started = int(match.group(1)), None
        if comment is not None:  # none: killed between CREATE DATABASE and COMMENT
            try:
                mark = json.loads(comment)
            except ValueError:
                continue
            if not isinstance(mark, dict) or mark.get("minnoctl_temporary") != 1 or mark.get("pid") != pid:
                continue
            started = mark.get("started")
        if _pid_alive(pid, started):
            continue
        try:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        except psycopg.Error as exc:
            log.warning("could not drop %s, left by a minnoctl run that died: %s", name, str(exc).strip())
            continue
        log.info("dropped %s, left by a minnoctl run that died (pid %d)", name, pid)
        dropped.append(name)
    return dropped


def _drop_database(settings: "Settings", name: str) -> None:
    with _admin(settings) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {_ident(name)} WITH (FORCE)")


def _exists(conn: "psycopg.Connection", name: str) -> bool:
    return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None


def _already_exists(name: str) -> UsageError:
    return UsageError(f"database {shown(name)} already exists — choose another --into (a restore never "
                      "overwrites a database it did not make), or drop it first")


def _rename_temporary(conn: "psycopg.Connection", tmp: str, target: str) -> None:
    """Give a whole restore its final name, and drop its temporary mark, in one transaction."""
    import psycopg
    from psycopg import sql

    # A session pool (PgBouncer) may keep pg_restore's server connection open, and a database
    # with sessions cannot be renamed: end those (only this run knows the temporary name).
    conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                 "AND pid <> pg_backend_pid()", (tmp,))
    try:
        with _signals_held(), conn.transaction():
            conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(tmp), sql.Identifier(target)))
            conn.execute(sql.SQL("COMMENT ON DATABASE {} IS NULL").format(sql.Identifier(target)))
    except psycopg.errors.DuplicateDatabase:
        raise _already_exists(target) from None


# ---------------------------------------------------------------------------------------------
# restore


def _server_major(settings: "Settings") -> int:

    with _admin(settings) as conn:
        return conn.info.server_version // 10000


def _failure(what: str, stderr: str, code: int) -> str:
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    first = next((ln for ln in lines if "error" in ln.lower()), lines[0] if lines else f"exit {code}")
    return f"{what}: {first.strip()}"


def _restore_into(settings: "Settings", backup: Path, manifest: dict[str, Any], dbname: str, *,
                  clean: bool = False, test: bool = False) -> None:
    """Restore in one transaction: it applies whole or not at all. If pg_restore or psql dies
    (minnoctl killed, SIGTERM), its connection closes before COMMIT and the server rolls it all back.
    The database goes to the tools as `dbname='...'` in their conninfo, so no name is ever read as a
    connection string.

    A backup of a Citus coordinator (its manifest's `citus`) restored over a Citus coordinator with
    nodes (--clean) gets its distribution back before its data (_restore_distributed); anywhere else
    it restores as plain tables, said in one line. Its citus extension is never restored nor dropped
    (a Citus destination has its own; a plain one may not have it at all)."""
    major = _server_major(settings)
    connection = tool_connection(settings, dbname=dbname)
    env, target = connection.env, connection.dbname_option
    what = f"restoring {backup.name} into {shown(dbname)} failed, nothing was restored"
    fmt = manifest["format"]
    citus = manifest.get("citus")
    if citus is not None and not manifest.get("data_only"):
        reason = _not_a_cluster(settings, dbname, new=not clean, test=test)
        if reason is None and fmt in ("custom", "directory"):
            proc = _restore_distributed(settings, backup, manifest, major, env, target, clean=clean)
            if proc.returncode != 0:
                raise BackupError(_failure(what, proc.stderr, proc.returncode), exit_code=ExitCode.FAILURE)
            return
        if reason is None:
            reason = "a plain (SQL) backup cannot be restored by sections — take Citus backups in --format custom"
        if test:
            log.warning("restore test into plain tables: %s; the distribution was not recreated (it is in the "
                        "manifest: `backup restore --clean` into a Citus database recreates it)", reason)
        else:
            log.warning("the distribution was not recreated: %s — restored as plain tables", reason)
    if fmt in ("custom", "directory"):
        tool = find_tool("pg_restore", major, at_least=_dump_major(manifest))
        args = [str(tool.path), "--single-transaction", "--exit-on-error", "--no-password", target]
        if clean:
            args += ["--clean", "--if-exists"]
        with tempfile.TemporaryDirectory() as folder:
            if citus is not None:
                args.append(f"--use-list={_toc_list(tool, backup, Path(folder))}")
            proc = _run(args + [str(backup)], env=env)
    else:
        psql = find_tool("psql", major)
        args = [str(psql.path), "--no-psqlrc", "--quiet", "--single-transaction", "-v", "ON_ERROR_STOP=1",
                "--no-password", target, "--output=/dev/null"]
        decompress = {"gzip": ["gzip", "-dc"], "lz4": ["lz4", "-dc"],
                      "zstd": ["zstd", "-dcq"]}.get(manifest["compress"])
        if decompress:
            proc = _decompress_into(decompress + [str(backup)], args, env, backup)
        else:
            proc = _run(args + [f"--file={backup}"], env=env)
    if proc.returncode != 0:
        raise BackupError(_failure(what, proc.stderr, proc.returncode), exit_code=ExitCode.FAILURE)


def _not_a_cluster(settings: "Settings", dbname: str, *, new: bool, test: bool) -> str | None:
    """Why the database `dbname` cannot take a Citus backup's distribution, or None when it can: a
    Citus coordinator with nodes that hold shards."""
    from minnoctl.connection import session

    with session(settings, "backup", dbname=dbname) as conn:
        if citus_coordinator(conn):
            if one(conn.execute("SELECT EXISTS (SELECT 1 FROM pg_dist_node WHERE noderole = 'primary' "
                                "AND isactive AND shouldhaveshards)"))[0]:
                return None
            return f"database {shown(dbname)} has citus but no node to hold shards"
        preloaded = one(conn.execute("SELECT current_setting('shared_preload_libraries') ~ 'citus'"))[0]
    if not preloaded:
        return "the destination is plain PostgreSQL, not a Citus coordinator"
    if new:
        why = (f"a {'scratch' if test else 'new'} database on a Citus coordinator is no cluster: it would need "
               "citus and its nodes in it on every node, which minnoctl does not set up from the coordinator")
        return why if test else why + " (make one, then restore into it with --clean)"
    return f"database {shown(dbname)} is not a Citus coordinator (no citus extension in it)"


_CITUS_TOC = re.compile(r"^\s*\d+;\s+\d+\s+\d+\s+(EXTENSION - citus|COMMENT - EXTENSION citus)(\s|$)")


def _output(args: list[str], backup: Path) -> str:
    """A pg_restore's output (a TOC list, a schema script); one line when it cannot read the archive."""
    with tempfile.TemporaryFile() as err:
        proc = _popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err)
        try:
            out, _ = proc.communicate()
        except BaseException:
            _stop(proc)
            raise
        if proc.returncode != 0:
            err.seek(0)
            detail = err.read().decode(errors="replace").strip().splitlines()
            raise BackupError(f"pg_restore cannot read {backup.name} ({detail[0] if detail else proc.returncode}); "
                              "nothing was restored")
    return out.decode(errors="replace")


def _toc_list(tool: Tool, backup: Path, folder: Path, section: str | None = None) -> Path:
    """A pg_restore --use-list file of the archive's entries (of one section), without the citus
    extension and its comment."""
    args = [str(tool.path), "--list"] + ([f"--section={section}"] if section else []) + [str(backup)]
    lines = [ln for ln in _output(args, backup).splitlines() if not _CITUS_TOC.match(ln)]
    path = folder / f"{section or 'all'}.list"
    path.write_text("\n".join(lines) + "\n")
    return path


def _drops(script: str) -> str:
    """The DROP statements that open a `pg_restore --clean` schema script: everything before its
    first entry's header (the preamble and the drops, never a body), its \\restrict closed again."""
    kept, key = [], None
    for line in script.splitlines():
        if line.startswith(("-- Name: ", "-- TOC entry ", "-- Data for Name: ")):
            break
        if line.startswith("\\restrict "):
            key = line.split(None, 1)[1].strip()
        elif line.startswith("\\unrestrict"):
            key = None
        kept.append(line)
    if key:
        kept.append(f"\\unrestrict {key}")
    return "\n".join(kept) + "\n"


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _distribute_sql(citus: dict[str, Any]) -> str:
    """The calls that give restored (still empty) tables the recorded distribution: reference tables,
    then each colocation group's tables, the first with its shard count and the others colocated
    with it; citus local tables added by hand (those Citus added itself come back with their foreign
    keys). Append, range and schema-based tables are named in a warning, not recreated."""
    statements: list[str] = []
    firsts: dict[Any, str] = {}
    skipped: list[str] = []
    for table in citus.get("tables") or []:
        name = _literal(f"{_ident(table['schema'])}.{_ident(table['name'])}")
        kind = table.get("type")
        if kind == "reference":
            statements.insert(0, f"SELECT create_reference_table({name});")
        elif kind == "distributed":
            first = firsts.setdefault(table.get("colocation_id"), name)
            how = f"shard_count => {int(table['shard_count'])}" if first == name else f"colocate_with => {first}"
            statements.append(f"SELECT create_distributed_table({name}, {_literal(table['column'])}, {how});")
        elif kind == "local":
            if not table.get("autoconverted"):
                statements.append(f"SELECT citus_add_local_table_to_metadata({name});")
        else:
            skipped.append(f"{table['table']} ({kind})")
    if skipped:
        log.warning("the distribution of %d table(s) was not recreated: %s — distribute them by hand", len(skipped),
                    ", ".join(skipped))
    return "\n".join(statements) + "\n"


# In the restore's one transaction: triggers on Citus tables are the source's own (its DROP TRIGGER
# and CREATE TRIGGER need this), and one connection per node keeps DDL after COPY in one transaction
_CITUS_SESSION = b"SET citus.enable_unsafe_triggers = on;\nSET citus.multi_shard_modify_mode = 'sequential';\n"


def _restore_distributed(settings: "Settings", backup: Path, manifest: dict[str, Any], major: int,
                         env: dict[str, str], target: str, *, clean: bool) -> subprocess.CompletedProcess:
    """A Citus backup over a Citus coordinator, in psql's one transaction: (with --clean, the drops
    of pg_restore --clean), the schema (pre-data), create_reference_table / create_distributed_table
    as recorded, the data, then the indexes, constraints and triggers (post-data)."""
    tool = find_tool("pg_restore", major, at_least=_dump_major(manifest))
    psql = find_tool("psql", major)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        lists = {section: _toc_list(tool, backup, folder, section) for section in ("pre-data", "data", "post-data")}
        sources: list[bytes | list[str]] = [_CITUS_SESSION]
        if clean:
            everything = _toc_list(tool, backup, folder)
            sources.append(_drops(_output([str(tool.path), "--file=-", "--clean", "--if-exists", "--schema-only",
                                           f"--use-list={everything}", str(backup)], backup)).encode())

        def section(name: str) -> list[str]:
            return [str(tool.path), "--file=-", f"--use-list={lists[name]}", str(backup)]

        sources += [section("pre-data"), _distribute_sql(manifest["citus"]).encode(), section("data"),
                    section("post-data")]
        args = [str(psql.path), "--no-psqlrc", "--quiet", "--single-transaction", "-v", "ON_ERROR_STOP=1",
                "--no-password", target, "--output=/dev/null"]
        proc = _feed_psql(sources, args, env, backup)
    if proc.returncode == 0:
        kinds: dict[str, int] = {}
        for table in manifest["citus"].get("tables") or []:
            kinds[table.get("type")] = kinds.get(table.get("type"), 0) + 1
        log.info("recreated the distribution: %s", ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items())))
    return proc


def _feed_psql(sources: list[bytes | list[str]], psql_args: list[str], env: dict[str, str],
               backup: Path) -> subprocess.CompletedProcess:
    """Feed psql (one transaction) the given SQL and the outputs of the given commands, in order.
    When a command fails, psql is killed before its input ends, so nothing commits."""
    with tempfile.TemporaryFile() as psql_err, tempfile.TemporaryFile() as tool_err:
        psql = tool = None
        try:
            psql = _popen(psql_args, env=env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=psql_err)
            assert psql.stdin is not None  # a pipe (above)
            stopped = False  # psql stopped at an error: its message says which
            for source in sources:
                if isinstance(source, bytes):
                    try:
                        psql.stdin.write(source)
                    except BrokenPipeError:
                        stopped = True
                    if stopped:
                        break
                    continue
                tool = _popen(source, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=tool_err)
                assert tool.stdout is not None
                while block := tool.stdout.read(1 << 16):
                    try:
                        psql.stdin.write(block)
                    except BrokenPipeError:
                        stopped = True
                        break
                if stopped:
                    _stop(tool)
                    break
                tool.wait()
                if tool.returncode != 0:
                    _stop(psql)
                    tool_err.seek(0)
                    detail = tool_err.read().decode(errors="replace").strip().splitlines()
                    raise BackupError(f"pg_restore cannot read {backup.name} "
                                      f"({detail[0] if detail else f'exit {tool.returncode}'}); nothing was restored")
                tool = None
            with contextlib.suppress(BrokenPipeError):
                psql.stdin.close()
            psql.wait()
        except BaseException:
            _stop(psql, tool)
            raise
        psql_err.seek(0)
        return subprocess.CompletedProcess(psql_args, psql.returncode, "", psql_err.read().decode(errors="replace"))


def _decompress_into(unzip_args: list[str], psql_args: list[str], env: dict[str, str],
                     backup: Path) -> subprocess.CompletedProcess:
    """Feed the decompressor's output to psql through minnoctl. psql --single-transaction commits
    when its input ends, so when the decompressor fails psql is killed before it sees that end:
    the server rolls back, and a damaged plain dump never "restores" as a half or empty database."""
    with tempfile.TemporaryFile() as unzip_err, tempfile.TemporaryFile() as psql_err:
        unzip = psql = None
        try:
            unzip = _popen(unzip_args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=unzip_err)
            psql = _popen(psql_args, env=env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=psql_err)
            psql_stopped = False
            assert unzip.stdout is not None and psql.stdin is not None  # both are pipes (above)
            while block := unzip.stdout.read(1 << 16):
                try:
                    psql.stdin.write(block)
                except BrokenPipeError:  # psql stopped at an error: its message says which
                    psql_stopped = True
                    break
            if psql_stopped:
                _stop(unzip)
            unzip.wait()
            if unzip.returncode != 0 and not psql_stopped:
                _stop(psql)
                unzip_err.seek(0)
                detail = unzip_err.read().decode(errors="replace").strip().splitlines()
                raise BackupError(f"{backup.name} does not decompress "
                                  f"({detail[0] if detail else f'exit {unzip.returncode}'}"
                                  "); nothing was restored — do not restore it")
            with contextlib.suppress(BrokenPipeError):
                psql.stdin.close()
            psql.wait()
        except BaseException:
            _stop(psql, unzip)
            raise
        psql_err.seek(0)
        return subprocess.CompletedProcess(psql_args, psql.returncode, "", psql_err.read().decode(errors="replace"))


def _compare_rows(settings: "Settings", dbname: str, manifest: dict[str, Any]) -> tuple[int, list[str]]:
    from minnoctl.connection import session

    expected = manifest.get("rows") or {}
    mismatches = []
    with session(settings, "backup", dbname=dbname) as conn:
        for table, rows in expected.items():
            schema, name = table.split(".", 1)
            if one(conn.execute("SELECT to_regclass(%s)", (f'"{schema}"."{name}"',)))[0] is None:
                mismatches.append(f"{table} is missing")
                continue
            got = one(conn.execute(f'SELECT count(*) FROM "{schema}"."{name}"'))[0]
            if got != rows:
                mismatches.append(f"{table}: {got} rows, expected {rows}")
    return len(expected), mismatches


@dataclass
class Restored:
    database: str
    tables: int


def restore(settings: "Settings", text: str, *, into: str | None = None, clean: bool = False,
            output_dir: str | None = None, approve: Callable[[str, str | None], None] | None = None) -> Restored:
    """Into a new database (--into NAME, default <database>_restored_<time>), or over the database
    the connection really uses (--clean: current_database(), never a name guessed from the URL).
    `approve(database, production_reason)` is called before --clean writes anything (the CLI's
    production guard and confirmation). A backup whose checksum does not match is refused.

    --clean restores in place in one transaction (pg_restore --clean --single-transaction): a
    killed or failed restore is rolled back by the server, so the old database stays whole, and
    it keeps its owner, grants and settings, which a swap by rename would lose. A new database is
    restored into a temporary database, renamed to its name only when whole: a killed run leaves
    only that temporary database, which the next run drops (sweep_temporary)."""
    from minnoctl import migrate
    from minnoctl.connection import session
    from minnoctl.safety import production_reason

    if clean and into is not None:
        raise UsageError("--clean restores over the configured database; leave --into out")
    if into is not None:
        check_database_name(into)
    with session(settings, "backup") as conn:
        owner = identity(conn)
        reason = production_reason(conn) if clean else None
        marked = migrate.recorded_environment(conn) if clean else None
    backup = resolve_backup(text, output_dir, owner)
    manifest = read_manifest(backup)
    check_checksum(backup, manifest)
    if clean:
        if manifest["format"] == "plain":
            raise UsageError("--clean needs a custom or directory backup; restore a plain dump into a new database "
                             "with --into")
        if approve is not None:
            approve(owner.database, reason)
        # pg_restore connects as the live connection did: by the URL's name where it has one (a
        # PgBouncer alias routes only that name), else by the name current_database() gave, never
        # by a default of its own
        _restore_into(settings, backup, manifest, settings.params.get("dbname") or owner.database, clean=True)
        _rebaseline(settings)
        if marked is not None:
            with _signals_held():  # restored: a SIGTERM now must not leave it restored but unmarked
                _keep_mark(settings, marked)
        return Restored(owner.database, len(manifest.get("rows") or {}))
    stamp = f"_restored_{dt.datetime.now(dt.UTC):%Y%m%d%H%M%S}"
    target = into or owner.database[: 63 - len(stamp)] + stamp
    with _admin(settings) as conn:
        sweep_temporary(conn)
        if _exists(conn, target):
            raise _already_exists(target)
        tmp = _create_temporary(conn, f"restore --into {target}")
    try:
        _restore_into(settings, backup, manifest, tmp)
        _rebaseline(settings, tmp)
        with _admin(settings) as conn:
            _rename_temporary(conn, tmp, target)
    except BaseException:
        _drop_database(settings, tmp)
        raise
    return Restored(target, len(manifest.get("rows") or {}))


def _rebaseline(settings: "Settings", dbname: str | None = None) -> None:
    """The restored database's drift baselines, from its restored schema (drift.rebaseline). Never
    raises: the restore stands; a failure is a warning naming the command that records them."""
    import psycopg

    from minnoctl import drift
    from minnoctl.connection import session

    try:
        with session(settings, "backup", dbname=dbname) as conn:
            drift.rebaseline(conn)
    except (psycopg.Error, MinnoctlError) as exc:
        reason = exc.message if isinstance(exc, MinnoctlError) else str(exc).strip().splitlines()[0]
        log.warning("could not record the restored schema's drift baselines (%s): `minnoctl migrate verify` may "
                    "report the restored definitions as changed — delete minnoctl.schema_baseline's rows and run "
                    "`minnoctl migrate` to record them", reason)


def _keep_mark(settings: "Settings", marked: str) -> None:
    """The database's own mark (db init --environment) lives in its data, so a backup taken before
    it was marked would restore it unmarked and lift every production guard: put it back. (Not in
    pg_restore's transaction, which runs the dump alone; until this commits, MINNO_ENV still guards.)"""
    import getpass

    from minnoctl import migrate
    from minnoctl.connection import session

    with session(settings, "backup") as conn:
        if migrate.recorded_environment(conn) != marked:
            with conn.transaction():
                migrate.record_environment(conn, marked, f"{getpass.getuser()}@{socket.gethostname()} (kept "
                                           "through backup restore --clean)")
            log.info("kept the database's mark: %s (the backup was taken without it)", marked)


# ---------------------------------------------------------------------------------------------
# prune


def prune_plan(output_dir: str | None, keep_last: int, keep_days: float | None,
               owner: Identity | None = None) -> tuple[list[dict], list[dict]]:
    """(kept, deleted) among the backups of the database `owner`: keep the newest `keep_last`, those
    younger than `keep_days`, and always the newest verified backup. `owner` None (--all): every
    database's backups in the folder, each database by the same rules apart, so pruning never
    leaves a database without its newest backups. Orphans (dumps without a manifest, see orphans())
    older than a minute are deleted."""
    if keep_last < 1:
        raise UsageError("--keep-last must be at least 1")
    if keep_days is not None and keep_days <= 0:
        raise UsageError("--keep-days must be more than zero")
    rows = list_backups(output_dir, owner)
    groups: dict[tuple[Any, Any], list[dict]] = {}
    for row in rows:
        if row["status"] == "ok":
            groups.setdefault((row["database"], row["system_identifier"]), []).append(row)
    now = dt.datetime.now(dt.UTC)
    kept: list[dict] = []
    deleted: list[dict] = []
    for group in groups.values():
        newest_verified = next((r for r in group if r["verified_at"] or r["restore_tested_at"]), None)
        for i, row in enumerate(group):
            young = False
            if keep_days is not None:  # a time the manifest does not give readably is no age: kept
                young = row["created_at"] is None or now - row["created_at"] < dt.timedelta(days=keep_days)
            (kept if i < keep_last or young or row is newest_verified else deleted).append(row)
    for row in rows:
        if row["status"] == "orphan":
            old = now - row["created_at"] > dt.timedelta(seconds=ORPHAN_GRACE_S)
            (deleted if old else kept).append(row)
    return kept, deleted


def prune(output_dir: str | None, deleted: list[dict]) -> None:
    folder = backup_dir(output_dir)
    for row in deleted:
        backup = folder / row["file"]
        manifest_path(backup).unlink(missing_ok=True)  # first: the manifest is the commit point, so a
        _remove(backup)  # kill in between leaves an orphan dump, which the next prune removes
    _fsync_dir(folder)
