"""Seeding: the development data of each module folder's seed/default.json (healthy: nothing expired
or due), the rows of a named scenario on top of it (seed/overdue.json: what cleanup and health find), and bulk
synthetic rows for load tests.

`load` replaces the data of the chosen modules with their seed files in one transaction: every
table that the applied migrations of those modules created is emptied (TRUNCATE ... RESTART
IDENTITY, so identities and serials start again and seeding twice gives the same rows) and the
files' rows are inserted; a failure rolls it all back. A table an application made itself in a
module schema (spec 002's `migrations`, spec 000's `audit_log`) keeps its rows; a foreign key
from such a table into an emptied one stops the seed before anything changes. The keyring
(minno.encryption_keys, minno.key_audit_log) is never emptied: other modules'
encrypted fields need it. A module whose tables reference a seeded table through a foreign key is
seeded with it, since emptying the referenced table would otherwise take its rows away.

`scale` adds N synthetic rows to the large tables with COPY, streamed in blocks so memory stays flat
whatever N is, and deterministic for a given random seed (the file format and the times are in
migrations/README.md; synthetic times are offsets from the moment of the run).

Nothing here prints or asks: the CLI confirms, and renders the results.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import logging
import math
import re
import struct
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from collections.abc import Callable, Iterator

from minnoctl.distribution import CITUS_ONE_CONNECTION
from minnoctl import locks, modules
from minnoctl.config import SPAN_AMOUNT, span_seconds
from minnoctl.errors import ExitCode, MinnoctlError, UsageError
from minnoctl.rows import one

if TYPE_CHECKING:
    import psycopg

    from minnoctl import crypto

log = logging.getLogger("minnoctl")

EMBEDDING_DIM = 1536


class SeedError(MinnoctlError):
    """The seed cannot be loaded as asked: a bad seed file, a module not installed, a constraint."""

    exit_code = ExitCode.FAILURE


# ---------------------------------------------------------------------------------------------
# The seed files


@dataclass
class SeedFile:
    module: str
    description: str
    tables: dict[str, list[dict[str, Any]]]
    name: str = ""  # the file, in messages: chatbot/seed/default.json, or <MINNOCTL_SEEDS_DIR>/chatbot.json


def _own_folder():
    """MINNOCTL_SEEDS_DIR: your own seed files, <dir>/<module>.json and <dir>/<scenario>/<module>.json
    (environment or .env); None: the module folders' seed/ files."""
    from pathlib import Path

    from minnoctl.config import env_value

    folder = env_value("MINNOCTL_SEEDS_DIR")
    return Path(folder[0]) if folder else None


def _seed_resource(module: modules.Module, scenario: str | None = None) -> tuple[str, Any]:
    """(the file's name in messages, the file) of a module's default data or of a scenario's rows:
    seed/default.json / seed/<scenario>.json in the module folder, else MINNOCTL_SEEDS_DIR's."""
    own = _own_folder()
    if own is not None:
        name = module.seed_file if scenario is None else f"{scenario}/{module.seed_file}"
        return f"{own.name}/{name}", own / name
    name = f"{scenario or 'default'}.json"
    return f"{module.name}/seed/{name}", module.folder / "seed" / name


def scenarios() -> list[str]:
    """The named scenarios: in the module folders, each seed/<scenario>.json besides default.json;
    in MINNOCTL_SEEDS_DIR, the folders beside the seed files that hold seed files of their own
    (<dir>/overdue/<module>.json). A scenario adds its rows to the default data."""
    own = _own_folder()
    try:
        if own is not None:
            return sorted(p.name for p in own.iterdir()
                          if p.is_dir() and any(f.name.endswith(".json") for f in p.iterdir()))
        found = set()
        for module in modules.MODULES:
            folder = module.folder / "seed"
            if folder.is_dir():
                found |= {p.name[:-5] for p in folder.iterdir() if p.name.endswith(".json") and p.is_file()}
        return sorted(found - {"default"})
    except (FileNotFoundError, NotADirectoryError):
        return []


def check_scenario(name: str | None) -> None:
    if name is not None and name not in scenarios():
        known = scenarios()
        raise UsageError(f"--scenario: unknown scenario '{name}'; use one of: {', '.join(known) or '(none)'}")


def read_file(module: modules.Module, scenario: str | None = None) -> SeedFile:
    """The module's default data (seed/default.json); with a scenario, its rows added to each
    table (seed/<scenario>.json, a module without one adds nothing)."""
    seed = _parse(module, *_seed_resource(module), required=True)
    assert seed is not None  # a required file that is missing raises instead
    if scenario is not None:
        extra = _parse(module, *_seed_resource(module, scenario), required=False)
        for table, rows in (extra.tables if extra else {}).items():
            seed.tables[table] = [*seed.tables.get(table, []), *rows]  # a new table comes after the file's
    return seed


def _parse(module: modules.Module, name: str, resource: Any, *, required: bool) -> SeedFile | None:
    try:
        text = resource.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):
        if not required:
            return None
        raise SeedError(f"module '{module.name}' has no seed file ({name}) in this installation "
                        "of minnoctl") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SeedError(f"{name}: not valid JSON at line {exc.lineno} column {exc.colno}: "
                        f"{exc.msg}") from None
    tables = doc.get("tables") if isinstance(doc, dict) else None
    if not isinstance(tables, dict) or not all(isinstance(v, list) for v in tables.values()):
        raise SeedError(f"{name}: expected {{\"tables\": {{\"<table>\": [rows]}}}}")
    return SeedFile(module.name, str(doc.get("description", "")), tables, name)


