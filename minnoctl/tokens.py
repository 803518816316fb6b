"""Encrypted tokens and secrets: storing, listing, verifying, retiring keys and rotating them on a
live database. Returns data; never prints.

Every change of the keyring's keys — `token rotate`, `token rotate --master`, `token retire` — runs
under one advisory lock, `token-rotate`: a second one of any kind exits 8 (LockHeldError) at once.

Rotation:
 1. a new data key is made (pending), then in one transaction the old active key becomes
    decrypt_only and the new one active — applications that reload the keyring encrypt with it;
 2. every encrypted column of every installed module is re-encrypted in batches: keyset pagination
    on the primary key, FOR UPDATE SKIP LOCKED, one short transaction per batch with lock_timeout;
    passes repeat until no field uses an old key (rows a writer held, or wrote with a stale key,
    are caught by the next pass); a damaged field is reported and skipped;
 3. a verify pass decrypts every field (and counts, per column, the fields on each key); a field
    that does not decrypt keeps the old keys alive;
 4. old keys no field uses are retired: they are fenced first (the guard trigger then rejects
    new fields under them), a momentary barrier waits for transactions that began before the
    fence, a last pass re-encrypts what those wrote, and the count is taken with no lock held,
    since nothing can add a field under a fenced key; then the wrapped keys are destroyed.
A kill -9 at any point leaves every field decryptable (each batch commits whole), and a rerun
resumes with the same active key. --max-runtime stops cleanly between batches.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import logging
import socket
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from collections.abc import Callable, Iterator

from minnoctl import crypto, locks, modules
from minnoctl.errors import ExitCode, LockHeldError, MinnoctlError, UsageError
from minnoctl.render_text import shown
from minnoctl.rows import one

if TYPE_CHECKING:
    import psycopg

    from minnoctl.config import Settings

log = logging.getLogger("minnoctl")


@dataclass(frozen=True)
class Column:
    schema: str
    spec: modules.EncryptedColumn
    pk_type: str

    @property
    def label(self) -> str:
        return f"{self.schema}.{self.spec.table}.{self.spec.column}"

    @property
    def qualified_table(self) -> str:
        return f'"{self.schema}"."{self.spec.table}"'


# A well-formed field as the guard trigger checks it (minno/0007): strict base64 of at least
# crypto.MIN_FIELD_BYTES bytes, version byte crypto.VERSION.
_STRICT_BASE64_SQL = "'^([A-Za-z0-9+/]{4})*([A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$'"


def header_sql(column: str) -> str:
    """SQL giving the key number in a field's header; NULL when the value is not a well-formed
    field (plaintext, or anything the guard of minno/0007 refuses)."""
    return (f"CASE WHEN {column} ~ {_STRICT_BASE64_SQL} AND length({column}) / 4 * 3 - (length({column}) - "
            f"length(rtrim({column}, '='))) >= {crypto.MIN_FIELD_BYTES} AND get_byte(decode(left({column}, 8), "
            f"'base64'), 0) = {crypto.VERSION} THEN ('x' || encode(substring(decode(left({column}, 8), 'base64') "
            "from 2 for 4), 'hex'))::bit(32)::int END")


NOT_A_FIELD_HINT = ("have the application store it again through minnoctl.crypto (Python) or "
                    "minnoctl/clients/node/minno-fields.cjs (Node); the database refuses such values since minno/0007")


def not_fields(counts: list[dict[str, Any]]) -> dict[str, int]:
    """From field_counts: per column, the values that are not encrypted fields (plaintext written
    before minno/0007 refused it)."""
    out: dict[str, int] = {}
    for c in counts:
        if c["key"] is None:
            out[c["column"]] = out.get(c["column"], 0) + c["fields"]
    return out


def _in_window(col: Column) -> str:
    """SQL: the row's primary key is in the window (last, upper]; `first` opens it at the start, a
    NULL `upper` at the end."""
    pk, t = f'"{col.spec.pk}"', col.pk_type
    return (f"({pk} > %(last)s::{t} OR %(first)s) AND (%(upper)s::{t} IS NULL OR {pk} <= %(upper)s::{t})")


def _windows(conn: "psycopg.Connection", col: Column, size: int):
    """Yield the primary-key windows of `size` rows that cover the table, as query arguments, so
    each statement or transaction over a window touches at most `size` rows (the bound is an
    index-only look-up `size` rows ahead)."""
    pk = f'"{col.spec.pk}"'
    last = None
    while True:
        bound = conn.execute(
            f"SELECT {pk} FROM {col.qualified_table} WHERE {pk} > %(last)s::{col.pk_type} OR %(first)s "
            f"ORDER BY {pk} OFFSET %(n)s - 1 LIMIT 1", {"last": last, "first": last is None, "n": size}).fetchone()
        upper = bound[0] if bound else None
        yield {"last": last, "first": last is None, "upper": upper}
        if upper is None:
            return
        last = upper


def encrypted_columns(conn: "psycopg.Connection") -> list[Column]:
    """The registry's encrypted columns whose tables exist (installed modules only)."""
    found = []
    for module in modules.MODULES:
        for spec in module.encrypted:
            row = conn.execute(
                "SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
                "WHERE a.attrelid = to_regclass(%s) AND a.attname = %s AND NOT a.attisdropped",
                (f"{module.schema}.{spec.table}", spec.pk)).fetchone()
            if row:
                found.append(Column(module.schema, spec, row[0]))
    return found


