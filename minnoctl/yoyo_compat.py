"""Stock yoyo and minnoctl on the same database: yoyo's bookkeeping, and adopting each other's runs.

minnoctl runs the migration set itself (see minnoctl/migrate.py for why) and records it in
`minnoctl.migrations`. So that stock `yoyo list` / `yoyo apply` pointed at the module folders see
the same state, minnoctl also writes yoyo's own bookkeeping, in the same transaction as each
migration and its own record:

- the tables exactly as yoyo 9 creates them (yoyo/internalmigrations/v2.py, internal schema
  version 2): `_yoyo_migration` (migration_hash = sha256 of yoyo's id, the file stem; migration_id;
  applied_at_utc), `_yoyo_log` (one row per apply / rollback / mark) and `_yoyo_version` (one row,
  version 2), in schema `public`, where stock yoyo keeps them with a plain URL (yoyo's own lock
  table `yoyo_lock` is left to yoyo, which creates it on every run);
- a role that may not create tables in `public` (PostgreSQL 15+ for a non-owner of the database)
  or write to yoyo's tables gets one warning line per run, and its migrations run and are
  recorded by minnoctl as usual; the next run that can write them fills yoyo's rows in.

Adoption, on the next migrate / db init / migrate rollback, under the migrate lock, in one
transaction (`survey` reads what is to do without writing: --dry-run, status and verify show it
as "will be adopted", never as drift):

- ids and checksums recorded by an earlier minnoctl: an id in RENAMED_IDS is rewritten, and a
  checksum in SUPERSEDED is rewritten when the file now has exactly the checksum it was superseded
  by (the edits that made the set yoyo-readable); any other difference stays drift;
- a migration yoyo applied (in `_yoyo_migration`) that minnoctl has no record of is recorded as
  applied (not run again), with the file's current checksum: yoyo keeps no checksum, so minnoctl
  takes the file as it is;
- a migration minnoctl recorded whose yoyo row stock yoyo removed with `yoyo rollback` (its newest
  `_yoyo_log` entry is a rollback, later than minnoctl's record) was rolled back: minnoctl forgets
  its record and it is pending again, as `yoyo list` shows it (`minnoctl migrate` applies it again);
- every other applied migration without a yoyo row gets one (operation 'mark' in yoyo's log).

Returns data and logs notes; never prints.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from collections.abc import Iterable

from minnoctl.errors import MinnoctlError
from minnoctl.rows import one

if TYPE_CHECKING:
    import psycopg

    from minnoctl.migrate import Applied, MigrationFile

log = logging.getLogger("minnoctl")

SCHEMA = "public"  # where stock yoyo keeps its tables with a plain URL (no ?schema=)
MIGRATION_TABLE = f'"{SCHEMA}"."_yoyo_migration"'
LOG_TABLE = f'"{SCHEMA}"."_yoyo_log"'
VERSION_TABLE = f'"{SCHEMA}"."_yoyo_version"'
SCHEMA_VERSION = 2  # yoyo.internalmigrations: the newest internal schema of yoyo 9

# yoyo/internalmigrations/v2.py, verbatim but for the schema
YOYO_DDL = (
    f'CREATE TABLE {LOG_TABLE} ("id" VARCHAR(36), "migration_hash" VARCHAR(64), "migration_id" VARCHAR(255), '
    '"operation" VARCHAR(10), "username" VARCHAR(255), "hostname" VARCHAR(255), "comment" VARCHAR(255), '
    '"created_at_utc" TIMESTAMP, PRIMARY KEY ("id"))',
    f'CREATE TABLE {VERSION_TABLE} ("version" INT NOT NULL PRIMARY KEY, "installed_at_utc" TIMESTAMP)',
    f'CREATE TABLE {MIGRATION_TABLE} ("migration_hash" VARCHAR(64), "migration_id" VARCHAR(255), '
    '"applied_at_utc" TIMESTAMP, PRIMARY KEY ("migration_hash"))',
    f"INSERT INTO {VERSION_TABLE} VALUES ({SCHEMA_VERSION}, now() AT TIME ZONE 'UTC')",
)

# minnoctl ids renamed so that yoyo's ids (the file stems) are unique across the module folders
RENAMED_IDS = {"assistant/0004_field_key_guard": "assistant/0004_assistant_field_key_guard"}

# checksum recorded by the previous minnoctl (the files at commit 6f52152) -> the file's checksum
# since it sets its own search_path, creates/drops its schema and declares yoyo's `-- depends:`.
# A file edited again later needs a new entry (old -> new); tests/test_yoyo_compat.py checks that
# every chain ends at a file's current checksum.
SUPERSEDED = {
    "d4c4f65ed3a38c95510ca59876310d15e98d223833f413d5250ef8b266ef9247": "1c03d35d09c90d4cdb3afc32a9e64dcbf412948b5bc205a95fcb3521fc5637c2",  # minno/0001_core
    "c5ad91914221c63cf5c727e2561f413d74cf6d935ece992854571fbe50b5a7d0": "43d098fe98959622663c87c4ec0e8ae6c7950662d002d1952f2cde15653877c1",  # minno/0002_encryption_keys
    "6f22b2750f6c1fcb901ddeed1fcd7e73e4f05744dbc4308e341f92e6e9776a66": "3f05085812b8018a66a71d56eaa303d13cf3032573c46937b50e83cf14f3139b",  # minno/0003_envelope_keyring
    "04730b6b276a22f3d3d1cbaee1ca82751e7c30bf0c1238390a8e0f60696542de": "e683a718da9066d2dc9228be3bc8734363442f48d603c2852ced9be7cd4c6d4b",  # minno/0004_field_key_guard
    "8269707867df577072465fb02df298eac584c2ee219020040650a0dc6a537f3a": "0587fbbce55a5e3093621cc02715253f5ec680c9c86d4de846f11a575ff365f9",  # minno/0005_key_write_fence
    "5b08d752b4cbe833c83484d7c8c47e6165cec3d3ea1b783af953f5c107e243e0": "f2589dc5637e47618f369667b9b5dc7f731327b2b8dffdebd0c8b8ee591c1d07",  # minno/0006_key_row_share_lock
    "d6a87ab71b72bd70021a1cc0b0564c2824b655ee8405fed08d919f513c45e266": "c577c1c2ca046e565a640a9c11a7141585a61821195a49e17f7ec8a01313d907",  # chatbot/0001_conversations
    "2cd092d2918a082be9c4a07f58f9f577afeabcd6bc2e850895cf02bdd159504c": "dd24f8c8559c557f9a81566a8d95bdad624d653eddecdebf56d0a912a2545960",  # chatbot/0002_production_indexes
    "5a227351483228a12f9a1cc929f37fa18a377ddcc153b5c1c0a9c380b809b217": "d648d3bc191f80b22188ddd961c091373572e35efe6427387971bff750422022",  # chatbot/0003_archive
    "003ac3ee3816403ebaae4251ec1828debf7b865e254e83fc7e2b422fa438b9f2": "cc02ffd692b6994c97d3aadf7d079fc78c3c18cc1eed86f61aee719a97abda14",  # chatbot/0004_cleanup_indexes
    "2c81e08428b938601d8f548c6e0c0e05e449e5c3a9505ffa3f982be8f6d7bb8a": "853ed9ab26d6d4fe46e6022a0a71f796df7c797bb64da8251738b0262bc9e006",  # assistant/0001_sessions
    "71c1114e5265c5a0aa981380d3279ffe070d4c9a270dc7258e4188d2fc700558": "2c2f2b5661445a66ebf8ada39e461b4804ec70040f7cc07d831efcf361ce0b7f",  # assistant/0002_oauth_tokens
    "215dd16f7669e00e357de14619cc2441cc4657736b6fbb9866b2bee5633dc82d": "09d24f40367b79ee6325f5ddc972e19bf630a62485a77a3913c54a33a12b87e7",  # assistant/0003_user_tokens
    "5063f890c7c652391985e8c9fa49e203b44fd8b742e0559a7aa6ae5913fe2dc0": "d545747a4067fe9f206aa90bb4a6857894f7ef246f8d7bcfd87b6d670e827af6",  # assistant/0004_field_key_guard
    "9804b2c0c9f3aef0df5c102a17e582d02cd5f773a8e5963c083381854f583b7f": "ba0c6459a372cea904df61575cb6f90aa7aae3cc768c17174eba4949fae9f68b",  # supervisor/0001_initial_schema
    "71dadd45aaf0de07d5ef16d794021d602f0d42ab22832984ca6a3bb9cc7e59bb": "9406c1d36ca78742833720f0dbd2520e206dfb769a9ddd760df9f0316266c01f",  # supervisor/0002_secrets_management
    "6f41da26aee08a97493f0c7e6d9bc004267babb104e8b2f2942fcbf149e3f797": "e3e031fc27d3bd9dd67b8c6fb257af3e38f0f08be942601090682535618c16d9",  # supervisor/0003_port_allocation
    "2935600e50e9d73a5a938d9ecae2070d12fae488bfb38f7e322715bb8d888199": "b89db1a27e862eae61e5d42fe97729c88d3a455467e58bf5665a5ee3bb540a9b",  # supervisor/0004_task_timing
    "31ad99651bac4baed95fe8ed77b0658eac0daa78d3287abf6714c3d20550ed1a": "6a56fbb3aca7776b8468d3844244cb28563dbb33ca9a3c6c56ca310c084351de",  # supervisor/0005_field_key_guard
    "0bc4343c0d109a7816be8e40d40fe16f36ef9a870cce32c1bc5b906373a99941": "2aa029e4fbf4b85faf76ed491f103f998e64b8804a7411b493bbb024fbfecbbe",  # supervisor/0006_port_pool
    "f75663059cef936a7ad6dc77dc6f294dea6746a47fe2b75db510cceabf76cf08": "0229346303fa93bbd0fb8a5d6d47125469ca7f7fdda7008142cd73eca58232a5",  # knowledge/0001_learnings_index
    "23911ac5eac42eb5ee8670e48ce18d1e242425a5f7559123bb25f1c4882b1c60": "abe4f9254d52279130cbedb33c2bf3f5b0a026a68504b497327e9c98a945a4ee",  # knowledge/0002_restorable_trigger
    "80f8c9d378ca4e31ed7090901d5a99fccbace185b93748c6eaef35f085285365": "683e4b944c4d715b31e583389aa09a764cfa737c201d8d20ee3fe8d0c790fcd4",  # slackbot/0001_tables
    "53a74f374a2c0090c0dc3860caeef54a3293c4c9741ca57559f9f5c589f2f06b": "e390b0dce6dbb513accdc9a49fcb9f7abee3b266a567fadd1c09dbfa1c3740e7",  # slackbot/0002_views
    "5400461c71ad8ba3d1fd1bc19085d8a631cc65b04874e78eb1f890d66351af67": "0bed3efac0c9f581727dfa94a59ba55e637bd05c2c143f032695bdd972b634dd",  # slackbot/0003_maintenance
}


def yoyo_id(mf: "MigrationFile") -> str:
    """yoyo's id of a migration: its file stem."""
    return mf.path.name[:-len(".sql")]


