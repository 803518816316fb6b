"""`table_stats`: spec 004's table statistics (a module check of slackbot; information only)."""

from __future__ import annotations

from minnoctl.health import Check, Context, Status, check


@check("table_stats", order=300, description="active sessions and queries in the last 24 hours (spec 004)",
       doc="spec 004's table statistics: active sessions, queries in the last 24 hours", levels="information")
def table_stats(ctx: Context) -> Check:
    sessions = ctx.one("SELECT count(*) FROM slackbot.active_sessions")[0]
    queries = ctx.one("SELECT count(*) FROM slackbot.query_history WHERE created_at > now() - interval '24 hours'")[0]
    return Check("table_stats", Status.OK, f"{sessions} active sessions, {queries} queries in the last 24 hours",
                 "information (spec 004's get_table_stats)",
                 perfdata={"active_sessions": (sessions, "", None, None),
                           "recent_queries_24h": (queries, "", None, None)})
