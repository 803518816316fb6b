"""Citus: a module's distribution plan, and laying the schema out on a coordinator by it.

Each module folder may hold `distribution.toml` (format: migrations/README.md, "Distribution"): its
large per-tenant tables distributed by their tenant key and co-located with the table that key
points at, its small shared tables as reference tables (a copy on every node), and the constraint
changes distribution needs (a distributed table's primary key must hold its distribution column; a
foreign key into a distributed table must come from a table co-located with it). On a Citus
coordinator `db init` and `migrate` apply the plans after their migrations (`apply`), so tables a later
migration creates follow the plan too; DDL on tables already distributed is propagated by Citus
itself. On plain PostgreSQL nothing here runs beyond one catalog probe (`cluster`).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from minnoctl import modules
from minnoctl.errors import ConfigError, MigrationFailed

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)

PLAN_FILE = "distribution.toml"

# A transaction that writes reference tables and distributed ones (TRUNCATE of both, then INSERTs;
# COPY into a table whose foreign keys point at reference tables) must use one connection per worker,
# or Citus deadlocks it against itself ("involved in a distributed deadlock"). On plain PostgreSQL the
# setting is an unused placeholder variable: no probe is needed to send it.
CITUS_ONE_CONNECTION = "SET LOCAL citus.multi_shard_modify_mode TO 'sequential'"
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class Distributed:
    table: str  # in the module's schema
    column: str  # the distribution column: the tenant key
    colocate_with: str | None = None  # a table distributed earlier in the plan, else a group of its own
    primary_key: tuple[str, ...] = ()  # the primary key it needs on a cluster (it must hold `column`)
    why: str = ""


@dataclass(frozen=True)
class DroppedConstraint:
    table: str
    name: str
    why: str


@dataclass(frozen=True)
class Plan:
    module: str
    schema: str
    reference: tuple[str, ...] = ()
    # on the coordinator only, plain PostgreSQL tables; Citus takes one into its metadata (a
    # "Citus-managed local table") only when a foreign key ties it to a reference table
    local: tuple[str, ...] = ()
    distributed: tuple[Distributed, ...] = ()
    drop_constraints: tuple[DroppedConstraint, ...] = ()
    # files of the module folder run after the layout: the same function or view, written so Citus
    # can plan it (CREATE OR REPLACE; same name, columns and results)
    cluster_sql: tuple[tuple[str, str], ...] = ()

    def tables(self) -> list[str]:
        return list(self.reference) + list(self.local) + [d.table for d in self.distributed]


_PLAN_FIELDS = {"reference", "local", "distributed", "drop_constraint", "cluster_sql"}
_FILE = re.compile(r"^[a-z0-9_-]+(/[a-z0-9_-]+)*\.sql$")
_DIST_FIELDS = {"table", "column", "colocate_with", "primary_key", "why"}
_DROP_FIELDS = {"table", "name", "why"}


def read_plan(module: modules.Module) -> Plan | None:
    """The module's plan, or None when its folder has no distribution.toml (its tables then stay on
    the coordinator). A mistake is one ConfigError line naming the file and the field."""
    import tomllib

    if module.folder is None:
        return None
    path = module.folder / PLAN_FILE
    if not path.is_file():
        return None
    where = f"migrations/{module.name}/{PLAN_FILE}"
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: cannot be read: {exc}") from None
    entry = modules._Entry(where, doc)
    entry.unknown(_PLAN_FIELDS)
    reference = entry.names("reference", _NAME)
    local = entry.names("local", _NAME)
    twice = sorted(set(reference) & set(local))
    if twice:
        raise entry.fail("local", f"names {twice[0]!r}, which reference names too")
    distributed: list[Distributed] = []
    seen: set[str] = set(reference) | set(local)
    for d in entry.tables("distributed"):
        d.unknown(_DIST_FIELDS)
        table, column = d.text("table", pattern=_NAME), d.text("column", pattern=_NAME)
        if table in seen:
            raise d.fail("table", f"{table!r} is named twice in the plan")
        colocate = d.text("colocate_with", required=False, pattern=_NAME)
        if colocate is not None and colocate not in {x.table for x in distributed}:
            raise d.fail("colocate_with", f"{colocate!r} is not a table distributed earlier in this plan")
        pk = d.names("primary_key", _NAME)
        if pk and column not in pk:
            raise d.fail("primary_key", f"must hold the distribution column {column!r}")
        seen.add(table)
        distributed.append(Distributed(table, column, colocate, pk, d.text("why", required=False) or ""))
    dropped = []
    for c in entry.tables("drop_constraint"):
        c.unknown(_DROP_FIELDS)
        dropped.append(DroppedConstraint(c.text("table", pattern=_NAME), c.text("name", pattern=_NAME),
                                         c.text("why")))
    files = []
    for name in entry.names("cluster_sql", _FILE):
        try:
            files.append((name, (module.folder / name).read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError) as exc:
            raise entry.fail("cluster_sql", f"names {name!r}, which cannot be read: {exc}") from None
    return Plan(module.name, module.schema, reference, local, tuple(distributed), tuple(dropped), tuple(files))


# ---------------------------------------------------------------------------------------------
# The cluster


@dataclass(frozen=True)
class Cluster:
    """What a database says about Citus: installed, a coordinator, and the nodes that hold shards."""

    version: str
    coordinator: bool
    shard_nodes: int  # active primary nodes that may hold shards (workers, and a coordinator told to)

    @property
    def distributes(self) -> bool:
        return self.coordinator and self.shard_nodes > 0


def cluster(conn: "psycopg.Connection") -> Cluster | None:
    """None on plain PostgreSQL (one catalog read); else the Citus facts of this database."""
    row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'citus'").fetchone()
    if row is None:
        return None
    coordinator, nodes = conn.execute(
        "SELECT citus_is_coordinator(), (SELECT count(*) FROM pg_dist_node "
        "WHERE isactive AND noderole = 'primary' AND shouldhaveshards)").fetchone() or (False, 0)
    return Cluster(str(row[0]), bool(coordinator), int(nodes))


class DistributionError(MigrationFailed):
    """The schema cannot be laid out on the cluster as the plans say (the layout is one transaction:
    none of it happened; the migrations before it stay applied, and running it again resumes)."""


def layout(conn: "psycopg.Connection", schemas: list[str]) -> dict[str, dict[str, Any]]:
    """How the tables of `schemas` are laid out now: {"schema.table": {"kind": distributed | reference |
    local, "column", "colocation"}}; a table Citus does not manage is absent."""
    rows = conn.execute(
        "SELECT n.nspname || '.' || c.relname, p.partmethod, p.repmodel, p.colocationid, "
        "CASE WHEN p.partmethod = 'h' THEN column_to_column_name(p.logicalrelid, p.partkey) END "
        "FROM pg_dist_partition p JOIN pg_class c ON c.oid = p.logicalrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = ANY(%s)", (schemas,)).fetchall()
    out: dict[str, dict[str, Any]] = {}
    for name, method, repmodel, colocation, column in rows:
        kind = "distributed" if method == "h" else "reference" if repmodel == "t" else "local"
        out[name] = {"kind": kind, "column": column, "colocation": colocation}
    return out


@dataclass
class Applied:
    reference: list[str] = field(default_factory=list)
    distributed: list[str] = field(default_factory=list)
    constraints: list[str] = field(default_factory=list)
    unplanned: list[str] = field(default_factory=list)  # tables of a planned module the plan does not name
    kinds: dict[str, int] = field(default_factory=dict)  # the layout afterwards: tables per kind

    @property
    def changed(self) -> bool:
        return bool(self.reference or self.distributed or self.constraints)


def _existing(conn: "psycopg.Connection", schema: str) -> set[str]:
    return {r[0] for r in conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND NOT c.relispartition", (schema,))}


def _constraint(conn: "psycopg.Connection", schema: str, table: str, name: str) -> str | None:
    row = conn.execute(
        "SELECT pg_get_constraintdef(c.oid) FROM pg_constraint c JOIN pg_class r ON r.oid = c.conrelid "
        "JOIN pg_namespace n ON n.oid = r.relnamespace WHERE n.nspname = %s AND r.relname = %s AND c.conname = %s",
        (schema, table, name)).fetchone()
    return None if row is None else str(row[0])


def _primary_key(conn: "psycopg.Connection", schema: str, table: str) -> tuple[str | None, tuple[str, ...]]:
    row = conn.execute(
        "SELECT c.conname, array(SELECT a.attname FROM unnest(c.conkey) WITH ORDINALITY k(attnum, i) "
        "JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum ORDER BY k.i) "
        "FROM pg_constraint c JOIN pg_class r ON r.oid = c.conrelid JOIN pg_namespace n ON n.oid = r.relnamespace "
        "WHERE n.nspname = %s AND r.relname = %s AND c.contype = 'p'", (schema, table)).fetchone()
    return (None, ()) if row is None else (str(row[0]), tuple(row[1]))


def _foreign_keys(conn: "psycopg.Connection", tables: list[str]) -> list[tuple[str, str, str]]:
    """The foreign keys from or to any of `tables` ("schema.table"): (table, name, definition)."""
    return [(str(r[0]), str(r[1]), str(r[2])) for r in conn.execute(
        "SELECT c.conrelid::regclass::text, c.conname, pg_get_constraintdef(c.oid) FROM pg_constraint c "
        "WHERE c.contype = 'f' AND (c.conrelid = ANY(%(t)s::regclass[]) OR c.confrelid = ANY(%(t)s::regclass[])) "
        "ORDER BY c.oid", {"t": tables})]


def apply(conn: "psycopg.Connection", installed: list[modules.Module]) -> Applied:
    """Lay out the installed modules' tables on the cluster by their plans, in one transaction: the
    constraint changes while the tables are still plain ones (the foreign keys from or to a table about
    to be distributed are set aside: Citus refuses a key between a distributed table and one that is not
    yet), then the reference tables (parents first, in plan order), then the distributed ones (each
    co-location group's first table first), then the keys set aside again, under their own names.
    What is laid out already is left as it is, so a second run changes nothing."""
    from psycopg import errors, sql

    plans = [p for p in (read_plan(m) for m in installed) if p is not None]
    done = Applied()
    if not plans:
        return done
    now = layout(conn, [p.schema for p in plans])
    existing = {p.module: _existing(conn, p.schema) for p in plans}

    def qualified(plan: Plan, table: str) -> sql.Composable:
        return sql.Identifier(plan.schema, table)

    def laid_out(plan: Plan, table: str, kind: str) -> bool:
        return now.get(f"{plan.schema}.{table}", {}).get("kind") == kind

    try:
        with conn.transaction():
            # triggers of these tables (updated_at, the key guards) run on the shards; they only touch
            # their own row or co-located rows, which is what Citus calls unsafe to check for us
            conn.execute("SET LOCAL citus.enable_unsafe_triggers TO on")
            conn.execute("SET LOCAL citus.multi_shard_modify_mode TO 'sequential'")
            for plan in plans:
                for drop in plan.drop_constraints:
                    if drop.table in existing[plan.module] and _constraint(conn, plan.schema, drop.table, drop.name):
                        conn.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(
                            qualified(plan, drop.table), sql.Identifier(drop.name)))
                        done.constraints.append(f"{plan.schema}.{drop.table}: dropped {drop.name} ({drop.why})")
                for d in plan.distributed:
                    if not d.primary_key or d.table not in existing[plan.module]:
                        continue
                    name, columns = _primary_key(conn, plan.schema, d.table)
                    if columns == d.primary_key:
                        continue
                    name = name or f"{d.table}_pkey"
                    if columns:
                        conn.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(
                            qualified(plan, d.table), sql.Identifier(name)))
                    conn.execute(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} PRIMARY KEY ({})").format(
                        qualified(plan, d.table), sql.Identifier(name),
                        sql.SQL(", ").join(sql.Identifier(c) for c in d.primary_key)))
                    done.constraints.append(f"{plan.schema}.{d.table}: primary key ({', '.join(d.primary_key)})")
            pending = [f"{p.schema}.{d.table}" for p in plans for d in p.distributed
                       if d.table in existing[p.module] and not laid_out(p, d.table, "distributed")]
            aside = _foreign_keys(conn, pending) if pending else []
            for table, name, _ in aside:
                conn.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(
                    sql.SQL(table), sql.Identifier(name)))
            for plan in plans:
                for table in plan.reference:
                    if table in existing[plan.module] and not laid_out(plan, table, "reference"):
                        conn.execute("SELECT create_reference_table(%s::regclass)", (f"{plan.schema}.{table}",))
                        done.reference.append(f"{plan.schema}.{table}")
            for plan in plans:
                for d in plan.distributed:
                    if d.table not in existing[plan.module] or laid_out(plan, d.table, "distributed"):
                        continue
                    colocate = f"{plan.schema}.{d.colocate_with}" if d.colocate_with else "none"
                    conn.execute("SELECT create_distributed_table(%s::regclass, %s, colocate_with => %s)",
                                 (f"{plan.schema}.{d.table}", d.column, colocate))
                    done.distributed.append(f"{plan.schema}.{d.table}")
            for table, name, definition in aside:
                conn.execute(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
                    sql.SQL(table), sql.Identifier(name), sql.SQL(definition)))
            for plan in plans:
                if any(d.table in existing[plan.module] for d in plan.distributed):
                    for _, text in plan.cluster_sql:
                        conn.execute(text.encode())  # one statement, no parameters
    except errors.Error as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DistributionError(f"could not distribute the schema on this Citus cluster: {first} "
                                "(no table was distributed; the migrations stay applied; run "
                                "`minnoctl db init --distributed` "
                                "again once it is fixed)") from None
    for plan in plans:
        named = set(plan.tables())
        done.unplanned += sorted(f"{plan.schema}.{t}" for t in existing[plan.module] - named)
    if done.changed:
        for entry in layout(conn, [p.schema for p in plans]).values():
            done.kinds[entry["kind"]] = done.kinds.get(entry["kind"], 0) + 1
    return done