def yoyo_hash(migration_id: str) -> str:
    """yoyo's migration_hash (yoyo.migrations.get_migration_hash)."""
    return hashlib.sha256(migration_id.encode("utf-8")).hexdigest()


def check_unique_stems(files: Iterable["MigrationFile"]) -> None:
    """yoyo's id is the file stem, so two folders may not hold the same one."""
    seen: dict[str, "MigrationFile"] = {}
    for mf in files:
        other = seen.setdefault(yoyo_id(mf), mf)
        if other is not mf:
            raise MinnoctlError(
                f"{other.path} and {mf.path} have the same name, and stock yoyo's id is the file name: rename "
                "one (file names are unique across all module folders)")


def current_checksum(recorded: str) -> str:
    """The checksum an earlier recorded one was superseded by (followed to its end)."""
    seen = set()
    while recorded in SUPERSEDED and recorded not in seen:
        seen.add(recorded)
        recorded = SUPERSEDED[recorded]
    return recorded


# ---------------------------------------------------------------------------------------------
# yoyo's tables


def _exists(conn: "psycopg.Connection", table: str) -> bool:
    return one(conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)))[0]


def _readable(conn: "psycopg.Connection", table: str) -> bool:
    """The table exists and this role may read it (health runs as any role)."""
    return one(conn.execute("SELECT to_regclass(%s) IS NOT NULL AND has_table_privilege(to_regclass(%s), 'SELECT')",
                            (table, table)))[0]


