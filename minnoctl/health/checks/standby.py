"""Streaming replication: `replication_lag` (on a standby: how far behind its primary, and its WAL
receiver) and `standbys` (on a primary: the standbys pg_stat_replication lists, and their lag).

Each says when it does not apply: `replication_lag` on a primary is OK "skipped: not a standby", as
a check that does not apply is (a module not installed, schema_drift before `db init`): N/A is for a
server that lacks what the check needs, and a primary lacks nothing; `standbys` with none connected
is OK, unless `expected-standbys` says how many there should be.
"""

from __future__ import annotations

from minnoctl.health import Check, Context, Status, Threshold, below, check, human_age, human_size, level, show, worst


@check("replication_lag", scope="server", order=203,
       description="on a standby: how far replay is behind the primary, paused replay, the WAL receiver",
       doc="on a standby: bytes received but not replayed, seconds since the last replayed transaction (0 when "
           "all received WAL is replayed), paused replay, and the WAL receiver (`pg_stat_wal_receiver`); skipped on a "
           "primary",
       levels="30 s / 64 MB: warning; 5 min / 1 GB: critical; replay paused: warning; no streaming WAL receiver: "
              "critical",
       thresholds=(Threshold("replication-lag-warning", 30, "s", "a standby's replay behind the primary by longer"),
                   Threshold("replication-lag-critical", 300, "s", "a standby's replay behind the primary by longer"),
                   Threshold("replication-lag-bytes-warning", 64 * 1024 ** 2, "bytes",
                             "WAL a standby received but has not replayed"),
                   Threshold("replication-lag-bytes-critical", 1024 ** 3, "bytes",
                             "WAL a standby received but has not replayed")),
       coordinator_only="each worker has its own standbys")
def replication_lag(ctx: Context) -> Check:
    warn, crit, text = ctx.pair("replication-lag", "s")
    bwarn, bcrit, btext = ctx.pair("replication-lag-bytes", "bytes")
    text = f"{text}; {btext}"
    if not ctx.standby:
        return Check("replication_lag", Status.OK, "skipped: not a standby (a primary: see standbys)", text)
    behind_bytes, behind_s, paused, receiver = ctx.one(
        "SELECT coalesce(pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()), 0)::float8, "
        "  CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0 "
        "  ELSE coalesce(extract(epoch FROM now() - pg_last_xact_replay_timestamp()), 0) END::float8, "
        "  pg_is_wal_replay_paused(), "
        "  (SELECT coalesce(status, '?') || coalesce(' from ' || sender_host || ':' || sender_port, '') "
        "   FROM pg_stat_wal_receiver)")
    behind_s, behind_bytes = round(max(behind_s, 0.0), 1), max(behind_bytes, 0.0)  # judged as shown (perfdata)
    perf = {"replication_lag_s": (behind_s, "s", warn, crit),
            "replication_lag_bytes": (behind_bytes, "B", bwarn, bcrit)}
    value = f"{human_size(behind_bytes)} and {human_age(behind_s)} behind"
    statuses = [level(behind_s, warn, crit), level(behind_bytes, bwarn, bcrit)]
    hints = []
    if paused:
        statuses.append(Status.WARNING)
        value += "; replay paused"
        hints.append("replay was paused (pg_wal_replay_pause()): SELECT pg_wal_replay_resume() on the standby")
    if receiver is None:
        statuses.append(Status.CRITICAL)
        value += "; no WAL receiver: not streaming from the primary"
        hints.append("the standby has no connection to its primary: check primary_conninfo and the standby's log")
    elif receiver.startswith("?"):  # the receiver's columns need pg_read_all_stats
        value += "; a WAL receiver runs (its state needs pg_monitor)"
    elif not receiver.startswith("streaming"):
        statuses.append(Status.CRITICAL)
        value += f"; WAL receiver {receiver}, not streaming"
        hints.append("the standby is not streaming from its primary: check primary_conninfo and the standby's log")
    else:
        value += f"; WAL receiver {receiver}"
    status = worst(statuses)
    if status != Status.OK and not hints:
        hints.append("the standby cannot keep up: look at its I/O and at long queries on it that hold replay back "
                     "(max_standby_streaming_delay)")
    return Check("replication_lag", status, value, text, "; ".join(hints), perfdata=perf)


@check("standbys", scope="server", order=206, description="the standbys streaming from this server, and their lag",
       doc="`pg_stat_replication`: each standby's name, address, state, sync state, write / flush / replay lag and "
           "the WAL sent but not replayed; none connected is OK unless `expected-standbys` is set",
       levels="replay lag 1 min: warning, 5 min: critical; fewer than `expected-standbys` (off unless set): critical",
       thresholds=(Threshold("standby-replay-lag-warning", 60, "s", "a standby's replay lag longer than this"),
                   Threshold("standby-replay-lag-critical", 300, "s", "a standby's replay lag longer than this"),
                   Threshold("expected-standbys", None, "count",
                             "fewer standbys streaming than this is critical (off unless set)")),
       coordinator_only="each worker has its own standbys")
def standbys(ctx: Context) -> Check:
    warn, crit, text = ctx.pair("standby-replay-lag", "s")
    expected = ctx.t("expected-standbys")
    if expected is not None:
        text += f"; at least {expected:g} standbys"
    rows = ctx.all(
        "SELECT application_name, coalesce(host(client_addr), 'local'), state, sync_state, "
        "  extract(epoch FROM write_lag)::float8, extract(epoch FROM flush_lag)::float8, "
        "  extract(epoch FROM replay_lag)::float8, pg_wal_lsn_diff(sent_lsn, replay_lsn)::float8 "
        "FROM pg_stat_replication WHERE state IS DISTINCT FROM 'backup' ORDER BY application_name, pid")
    longest = round(max((r[6] or 0.0 for r in rows), default=0.0), 1)  # judged as shown (perfdata)
    perf = {"standbys": (len(rows), "", None, below(expected)),
            "standby_replay_lag_max_s": (longest, "s", warn, crit)}
    statuses = [level(longest, warn, crit)]
    if expected is not None and len(rows) < expected:
        statuses.append(Status.CRITICAL)
    status = worst(statuses)
    short = f", expected {expected:g}" if expected is not None and len(rows) < expected else ""
    if not rows:
        return Check("standbys", status, f"no standbys{short}", text,
                     "no standby streams from this server: check the standbys' primary_conninfo and logs"
                     if status != Status.OK else "", perfdata=perf)

    def lag(seconds: float | None) -> str:
        return "-" if seconds is None else show(seconds, "s")

    if not ctx.privileged and all(r[2] is None for r in rows):  # the details need pg_read_all_stats
        listed = "details need pg_monitor"
    else:
        listed = ", ".join(f"{name or '?'} ({addr}, {state}, {sync}, lag write {lag(w)} / flush {lag(f)} / "
                           f"replay {lag(r)}, {human_size(behind or 0)} sent not replayed)"
                           for name, addr, state, sync, w, f, r, behind in rows)
    value = f"{len(rows)} standby{'s' if len(rows) != 1 else ''}{short}: {listed}"
    hint = "" if status == Status.OK else ("a standby is missing: check its primary_conninfo and log" if short else
                                           "a standby replays slowly: look at its I/O and its long queries")
    return Check("standbys", status, value, text, hint, perfdata=perf)