_TIME_RE = re.compile(rf"^now((?:[+-](?:{SPAN_AMOUNT})+)*)$")  # now, now-95d, now-1d-6h, now-2h30m
_TIME_GROUP = re.compile(rf"([+-])((?:{SPAN_AMOUNT})+)")


def parse_time(text: str, now: dt.datetime) -> dt.datetime:
    """'now', 'now-95d', 'now+2h', 'now-1d-6h' relative to `now`; otherwise ISO 8601."""
    match = _TIME_RE.match(text.strip())
    if match:
        seconds = sum((1 if sign == "+" else -1) * span_seconds(group)
                      for sign, group in _TIME_GROUP.findall(match.group(1)))
        try:
            return now + dt.timedelta(seconds=seconds)
        except OverflowError:  # past year 9999 (or before year 1)
            raise ValueError(f"'{text}' is not a time: use now, now-95d, now+2h or ISO 8601 (years 1 to "
                             "9999)") from None
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"'{text}' is not a time: use now, now-95d, now+2h or ISO 8601") from None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def embedding(text: str, dim: int = EMBEDDING_DIM) -> list[float]:
    """A deterministic unit vector from `text`: SHA-256 in counter mode, mapped to [-1, 1)."""
    values: list[float] = []
    counter = 0
    seed = text.encode("utf-8")
    while len(values) < dim:
        block = hashlib.sha256(seed + counter.to_bytes(4, "big")).digest()
        values.extend(v / 32768.0 - 1.0 for v in struct.unpack(">16H", block))
        counter += 1
    values = values[:dim]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


def vector_text(values: list[float]) -> str:
    return "[" + ",".join(f"{v:.6f}" for v in values) + "]"


# ---------------------------------------------------------------------------------------------
# What the database has


@dataclass(frozen=True)
class ColumnInfo:
    name: str
    type: str  # format_type without typmod: the cast each value gets
    category: str  # pg_type.typcategory of the column's type (A = array, D = date/time, U = user...)
    identity: str  # '' | 'a' (always) | 'd' (by default)


def table_columns(conn: "psycopg.Connection", schema: str, table: str) -> dict[str, ColumnInfo]:
    rows = conn.execute(
        """SELECT a.attname, format_type(a.atttypid, NULL), t.typcategory, a.attidentity
             FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
            WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped
            ORDER BY a.attnum""",
        (f"{schema}.{table}",)).fetchall()
    # `::character` alone means char(1) and would cut the value: cast to bpchar, and let the
    # column's own length check the value (an explicit cast to char(n) would truncate silently).
    return {r[0]: ColumnInfo(r[0], {"character": "bpchar", "character[]": "bpchar[]"}.get(r[1]) or r[1], r[2], r[3])
            for r in rows}


def schema_tables(conn: "psycopg.Connection", schemas: list[str]) -> list[tuple[str, str]]:
    return [tuple(r) for r in conn.execute(
        """SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = ANY(%s) AND c.relkind IN ('r', 'p') AND NOT c.relispartition
            ORDER BY n.nspname, c.relname""", (schemas,)).fetchall()]


# What seed may empty: only the tables that the applied migrations of a module created. They are
# read from the files (CREATE TABLE, ALTER TABLE ... RENAME TO, DROP TABLE, in application order),
# never from the live schema, so an application's own table in a module schema (spec 002's
# `migrations`, spec 000's `audit_log`) is never emptied. Comments, quoted strings and
# dollar-quoted bodies (a function's CREATE TABLE) are blanked out before the statements are read.
_IDENT = r'(?:"(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)'
_NAME = rf"{_IDENT}(?:\s*\.\s*{_IDENT})?"  # a table name, perhaps schema-qualified
_SQL_NOISE = re.compile(r"--[^\n]*|/\*.*?\*/|'(?:[^']|'')*'|(\$[A-Za-z_0-9]*\$).*?\1", re.DOTALL)
_TABLE_DDL = re.compile(
    rf"\bCREATE\s+(?:(?:GLOBAL|LOCAL)\s+)?(?P<temp>(?:TEMP|TEMPORARY)\s+)?(?:UNLOGGED\s+)?TABLE\s+"
    rf"(?:IF\s+NOT\s+EXISTS\s+)?(?P<created>{_NAME})"
    rf"|\bALTER\s+TABLE\s+(?:IF\s+EXISTS\s+)?(?:ONLY\s+)?(?P<renamed>{_NAME})\s+RENAME\s+TO\s+(?P<to>{_IDENT})"
    rf"|\bDROP\s+TABLE\s+(?:IF\s+EXISTS\s+)?(?P<dropped>{_NAME}(?:\s*,\s*{_NAME})*)",
    re.IGNORECASE)


def _unquote(name: str) -> str:
    return name[1:-1].replace('""', '"') if name.startswith('"') else name.lower()


def _split_name(text: str) -> tuple[str | None, str]:
    parts = re.findall(_IDENT, text)
    return (_unquote(parts[0]), _unquote(parts[1])) if len(parts) == 2 else (None, _unquote(parts[0]))