def tables_state(conn: "psycopg.Connection") -> str:
    """'ready' (yoyo's tables exist and this role may write them), 'creatable' (none exist and it
    may create them in public), else the reason it cannot write them (one phrase)."""
    migration, version = _exists(conn, MIGRATION_TABLE), _exists(conn, VERSION_TABLE)
    if migration and version and _exists(conn, LOG_TABLE):
        ok = one(conn.execute(
            "SELECT has_table_privilege(%s::regclass, 'INSERT, DELETE') AND has_table_privilege(%s::regclass, "
            "'INSERT')", (MIGRATION_TABLE, LOG_TABLE)))[0]
        return "ready" if ok else "this role may not write yoyo's tables in schema public"
    if migration:
        return "yoyo's tables in schema public are of an older yoyo (no _yoyo_version): run stock yoyo once"
    if one(conn.execute("SELECT to_regnamespace(%s)", (SCHEMA,)))[0] is None:
        return "this database has no schema public (where stock yoyo keeps its tables)"
    if one(conn.execute("SELECT has_schema_privilege(%s, 'CREATE')", (SCHEMA,)))[0]:
        return "creatable"
    return "this role may not create tables in schema public (PostgreSQL 15+ for a non-owner of the database)"


def prepare(conn: "psycopg.Connection") -> str | None:
    """Make sure yoyo's tables exist (in the caller's transaction): "ready" when they did, "created";
    None, with one warning line, when this role cannot write them."""
    import psycopg

    state = tables_state(conn)
    if state == "creatable":
        try:
            with conn.transaction():
                for ddl in YOYO_DDL:
                    conn.execute(ddl)
            return "created"
        except psycopg.errors.LockNotAvailable:
            raise
        except psycopg.Error as exc:  # a concurrent creator, or a privilege the check did not see
            state = f"creating them failed: {exc.diag.message_primary or exc}"
    if state == "ready":
        return state
    log.warning("stock yoyo will not see these migrations as applied: %s — grant it (GRANT CREATE ON SCHEMA "
                "public) or create yoyo's tables with stock yoyo, and the next minnoctl migrate records them", state)
    return None


