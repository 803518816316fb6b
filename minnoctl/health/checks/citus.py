"""A Citus cluster, seen from its coordinator: `citus_nodes` (every node reaches every other) and
`shard_balance` (the distributed tables' shards and bytes per worker).

Both say when they do not apply, as replication_lag does on a primary: OK "skipped: not a Citus
cluster" on plain PostgreSQL (the runner learns it in the query it makes anyway: no round trip more),
and "skipped: a Citus worker" on a worker, whose shards are the coordinator's tables. The sizes, dead
rows and statistics of the Citus tables are the table checks' (tables.py), summed over the shards.
"""

from __future__ import annotations

from collections import defaultdict

from minnoctl.health import Check, Context, Status, Threshold, check, human_size, level, show
from minnoctl.health.checks._citus import skipped


@check("citus_nodes", order=25,
       description="on a Citus coordinator: every node reaches every other (citus_check_cluster_node_health)",
       doc="on a Citus coordinator: `citus_check_cluster_node_health()` (each node connects to every other) and "
           "the nodes of `pg_dist_node` that are not active; skipped without Citus",
       levels="a node that cannot reach another, or does not answer: critical; an inactive node: warning")
def citus_nodes(ctx: Context) -> Check:
    text = "every node reaches every other; every node active"
    skip = skipped(ctx, "citus_nodes", text)
    if skip:
        return skip
    nodes = ctx.all("SELECT nodename || ':' || nodeport, groupid, isactive FROM pg_dist_node "
                    "WHERE noderole = 'primary' ORDER BY groupid, nodeid")
    pairs = ctx.all("SELECT from_nodename || ':' || from_nodeport, to_nodename || ':' || to_nodeport, result "
                    "FROM citus_check_cluster_node_health()")
    inactive = [name for name, _, active in nodes if not active]
    active = [(name, group) for name, group, is_active in nodes if is_active]
    workers = sum(1 for _, group in active if group != 0)
    coordinator = "the coordinator and " if any(group == 0 for _, group in active) else ""
    # result is false where a node could not connect to another, NULL where the coordinator could not ask
    # the node itself (then it is down, or refuses the coordinator: the rows from it say nothing)
    asked = {source for source, _, ok in pairs if ok is not None}
    down = sorted({source for source, _, _ in pairs} - asked)
    cannot: dict[str, list[str]] = defaultdict(list)
    for source, target, ok in pairs:
        if source in asked and ok is not True and source != target:
            cannot[target].append(source)
    unreachable = sorted(set(cannot) | set(down))
    perf = {"citus_nodes": (len(active), "", None, None),
            "citus_unreachable": (len(unreachable), "", None, 0), "citus_inactive": (len(inactive), "", 0, None)}
    value = f"{len(active)} nodes ({coordinator}{workers} worker{'s' if workers != 1 else ''})"
    if unreachable:
        found = [f"{', '.join(sorted(set(sources)))} cannot reach {target}"
                 for target, sources in sorted(cannot.items())]
        found += [f"{node} does not answer the coordinator" for node in down if node not in cannot]
        found += [f"inactive: {', '.join(inactive)}"] if inactive else []
        return Check("citus_nodes", Status.CRITICAL, f"{value}: {'; '.join(found)}", text,
                     "a node is down or refuses the others: check its server and log, its pg_hba.conf and "
                     "citus.node_conninfo; queries touching its shards fail until it is back", perfdata=perf)
    if inactive:
        return Check("citus_nodes", Status.WARNING, f"{value}; inactive: {', '.join(inactive)}", text,
                     "an inactive node takes no queries: SELECT citus_activate_node(host, port) once it is up, or "
                     "citus_remove_node it", perfdata=perf)
    if not pairs:
        return Check("citus_nodes", Status.OK, "no nodes yet (citus_set_coordinator_host, citus_add_node)", text,
                     perfdata=perf)
    return Check("citus_nodes", Status.OK, f"{value}; each reaches every other ({len(pairs)} connections tried)",
                 text, perfdata=perf)


