"""Indexes: `invalid_indexes`, `unused_indexes`, `duplicate_indexes` and `index_bloat`. The indexes
the migration set itself creates are the spec's: listed as information, never proposed for dropping."""

from __future__ import annotations

import math
import re

from minnoctl.health import Check, Context, Status, Threshold, check, human_size, level, show
from minnoctl.health.checks._catalog import user_schemas_sql


@check("invalid_indexes", order=120, description="indexes left invalid by a failed CREATE INDEX CONCURRENTLY",
       doc="indexes left invalid by a failed `CREATE INDEX CONCURRENTLY`", levels="warning; a unique one: critical",
       coordinator_only="the shards' indexes are on the workers")
def invalid_indexes(ctx: Context) -> Check:
    rows = ctx.all(
        "SELECT format('%I.%I', n.nspname, c.relname), i.indrelid::regclass::text, i.indisunique FROM pg_index i "
        "JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        f"WHERE NOT i.indisvalid AND {user_schemas_sql()} "
        "AND i.indexrelid NOT IN (SELECT index_relid FROM pg_stat_progress_create_index WHERE index_relid <> 0) "
        "ORDER BY 1")
    if not rows:
        return Check("invalid_indexes", Status.OK, "none", "none")
    unique = [r for r in rows if r[2]]
    status = Status.CRITICAL if unique else Status.WARNING
    names = ", ".join(f"{r[0]}{' (unique)' if r[2] else ''}" for r in rows)
    hint = ("left by a failed CREATE INDEX CONCURRENTLY: queries do not use it"
            + ("; a unique one does not enforce uniqueness — fix the duplicate rows first" if unique else "")
            + "; rebuild it (--hints)")
    sql = [f"REINDEX INDEX CONCURRENTLY {r[0]};" + ("  -- unique: remove the duplicate rows first" if r[2] else "")
           for r in rows]
    return Check("invalid_indexes", status, f"{len(rows)} invalid: {names}", "none", hint, sql=sql,
                 perfdata={"invalid_indexes": (len(rows), "", None, None)})


@check("unused_indexes", order=130, description="indexes never scanned (warning)",
       doc="non-unique indexes never scanned since the statistics reset (the spec's own, which minnoctl's "
           "migrations create, are counted as information, never proposed for dropping)", levels="warning, from 1 MB",
       thresholds=(Threshold("unused-index-size", 1024 * 1024, "bytes",
                             "report an index never scanned from this size"),),
       coordinator_only="the shards' index scans are counted on the workers")
def unused_indexes(ctx: Context) -> Check:
    size = ctx.t("unused-index-size")
    text = f"never scanned, from {show(size, 'bytes')}" if size is not None else "off"
    if size is None:
        return Check("unused_indexes", Status.OK, "not checked", text)
    rows = ctx.all(  # each index's size read once (a file lookup per index: the cost of this check)
        "SELECT name, tbl, bytes FROM (SELECT s.schemaname || '.' || s.indexrelname AS name, "
        "  s.schemaname || '.' || s.relname AS tbl, pg_relation_size(s.indexrelid) AS bytes "
        "  FROM pg_stat_user_indexes s JOIN pg_index i ON i.indexrelid = s.indexrelid "
        "  WHERE s.idx_scan = 0 AND NOT i.indisunique AND NOT i.indisprimary AND i.indisvalid "
        "  AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = s.indexrelid)) unused "
        "WHERE bytes >= %s ORDER BY 3 DESC", (int(size),))
    since = ctx.one("SELECT stats_reset FROM pg_stat_database WHERE datname = current_database()")[0]
    since_text = f"since {since:%Y-%m-%d %H:%M}" if since else "since the statistics began"
    # an index minnoctl's migrations create is the schema: "unused" is information, never a DROP
    spec = _spec_ones(ctx, [r[0] for r in rows])
    note = f"; {len(spec)} more the spec defines, never scanned (kept: they are the schema)" if spec else ""
    rows = [r for r in rows if r[0] not in spec]
    if not rows:
        return Check("unused_indexes", Status.OK, "none" + note, text)
    total = sum(r[2] for r in rows)
    names = ", ".join(f"{r[0]} ({human_size(r[2])})" for r in rows[:3]) + (
        f" and {len(rows) - 3} more (--hints lists them)" if len(rows) > 3 else "")
    return Check("unused_indexes", Status.WARNING, f"{len(rows)} never scanned {since_text}, {human_size(total)}: "
                 f"{names}{note}", text,
                 "they cost writes and space; scans on standbys do not count here — drop the ones "
                 "no query needs, in a migration",
                 sql=[f"-- unused_indexes: {r[0]} on {r[1]} ({human_size(r[2])}) has no scans {since_text}; "
                      f"if no query needs it: DROP INDEX CONCURRENTLY {r[0]};" for r in rows],
                 perfdata={"unused_indexes": (len(rows), "", None, None)})


