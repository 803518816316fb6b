"""`tokens`: the OAuth tokens of minno and assistant, expired or expiring soon (a module check:
minnoctl/health/registry.py reads migrations/<module>/health/*.py)."""

from __future__ import annotations

from minnoctl.health import Check, Context, Status, Threshold, check, show


@check("tokens", order=260, owner=("minno", "assistant"),
       description="OAuth tokens expiring soon or expired (minno, assistant)",
       doc="minno and assistant OAuth tokens expired or expiring soon", levels="within 7 days: warning",
       thresholds=(Threshold("token-expiry", 7 * 86400, "s", "OAuth tokens expiring within this (or expired)"),))
def tokens(ctx: Context) -> Check:
    window = ctx.t("token-expiry")
    text = f"expiring within {show(window, 's')}"
    if window is None:
        return Check("tokens", Status.OK, "not checked", text)
    parts: list[str] = []
    expired = soon = 0
    sources = []
    if "minno" in ctx.installed:
        sources.append(("minno OAuth", "SELECT expires_at FROM minno.oauth_tokens WHERE expires_at IS NOT NULL"))
    if "assistant" in ctx.installed:
        sources.append(("assistant Google", "SELECT google_expires_at FROM assistant.user_tokens "
                        "WHERE google_expires_at IS NOT NULL AND google_access_token IS NOT NULL"))
        sources.append(("assistant Slack", "SELECT slack_expires_at FROM assistant.user_tokens "
                        "WHERE slack_expires_at IS NOT NULL AND slack_access_token IS NOT NULL"))
    for label, sql in sources:
        e, s = ctx.one(f"SELECT count(*) FILTER (WHERE t.x <= now()), count(*) FILTER (WHERE t.x > now() AND "
                       f"t.x <= now() + make_interval(secs => %s)) FROM ({sql}) AS t(x)", (window,))
        expired, soon = expired + e, soon + s
        if e or s:
            parts.append(f"{label}: {s} expiring, {e} expired")
    perf = {"tokens_expiring": (soon, "", None, None), "tokens_expired": (expired, "", None, None)}
    if not (expired or soon):
        return Check("tokens", Status.OK, f"none expiring within {show(window, 's')}", text, perfdata=perf)
    return Check("tokens", Status.WARNING, "; ".join(parts), text,
                 "reconnect the integrations (or check the application's token refresh): "
                 "`minnoctl token list` shows them", perfdata=perf)