def managed_from_sql(sql: str, schema: str, tables: set[str]) -> set[str]:
    """`tables` (of `schema`) after the statements of one migration file: what it creates (in
    `schema`, or unqualified: the runner's search_path puts them there), renames and drops."""
    tables = set(tables)
    text = _SQL_NOISE.sub(" ", sql)

    def ours(name: str) -> str | None:
        where, table = _split_name(name)
        return table if where in (None, schema) else None

    for match in _TABLE_DDL.finditer(text):
        if match.group("created") and not match.group("temp"):
            if (table := ours(match.group("created"))) is not None:
                tables.add(table)
        elif match.group("renamed"):
            if (table := ours(match.group("renamed"))) is not None and table in tables:
                tables.discard(table)
                tables.add(_unquote(match.group("to")))
        elif match.group("dropped"):
            for name in re.split(r"\s*,\s*", match.group("dropped").strip()):
                if (table := ours(name)) is not None:
                    tables.discard(table)
    return tables


def managed_tables(conn: "psycopg.Connection") -> dict[str, set[str]]:
    """{schema: tables its module's applied migrations created} for every installed module."""
    from minnoctl import migrate

    applied = migrate.read_applied(conn)
    files = {f.id: f for f in migrate.load_set()}
    out: dict[str, set[str]] = {}
    for a in applied.values():  # application order
        module = modules.get(a.module)
        f = files.get(a.id)
        tables = out.setdefault(module.schema, set())
        if f is not None:  # a file gone from the set is drift, which migrate verify reports
            out[module.schema] = managed_from_sql(f.sql(), module.schema, tables)
    return out


def _app_foreign_keys(conn: "psycopg.Connection", emptied: set[tuple[str, str]]) -> None:
    """TRUNCATE without CASCADE fails on a foreign key from a table it does not empty (an app's
    own table) into one it does: say so in one line before anything changes."""
    if not emptied:
        return
    rows = conn.execute(
        """SELECT fn.nspname, fc.relname, k.conname, tn.nspname, tc.relname
             FROM pg_constraint k
             JOIN pg_class fc ON fc.oid = k.conrelid JOIN pg_namespace fn ON fn.oid = fc.relnamespace
             JOIN pg_class tc ON tc.oid = k.confrelid JOIN pg_namespace tn ON tn.oid = tc.relnamespace
            WHERE k.contype = 'f' AND tn.nspname = ANY(%s) ORDER BY 1, 2, 3""",
        (sorted({s for s, _ in emptied}),)).fetchall()
    for fs, ft, name, ts, tt in rows:
        if (ts, tt) in emptied and (fs, ft) not in emptied:
            raise SeedError(f"table {fs}.{ft}, which minnoctl's migrations did not create, has a foreign key "
                            f"({name}) to {ts}.{tt}, which seed empties — seed leaves the application's tables "
                            "alone, so empty that table or drop its foreign key first; nothing was changed")


def _referencing_schemas(conn: "psycopg.Connection", schemas: list[str], kept: set[tuple[str, str]]) -> set[str]:
    """Schemas (outside `schemas`) with a foreign key into a table of `schemas` that seed empties."""
    rows = conn.execute(
        """SELECT DISTINCT fn.nspname, tn.nspname, tc.relname
             FROM pg_constraint k
             JOIN pg_class fc ON fc.oid = k.conrelid JOIN pg_namespace fn ON fn.oid = fc.relnamespace
             JOIN pg_class tc ON tc.oid = k.confrelid JOIN pg_namespace tn ON tn.oid = tc.relnamespace
            WHERE k.contype = 'f' AND tn.nspname = ANY(%s) AND NOT fn.nspname = ANY(%s)""",
        (schemas, schemas)).fetchall()
    return {r[0] for r in rows if (r[1], r[2]) not in kept}


@dataclass
class Target:
    """What a seed run will touch, worked out before anything changes."""

    installed: list[modules.Module]
    seeded: list[modules.Module]
    added: list[modules.Module]  # seeded because their tables reference a seeded table
    tables: list[tuple[str, str]]  # every table emptied
    nonempty: list[str]  # those of them that hold rows now
    needs_key: bool  # some seeded column is encrypted


def installed_modules(conn: "psycopg.Connection") -> list[modules.Module]:
    from minnoctl import migrate

    names = migrate.installed_modules(migrate.read_applied(conn))
    return [m for m in modules.MODULES if m.name in names]


def _check_installed(conn: "psycopg.Connection", chosen: list[modules.Module] | None) -> tuple[
        list[modules.Module], list[modules.Module]]:
    """(installed, wanted): the chosen modules (all installed ones by default), each installed and
    migrated up to date; otherwise one clear error."""
    from minnoctl import migrate

    installed = installed_modules(conn)
    if not installed:
        raise SeedError("no module is installed in this database — run `minnoctl db init` first")
    names = {m.name for m in installed}
    if chosen is None:
        wanted = installed
    else:
        missing = [m.name for m in chosen if m.name not in names]
        if missing:
            raise SeedError(f"module{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
                            f"{'are' if len(missing) > 1 else 'is'} not installed in this database — run "
                            f"`minnoctl db init --modules {','.join(missing)}` first, or leave "
                            f"{'them' if len(missing) > 1 else 'it'} out of --modules")
        wanted = [m for m in modules.MODULES if m.name in {c.name for c in chosen}]
    plan = migrate.make_plan(conn, migrate.load_set(), wanted)
    pending = [f.id for f in plan.pending if f.module in {m.name for m in wanted}]
    if pending:
        raise SeedError(f"{len(pending)} migration(s) are pending ({pending[0]}{', ...' if len(pending) > 1 else ''}) "
                        "— run `minnoctl migrate` first, so the seed matches the schema")
    return installed, wanted


