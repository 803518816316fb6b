"""The schema minnoctl's migrations built: `migrations` (the record against the set) and `schema_drift`
(the live schema against the baselines). The readiness probe runs `migrations` too."""

from __future__ import annotations

from minnoctl.health import Check, Context, Status, check


@check("migrations", order=40, probes=("ready",), description="initialised, nothing pending, no drift",
       levels="not initialised: critical; pending or drift: warning")
def migrations(ctx: Context) -> Check:
    """The one look at pending and drifted migrations. The report warns (the database works, a
    migration is due); the readiness probe fails (the application expects the schema it was built for)."""
    from minnoctl import migrate

    if not ctx.applied:
        return Check("migrations", Status.CRITICAL, "the database is not initialised", "none pending",
                     "run `minnoctl db init`")
    plan = migrate.make_plan(ctx.conn, ctx.files, None)
    if ctx.probe == "ready":
        bad = len(plan.pending) + len(plan.drift)
        return Check("migrations", Status.CRITICAL if bad else Status.OK,
                     f"{len(plan.pending)} pending, {len(plan.drift)} drifted", "none pending, no drift",
                     _migrate_hint(ctx, "run `minnoctl migrate`") if plan.pending
                     else "`minnoctl migrate verify`" if bad else "")
    problems, hints = [], []
    if plan.pending:
        problems.append(f"{len(plan.pending)} pending ({', '.join(f.id for f in plan.pending[:3])}"
                        f"{', ...' if len(plan.pending) > 3 else ''})")
        hints.append(_migrate_hint(ctx, "`minnoctl migrate --dry-run`, then `minnoctl migrate`"))
    if plan.drift:
        problems.append(f"{len(plan.drift)} drifted ({', '.join(f'{d.id} {d.kind}' for d in plan.drift[:3])})")
        hints.append("`minnoctl migrate verify` lists the drift")
    if problems:
        return Check("migrations", Status.WARNING, "; ".join(problems), "none pending, no drift", "; ".join(hints),
                     perfdata={"migrations_pending": (len(plan.pending), "", None, None)})
    return Check("migrations", Status.OK, f"{len(ctx.applied)} applied, none pending", "none pending, no drift",
                 perfdata={"migrations_pending": (0, "", None, None)})


def _migrate_hint(ctx: Context, hint: str) -> str:
    """The advice for pending migrations. A standby replays the primary's catalog, so its record is
    the primary's and is judged as it is; but nothing can be migrated there (it is read only)."""
    if ctx.standby:
        return "run `minnoctl migrate` on the primary (this is a standby: it replays the primary's schema)"
    return hint


@check("schema_drift", order=50,
       description="the live schema against what the migrations built, and copies of module tables in other schemas",
       doc="the live schema of each installed module against the baseline its migrations left (see Drift), and "
           "copies of module tables in other schemas",
       levels="a missing table, column, view, function, constraint, trigger or sequence: critical; a missing index, "
              "anything altered (a CHECK, a disabled trigger, a function body) or added to a managed table, a copy "
              "elsewhere: warning; no baseline yet: unknown; tables the apps made themselves: listed, OK")
def schema_drift(ctx: Context) -> Check:
    from minnoctl import drift

    threshold = "the live schema is what the migrations built"
    if not ctx.applied:
        return Check("schema_drift", Status.OK, "skipped: the database is not initialised", threshold)
    report = drift.check(ctx.conn, sorted(ctx.installed), ctx.applied)
    status, value, hint = drift.health_status(report)
    return Check("schema_drift", Status[status], value, threshold, hint,
                 perfdata={"schema_differences": (len(report.drift), "", None, None)})