def _spec_index_names(ctx: Context) -> set[str]:
    """Index names the migration set itself creates (the spec's own; kept even where redundant)."""
    pattern = re.compile(r"CREATE\s+(?:UNIQUE\s+)?INDEX\s+(?:CONCURRENTLY\s+)?(?:IF\s+NOT\s+EXISTS\s+)?\"?(\w+)",
                         re.IGNORECASE)
    from minnoctl.health.runner import set_memo

    return set_memo("spec_index_names", lambda files: {name for f in files for name in pattern.findall(f.sql())})


def _spec_ones(ctx: Context, qualified: list[str]) -> set[str]:
    """Of `schema.index` names, those the migration set creates in a module's schema."""
    from minnoctl import modules

    if not qualified:
        return set()
    ours, spec = {m.schema for m in modules.MODULES}, _spec_index_names(ctx)
    return {q for q in qualified if q.split(".", 1)[0] in ours and q.split(".", 1)[1] in spec}


@check("duplicate_indexes", order=140, description="indexes covered by another index (warning)",
       doc="an index whose columns lead another of the same kind (the spec's own are listed, not warned about)",
       levels="warning")
def duplicate_indexes(ctx: Context) -> Check:
    """An index whose columns lead another index of the same kind on the same table (PgHero's rule)."""
    rows = ctx.all(
        "SELECT ns.nspname, ca.relname, ns.nspname || '.' || cb.relname, a.indrelid::regclass::text "
        "FROM pg_index a JOIN pg_index b ON a.indrelid = b.indrelid AND a.indexrelid <> b.indexrelid "
        "JOIN pg_class ca ON ca.oid = a.indexrelid JOIN pg_class cb ON cb.oid = b.indexrelid "
        "JOIN pg_namespace ns ON ns.oid = ca.relnamespace "
        "WHERE ca.relam = cb.relam AND a.indisvalid AND b.indisvalid AND NOT a.indisunique "
        "AND a.indexprs IS NULL AND b.indexprs IS NULL "
        "AND (b.indkey::text || ' ') LIKE (a.indkey::text || ' %') "
        "AND (b.indclass::text || ' ') LIKE (a.indclass::text || ' %') "
        "AND coalesce(pg_get_expr(a.indpred, a.indrelid), '') = coalesce(pg_get_expr(b.indpred, b.indrelid), '') "
        "AND (a.indnatts < b.indnatts OR b.indisunique OR a.indexrelid > b.indexrelid) "  # one of two twins
        f"AND {user_schemas_sql('ns.nspname')} ORDER BY 1, 2")
    from minnoctl import modules

    ours = {m.schema for m in modules.MODULES}
    spec = _spec_index_names(ctx) if rows else set()
    known = [r for r in rows if r[0] in ours and r[1] in spec]
    extra = [r for r in rows if r not in known]
    note = f"; {len(known)} more the spec itself defines (kept)" if known else ""
    if not extra:
        return Check("duplicate_indexes", Status.OK, "none" + note, "none")
    names = ", ".join(f"{r[0]}.{r[1]} (covered by {r[2]})" for r in extra[:3]) + (
        f" and {len(extra) - 3} more (--hints lists them)" if len(extra) > 3 else "")
    return Check("duplicate_indexes", Status.WARNING, f"{len(extra)}: {names}{note}", "none",
                 "the covering index serves the same lookups: drop the covered one in a migration",
                 sql=[f"-- duplicate_indexes: {r[0]}.{r[1]} is covered by {r[2]}: DROP INDEX CONCURRENTLY "
                      f"{r[0]}.{r[1]};" for r in extra],
                 perfdata={"duplicate_indexes": (len(extra), "", None, None)})