def plan(conn: "psycopg.Connection", chosen: list[modules.Module] | None) -> Target:
    """Which modules and tables a seed of `chosen` (None: every installed module) replaces."""
    installed, wanted = _check_installed(conn, chosen)
    by_schema = {m.schema: m for m in installed}
    seeded = list(wanted)
    managed = managed_tables(conn)
    kept = {(m.schema, t) for m in modules.MODULES for t in m.seed_keeps}
    # what seed never empties: the keyring, and every table no applied migration created
    kept |= {t for t in schema_tables(conn, [m.schema for m in installed]) if t[1] not in managed.get(t[0], ())}
    while True:
        extra = _referencing_schemas(conn, [m.schema for m in seeded], kept)
        new = [by_schema[s] for s in extra if s in by_schema and by_schema[s] not in seeded]
        if not new:
            break
        seeded.extend(new)
    seeded = [m for m in modules.MODULES if m in seeded]
    added = [m for m in seeded if m not in wanted]
    tables = [t for t in schema_tables(conn, [m.schema for m in seeded]) if t not in kept]
    _app_foreign_keys(conn, set(tables))
    nonempty = [f"{s}.{t}" for s, t in tables
                if one(conn.execute(f'SELECT EXISTS (SELECT 1 FROM "{s}"."{t}")'))[0]]
    return Target(installed, seeded, added, tables, nonempty, any(m.encrypted for m in seeded))


# ---------------------------------------------------------------------------------------------
# Loading


@dataclass
class LoadResult:
    modules: list[str]
    scenario: str | None = None
    counts: list[dict[str, Any]] = field(default_factory=list)  # module, table, rows
    workspaces: list[dict[str, Any]] = field(default_factory=list)
    sessions: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


def _marker(value: Any) -> tuple[str, Any] | None:
    if isinstance(value, dict) and len(value) == 1:
        (key, arg), = value.items()
        if isinstance(key, str) and key.startswith("$"):
            return key, arg
    return None


class _Converter:
    """Turns one seed row into the values of an INSERT: times, markers, JSON, encryption."""

    def __init__(self, module: modules.Module, table: str, columns: dict[str, ColumnInfo], now: dt.datetime,
                 ring: "crypto.Keyring | None", source: str):
        self.module, self.table, self.columns, self.now, self.ring = module, table, columns, now, ring
        self.encrypted = {e.column: e for e in module.encrypted if e.table == table}
        self.key_refs = {e.key_ref for e in self.encrypted.values() if e.key_ref}
        self.where = f"{source}: {table}"

    def row(self, index: int, raw: dict[str, Any]) -> dict[str, Any]:
        where = f"{self.where} row {index + 1}"
        if not isinstance(raw, dict):
            raise SeedError(f"{where}: a row must be an object of column values")
        row = {k: v for k, v in raw.items() if not k.startswith("_")}
        for name in row:
            if name not in self.columns:
                raise SeedError(f"{where}: table {self.module.schema}.{self.table} has no column '{name}'")
        out: dict[str, Any] = {}
        for name, value in row.items():
            out[name] = self._value(where, row, self.columns[name], value)
        for ref in self.key_refs:
            if any(c in row for c in self.encrypted):
                out[ref] = self.ring.active.id if self.ring and self.ring.active else None
        return out

    def _value(self, where: str, row: dict[str, Any], col: ColumnInfo, value: Any) -> Any:
        from psycopg.types.json import Jsonb

        marker = _marker(value)
        if col.name in self.encrypted:
            if value is None:
                return None
            if marker is None or marker[0] != "$encrypt" or not isinstance(marker[1], str):
                raise SeedError(f"{where}: column {col.name} is encrypted — write {{\"$encrypt\": \"...\"}}, "
                                "never a stored value")
            spec = self.encrypted[col.name]
            if spec.pk not in row:
                raise SeedError(f"{where}: an encrypted row needs its primary key '{spec.pk}' written out")
            pk = row[spec.pk]
            if self.columns[spec.pk].type == "uuid":
                pk = str(uuid.UUID(str(pk)))
            assert self.ring is not None
            return self.ring.encrypt(self.module.schema, self.table, col.name, pk, marker[1])
        if marker is not None:
            kind, arg = marker
            if kind == "$embedding" and isinstance(arg, str):
                return vector_text(embedding(arg))
            if kind == "$sha256" and isinstance(arg, str):
                if not isinstance(row.get(arg), str):
                    raise SeedError(f"{where}: {{\"$sha256\": \"{arg}\"}} needs a text column '{arg}' in the row")
                return hashlib.sha256(row[arg].encode("utf-8")).hexdigest()
            if kind == "$encrypt":
                raise SeedError(f"{where}: column {col.name} is not an encrypted column; store it as it is")
            raise SeedError(f"{where}: unknown marker {kind} in column {col.name} (markers: $encrypt, "
                            "$embedding, $sha256)")
        if value is None:
            return None
        if col.type in ("jsonb", "json"):
            return Jsonb(value)
        if col.category == "D" and isinstance(value, str):
            try:
                return parse_time(value, self.now)
            except ValueError as exc:
                raise SeedError(f"{where}: column {col.name}: {exc}") from None
        if isinstance(value, dict):
            raise SeedError(f"{where}: column {col.name} ({col.type}) cannot hold an object")
        return value


def _insert(conn: "psycopg.Connection", schema: str, table: str, columns: dict[str, ColumnInfo],
            rows: list[dict[str, Any]]) -> None:
    """INSERT the rows one by one (a seed is small, and a failure can then name its row), each value
    cast to its column's type."""
    with conn.cursor() as cur:
        for index, row in enumerate(rows):
            names = tuple(row)
            overriding = " OVERRIDING SYSTEM VALUE" if any(columns[n].identity == "a" for n in names) else ""
            cols = ", ".join(f'"{n}"' for n in names)
            values = ", ".join(f"%s::{columns[n].type}" for n in names)
            try:
                cur.execute(f'INSERT INTO "{schema}"."{table}" ({cols}){overriding} VALUES ({values})',
                            tuple(row[n] for n in names))
            except Exception as exc:
                exc.add_note(f"row {index + 1}")
                raise