def _log(conn: "psycopg.Connection", stem: str, operation: str, user: str, host: str, comment: str) -> None:
    conn.execute(
        f'INSERT INTO {LOG_TABLE} ("id", "migration_hash", "migration_id", "operation", "username", "hostname", '
        '"comment", "created_at_utc") VALUES (%s, %s, %s, %s, %s, %s, %s, now() AT TIME ZONE \'UTC\')',
        (str(uuid.uuid4()), yoyo_hash(stem), stem, operation, user[:255], host[:255], comment))


def mark(conn: "psycopg.Connection", stem: str, operation: str, user: str, host: str,
         comment: str = "minnoctl") -> None:
    """yoyo's row for one migration: written on apply / mark, deleted on rollback, and logged."""
    if operation == "rollback":
        conn.execute(f'DELETE FROM {MIGRATION_TABLE} WHERE "migration_hash" = %s', (yoyo_hash(stem),))
    else:
        conn.execute(
            f'INSERT INTO {MIGRATION_TABLE} ("migration_hash", "migration_id", "applied_at_utc") '
            "VALUES (%s, %s, now() AT TIME ZONE 'UTC') ON CONFLICT DO NOTHING", (yoyo_hash(stem), stem))
    _log(conn, stem, operation, user, host, comment)


def forget(conn: "psycopg.Connection", files: list["MigrationFile"], user: str, host: str) -> None:
    """db init --force dropped the schemas: yoyo's rows of the set go too (logged as rollbacks)."""
    if tables_state(conn) != "ready":
        return
    stems = [r[0] for r in conn.execute(
        f'DELETE FROM {MIGRATION_TABLE} WHERE "migration_hash" = ANY(%s) RETURNING "migration_id"',
        ([yoyo_hash(yoyo_id(mf)) for mf in files],)).fetchall()]
    for stem in stems:
        _log(conn, stem, "rollback", user, host, "minnoctl db init --force")


def record(conn: "psycopg.Connection", mf: "MigrationFile", operation: str, user: str, host: str) -> None:
    """Runner._record: yoyo's row, in a savepoint of the migration's transaction. A failure is one
    warning line (the migration and minnoctl's record stand); a lock timeout is the caller's retry."""
    import psycopg

    try:
        with conn.transaction():
            mark(conn, yoyo_id(mf), operation, user, host)
    except psycopg.errors.LockNotAvailable:
        raise
    except psycopg.Error as exc:
        log.warning("%s: yoyo's bookkeeping in schema public was not written (%s); stock yoyo does not see this "
                    "%s — the next minnoctl migrate records it", mf.id, exc.diag.message_primary or exc,
                    "rollback" if operation == "rollback" else "migration")


