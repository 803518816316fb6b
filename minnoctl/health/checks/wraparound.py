"""Counters that run out: `xid_age` (transaction ID wraparound) and `sequences`."""

from __future__ import annotations

from minnoctl.health import Check, Context, Status, Threshold, check, count_limit, level
from minnoctl.health.checks._catalog import user_schemas_sql


@check("xid_age", scope="server", order=100,
       description="transaction ID age against autovacuum_freeze_max_age (wraparound)",
       doc="oldest `datfrozenxid` age against `autovacuum_freeze_max_age`", levels="100%, 500%",
       thresholds=(Threshold("xid-age-warning", 100, "%", "oldest transaction ID age, of autovacuum_freeze_max_age"),
                   Threshold("xid-age-critical", 500, "%", "oldest transaction ID age, of autovacuum_freeze_max_age")),
       coordinator_only="each node freezes its own transaction IDs")
def xid_age(ctx: Context) -> Check:
    name, age, freeze_max = ctx.one(
        "SELECT datname, age(datfrozenxid), current_setting('autovacuum_freeze_max_age')::bigint "
        "FROM pg_database ORDER BY age(datfrozenxid) DESC LIMIT 1")
    pct = 100.0 * age / freeze_max
    warn, crit, text = ctx.pair("xid-age", "%")
    status = level(pct, warn, crit)
    value = f"{age:,} in {name} ({pct:.1f}% of autovacuum_freeze_max_age {freeze_max:,})"
    hint = "" if status == Status.OK else (f"autovacuum is not freezing {name}: look for long transactions and "
                                           "stale replication slots, then VACUUM (FREEZE) the oldest tables")
    sql = []
    if status != Status.OK and name == ctx.one("SELECT current_database()")[0]:
        for (table,) in ctx.all(
                "SELECT format('%I.%I', n.nspname, c.relname) "
                "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                f"WHERE c.relkind IN ('r', 'm') AND {user_schemas_sql()} ORDER BY age(c.relfrozenxid) DESC LIMIT 5"):
            sql.append(f"VACUUM (FREEZE, VERBOSE) {table};")
    return Check("xid_age", status, value, text, hint, sql=sql,
                 perfdata={"xid_age": (age, "", count_limit(warn, freeze_max), count_limit(crit, freeze_max))})


TYPE_MAX = {"smallint": 32767, "integer": 2147483647, "bigint": 9223372036854775807}


@check("sequences", order=110, description="sequences and integer columns near their maximum",
       doc="sequences against their maximum and the integer column they feed; integer columns from the planner's "
           "statistics", levels="80%, 95%",
       thresholds=(Threshold("sequence-warning", 80, "%", "a sequence (or the integer column it feeds) used this far"),
                   Threshold("sequence-critical", 95, "%",
                             "a sequence (or the integer column it feeds) used this far")),
       coordinator_only="the workers' own sequences and the shards' column statistics are not read")
def sequences(ctx: Context) -> Check:
    """Sequences against their own maximum and the integer column they feed (serial, identity or a
    DEFAULT nextval), and integer columns without a sequence against their type's maximum, from the
    planner's statistics (the last ANALYZE's histogram and common values: an estimate, no scan)."""
    warn, crit, text = ctx.pair("sequence", "%")
    found: list[tuple[float, str, str]] = []
    for seq, last, seq_max, column, col_type in ctx.all(
            # pg_sequences' rows and last_value, from its catalogs by oid (no name -> regclass per sequence)
            "SELECT sn.nspname || '.' || sc.relname, sv.last_value, s.seqmax, "
            "  CASE WHEN a.attname IS NOT NULL THEN format('%I.%I.%I', tn.nspname, t.relname, a.attname) END, "
            "  format_type(a.atttypid, NULL) "
            "FROM pg_sequence s JOIN pg_class sc ON sc.oid = s.seqrelid "
            "JOIN pg_namespace sn ON sn.oid = sc.relnamespace AND NOT pg_is_other_temp_schema(sn.oid) "
            "CROSS JOIN LATERAL (SELECT CASE WHEN has_sequence_privilege(sc.oid, 'SELECT,USAGE') "
            "  THEN pg_sequence_last_value(sc.oid) END AS last_value) sv "
            "LEFT JOIN pg_depend d ON d.objid = sc.oid "
            "  AND d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass "
            "  AND d.deptype IN ('a', 'i') "
            "LEFT JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid "
            "LEFT JOIN pg_class t ON t.oid = a.attrelid LEFT JOIN pg_namespace tn ON tn.oid = t.relnamespace "
            "WHERE sc.relkind = 'S' AND s.seqincrement > 0 AND sv.last_value IS NOT NULL"):
        limit = min(seq_max, TYPE_MAX.get(col_type, seq_max))
        pct = 100.0 * last / limit
        found.append((pct,
                      f"sequence {seq} at {last:,} of {limit:,}" + (f" ({column} is {col_type})" if column else ""),
                      f"ALTER TABLE ... ALTER COLUMN {column.rsplit('.', 1)[1]} TYPE bigint "
                      f"on {column.rsplit('.', 1)[0]}"
                      if column and col_type != "bigint" else f"ALTER SEQUENCE {seq} MAXVALUE ... or AS bigint"))
    for column, col_type, top in ctx.all(
            "SELECT format('%I.%I.%I', st.schemaname, st.tablename, st.attname), format_type(a.atttypid, NULL), "
            "  greatest((SELECT max(v) FROM unnest(st.histogram_bounds::text::bigint[]) v), "
            "           (SELECT max(v) FROM unnest(st.most_common_vals::text::bigint[]) v)) "
            "FROM pg_stats st JOIN pg_namespace n ON n.nspname = st.schemaname "
            "JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = st.tablename "
            "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = st.attname "
            # the schema filter on the view's own column too: pg_stats then skips the catalogs' statistics
            # before its privilege checks (a third of this check's time on a new database)
            f"WHERE a.atttypid IN ('int2'::regtype, 'int4'::regtype) AND {user_schemas_sql()} "
            f"AND {user_schemas_sql('st.schemaname')} "
            "AND pg_get_serial_sequence(format('%I.%I', st.schemaname, st.tablename), st.attname) IS NULL"):
        if top is not None and top > 0:
            limit = TYPE_MAX[col_type]
            found.append((100.0 * top / limit, f"column {column} ({col_type}) reaches {top:,} of {limit:,}",
                          f"ALTER TABLE ... ALTER COLUMN ... TYPE bigint for {column}"))
    found = sorted(((round(pct, 2), what, fix) for pct, what, fix in found), reverse=True)  # judged as shown
    top_pct = found[0][0] if found else 0.0
    status = level(top_pct, warn, crit)
    perf = {"sequence_max_pct": (top_pct, "%", warn, crit)}
    if status == Status.OK:
        value = f"{len(found)} looked at; fullest {top_pct:.2f}%" if found else "no sequence in use"
        return Check("sequences", status, value, text, perfdata=perf)
    over = [f for f in found if warn is not None and f[0] > warn]
    pct, what, fix = over[0]
    return Check("sequences", status, f"{what} ({pct:.1f}%)" + (f"; {len(over) - 1} more" if len(over) > 1 else ""),
                 text, f"widen it before it runs out: {fix}", perfdata=perf)