def _reset_sequences(conn: "psycopg.Connection", schema: str, table: str, columns: dict[str, ColumnInfo]) -> None:
    """After explicit ids, move each serial / identity sequence past the largest one."""
    for col in columns.values():
        seq = one(conn.execute("SELECT pg_get_serial_sequence(%s, %s)", (f'"{schema}"."{table}"', col.name)))[0]
        if seq:
            conn.execute(f'SELECT setval(%s, greatest((SELECT max("{col.name}") FROM "{schema}"."{table}"), 1), '
                         f'(SELECT max("{col.name}") FROM "{schema}"."{table}") IS NOT NULL)', (seq,))


def _constraint_error(exc: Exception, table: str, source: str) -> SeedError:
    import psycopg

    diag = getattr(exc, "diag", None)
    detail = (diag.message_primary if diag else None) or str(exc).splitlines()[0]
    notes = getattr(exc, "__notes__", None)
    if notes:
        table = f"{table} {notes[-1]}"
    hint = ""
    if isinstance(exc, psycopg.errors.ForeignKeyViolation):
        hint = (" — the row refers to one that is not there; if it belongs to another module's seed, seed "
                "them together (--modules a,b)")
    return SeedError(f"{source}: {table}: {detail}{hint}; nothing was changed")


def load(conn: "psycopg.Connection", target: Target, kek: "crypto.MasterKey | None", *,
         lock_timeout: float = 30, verbose: bool = False, scenario: str | None = None) -> LoadResult:
    """Replace the data of target.seeded with their seed files (and a scenario's rows), in one
    transaction. `conn` is an autocommit connection; the seed lock keeps two seeds from interleaving."""
    import psycopg

    from minnoctl import tokens

    started = time.monotonic()
    check_scenario(scenario)
    files = [read_file(m, scenario) for m in target.seeded]  # every file parsed before anything changes
    result = LoadResult([m.name for m in target.seeded], scenario)
    with locks.advisory_lock(conn, "seed", lock_timeout, option="--lock-timeout"):
        ring = None
        try:
            with conn.transaction():
                conn.execute("SET LOCAL TimeZone = 'UTC'")  # TIMESTAMP columns hold UTC
                conn.execute(f"SET LOCAL lock_timeout = '{int(max(lock_timeout, 0.001) * 1000)}ms'")
                conn.execute(CITUS_ONE_CONNECTION)
                if target.needs_key:
                    assert kek is not None
                    ring = tokens.ensure_active_key(conn, kek)
                if target.tables:
                    names = ", ".join(f'"{s}"."{t}"' for s, t in target.tables)
                    conn.execute(f"TRUNCATE {names} RESTART IDENTITY")
                now = one(conn.execute("SELECT now()"))[0]
                for module, seed in zip(target.seeded, files):
                    for table, raw_rows in seed.tables.items():
                        if (module.schema, table) not in target.tables:
                            raise SeedError(f"{seed.name}: '{table}' is not a table of schema "
                                            f"{module.schema} that seed may fill")
                        columns = table_columns(conn, module.schema, table)
                        convert = _Converter(module, table, columns, now, ring, seed.name)
                        rows = [convert.row(i, r) for i, r in enumerate(raw_rows)]
                        try:
                            with conn.transaction():
                                _insert(conn, module.schema, table, columns, rows)
                        except (psycopg.errors.IntegrityError, psycopg.errors.DataError,
                                psycopg.errors.RaiseException) as exc:
                            raise _constraint_error(exc, table, seed.name) from None
                        _reset_sequences(conn, module.schema, table, columns)
                for schema, table in target.tables:
                    count = one(conn.execute(f'SELECT count(*) FROM "{schema}"."{table}"'))[0]
                    result.counts.append({"module": next(m.name for m in target.seeded if m.schema == schema),
                                          "table": f"{schema}.{table}", "rows": count})
                if verbose and any(m.name == "minno" for m in target.seeded):
                    result.workspaces, result.sessions = _minno_summary(conn)
        except psycopg.errors.LockNotAvailable:
            raise SeedError("another session holds a lock on a table being seeded (the application?) — stop it "
                            "or raise --lock-timeout; nothing was changed", exit_code=ExitCode.LOCK_HELD) from None
    result.seconds = time.monotonic() - started
    return result


def _minno_summary(conn: "psycopg.Connection") -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    workspaces = [
        {"slack_team_id": r[0], "name": r[1], "notion_workspace_id": r[2], "tokens": r[3]}
        for r in conn.execute(
            """SELECT w.slack_team_id, w.slack_team_name, w.notion_workspace_id,
                      (SELECT string_agg(t.provider, ',' ORDER BY t.provider) FROM minno.oauth_tokens t
                        WHERE t.workspace_id = w.id)
                 FROM minno.workspaces w ORDER BY w.slack_team_id""")]
    sessions = [
        {"workspace": r[0], "channel": r[1], "thread_ts": r[2], "status": r[3], "messages": r[4]}
        for r in conn.execute(
            """SELECT w.slack_team_id, s.slack_channel_id, s.slack_thread_ts, s.status,
                      (SELECT count(*) FROM minno.conversation_messages m WHERE m.session_id = s.id)
                 FROM minno.minno_sessions s JOIN minno.workspaces w ON w.id = s.workspace_id
                ORDER BY w.slack_team_id, s.created_at""")]
    return workspaces, sessions