# ---------------------------------------------------------------------------------------------
# Adoption


@dataclass
class Adoption:
    renames: list[tuple[str, str]] = field(default_factory=list)  # (recorded id, id now)
    checksums: list[tuple[str, str, str]] = field(default_factory=list)  # (id, recorded, now)
    imported: list[tuple["MigrationFile", Any]] = field(default_factory=list)  # applied by yoyo: (file, when)
    rolled_back: list[tuple["MigrationFile", Any, str]] = field(default_factory=list)  # by yoyo: (file, when, who)
    unmarked: list["MigrationFile"] = field(default_factory=list)  # applied, no yoyo row (written if writable)
    yoyo_state: str = "creatable"

    def __bool__(self) -> bool:
        return bool(self.renames or self.checksums or self.imported or self.rolled_back or self.marks)

    @property
    def marks(self) -> list["MigrationFile"]:
        return self.unmarked if self.yoyo_state in ("ready", "creatable") else []

    def notes(self, done: bool) -> list[str]:
        """One line per kind of change: what was adopted (done) or will be (a read-only command)."""
        verb = "" if done else "will be "
        lines = []
        if self.renames:
            lines.append(f"{verb}adopted {len(self.renames)} migration(s) recorded under an earlier id: "
                         + ", ".join(f"{a} -> {b}" for a, b in self.renames))
        if self.checksums:
            lines.append(f"{verb}adopted the checksums of {len(self.checksums)} migration(s) as an earlier minnoctl "
                         "recorded them (the files since set their own search_path for stock yoyo)")
        if self.imported:
            lines.append(f"{verb}adopted {len(self.imported)} migration(s) applied by stock yoyo, recorded as applied "
                         "(not run again): " + ", ".join(mf.id for mf, _ in self.imported))
        if self.rolled_back:
            lines.append(f"{len(self.rolled_back)} migration(s) were rolled back by stock yoyo and are pending again"
                         f"{'' if done else ' (minnoctl will forget its record)'}: "
                         + ", ".join(mf.id for mf, _, _ in self.rolled_back))
        if self.marks:
            lines.append(f"{'recorded' if done else 'will record'} {len(self.marks)} applied migration(s) in yoyo's "
                         "bookkeeping (public._yoyo_migration)")
        return lines


def _yoyo_rows(conn: "psycopg.Connection") -> tuple[dict[str, Any], dict[str, tuple[str, Any, str]]]:
    """yoyo's applied rows {hash: applied_at}, and the newest log entry of each hash
    {hash: (operation, at, user@host)}; both empty without yoyo's tables."""
    applied: dict[str, Any] = {}
    newest: dict[str, tuple[str, Any, str]] = {}
    if _readable(conn, MIGRATION_TABLE):
        applied = dict(conn.execute(f'SELECT "migration_hash", "applied_at_utc" FROM {MIGRATION_TABLE}').fetchall())
    if _readable(conn, LOG_TABLE):
        for h, op, at, who in conn.execute(
                f'SELECT DISTINCT ON ("migration_hash") "migration_hash", "operation", "created_at_utc", '
                f'coalesce("username", \'\') || \'@\' || coalesce("hostname", \'\') FROM {LOG_TABLE} '
                'WHERE "migration_hash" IS NOT NULL ORDER BY "migration_hash", "created_at_utc" DESC'):
            newest[h] = (op, at, who)
    return applied, newest


def _utc_naive(value: Any) -> Any:
    from datetime import UTC

    return value.astimezone(UTC).replace(tzinfo=None) if getattr(value, "tzinfo", None) else value