def _audit(conn: "psycopg.Connection", action: str, numbers: list[int], **details: Any) -> None:
    conn.execute(
        "INSERT INTO minno.key_audit_log (actor, host, action, key_numbers, details) VALUES (%s, %s, %s, %s, %s)",
        (getpass.getuser(), socket.gethostname(), action, numbers, json.dumps(details, default=str)))


GUARD_SQLSTATE = "MK001"  # the guard trigger's error: a field under a retired, fenced or unknown key
KEY_ROW_WAIT_S = 5  # how long a change of a key row waits for writers holding it (the guard's FOR SHARE)


def _bounded_wait(conn: "psycopg.Connection") -> None:
    """In the current transaction, wait at most KEY_ROW_WAIT_S for any lock (then LockNotAvailable)."""
    conn.execute(f"SET LOCAL lock_timeout = '{KEY_ROW_WAIT_S}s'")


@contextmanager
def keyring_lock(conn: "psycopg.Connection") -> Iterator[None]:
    """The one lock of every key change (rotate, rotate --master, retire), taken at once or
    LockHeldError (the lock names its holder, so the refused run can name it)."""
    with locks.advisory_lock(conn, "token-rotate", timeout_s=0):
        yield


@contextmanager
def key_rows_busy(what: str) -> Iterator[None]:
    """A change of key rows that waited KEY_ROW_WAIT_S for writers still holding them: one
    line and exit 8, not a traceback."""
    import psycopg

    try:
        yield
    except psycopg.errors.LockNotAvailable:
        raise LockHeldError(f"{what}: application transactions held the data key rows or the token tables "
                            f"for {KEY_ROW_WAIT_S} s — run it again when they have committed") from None


def _require_core(conn: "psycopg.Connection") -> None:
    if one(conn.execute("SELECT to_regclass('minno.key_audit_log')"))[0] is None:
        raise MinnoctlError("the keyring is not installed in this database — run `minnoctl db init` (or "
                            "`minnoctl migrate`) first")


def ensure_active_key(conn: "psycopg.Connection", kek: crypto.MasterKey) -> crypto.Keyring:
    """The keyring, with an active data key made on first use."""
    ring = crypto.Keyring.load(conn, kek)
    if ring.active is None:
        with conn.transaction():  # two first writers at once: one makes the key, the other uses it
            crypto.lock_keyring(conn)
            if conn.execute("SELECT 1 FROM minno.encryption_keys WHERE status = 'active'").fetchone() is None:
                key = crypto.create_data_key(conn, kek, name=f"dek-{uuid.uuid4().hex[:12]}", status="pending")
                conn.execute("UPDATE minno.encryption_keys SET status = 'active', activated_at = now() "
                             "WHERE key_number = %s", (key.number,))
                _audit(conn, "create-active", [key.number])
                log.info("created the first data key (%d)", key.number)
        ring = crypto.Keyring.load(conn, kek)
    return ring


# ---------------------------------------------------------------------------------------------
# put / list


# spec 000's providers of minno.oauth_tokens ("slack, notion, google, etc."): the schema leaves the set
# open (a CHECK for lower case only), so a typo would be stored silently; any other needs
# --allow-unknown-provider once, after which it is a provider of that database like these.
KNOWN_PROVIDERS = ("google", "notion", "slack")


def known_providers(conn: "psycopg.Connection") -> list[str]:
    """The providers a token can be put for without --allow-unknown-provider: spec 000's and those
    already stored in this database."""
    stored = [r[0] for r in conn.execute("SELECT DISTINCT provider FROM minno.oauth_tokens")]
    return sorted(set(KNOWN_PROVIDERS) | set(stored))


