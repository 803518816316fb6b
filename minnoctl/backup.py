"""Backups that are proven to restore: pg_dump with a manifest, verify, restore, prune.

A backup is written under a temporary name in its directory, fsynced, then renamed (and its
directory fsynced), so no file ever has its final name unless it is whole, even after kill -9.
Beside it, `<name>.manifest.json` records its SHA-256, size, format, the server and pg_dump
versions, the migration state and the row count of every table — counted in the very snapshot
pg_dump dumps (pg_dump --snapshot), so a restore test can compare them exactly.

pg_dump, pg_restore and psql get the connection through PG* environment variables, never argv
(the password must not show in `ps`). The tools are the embedded package's when their major
version is at least the server's, else the system's (MINNOCTL_PG_BINDIR picks a directory).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from minnoctl import modules
from minnoctl.errors import ExitCode, MinnoctlError, UsageError

if TYPE_CHECKING:
    import psycopg

    from minnoctl.config import Settings

log = logging.getLogger("minnoctl")

FORMATS = ("custom", "directory", "plain")
COMPRESSIONS = ("gzip", "lz4", "zstd", "none")
MANIFEST_SUFFIX = ".manifest.json"
PARTIAL_PREFIX = ".partial-"
ENV_KEYS = {"host": "PGHOST", "port": "PGPORT", "user": "PGUSER", "password": "PGPASSWORD", "dbname": "PGDATABASE",
            "sslmode": "PGSSLMODE", "sslrootcert": "PGSSLROOTCERT", "sslcert": "PGSSLCERT", "sslkey": "PGSSLKEY",
            "connect_timeout": "PGCONNECT_TIMEOUT", "application_name": "PGAPPNAME", "options": "PGOPTIONS",
            "hostaddr": "PGHOSTADDR", "passfile": "PGPASSFILE"}


class BackupError(MinnoctlError):
    """A backup could not be written, or a file is not a whole, valid backup."""

    exit_code = ExitCode.BACKUP_INVALID


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
    forced = os.environ.get("MINNOCTL_PG_BINDIR")
    if forced:
        return [Path(forced) / name]
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


def tool_env(settings: "Settings", dbname: str | None = None) -> dict[str, str]:
    """The environment for pg_dump / pg_restore / psql: the target as PG* variables, nothing in argv."""
    from minnoctl.connection import connect_kwargs, resolve

    kwargs = connect_kwargs(settings, resolve(settings), dbname=dbname)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    for key, value in kwargs.items():
        if key in ENV_KEYS and value not in (None, ""):
            env[ENV_KEYS[key]] = str(value)
    env["LC_ALL"] = "C"
    return env


# ---------------------------------------------------------------------------------------------
# Files


def backup_dir(option: str | None) -> Path:
    """--output-dir, MINNO_BACKUP_DIR, or ./backups (made if missing; the others must exist)."""
    chosen = option or os.environ.get("MINNO_BACKUP_DIR")
    where = "--output-dir" if option else "MINNO_BACKUP_DIR" if chosen else None
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


def write_json_atomically(path: Path, document: dict[str, Any]) -> None:
    tmp = path.with_name(f"{PARTIAL_PREFIX}{os.getpid()}-{path.name}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(document, f, indent=2, default=str)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def sweep_partials(folder: Path) -> list[Path]:
    """Remove the temporary files of backups whose process is gone (kill -9, power loss)."""
    import psutil

    removed = []
    for path in folder.glob(f"{PARTIAL_PREFIX}*"):
        match = re.match(rf"{re.escape(PARTIAL_PREFIX)}(\d+)-", path.name)
        if match and psutil.pid_exists(int(match.group(1))):
            continue
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        removed.append(path)
    return removed


# ---------------------------------------------------------------------------------------------
# create


def parse_compress(text: str | None, fmt: str) -> tuple[str, int | None]:
    if text is None:
        return ("gzip", None) if fmt != "plain" else ("none", None)
    method, _, level = text.partition(":")
    method = method.strip().lower()
    if method not in COMPRESSIONS:
        raise UsageError(f"--compress '{text}' is not one of gzip, lz4, zstd (optionally :LEVEL) or none")
    if level:
        if not level.isdigit():
            raise UsageError(f"--compress '{text}': the level must be a whole number")
        top = {"gzip": 9, "lz4": 12, "zstd": 22}.get(method, 0)
        if not 1 <= int(level) <= top:
            raise UsageError(f"--compress '{text}': the level for {method} is 1-{top}")
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
    return {f"{s}.{t}": conn.execute(f'SELECT count(*) FROM "{s}"."{t}"').fetchone()[0] for s, t in tables}


def _migration_state(conn: "psycopg.Connection") -> dict[str, Any]:
    from minnoctl import migrate

    applied = migrate.read_applied(conn)
    digest = hashlib.sha256("".join(f"{a.id}:{a.checksum}\n" for a in applied.values()).encode()).hexdigest()
    return {"count": len(applied), "checksum": digest, "ids": list(applied)}


def create(settings: "Settings", *, output_dir: str | None = None, fmt: str = "custom", jobs: int | None = None,
           compress: str | None = None, schema_only: bool = False, data_only: bool = False,
           chosen: list[modules.Module] | None = None, label: str | None = None,
           progress: Callable[[int], None] | None = None) -> Created:

    from minnoctl.connection import connect, server_version

    if fmt not in FORMATS:
        raise UsageError(f"--format '{fmt}' is not one of: {', '.join(FORMATS)}")
    if schema_only and data_only:
        raise UsageError("use --schema-only or --data-only, not both")
    if jobs is not None and fmt != "directory":
        raise UsageError("--jobs needs --format directory (pg_dump dumps in parallel only into a directory)")
    method, level = parse_compress(compress, fmt)
    folder = backup_dir(output_dir)
    sweep_partials(folder)
    schemas = [m.schema for m in modules.with_dependencies(chosen)] if chosen else None

    with connect(settings, autocommit=True) as conn:  # an unreachable server fails here, before any file
        version = server_version(conn)
        major = conn.info.server_version // 10000
        dump = find_tool("pg_dump", major)
        dbname = conn.info.dbname
        migrations = _migration_state(conn)
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        snapshot = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]
        stamp = dt.datetime.now(dt.timezone.utc)
        name = f"minno-{_slug(dbname) or 'db'}-{stamp:%Y%m%dT%H%M%SZ}" + (f"-{_slug(label)}" if label else "")
        final = folder / (name + _extension(fmt, method))
        if final.exists():
            name += f"-{uuid.uuid4().hex[:6]}"
            final = folder / (name + _extension(fmt, method))
        tmp = folder / f"{PARTIAL_PREFIX}{os.getpid()}-{final.name}"
        args = [str(dump.path), f"--format={fmt}", f"--file={tmp}", f"--snapshot={snapshot}", "--no-password"]
        args += _compress_args(dump, fmt, method, level)
        if jobs:
            args.append(f"--jobs={jobs}")
        if schema_only:
            args.append("--schema-only")
        if data_only:
            args.append("--data-only")
        for schema in schemas or []:
            args.append(f"--schema={schema}")
        env = tool_env(settings)
        old_umask = os.umask(0o077)
        extra: dict[str, Any] = {}
        if os.name == "posix" and hasattr(os, "getppid") and os.uname().sysname == "Linux":
            from minnoctl.local import _die_with

            extra["preexec_fn"] = _die_with(os.getpid())  # pg_dump dies with a killed minnoctl
        try:
            proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **extra)
        finally:
            os.umask(old_umask)
        try:
            rows = _snapshot_counts(conn, schemas) if not schema_only else {}
            while proc.poll() is None:
                if progress and tmp.exists():
                    progress(size_of(tmp))
                time.sleep(0.2)
            err = proc.stderr.read().decode(errors="replace")
        except BaseException:
            proc.kill()
            proc.wait()
            _remove(tmp)
            raise
        conn.execute("COMMIT")
    if proc.returncode != 0:
        _remove(tmp)
        raise _dump_error(proc.returncode, err, folder)
    _fsync_tree(tmp)
    if tmp.is_dir():
        tmp.chmod(0o700)
    else:
        tmp.chmod(0o600)
    manifest = {
        "minnoctl_backup": 1, "file": final.name, "format": fmt, "compress": method, "compress_level": level,
        "sha256": checksum(tmp), "size": size_of(tmp), "created_at": stamp.isoformat(), "label": label,
        "database": dbname, "server_version": version,
        "pg_dump": {"path": str(dump.path), "version": dump.version},
        "schemas": schemas, "schema_only": schema_only, "data_only": data_only,
        "migrations": migrations, "rows": rows, "verified_at": None, "restore_tested_at": None,
    }
    os.replace(tmp, final)  # whole and synced: only now does it get its name
    _fsync_dir(folder)
    write_json_atomically(manifest_path(final), manifest)
    return Created(final, manifest)


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


def resolve_backup(text: str, output_dir: str | None = None) -> Path:
    """A path, a name in the backup directory, or `latest`: the newest backup there (for cron)."""
    if text == "latest" and not Path(text).exists():
        present = [r for r in list_backups(output_dir) if r["present"]]
        if not present:
            raise UsageError(f"latest: there is no backup in {backup_dir(output_dir)} — see `minnoctl backup list`")
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


def list_backups(output_dir: str | None = None) -> list[dict[str, Any]]:
    rows = []
    for backup, doc in manifests(backup_dir(output_dir)):
        rows.append({"file": backup.name, "created_at": doc.get("created_at"), "size": doc.get("size"),
                     "format": doc.get("format"), "label": doc.get("label"), "database": doc.get("database"),
                     "verified_at": doc.get("verified_at"), "restore_tested_at": doc.get("restore_tested_at"),
                     "present": backup.exists()})
    rows.sort(key=lambda r: r["created_at"] or "", reverse=True)
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
        proc = subprocess.run([str(tool.path), "--list", str(backup)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise BackupError(f"pg_restore cannot read {backup.name}: {proc.stderr.strip().splitlines()[0] if proc.stderr.strip() else proc.returncode}")
        return
    method = manifest.get("compress")
    if method in ("gzip", "lz4", "zstd"):
        cmd = {"gzip": ["gzip", "-t"], "lz4": ["lz4", "-t"], "zstd": ["zstd", "-t", "-q"]}[method]
        proc = subprocess.run(cmd + [str(backup)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise BackupError(f"{backup.name} does not decompress: {proc.stderr.strip()[:200]}")


@dataclass
class Verified:
    backup: Path
    restore_tested: bool
    rows_compared: int = 0
    mismatches: list[str] | None = None


def verify(settings: "Settings", text: str, *, restore_test: bool = False, output_dir: str | None = None) -> Verified:
    backup = resolve_backup(text, output_dir)
    manifest = read_manifest(backup)
    check_checksum(backup, manifest)
    _restore_list(backup, manifest)
    result = Verified(backup, restore_test)
    if restore_test:
        scratch = f"minnoctl_verify_{uuid.uuid4().hex[:10]}"
        try:
            _create_database(settings, scratch)
            _restore_into(settings, backup, manifest, scratch)
            result.rows_compared, result.mismatches = _compare_rows(settings, scratch, manifest)
        finally:
            _drop_database(settings, scratch)
        if result.mismatches:
            raise BackupError(f"restore test of {backup.name}: {len(result.mismatches)} table(s) differ from the "
                              f"manifest ({result.mismatches[0]}{', ...' if len(result.mismatches) > 1 else ''})")
    now = dt.datetime.now(dt.timezone.utc).isoformat()
    manifest["verified_at"] = now
    if restore_test:
        manifest["restore_tested_at"] = now
    write_json_atomically(manifest_path(backup), manifest)
    return result


# ---------------------------------------------------------------------------------------------
# restore


def _admin(settings: "Settings"):
    from minnoctl.connection import connect

    for maintenance in ("postgres", "template1"):
        try:
            return connect(settings, dbname=maintenance, autocommit=True)
        except MinnoctlError as exc:
            last = exc
    raise last


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _create_database(settings: "Settings", name: str) -> None:
    import psycopg

    with _admin(settings) as conn:
        try:
            conn.execute(f"CREATE DATABASE {_ident(name)}")
        except psycopg.errors.DuplicateDatabase:
            raise UsageError(f"database '{name}' already exists — choose another --into, or drop it first") from None


def _drop_database(settings: "Settings", name: str) -> None:
    with _admin(settings) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {_ident(name)} WITH (FORCE)")


def _server_major(settings: "Settings") -> int:

    with _admin(settings) as conn:
        return conn.info.server_version // 10000


def _restore_into(settings: "Settings", backup: Path, manifest: dict[str, Any], dbname: str, *,
                  clean: bool = False) -> None:
    """Restore in one transaction: it applies whole or not at all."""
    major = _server_major(settings)
    env = tool_env(settings, dbname=dbname)
    fmt = manifest["format"]
    if fmt in ("custom", "directory"):
        tool = find_tool("pg_restore", major, at_least=_dump_major(manifest))
        args = [str(tool.path), "--single-transaction", "--exit-on-error", "--no-password", f"--dbname={dbname}"]
        if clean:
            args += ["--clean", "--if-exists"]
        proc = subprocess.run(args + [str(backup)], env=env, capture_output=True, text=True)
    else:
        psql = find_tool("psql", major)
        decompress = {"gzip": ["gzip", "-dc"], "lz4": ["lz4", "-dc"], "zstd": ["zstd", "-dcq"]}.get(manifest["compress"])
        args = [str(psql.path), "--no-psqlrc", "--quiet", "--single-transaction", "-v", "ON_ERROR_STOP=1",
                "--no-password", f"--dbname={dbname}", "--output=/dev/null"]
        if decompress:
            unzip = subprocess.Popen(decompress + [str(backup)], stdout=subprocess.PIPE)
            psql_proc = subprocess.Popen(args, env=env, stdin=unzip.stdout, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, text=True)
            unzip.stdout.close()  # only psql reads the pipe: if it stops, the decompressor gets SIGPIPE
            out, err = psql_proc.communicate()
            unzip.wait()
            proc = subprocess.CompletedProcess(args, psql_proc.returncode, out, err)
        else:
            proc = subprocess.run(args + [f"--file={backup}"], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        first = next((ln for ln in lines if "error" in ln.lower()), lines[0] if lines else f"exit {proc.returncode}")
        raise BackupError(f"restoring {backup.name} into '{dbname}' failed, nothing was restored: {first.strip()}",
                          exit_code=ExitCode.FAILURE)


def _compare_rows(settings: "Settings", dbname: str, manifest: dict[str, Any]) -> tuple[int, list[str]]:
    from minnoctl.connection import connect

    expected = manifest.get("rows") or {}
    mismatches = []
    with connect(settings, dbname=dbname, autocommit=True) as conn:
        for table, rows in expected.items():
            schema, name = table.split(".", 1)
            if conn.execute("SELECT to_regclass(%s)", (f'"{schema}"."{name}"',)).fetchone()[0] is None:
                mismatches.append(f"{table} is missing")
                continue
            got = conn.execute(f'SELECT count(*) FROM "{schema}"."{name}"').fetchone()[0]
            if got != rows:
                mismatches.append(f"{table}: {got} rows, expected {rows}")
    return len(expected), mismatches


@dataclass
class Restored:
    database: str
    tables: int


def restore(settings: "Settings", text: str, *, into: str | None = None, clean: bool = False,
            output_dir: str | None = None) -> Restored:
    """Into a new database (--into, default <db>_restored_<time>), or over the configured one (--clean;
    the CLI confirms). A backup whose checksum does not match is refused."""
    backup = resolve_backup(text, output_dir)
    manifest = read_manifest(backup)
    check_checksum(backup, manifest)
    source = settings.params.get("dbname") or "minno"
    if clean:
        if into:
            raise UsageError("--clean restores over the configured database; leave --into out")
        if manifest["format"] == "plain":
            raise UsageError("--clean needs a custom or directory backup; restore a plain dump into a new database "
                             "with --into")
        _restore_into(settings, backup, manifest, source, clean=True)
        return Restored(source, len(manifest.get("rows") or {}))
    target = into or f"{source}_restored_{dt.datetime.now(dt.timezone.utc):%Y%m%d%H%M%S}"
    _create_database(settings, target)
    try:
        _restore_into(settings, backup, manifest, target)
    except BaseException:
        _drop_database(settings, target)
        raise
    return Restored(target, len(manifest.get("rows") or {}))


# ---------------------------------------------------------------------------------------------
# prune


def prune_plan(output_dir: str | None, keep_last: int, keep_days: float | None) -> tuple[list[dict], list[dict]]:
    """(kept, deleted): keep the newest `keep_last`, those younger than `keep_days`, and always the
    newest verified backup."""
    if keep_last < 1:
        raise UsageError("--keep-last must be at least 1")
    if keep_days is not None and keep_days <= 0:
        raise UsageError("--keep-days must be more than zero")
    rows = [r for r in list_backups(output_dir) if r["present"]]
    now = dt.datetime.now(dt.timezone.utc)
    newest_verified = next((r for r in rows if r["verified_at"] or r["restore_tested_at"]), None)
    kept, deleted = [], []
    for i, row in enumerate(rows):
        young = False
        if keep_days is not None and row["created_at"]:
            young = now - dt.datetime.fromisoformat(row["created_at"]) < dt.timedelta(days=keep_days)
        (kept if i < keep_last or young or row is newest_verified else deleted).append(row)
    return kept, deleted


def prune(output_dir: str | None, deleted: list[dict]) -> None:
    folder = backup_dir(output_dir)
    for row in deleted:
        backup = folder / row["file"]
        _remove(backup)
        manifest_path(backup).unlink(missing_ok=True)
    _fsync_dir(folder)