# ---------------------------------------------------------------------------------------------
# Bulk synthetic data: `seed --scale N`
#
# N rows in all go to the large tables, split by SCALE_WEIGHTS among the tables of the modules
# being scaled; the parents they need (workspaces, sessions, conversations, sources) are made on
# the way and reported apart. Each row's id is derived from (random seed, table, row number), so
# a child computes its parent's id without keeping anything in memory, and a run is the same for
# the same seed. Values are made from a fixed vocabulary with no tab, newline or backslash, so
# they are written in COPY's text format as they are.

SCALE_WEIGHTS: dict[str, float] = {
    "minno.conversation_messages": 0.30,
    "chatbot.messages": 0.30,
    "slackbot.audit_logs": 0.15,
    "slackbot.query_history": 0.145,
    "minno.oauth_tokens": 0.10,
    "knowledge.knowledge_chunks": 0.005,
}
PROVIDERS = ("slack", "notion", "google", "github", "linear")
MESSAGES_PER_SESSION = 20
SESSIONS_PER_WORKSPACE = 50
MESSAGES_PER_CONVERSATION = 10
QUERIES_PER_SESSION = 20
CHUNKS_PER_SOURCE = 20
SPAN_S = 180 * 86400  # synthetic rows are spread over the last 180 days
BLOCK_BYTES = 256 * 1024

_WORDS = ("deploy staging database migration token rotation slack notion workspace session thread "
          "message assistant query cache audit port range backup restore cleanup health index vacuum "
          "analyze latency budget release customer report dashboard incident review summary project "
          "roadmap sprint estimate blocker review handoff schedule meeting notes onboarding access "
          "permission secret template alert metric trace error retry timeout success pending").split()


def _sentences(rng_seed: int, count: int = 1024) -> list[str]:
    import random

    rng = random.Random(rng_seed)
    out = []
    for _ in range(count):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(6, 24))]
        out.append(" ".join(words).capitalize() + ".")
    return out


@dataclass
class ScaleJob:
    """One table's share of a scale run: `count` rows made by `lines(start, count)`."""

    schema: str
    table: str
    columns: tuple[str, ...]
    count: int
    parent: bool  # made only because other rows need it
    make: Callable[[int], str]  # row number -> one COPY text line (with its newline)

    @property
    def name(self) -> str:
        return f"{self.schema}.{self.table}"

    def copy_sql(self) -> str:
        cols = ", ".join(f'"{c}"' for c in self.columns)
        return f'COPY "{self.schema}"."{self.table}" ({cols}) FROM STDIN'

    def blocks(self, block_bytes: int = BLOCK_BYTES) -> Iterator[str]:
        """The rows as COPY text, in blocks of about block_bytes."""
        make = self.make
        buf: list[str] = []
        size = 0
        for i in range(self.count):
            line = make(i)
            buf.append(line)
            size += len(line)
            if size >= block_bytes:
                yield "".join(buf)
                buf, size = [], 0
        if buf:
            yield "".join(buf)


class _Synth:
    """Deterministic values for one random seed and one base time."""

    def __init__(self, random_seed: int, now: dt.datetime):
        self.seed = random_seed
        self.tag = hashlib.sha256(str(random_seed).encode()).hexdigest()[:8].upper()
        self.epoch = now.timestamp()
        self.parent = functools.lru_cache(maxsize=64)(self.uid)  # children of one parent come together
        self.sentences = _sentences(random_seed)

    def uid(self, kind: str, i: int) -> str:
        """A version-4-shaped UUID from (seed, kind, i), formatted by hand: uuid.UUID costs 3x more."""
        h = hashlib.blake2b(f"{self.seed}:{kind}:{i}".encode(), digest_size=16).hexdigest()
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"

    def spread(self, kind: str, i: int) -> int:
        """Seconds in the past for row i, spread evenly over SPAN_S in a scrambled order."""
        return (i * 2654435761 + len(kind)) % SPAN_S

    def ts(self, seconds_ago: float, tz: bool = True) -> str:
        """UTC, to the second (time.strftime is twice as fast as datetime arithmetic)."""
        return time.strftime("%Y-%m-%d %H:%M:%S+00" if tz else "%Y-%m-%d %H:%M:%S",
                             time.gmtime(self.epoch - seconds_ago))

    def text(self, i: int) -> str:
        return self.sentences[(i * 40503) % len(self.sentences)]


def _scale_counts(n: int, tables: list[str]) -> dict[str, int]:
    weights = {t: SCALE_WEIGHTS[t] for t in tables}
    total = sum(weights.values())
    counts = {t: int(n * w / total) for t, w in weights.items()}
    counts[tables[0]] += n - sum(counts.values())
    return counts