def _workspace_missing(workspace: str) -> MinnoctlError:
    return MinnoctlError(f"workspace {shown(workspace)} does not exist — check the Slack team id "
                         "(minno.workspaces.slack_team_id)", exit_code=ExitCode.NOT_FOUND)


def put(conn: "psycopg.Connection", kek: crypto.MasterKey, *, workspace: str, provider: str, access_token: str,
        refresh_token: str | None, expires_at: dt.datetime | None, scopes: list[str],
        allow_unknown_provider: bool = False) -> dict[str, Any]:
    """Store (upsert) a workspace's token for a provider, encrypted. Returns its metadata. A provider
    outside known_providers() is refused (a typo) unless allow_unknown_provider."""
    _require_core(conn)
    provider = provider.strip().lower()
    if not provider:
        raise UsageError("--provider must not be empty")
    known = known_providers(conn)
    if provider not in known and not allow_unknown_provider:
        raise UsageError(f"--provider {shown(provider)} is not a known provider — use one of: {', '.join(known)}; "
                         "for a new provider add --allow-unknown-provider")

    def find_workspace():
        row = conn.execute("SELECT id FROM minno.workspaces WHERE slack_team_id = %s", (workspace,)).fetchone()
        if row is None:
            raise _workspace_missing(workspace)
        return row[0]

    find_workspace()  # before anything is written, even the first data key

    def write(ring: crypto.Keyring) -> bool:
        workspace_id = find_workspace()
        existing = conn.execute("SELECT id FROM minno.oauth_tokens WHERE workspace_id = %s AND provider = %s "
                                "FOR UPDATE", (workspace_id, provider)).fetchone()
        token_id = existing[0] if existing else uuid.uuid4()
        access = ring.encrypt("minno", "oauth_tokens", "access_token_encrypted", token_id, access_token)
        refresh = (ring.encrypt("minno", "oauth_tokens", "refresh_token_encrypted", token_id, refresh_token)
                   if refresh_token else None)
        if existing:
            conn.execute("UPDATE minno.oauth_tokens SET access_token_encrypted = %s, "
                         "refresh_token_encrypted = %s, expires_at = %s, scopes = %s WHERE id = %s",
                         (access, refresh, expires_at, scopes, token_id))
        else:
            conn.execute("INSERT INTO minno.oauth_tokens (id, workspace_id, provider, access_token_encrypted, "
                         "refresh_token_encrypted, expires_at, scopes) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                         (token_id, workspace_id, provider, access, refresh, expires_at, scopes))
        return bool(existing)

    ring, updated = _write_with_keyring(conn, kek, write)
    return {"workspace": workspace, "provider": provider, "expires_at": _utc(expires_at), "scopes": ",".join(scopes),
            "key": ring.active_number(), "updated": updated}


def _utc(when: dt.datetime | None) -> dt.datetime | None:
    """A TIMESTAMP column's value (UTC by this database's rule) as an aware time, for output."""
    return when.replace(tzinfo=dt.UTC) if when is not None and when.tzinfo is None else when


def _write_with_keyring(conn: "psycopg.Connection", kek: crypto.MasterKey,
                        write: Callable[[crypto.Keyring], Any]) -> tuple[crypto.Keyring, Any]:
    """Run write(ring) in a transaction with the keyring (its first data key made if need be); a
    rotation that switched or retired the key meanwhile (MK001, 40001): reload and write again."""
    import psycopg

    ring = ensure_active_key(conn, kek)
    for attempt in range(3):
        try:
            with conn.transaction():
                return ring, write(ring)
        except psycopg.Error as exc:
            if exc.sqlstate not in (GUARD_SQLSTATE, "40001") or attempt == 2:
                raise
            ring = crypto.Keyring.load(conn, kek)
    raise AssertionError("unreachable")


USER_TOKEN_PROVIDERS = {"google": " ", "slack": ","}  # spec 002's providers, and how each joins its scopes


def put_user(conn: "psycopg.Connection", kek: crypto.MasterKey, *, user: str, provider: str, access_token: str,
             refresh_token: str | None, expires_at: dt.datetime | None, scopes: list[str]) -> dict[str, Any]:
    """Store (upsert) a user's Google or Slack token in spec 002's assistant.user_tokens, encrypted,
    as the AI Assistant Platform's getUserTokens() reads it; the user's other provider is kept."""
    _require_core(conn)
    provider = provider.strip().lower()
    if provider not in USER_TOKEN_PROVIDERS:
        raise UsageError(f"--provider {shown(provider)} with --user: assistant.user_tokens holds google and slack "
                         "tokens only")
    if not user.strip():
        raise UsageError("--user must not be empty")
    if one(conn.execute("SELECT to_regclass('assistant.user_tokens')"))[0] is None:
        raise MinnoctlError("the assistant module is not installed in this database — run `minnoctl db init "
                            "--modules assistant` first")
    p = provider
    scope = USER_TOKEN_PROVIDERS[p].join(scopes) or None

    def write(ring: crypto.Keyring) -> bool:
        existing = conn.execute("SELECT 1 FROM assistant.user_tokens WHERE user_id = %s FOR UPDATE",
                                (user,)).fetchone()
        access = ring.encrypt("assistant", "user_tokens", f"{p}_access_token", user, access_token)
        refresh = ring.encrypt("assistant", "user_tokens", f"{p}_refresh_token", user, refresh_token) \
            if refresh_token else None
        conn.execute(f"INSERT INTO assistant.user_tokens (user_id, {p}_access_token, {p}_refresh_token, "
                     f"{p}_expires_at, {p}_scope) VALUES (%s, %s, %s, %s, %s) ON CONFLICT (user_id) DO UPDATE SET "
                     f"{p}_access_token = EXCLUDED.{p}_access_token, {p}_refresh_token = EXCLUDED.{p}_refresh_token, "
                     f"{p}_expires_at = EXCLUDED.{p}_expires_at, {p}_scope = EXCLUDED.{p}_scope, "
                     "updated_at = CURRENT_TIMESTAMP", (user, access, refresh, expires_at, scope))
        return existing is not None

    ring, updated = _write_with_keyring(conn, kek, write)
    return {"user": user, "provider": provider, "expires_at": _utc(expires_at), "scopes": scope or "",
            "key": ring.active_number(), "updated": updated}


def list_tokens(conn: "psycopg.Connection", *, workspace: str | None = None, provider: str | None = None,
                expiring_within_days: float | None = None) -> list[dict[str, Any]]:
    """Metadata only — never a token."""
    _require_core(conn)
    clauses: list[str] = ["true"]
    params: list[Any] = []
    if workspace and conn.execute("SELECT 1 FROM minno.workspaces WHERE slack_team_id = %s",
                                  (workspace,)).fetchone() is None:
        raise _workspace_missing(workspace)
    if workspace:
        clauses.append("w.slack_team_id = %s")
        params.append(workspace)
    if provider:
        clauses.append("t.provider = %s")
        params.append(provider.lower())
    if expiring_within_days is not None:
        clauses.append("t.expires_at IS NOT NULL AND t.expires_at AT TIME ZONE 'UTC' "
                       "<= now() + make_interval(secs => %s)")
        params.append(expiring_within_days * 86400)
    rows = conn.execute(
        # expires_at is a TIMESTAMP holding UTC (see put): as timestamptz, so it carries its offset
        f"SELECT w.slack_team_id, t.provider, t.expires_at AT TIME ZONE 'UTC', t.scopes, "
        f"{header_sql('t.access_token_encrypted')}, "
        f"t.refresh_token_encrypted IS NOT NULL FROM minno.oauth_tokens t JOIN minno.workspaces w "
        f"ON w.id = t.workspace_id WHERE {' AND '.join(clauses)} ORDER BY w.slack_team_id, t.provider",
        params).fetchall()
    return [{"workspace": r[0], "provider": r[1], "expires_at": r[2], "scopes": ",".join(r[3] or []),
             "key": r[4], "has_refresh_token": r[5]} for r in rows]


# ---------------------------------------------------------------------------------------------
# keys / verify / retire


def field_counts(conn: "psycopg.Connection", columns: list[Column] | None = None, window: int = 100_000,
                 timings: list[float] | None = None) -> list[dict[str, Any]]:
    """How many fields use each key, per column (key None = not a well-formed field). Counted in
    primary-key windows, each a short statement, so no snapshot is held for long on a big table."""
    out = []
    for col in columns if columns is not None else encrypted_columns(conn):
        c = f'"{col.spec.column}"'
        totals: dict[int | None, int] = {}
        t0 = time.perf_counter()
        for args in _windows(conn, col, window):
            for number, count in conn.execute(
                    f"SELECT {header_sql(c)}, count(*) FROM {col.qualified_table} "
                    f"WHERE {_in_window(col)} AND {c} IS NOT NULL GROUP BY 1", args):
                totals[number] = totals.get(number, 0) + count
            if timings is not None:
                timings.append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
        out += [{"column": col.label, "key": number, "fields": count} for number, count in totals.items()]
    return out


def keys(conn: "psycopg.Connection") -> list[dict[str, Any]]:
    _require_core(conn)
    counts = field_counts(conn)
    rows = conn.execute("SELECT key_number, key_name, status, created_at, activated_at, retired_at, kek_fingerprint "
                        "FROM minno.encryption_keys ORDER BY key_number").fetchall()
    out = []
    for number, name, status, created, activated, retired, fp in rows:
        used = {c["column"]: c["fields"] for c in counts if c["key"] == number}
        out.append({"key": number, "name": name, "status": status, "created_at": created,
                    "activated_at": activated, "retired_at": retired, "master_key": fp,
                    "fields": sum(used.values()), "by_column": used})
    return out


@dataclass
class Failure:
    column: str
    row: str  # the row's primary key; "N rows" for a column's values that are not encrypted fields
    reason: str
    count: int = 1  # the fields this line stands for
    not_a_field: bool = False  # plaintext (or malformed): on no key, so it keeps no old key alive

    def public(self) -> dict[str, str]:
        return {"column": self.column, "row": self.row, "reason": self.reason}


_NOT_A_FIELD_CODES = ("FIELD_MALFORMED", "FIELD_VERSION")


def verify(conn: "psycopg.Connection", kek: crypto.MasterKey, batch_size: int = 5000) -> tuple[int, list[Failure]]:
    """Decrypt every encrypted field; returns (fields checked, failures by column and row). Values
    that are not encrypted fields at all (plaintext an application stored before minno/0007) are
    one failure per column with their count, never a value nor their rows. Reads in primary-key
    windows, each its own short statement, so no snapshot is held for long."""
    _require_core(conn)
    ring = crypto.Keyring.load(conn, kek)
    decrypting = ring.decrypting()
    checked, failures = 0, []
    for col in encrypted_columns(conn):
        pk, c = f'"{col.spec.pk}"', f'"{col.spec.column}"'
        plain = 0
        for args in _windows(conn, col, batch_size):
            for row_pk, value in conn.execute(f"SELECT {pk}, {c} FROM {col.qualified_table} "
                                              f"WHERE {_in_window(col)} AND {c} IS NOT NULL", args):
                checked += 1
                try:
                    crypto.decrypt_field(decrypting, col.schema, col.spec.table, col.spec.column, row_pk, value)
                except crypto.FieldError as exc:
                    if exc.code in _NOT_A_FIELD_CODES:
                        plain += 1
                    else:
                        failures.append(Failure(col.label, str(row_pk), exc.message))
        if plain:
            failures.append(Failure(col.label, f"{plain} row{'s' if plain > 1 else ''}",
                                    f"not encrypted fields (plaintext or malformed) — {NOT_A_FIELD_HINT}",
                                    count=plain, not_a_field=True))
    return checked, failures


def retire(conn: "psycopg.Connection", number: int) -> None:
    """Retire a key: refused while it is active or any field uses it; destroys its wrapped key.
    Under the keyring lock, so it never meets a rotation or a master re-wrap half-way."""
    _require_core(conn)
    with keyring_lock(conn), key_rows_busy(f"data key {number} was not retired"):
        _retire_one(conn, number)


def _retire_one(conn: "psycopg.Connection", number: int) -> None:
    row = conn.execute("SELECT status, write_fenced_at IS NOT NULL FROM minno.encryption_keys WHERE key_number = %s",
                       (number,)).fetchone()
    if row is None:
        raise MinnoctlError(f"there is no data key {number} — see `minnoctl token keys`", exit_code=ExitCode.NOT_FOUND)
    status, was_fenced = row
    if status == "retired":
        log.info("data key %d is already retired", number)
        return
    if status == "active":
        raise MinnoctlError(f"data key {number} is the active key — rotate first (`minnoctl token rotate`)")
    import psycopg

    columns = encrypted_columns(conn)
    _fence(conn, [number])
    try:
        _barrier(conn, columns)
    except psycopg.errors.LockNotAvailable:
        if not was_fenced:
            _unfence(conn, [number])  # nothing changed
        raise
    used = sum(c["fields"] for c in field_counts(conn, columns) if c["key"] == number)
    if used:
        if not was_fenced:
            _unfence(conn, [number])
        raise MinnoctlError(f"data key {number} is still used by {used} field(s) — run `minnoctl token rotate` "
                            "to move them to the active key; nothing was changed")
    _retire_now(conn, [number])


def _fence(conn: "psycopg.Connection", numbers: list[int]) -> None:
    """From the commit on, the guard trigger rejects new fields under these keys (they still decrypt)."""
    with conn.transaction():
        _bounded_wait(conn)  # writers hold the row (guard trigger)
        # the fence's first time is kept; written as a condition, not coalesce(write_fenced_at, now()), which
        # Citus refuses in an UPDATE (a non-IMMUTABLE function in COALESCE) even on a coordinator's table
        conn.execute("UPDATE minno.encryption_keys SET write_fenced_at = now() "
                     "WHERE key_number = ANY(%s) AND write_fenced_at IS NULL", (numbers,))
        _audit(conn, "fence", numbers)


def _unfence(conn: "psycopg.Connection", numbers: list[int]) -> None:
    with conn.transaction():
        conn.execute("UPDATE minno.encryption_keys SET write_fenced_at = NULL WHERE key_number = ANY(%s)", (numbers,))
        _audit(conn, "unfence", numbers)


def _barrier(conn: "psycopg.Connection", columns: list[Column]) -> float:
    """Wait until every transaction that may have written to the token tables before the fence has
    ended: a SHARE lock is granted only then, and is released at once (nothing is counted under
    it). Returns how long the barrier took, in ms."""
    t0 = time.perf_counter()
    with conn.transaction():
        _bounded_wait(conn)
        for table in dict.fromkeys(col.qualified_table for col in columns):
            conn.execute(f"LOCK TABLE {table} IN SHARE MODE")
    return (time.perf_counter() - t0) * 1000


def _retire_now(conn: "psycopg.Connection", numbers: list[int]) -> None:
    with conn.transaction():
        _bounded_wait(conn)
        conn.execute("UPDATE minno.encryption_keys SET status = 'retired', encrypted_key = NULL, retired_at = now() "
                     "WHERE key_number = ANY(%s)", (numbers,))
        _audit(conn, "retire", numbers)


# ---------------------------------------------------------------------------------------------
# rotate


@dataclass
class RotateResult:
    status: str  # done | partial | failures | dry-run
    active: int | None = None
    old: list[int] = field(default_factory=list)
    reencrypted: dict[str, int] = field(default_factory=dict)
    plan: list[dict[str, Any]] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    retired: list[int] = field(default_factory=list)
    remaining: dict[str, int] = field(default_factory=dict)
    longest_transaction_ms: float = 0.0
    retire_ms: float = 0.0  # how long the barrier before retiring the old keys made writers wait

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.OK if self.status in ("done", "dry-run") else ExitCode.PARTIAL


def rotate(settings: "Settings", kek: crypto.MasterKey, *, batch_size: int = 1000, max_runtime: float | None = None,
           dry_run: bool = False, progress: Callable[[str, int, int], None] | None = None) -> RotateResult:
    """Rotate the data key and re-encrypt every encrypted field (see the module docstring)."""
    from minnoctl.connection import open_session

    started = time.monotonic()
    deadline = started + max_runtime if max_runtime else None
    conn = open_session(settings, "token-rotate")
    try:
        _require_core(conn)
        with keyring_lock(conn):
            ring = crypto.Keyring.load(conn, kek)  # a wrong master key stops here, before any change
            columns = encrypted_columns(conn)
            resuming = ring.active is not None and any(k.status == "decrypt_only" for k in ring.keys.values())
            if dry_run:
                # a new rotation moves every field to a new key; a resumed one, those not on its key yet
                active = ring.active.number if ring.active else None
                plan = [c for c in field_counts(conn, columns)
                        if c["key"] is not None and (not resuming or c["key"] != active)]
                return RotateResult("dry-run", active=active, plan=plan)
            if resuming:
                log.info("resuming the rotation to data key %d", ring.active_number())
            else:
                ring = _switch_active(conn, kek, ring)
            active = ring.active_number()
            result = RotateResult("done", active=active,
                                  old=[n for n, k in ring.keys.items() if k.status == "decrypt_only"])
            for col in columns:
                if not _rotate_column(conn, ring, col, batch_size, deadline, result, progress):
                    result.status = "partial"
                    _audit(conn, "rotate-partial", [active, *result.old], reencrypted=result.reencrypted)
                    return result
            # verify pass: every field decrypts (the old keys are still there to fall back on), and
            # what is left on old keys, per column (only the damaged fields, if all went well)
            _checked, failures = verify(conn, kek)
            known = {(f.column, f.row) for f in result.failures}
            result.failures += [f for f in failures if f.not_a_field]  # reported; they need no old key
            fresh = [f for f in failures if (f.column, f.row) not in known and not f.not_a_field]
            counts = _timed_counts(conn, columns, result)
            result.remaining = {c["column"]: c["fields"] for c in counts
                                if c["key"] is not None and c["key"] != result.active}
            if fresh:
                result.failures += fresh
                log.warning("the verify pass found %d field(s) that do not decrypt; the old keys are kept", len(fresh))
            else:
                _retire_unused(conn, ring, columns, batch_size, result)
            if result.failures:
                result.status = "failures"
            _audit(conn, "rotate-done" if result.status == "done" else "rotate-incomplete",
                   [active, *result.old], reencrypted=result.reencrypted, retired=result.retired,
                   failures=len(result.failures))
            return result
    finally:
        conn.close()


def _retire_unused(conn: "psycopg.Connection", ring: crypto.Keyring, columns: list[Column], batch_size: int,
                   result: RotateResult) -> None:
    """Retire the old keys no field uses, without blocking writers for more than a moment: fence
    the keys (no new field under them from now on), wait for the transactions that began before
    the fence (the barrier), re-encrypt what they wrote, then count with no lock held — nothing
    can add a field under a fenced key — and retire in a short transaction."""
    import psycopg

    old = [n for n in result.old if n not in result.retired]
    if not old:
        return
    try:
        _fence(conn, old)
        result.retire_ms = _barrier(conn, columns)
        result.longest_transaction_ms = max(result.longest_transaction_ms, result.retire_ms)
        for col in columns:  # what stale writers committed before the fence
            _rotate_column(conn, ring, col, batch_size, None, result, None)
        in_use = {c["key"] for c in _timed_counts(conn, columns, result) if c["key"] != result.active}
        retire_now = [n for n in old if n not in in_use]
        if retire_now:
            _retire_now(conn, retire_now)
            result.retired += retire_now
    except psycopg.errors.LockNotAvailable:
        log.warning(f"the token tables or the old keys' rows stayed busy for {KEY_ROW_WAIT_S} s; every field is "
                    "re-encrypted — run `minnoctl token rotate` again to retire the old keys")
        result.status = "partial"


def _timed_counts(conn: "psycopg.Connection", columns: list[Column], result: RotateResult) -> list[dict[str, Any]]:
    """field_counts, each of its window statements timed into the rotation's longest transaction
    (a read-only scan, but a snapshot held all the same)."""
    timings: list[float] = []
    out = field_counts(conn, columns, timings=timings)
    result.longest_transaction_ms = max([result.longest_transaction_ms, *timings])
    return out


def _switch_active(conn: "psycopg.Connection", kek: crypto.MasterKey, ring: crypto.Keyring) -> crypto.Keyring:
    # a pending key left by a run that stopped before the switch is used, not one more made
    new = next((k for k in ring.keys.values() if k.status == "pending" and k.key is not None), None) or \
        crypto.create_data_key(conn, kek, name=f"dek-{uuid.uuid4().hex[:12]}", status="pending")
    with key_rows_busy("the rotation did not start"), conn.transaction():
        _bounded_wait(conn)
        old = [r[0] for r in conn.execute(
            "UPDATE minno.encryption_keys SET status = 'decrypt_only', last_rotated_at = now(), "
            "rotation_count = rotation_count + 1 WHERE status = 'active' RETURNING key_number")]
        conn.execute("UPDATE minno.encryption_keys SET status = 'active', activated_at = now() WHERE key_number = %s",
                     (new.number,))
        _audit(conn, "rotate-start", [new.number, *old])
    log.info("data key %d is now active%s", new.number, f"; {old} decrypt-only" if old else "")
    return crypto.Keyring.load(conn, kek)


def _rotate_column(conn: "psycopg.Connection", ring: crypto.Keyring, col: Column, batch_size: int,
                   deadline: float | None, result: RotateResult, progress: Callable | None) -> bool:
    """Re-encrypt one column until no field uses an old key; False when the deadline stopped it."""
    active = ring.active
    assert active is not None and active.key is not None
    decrypting = ring.decrypting()
    pk, c = f'"{col.spec.pk}"', f'"{col.spec.column}"'
    hdr = header_sql(c)
    failed: set[str] = {f.row for f in result.failures if f.column == col.label}  # known damaged: not again
    # one UPDATE per batch: the new values travel as two arrays (keys, values)
    set_ref = f', "{col.spec.key_ref}" = %(ref)s::uuid' if col.spec.key_ref else ""
    update_sql = (f"UPDATE {col.qualified_table} AS t SET {c} = v.value{set_ref} "
                  f"FROM unnest(%(pks)s::{col.pk_type}[], %(values)s::text[]) AS v(pk, value) WHERE t.{pk} = v.pk")
    done = result.reencrypted.setdefault(col.label, 0)
    # Each transaction works on one window of the primary key (see _windows), so no transaction
    # scans more than a batch, however few rows still need work. A pass walks the whole table; the
    # column is done when a pass finds nothing left to change and no row it could not lock.
    # values that are not encrypted fields (plaintext from before minno/0007) are left as they are:
    # on no key, nothing to move; the verify pass reports them
    select = (f"SELECT {pk}, {c} FROM {col.qualified_table} WHERE {_in_window(col)} AND {c} IS NOT NULL "
              f"AND {hdr} IS NOT NULL AND {hdr} <> %(active)s ORDER BY {pk}")
    idle_passes = 0
    while True:
        changed_this_pass = skipped_this_pass = 0
        for args in _windows(conn, col, batch_size):
            if deadline is not None and time.monotonic() >= deadline:
                return False
            args["active"] = active.number
            t0 = time.perf_counter()
            with conn.transaction():
                conn.execute("SET LOCAL lock_timeout = '1s'")
                candidates = one(conn.execute(f"SELECT count(*) FROM ({select}) AS w", args))[0]
                rows = conn.execute(select + " FOR UPDATE SKIP LOCKED", args).fetchall() if candidates else []
                skipped_this_pass += candidates - len(rows)
                updates = []
                for row_pk, value in rows:
                    key = str(row_pk)
                    if key in failed:
                        continue
                    try:
                        plain = crypto.decrypt_field(decrypting, col.schema, col.spec.table, col.spec.column,
                                                     row_pk, value)
                    except crypto.FieldError as exc:
                        failed.add(key)
                        result.failures.append(Failure(col.label, key, exc.message))
                        continue
                    updates.append((crypto.encrypt_field(active.key, active.number, col.schema, col.spec.table,
                                                         col.spec.column, row_pk, plain), row_pk))
                if updates:
                    conn.execute(update_sql, {"pks": [p for _, p in updates], "values": [v for v, _ in updates],
                                              "ref": active.id})
            result.longest_transaction_ms = max(result.longest_transaction_ms, (time.perf_counter() - t0) * 1000)
            changed_this_pass += len(updates)
            done += len(updates)
            result.reencrypted[col.label] = done
            if progress:
                progress(col.label, done, len(updates))
        if changed_this_pass == 0 and skipped_this_pass == 0:
            return True  # a whole pass found nothing on an old key but the damaged fields
        if changed_this_pass == 0:
            # only rows other sessions hold remain: give them a moment, but not forever
            idle_passes += 1
            if idle_passes > 100:
                log.warning("%s: %d field(s) stayed locked by other sessions for 5 s; stopping (a rerun resumes)",
                            col.label, skipped_this_pass)
                return False
            time.sleep(0.05)
        else:
            idle_passes = 0


def rotate_master(conn: "psycopg.Connection", old: crypto.MasterKey, new: crypto.MasterKey) -> list[int]:
    """Re-wrap every live data key under a new master key, in one transaction, under the keyring
    lock (no rotation or retirement runs meanwhile) and a table lock that keeps any other writer of
    the keyring out: the keyring is under the old master key or the new one, never half and half,
    even killed. Data rows are not touched, so they stay byte-identical."""
    _require_core(conn)
    if old.fingerprint == new.fingerprint:
        raise UsageError("MINNO_NEW_MASTER_KEY is the same key as MINNO_MASTER_KEY")
    numbers = []
    with keyring_lock(conn), key_rows_busy("the master key was not changed"), conn.transaction():
        _bounded_wait(conn)
        crypto.lock_keyring(conn)
        masters = {r[0] for r in conn.execute("SELECT DISTINCT kek_fingerprint FROM minno.encryption_keys "
                                              "WHERE encrypted_key IS NOT NULL")}
        if masters == {new.fingerprint}:  # a rerun after a re-wrap that was done (killed before it said so)
            log.info("every data key is already wrapped by master key %s; nothing to do", new.fingerprint)
            return []
        ring = crypto.Keyring.load(conn, old)  # under the lock: the keys as they are now; a wrong key stops here
        # the active key last: while this waits for a row a writer holds, writers using the active
        # key are not held up behind it
        for number, key in sorted(ring.keys.items(), key=lambda item: (item[1].status == "active", item[0])):
            if key.key is None:
                continue  # retired: nothing to re-wrap
            conn.execute("UPDATE minno.encryption_keys SET encrypted_key = %s, kek_fingerprint = %s "
                         "WHERE key_number = %s", (crypto.wrap_dek(new, key.key, number), new.fingerprint, number))
            numbers.append(number)
        _audit(conn, "rewrap-master", numbers, old_master=old.fingerprint, new_master=new.fingerprint)
    return numbers