def survey(conn: "psycopg.Connection", files: list["MigrationFile"], applied: dict[str, "Applied"]) -> Adoption:
    """What adoption would change. Reads only."""
    adoption = Adoption()
    by_id = {f.id: f for f in files}
    for a in applied.values():
        new_id = RENAMED_IDS.get(a.id, a.id)
        mf = by_id.get(new_id)
        if mf is None or (new_id != a.id and new_id in applied):
            continue
        if new_id != a.id:
            adoption.renames.append((a.id, new_id))
        if a.checksum != mf.checksum and current_checksum(a.checksum) == mf.checksum:
            adoption.checksums.append((new_id, a.checksum, mf.checksum))
    recorded = {RENAMED_IDS.get(i, i): a for i, a in applied.items()}
    yoyo_applied, newest = _yoyo_rows(conn)
    adoption.yoyo_state = tables_state(conn)
    for mf in files:
        h = yoyo_hash(yoyo_id(mf))
        rec = recorded.get(mf.id)
        if rec is None:
            if h in yoyo_applied:
                adoption.imported.append((mf, yoyo_applied[h]))
            continue
        if h in yoyo_applied:
            continue
        op, at, who = newest.get(h, (None, None, ""))
        if op == "rollback" and at is not None and at > _utc_naive(rec.applied_at):
            adoption.rolled_back.append((mf, at, who))
        else:
            adoption.unmarked.append(mf)
    return adoption


def effective(applied: dict[str, "Applied"], adoption: Adoption, files: list["MigrationFile"]) -> dict[str, "Applied"]:
    """The record as it will be once adopted, in application order."""
    from dataclasses import replace

    from minnoctl.migrate import Applied

    renamed = dict(adoption.renames)
    sums = {i: new for i, _, new in adoption.checksums}
    gone = {mf.id for mf, _, _ in adoption.rolled_back}
    out: dict[str, Applied] = {}
    for a in applied.values():
        new_id = renamed.get(a.id, a.id)
        if new_id in gone:
            continue
        out[new_id] = replace(a, id=new_id, checksum=sums.get(new_id, a.checksum))
    last = max((a.seq for a in applied.values()), default=0)
    for n, (mf, at) in enumerate(adoption.imported, 1):
        out[mf.id] = Applied(mf.id, mf.module, mf.checksum, at, "yoyo", "", last + n)
    return out


def adopt(conn: "psycopg.Connection", adoption: Adoption, bookkeeping: str, user: str, host: str) -> list[str]:
    """Write the adoption (in the caller's transaction); returns its notes."""
    for old, new in adoption.renames:
        conn.execute(f"UPDATE {bookkeeping}.migrations SET id = %s WHERE id = %s", (new, old))
    for mid, old, new in adoption.checksums:
        conn.execute(f"UPDATE {bookkeeping}.migrations SET checksum = %s WHERE id = %s AND checksum = %s",
                     (new, mid, old))
    for mf, _, who in reversed(adoption.rolled_back):
        from minnoctl import drift

        conn.execute(f"DELETE FROM {bookkeeping}.migrations WHERE id = %s", (mf.id,))
        _minnoctl_log(conn, bookkeeping, mf, "rollback", who)
        drift.record(conn, mf.id, mf.module, "rollback")  # the schema as yoyo's rollback left it
    for mf, _ in adoption.imported:  # in set order: a valid order to roll them back in reverse
        conn.execute(f"INSERT INTO {bookkeeping}.migrations (id, module, checksum, applied_by, applied_host) "
                     "VALUES (%s, %s, %s, 'yoyo', '')", (mf.id, mf.module, mf.checksum))
        _minnoctl_log(conn, bookkeeping, mf, "apply", "yoyo@")
    from minnoctl import drift

    for module in dict.fromkeys(mf.module for mf, _ in adoption.imported):  # the schema as yoyo's runs left it
        drift.record(conn, [mf.id for mf, _ in adoption.imported if mf.module == module][-1], module, "apply")
    if adoption.marks and prepare(conn):
        for mf in adoption.marks:
            mark(conn, yoyo_id(mf), "mark", user, host, "minnoctl: applied by minnoctl")
    elif adoption.unmarked and not adoption.marks:
        log.warning("stock yoyo does not see %d applied migration(s) as applied: %s — grant it (GRANT CREATE ON "
                    "SCHEMA public) and run minnoctl migrate again", len(adoption.unmarked), adoption.yoyo_state)
    return adoption.notes(done=True)


def _minnoctl_log(conn: "psycopg.Connection", bookkeeping: str, mf: "MigrationFile", operation: str,
                  who: str) -> None:
    user, _, host = who.partition("@")
    conn.execute(f"INSERT INTO {bookkeeping}.migration_log (migration_id, operation, checksum, by_user, host, "
                 "duration_ms) VALUES (%s, %s, %s, %s, %s, 0)", (mf.id, operation, mf.checksum,
                                                                  f"{user or 'yoyo'} (stock yoyo)", host))