def scale_jobs(n: int, random_seed: int, now: dt.datetime, module_names: set[str],
               ring: "crypto.Keyring | None") -> list[ScaleJob]:
    """The COPY jobs of `seed --scale n`, in load order (parents first)."""
    s = _Synth(random_seed, now)
    tables = [t for t in SCALE_WEIGHTS if t.split(".")[0] in module_names]
    if not tables:
        return []
    counts = _scale_counts(n, tables)
    jobs: list[ScaleJob] = []
    tag = s.tag

    n_msgs = counts.get("minno.conversation_messages", 0)
    n_tokens = counts.get("minno.oauth_tokens", 0)
    n_sessions = math.ceil(n_msgs / MESSAGES_PER_SESSION)
    n_ws = max(math.ceil(n_tokens / len(PROVIDERS)), math.ceil(n_sessions / SESSIONS_PER_WORKSPACE))
    if n_ws:
        def workspace(i: int) -> str:
            notion = f"nws-{tag}-{i}" if i % 3 == 0 else "\\N"
            when = s.ts(SPAN_S + s.spread("ws", i) / 10, tz=False)
            return f"{s.uid('ws', i)}\tT{tag}{i:08d}\tScale team {tag} {i}\t{notion}\t{when}\t{when}\n"
        jobs.append(ScaleJob("minno", "workspaces", ("id", "slack_team_id", "slack_team_name",
                             "notion_workspace_id", "created_at", "updated_at"), n_ws, True, workspace))
    if n_sessions:
        statuses = ("active", "completed", "completed", "failed", "archived")

        def session(i: int) -> str:
            ago = s.spread("ms", i)
            when = s.ts(ago, tz=False)
            return (f"{s.uid('ms', i)}\t{s.parent('ws', i // SESSIONS_PER_WORKSPACE)}\tC{tag}{i // 100:07d}\t"
                    f"{1700000000 + i}.{i % 1000000:06d}\t{{\"source\": \"scale\"}}\t{statuses[i % 5]}\t"
                    f"{when}\t{when}\n")
        jobs.append(ScaleJob("minno", "minno_sessions", ("id", "workspace_id", "slack_channel_id", "slack_thread_ts",
                             "context", "status", "created_at", "updated_at"), n_sessions, True, session))
    if n_msgs:
        roles = ("user", "assistant", "user", "assistant", "tool", "system")

        def message(i: int) -> str:
            k = i // MESSAGES_PER_SESSION
            ago = max(s.spread("ms", k) - (i % MESSAGES_PER_SESSION) * 30, 0)
            return (f"{s.uid('cm', i)}\t{s.parent('ms', k)}\t{roles[i % 6]}\t{s.text(i)}\t"
                    f"{{\"source\": \"scale\", \"n\": {i}}}\t{s.ts(ago, tz=False)}\t{1700000000 + i}.000100\n")
        jobs.append(ScaleJob("minno", "conversation_messages", ("id", "session_id", "role", "content", "metadata",
                             "timestamp", "slack_message_ts"), n_msgs, False, message))
    if n_tokens:
        if ring is None or ring.active is None:
            raise SeedError("no active data key to encrypt the synthetic tokens with")
        encrypt = ring.encrypt

        def token(i: int) -> str:
            tid = s.uid("ot", i)
            provider = PROVIDERS[i % len(PROVIDERS)]
            access = encrypt("minno", "oauth_tokens", "access_token_encrypted", tid, f"{provider}-scale-{tag}-{i}")
            refresh = (encrypt("minno", "oauth_tokens", "refresh_token_encrypted", tid, f"refresh-{tag}-{i}")
                       if i % 2 == 0 else "\\N")
            expires = s.ts(-(i % (90 * 86400)) + 86400 * 3, tz=False)
            return (f"{tid}\t{s.parent('ws', i // len(PROVIDERS))}\t{provider}\t{access}\t{refresh}\t{expires}\t"
                    f"{{read,write}}\n")
        jobs.append(ScaleJob("minno", "oauth_tokens", ("id", "workspace_id", "provider", "access_token_encrypted",
                             "refresh_token_encrypted", "expires_at", "scopes"), n_tokens, False, token))

    n_chat = counts.get("chatbot.messages", 0)
    if n_chat:
        n_conv = math.ceil(n_chat / MESSAGES_PER_CONVERSATION)

        def conversation(i: int) -> str:
            ago = s.spread("cv", i)
            return (f"{s.uid('cv', i)}\tuser-{tag}-{i % 5000}\t{s.ts(ago + 3600, tz=False)}\t{s.ts(ago, tz=False)}\t"
                    f"{{\"source\": \"scale\", \"channel\": \"web\"}}\n")
        jobs.append(ScaleJob("chatbot", "conversations", ("id", "user_id", "created_at", "updated_at", "metadata"),
                             n_conv, True, conversation))
        chat_roles = ("user", "assistant", "user", "assistant", "system")

        def chat(i: int) -> str:
            k = i // MESSAGES_PER_CONVERSATION
            ago = s.spread("cv", k) + (MESSAGES_PER_CONVERSATION - i % MESSAGES_PER_CONVERSATION) * 60
            return (f"{s.uid('cb', i)}\t{s.parent('cv', k)}\t{chat_roles[i % 5]}\t{s.text(i)}\t{s.ts(ago, tz=False)}\t"
                    f"{{\"source\": \"scale\", \"tokens\": {i % 900 + 10}}}\n")
        jobs.append(ScaleJob("chatbot", "messages", ("id", "conversation_id", "role", "content", "created_at",
                             "metadata"), n_chat, False, chat))

    n_audit = counts.get("slackbot.audit_logs", 0)
    if n_audit:
        events = (("query_executed", "query"), ("login", "auth"), ("permission_denied", "security"),
                  ("cache_hit", "performance"), ("session_started", "session"))

        def audit(i: int) -> str:
            event, category = events[i % len(events)]
            return (f"{s.uid('al', i)}\t{event}\t{category}\t{s.text(i)}\t{{\"source\": \"scale\"}}\t"
                    f"U{tag}{i % 5000:05d}\tT{tag}{i % 50:08d}\t{s.ts(s.spread('al', i))}\n")
        jobs.append(ScaleJob("slackbot", "audit_logs", ("id", "event_type", "event_category", "event_description",
                             "event_data", "slack_user_id", "slack_team_id", "created_at"), n_audit, False, audit))

    n_queries = counts.get("slackbot.query_history", 0)
    if n_queries:
        n_us = math.ceil(n_queries / QUERIES_PER_SESSION)

        def user_session(i: int) -> str:
            ago = s.spread("us", i)
            return (f"{s.uid('us', i)}\tU{tag}{i % 5000:05d}\tC{tag}{i % 300:05d}\tT{tag}{i % 50:08d}\t"
                    f"{'t' if i % 4 else 'f'}\t{s.ts(ago)}\t{s.ts(ago + 7200)}\n")
        jobs.append(ScaleJob("slackbot", "user_sessions", ("id", "slack_user_id", "slack_channel_id", "slack_team_id",
                             "is_active", "last_activity", "created_at"), n_us, True, user_session))
        states = ("success", "success", "success", "error", "timeout", "cancelled")

        def query(i: int) -> str:
            k = i // QUERIES_PER_SESSION
            ago = s.spread("us", k) + (i % QUERIES_PER_SESSION) * 45
            state = states[i % len(states)]
            done = state == "success"
            return (f"{s.uid('qh', i)}\t{s.parent('us', k)}\t{s.text(i)}\t"
                    f"SELECT count(*) FROM events WHERE day = {i % 365}\t"
                    f"analytics\t{state}\t{i % 5000 if done else 0}\t{i % 100000 if done else 0}\t"
                    f"{s.ts(ago)}\t{s.ts(ago - 2) if done else chr(92) + 'N'}\n")
        jobs.append(ScaleJob("slackbot", "query_history", ("id", "session_id", "original_question", "generated_query",
                             "database_name", "status", "execution_time_ms", "row_count", "created_at",
                             "completed_at"), n_queries, False, query))

    n_chunks = counts.get("knowledge.knowledge_chunks", 0)
    if n_chunks:
        n_src = math.ceil(n_chunks / CHUNKS_PER_SOURCE)
        vectors = [vector_text(embedding(f"scale {random_seed} {k}")) for k in range(64)]

        def source(i: int) -> str:
            return (f"{s.uid('ks', i)}\tdocument\tscale-{tag}-{i}\tScale document {tag} {i}\t"
                    f"{s.ts(s.spread('ks', i))}\n")
        jobs.append(ScaleJob("knowledge", "knowledge_sources", ("id", "source_type", "source_id", "title",
                             "created_at"), n_src, True, source))

        def chunk(i: int) -> str:
            content = f"{s.text(i)} (chunk {i})"
            digest = hashlib.sha256(content.encode()).hexdigest()
            return (f"{s.uid('kc', i)}\t{s.parent('ks', i // CHUNKS_PER_SOURCE)}\t{i % CHUNKS_PER_SOURCE}\t{content}\t"
                    f"{digest}\t{vectors[i % 64]}\t{len(content) // 4}\n")
        jobs.append(ScaleJob("knowledge", "knowledge_chunks", ("id", "source_id", "chunk_index", "content",
                             "content_hash", "embedding", "token_count"), n_chunks, False, chunk))
    return jobs


