"""What the checks read of a Citus cluster beyond the coordinator (a helper of this package, not a check).

The runner tells a Citus node apart in the query it makes anyway (ctx.citus: "coordinator", "worker",
or "" on plain PostgreSQL); nothing here runs without it. Every node is asked at once, in one
round trip of the coordinator's: run_command_on_all_nodes sends one statement to each node in
parallel (a node that fails becomes a row of its own, named in the check's value). Tables are named
by schema and name on every node — an OID is one node's — and the shards of a table are found from
pg_dist_shard, which every node has (Citus 11's metadata sync), never from a list of tables.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

from minnoctl.health import Check, Context, Status

NOT_CITUS = "skipped: not a Citus cluster"
ON_A_WORKER = "skipped: a Citus worker (its shards are the coordinator's tables): run health on the coordinator"


def skipped(ctx: Context, name: str, threshold: str = "") -> Check | None:
    """The check of the cluster where it does not apply: plain PostgreSQL, or a worker."""
    if not ctx.citus:
        return Check(name, Status.OK, NOT_CITUS, threshold)
    if ctx.citus == "worker":
        return Check(name, Status.OK, ON_A_WORKER, threshold)
    return None


def on_every_node(ctx: Context, sql: str) -> tuple[dict[str, str], dict[str, str]]:
    """`sql` (one value) on every node of the cluster, the coordinator included: ({node: result},
    {node: error}), a node named host:port."""
    rows = ctx.all(
        "SELECT coalesce(n.nodename || ':' || n.nodeport, 'node ' || r.nodeid), r.success, r.result "
        "FROM run_command_on_all_nodes(%s, give_warning_for_connection_errors => true) r "
        "LEFT JOIN pg_dist_node n ON n.nodeid = r.nodeid ORDER BY 1", (sql,))
    return ({node: result for node, ok, result in rows if ok},
            {node: (result or "no answer").splitlines()[0] for node, ok, result in rows if not ok})


def failed_nodes(errors: dict[str, str]) -> str:
    """The value's note of the nodes that did not answer (empty when all did)."""
    if not errors:
        return ""
    return "; could not ask " + ", ".join(f"{node} ({error})" for node, error in sorted(errors.items()))


@dataclass
class ShardStats:
    """A Citus table's pg_stat_user_tables, summed over its shards on every node."""

    shards: int = 0
    dead: int = 0
    live: int = 0
    changed: int = 0  # n_mod_since_analyze
    vacuumed: dt.datetime | None = None  # the most recent of any shard's
    analyzed: dt.datetime | None = None
    nodes: set[str] = field(default_factory=set)


# on each node: its shards' statistics, summed per table (named as on every node), as one JSON array
SHARD_STATS_SQL = (
    "SELECT coalesce(json_agg(json_build_array(t, shards, dead, live, changed, vacuumed, analyzed)), '[]') FROM ("
    " SELECT format('%I.%I', n.nspname, c.relname) AS t, count(*) AS shards, sum(st.n_dead_tup) AS dead,"
    "  sum(st.n_live_tup) AS live, sum(st.n_mod_since_analyze) AS changed,"
    "  max(greatest(st.last_autovacuum, st.last_vacuum)) AS vacuumed,"
    "  max(greatest(st.last_autoanalyze, st.last_analyze)) AS analyzed"
    " FROM pg_dist_shard s JOIN pg_class c ON c.oid = s.logicalrelid"
    " JOIN pg_namespace n ON n.oid = c.relnamespace"
    " JOIN pg_stat_user_tables st ON st.relid = to_regclass(shard_name(s.logicalrelid, s.shardid))"
    " GROUP BY 1) per_table")


def shard_stats(ctx: Context) -> tuple[dict[str, ShardStats], dict[str, str]]:
    """Each Citus table's shard statistics over the cluster, and the nodes that did not answer; asked
    once per report (dead_tuples and vacuum_analyze share it)."""
    if "citus_shard_stats" not in ctx.memo:
        answers, errors = on_every_node(ctx, SHARD_STATS_SQL)
        tables: dict[str, ShardStats] = {}
        for node, text in answers.items():
            for name, shards, dead, live, changed, vacuumed, analyzed in json.loads(text):
                s = tables.setdefault(name, ShardStats())
                s.shards += shards
                s.dead += int(dead or 0)
                s.live += int(live or 0)
                s.changed += int(changed or 0)
                s.vacuumed = _latest(s.vacuumed, vacuumed)
                s.analyzed = _latest(s.analyzed, analyzed)
                s.nodes.add(node)
        ctx.memo["citus_shard_stats"] = (tables, errors)
    result: tuple[dict[str, ShardStats], dict[str, str]] = ctx.memo["citus_shard_stats"]
    return result


def _latest(known: dt.datetime | None, text: Any) -> dt.datetime | None:
    if not text:
        return known
    when = dt.datetime.fromisoformat(text)
    return when if known is None or when > known else known


def local_only_sql(relid: str) -> str:
    """A condition keeping `relid` to the tables Citus does not know (the coordinator's shells of its
    tables hold no rows: their shards' figures come from shard_stats)."""
    return f"{relid} NOT IN (SELECT logicalrelid FROM pg_dist_partition)"