@check("shard_balance", order=201,
       description="on a Citus coordinator: the distributed tables' shards and bytes per worker",
       doc="on a Citus coordinator: `citus_shards` — each node's shards and bytes of the distributed tables (a "
           "distributed schema's too), against "
           "an even share of the nodes that take shards; the largest shard; skipped without Citus",
       levels="a node 50% above an even share: warning, judged from 100 MB of shards",
       thresholds=(Threshold("shard-balance-warning", 50, "%",
                             "a node's bytes of distributed shards above an even share by more"),
                   Threshold("shard-balance-min-size", 100 * 1024 ** 2, "bytes",
                             "judge the shard balance from this much distributed data")))
def shard_balance(ctx: Context) -> Check:
    pct, minimum = ctx.t("shard-balance-warning"), ctx.t("shard-balance-min-size") or 0
    text = f"warning above {show(pct, '%')} over an even share (from {show(minimum, 'bytes')} of shards)"
    skip = skipped(ctx, "shard_balance", text)
    if skip:
        return skip
    # the nodes that take shards (shouldhaveshards), and any other that holds some, with what they hold
    rows = ctx.all(
        "WITH s AS (SELECT nodename || ':' || nodeport AS node, shard_name, shard_size FROM citus_shards "
        "  WHERE citus_table_type IN ('distributed', 'schema')) "
        "SELECT n.node, count(s.shard_name), coalesce(sum(s.shard_size), 0)::bigint, "
        "  (SELECT shard_name || ' ' || shard_size FROM s WHERE s.node = n.node ORDER BY shard_size DESC LIMIT 1) "
        "FROM (SELECT nodename || ':' || nodeport AS node FROM pg_dist_node "
        "      WHERE isactive AND noderole = 'primary' AND shouldhaveshards "
        "      UNION SELECT node FROM s) n LEFT JOIN s ON s.node = n.node GROUP BY n.node ORDER BY 3 DESC, 1")
    shards = sum(r[1] for r in rows)
    if not shards:
        return Check("shard_balance", Status.OK, "no distributed tables", text,
                     perfdata={"shard_bytes_max": (0, "B", None, None), "shard_balance_over_pct": (0, "%", pct, None)})
    total = sum(r[2] for r in rows)
    even = total / len(rows)
    fullest, _, most, _ = rows[0]
    over_pct = round(100.0 * (most - even) / even, 1) if even else 0.0  # judged as shown (perfdata)
    listed = "; ".join(f"{node} {count} shards, {human_size(size)}" for node, count, size, _ in rows)
    judged = total >= minimum
    perf = {"shard_bytes_max": (most, "B", None, None),
            "shard_balance_over_pct": (over_pct, "%", pct if judged else None, None)}
    value = f"{shards} shards, {human_size(total)} on {len(rows)} nodes: {listed}"
    if not judged:
        return Check("shard_balance", Status.OK, f"{value}; too little to judge the balance (from "
                     f"{show(minimum, 'bytes')})", text, perfdata=perf)
    status = level(over_pct, pct, None)
    if status == Status.OK:
        return Check("shard_balance", status, f"{value}; the fullest {over_pct:g}% above an even share", text,
                     perfdata=perf)
    largest_name, largest_size = (rows[0][3] or " 0").rsplit(" ", 1)
    hot = int(largest_size) > (most - even)  # one shard alone is more than the node's excess
    hint = (f"one shard ({largest_name}, {human_size(int(largest_size))}) holds most of it: a hot distribution key "
            "— isolate that tenant (isolate_tenant_to_new_shard) or distribute by a column with more values"
            if hot else "shards are unevenly placed: SELECT * FROM get_rebalance_table_shards_plan(rebalance_strategy "
            ":= 'by_disk_size'); then citus_rebalance_start(rebalance_strategy := 'by_disk_size') moves them")
    return Check("shard_balance", status, f"{fullest} holds {human_size(most)} of {human_size(total)}, {over_pct:g}% "
                 f"above an even share of {human_size(even)}; {listed}", text, hint, perfdata=perf,
                 sql=[f"-- shard_balance: the largest shard on {fullest} is {largest_name} "
                      f"({human_size(int(largest_size))})",
                      "SELECT * FROM get_rebalance_table_shards_plan(rebalance_strategy := 'by_disk_size');",
                      "-- if the plan moves shards: "
                      "SELECT citus_rebalance_start(rebalance_strategy := 'by_disk_size');"])
