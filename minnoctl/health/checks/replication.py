"""`replication_slots`: slots nobody reads, and the WAL they keep."""

from __future__ import annotations

from minnoctl.health import Check, Context, Status, Threshold, check, human_size, show


@check("replication_slots", scope="server", order=210, description="inactive replication slots and the WAL they keep",
       doc="inactive slots and the WAL they keep", levels="inactive: warning; 10 GB: critical",
       thresholds=(Threshold("slot-wal-critical", 10 * 1024 ** 3, "bytes",
                             "WAL kept by an inactive replication slot"),),
       coordinator_only="each worker has its own slots")
def replication_slots(ctx: Context) -> Check:
    crit = ctx.t("slot-wal-critical")
    text = f"any inactive: warning; keeping {show(crit, 'bytes')} of WAL: critical"
    rows = ctx.all(
        "SELECT slot_name, slot_type, active, pg_wal_lsn_diff(CASE WHEN pg_is_in_recovery() "
        "THEN pg_last_wal_receive_lsn() ELSE pg_current_wal_lsn() END, restart_lsn)::float8 "
        "FROM pg_replication_slots ORDER BY 4 DESC NULLS LAST")
    inactive = [r for r in rows if not r[2]]
    kept = max((r[3] or 0 for r in inactive), default=0.0)
    perf = {"inactive_slots": (len(inactive), "", 0, None), "slot_wal_kept": (kept, "B", None, crit)}
    if not inactive:
        return Check("replication_slots", Status.OK, f"{len(rows)} slots, all active" if rows else "no slots", text,
                     perfdata=perf)
    status = Status.CRITICAL if crit is not None and kept > crit else Status.WARNING
    names = ", ".join(f"{r[0]} ({r[1]}, keeps {human_size(r[3] or 0)})" for r in inactive)
    return Check("replication_slots", status, f"{len(inactive)} inactive: {names}", text,
                 "an inactive slot keeps WAL until the disk fills: reconnect its consumer or drop the slot",
                 sql=[f"-- replication_slots: {r[0]} is inactive; if its consumer is gone: "
                      f"SELECT pg_drop_replication_slot('{r[0]}');" for r in inactive], perfdata=perf)