@check("index_bloat", order=150, description="btree indexes mostly empty pages, estimated (warning, REINDEX)",
       doc="btree indexes that are mostly empty pages, estimated from `pg_class` and `pg_stats` (like check_postgres' "
           "bloat query; no scan, no extension; a table never analyzed is not judged); `--hints` gives `REINDEX INDEX "
           "CONCURRENTLY`", levels="warning above 50% free, from 10 MB",
       thresholds=(Threshold("index-bloat-warning", 50, "%",
                             "estimated free space of a btree index (REINDEX reclaims it)"),
                   Threshold("index-bloat-min-size", 10 * 1024 ** 2, "bytes",
                             "judge index bloat from this index size")),
       coordinator_only="the shards' indexes are on the workers")
def index_bloat(ctx: Context) -> Check:
    """Free space in btree indexes, estimated from the catalog and the planner's statistics (the
    index's pages against the pages its rows need: ioguix's / check_postgres' estimate, no scan and
    no extension). An index whose table was never analyzed is not judged."""
    pct, minimum = ctx.t("index-bloat-warning"), ctx.t("index-bloat-min-size") or 0
    text = f"warning above {show(pct, '%')} estimated free space (from {show(minimum, 'bytes')})"
    rows = ctx.all(
        "SELECT format('%%I.%%I', n.nspname, ci.relname), ci.relpages::bigint, ci.reltuples::float8, "
        "  pg_relation_size(ci.oid), current_setting('block_size')::int, "
        "  coalesce((SELECT split_part(o, '=', 2)::int FROM unnest(ci.reloptions) o WHERE o LIKE 'fillfactor=%%'), "
        "           90), "
        "  st.width, st.with_stats, i.indnatts, st.nulls "
        "FROM pg_index i JOIN pg_class ci ON ci.oid = i.indexrelid JOIN pg_class ct ON ct.oid = i.indrelid "
        "JOIN pg_namespace n ON n.oid = ci.relnamespace JOIN pg_namespace tn ON tn.oid = ct.relnamespace "
        "JOIN pg_am am ON am.oid = ci.relam "
        "CROSS JOIN LATERAL (SELECT sum((1 - s.null_frac) * s.avg_width)::float8 AS width, count(*) AS with_stats, "
        "  bool_or(s.null_frac > 0) AS nulls FROM unnest(i.indkey::int2[]) k(attnum) "
        "  JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
        "  JOIN pg_stats s ON s.schemaname = tn.nspname AND s.tablename = ct.relname AND s.attname = a.attname) st "
        "WHERE am.amname = 'btree' AND i.indisvalid AND i.indexprs IS NULL AND ci.reltuples >= 0 "
        f"AND ci.relpages > 1 AND {user_schemas_sql().replace('%', '%%')} AND pg_relation_size(ci.oid) >= %s",
        (int(minimum),))
    found = []
    for name, pages, tuples, size, block, fill, width, with_stats, natts, nulls in rows:
        if with_stats != natts or width is None:
            continue  # not analyzed: no estimate
        # an index tuple: 8-byte header (+ the null bitmap), the data MAXALIGNed, a 4-byte line pointer;
        # a page: 24 bytes of header and 16 of btree special space, filled to the fillfactor
        per_tuple = _align(8 + (4 if nulls else 0)) + _align(width) + 4
        per_page = max(math.floor((block - 40) * fill / 100 / per_tuple), 1)
        needed = 1 + math.ceil(tuples / per_page)  # and the metapage
        free = round(100.0 * max(pages - needed, 0) / pages, 1)
        found.append((free, name, size, size * free / 100))
    found.sort(reverse=True)
    top = found[0][0] if found else 0.0
    status = level(top, pct, None)
    perf = {"index_bloat_max_pct": (top, "%", pct, None)}
    over = [f for f in found if pct is not None and f[0] > pct]
    if not over:
        return Check("index_bloat", status, f"{len(found)} btree indexes estimated; most free space {top:.0f}%"
                     if found else "no index large enough to judge", text, perfdata=perf)
    names = ", ".join(f"{n} ({free:.0f}% of {human_size(size)} free)" for free, n, size, _ in over[:3]) + (
        f" and {len(over) - 3} more (--hints lists them)" if len(over) > 3 else "")
    return Check("index_bloat", status, f"{len(over)} bloated: {names}", text,
                 "most of the index is empty pages (many rows deleted or updated): rebuild it (--hints); "
                 "REINDEX CONCURRENTLY does not block writes", perfdata=perf,
                 sql=[f"REINDEX INDEX CONCURRENTLY {n};  -- index_bloat: about {human_size(wasted)} reclaimable"
                      for _, n, _, wasted in over])


def _align(size: float) -> int:
    return int(math.ceil(size / 8) * 8)