@dataclass
class ScaleResult:
    random_seed: int
    counts: list[dict[str, Any]] = field(default_factory=list)  # table, rows, parent
    seconds: float = 0.0

    @property
    def rows(self) -> int:
        return sum(c["rows"] for c in self.counts if not c["parent"])


def scale_modules(conn: "psycopg.Connection", chosen: list[modules.Module] | None) -> list[modules.Module]:
    """The installed (and up-to-date) modules that have large tables to scale."""
    _, wanted = _check_installed(conn, chosen)
    names = {t.split(".")[0] for t in SCALE_WEIGHTS}
    found = [m for m in wanted if m.name in names]
    if not found:
        raise SeedError("none of the chosen modules has tables that --scale fills "
                        f"(those of: {', '.join(sorted(names))})")
    return found


def scale(conn: "psycopg.Connection", n: int, random_seed: int, chosen: list[modules.Module],
          kek: "crypto.MasterKey | None", *, lock_timeout: float = 30,
          progress: Callable[[str, int, int], None] | None = None) -> ScaleResult:
    """Add n synthetic rows (and their parents) with COPY, in one transaction."""
    import psycopg

    from minnoctl import tokens

    if n < 1:
        raise UsageError("--scale must be at least 1")
    started = time.monotonic()
    result = ScaleResult(random_seed)
    with locks.advisory_lock(conn, "seed", lock_timeout, option="--lock-timeout"):
        try:
            with conn.transaction():
                conn.execute("SET LOCAL TimeZone = 'UTC'")
                names = {m.name for m in chosen}
                ring = tokens.ensure_active_key(conn, kek) if "minno" in names and kek is not None else None
                now = one(conn.execute("SELECT now()"))[0]
                for job in scale_jobs(n, random_seed, now, names, ring):
                    done = 0
                    with conn.cursor() as cur, cur.copy(job.copy_sql()) as copy:
                        for block in job.blocks():
                            copy.write(block)
                            if progress:
                                done += block.count("\n")
                                progress(job.name, done, job.count)
                    result.counts.append({"table": job.name, "rows": job.count, "parent": job.parent})
        except psycopg.errors.UniqueViolation:
            raise SeedError(f"rows of --random-seed {random_seed} are already in this database — use another "
                            "--random-seed (or none, for a new one); nothing was added") from None
    result.seconds = time.monotonic() - started
    return result
