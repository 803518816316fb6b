"""`secrets`: spec 003's views of secrets expiring or due for rotation (a module check of supervisor)."""

from __future__ import annotations

from minnoctl.health import Check, Context, Status, check


@check("secrets", order=270, description="secrets expiring or due for rotation (spec 003's views)",
       doc="spec 003's `secrets_expiring_soon` and `secrets_needing_rotation`",
       levels="due: warning; expired: critical")
def secrets(ctx: Context) -> Check:
    expired, expiring = ctx.one("SELECT count(*) FILTER (WHERE expires_at <= now()), count(*) FILTER (WHERE "
                                "expires_at > now()) FROM supervisor.secrets_expiring_soon")
    overdue, due = ctx.one("SELECT count(*) FILTER (WHERE next_rotation_at <= now()), count(*) FILTER (WHERE "
                           "next_rotation_at > now()) FROM supervisor.secrets_needing_rotation")
    text = "spec 003's views: expiring within 30 days, rotation due within 7 days"
    perf = {"secrets_expiring": (expiring + expired, "", None, None), "secrets_rotation_due": (overdue + due, "", None,
                                                                                                 None)}
    if not (expired or expiring or overdue or due):
        return Check("secrets", Status.OK, "none expiring or due for rotation", text, perfdata=perf)
    parts = [f"{n} {what}" for n, what in ((expired, "expired"), (expiring, "expiring within 30 days"),
                                           (overdue, "rotation overdue"), (due, "rotation due within 7 days")) if n]
    status = Status.CRITICAL if expired else Status.WARNING
    return Check("secrets", status, ", ".join(parts), text,
                 "see supervisor.secrets_expiring_soon and supervisor.secrets_needing_rotation; renew them in the "
                 "supervisor service", perfdata=perf)
