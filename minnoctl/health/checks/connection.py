"""`connection`: the runner's connect attempt and its SELECT 1, judged by the round trip."""

from __future__ import annotations

from minnoctl.health import Check, Context, Status, Threshold, check, level


@check("connection", order=10, probes=("live", "ready"),
       description="connects and times SELECT 1 (spec 004's response time)",
       doc="connect and `SELECT 1` round trip (spec 004's response time)",
       levels="warning 100 ms, critical 1 s",
       thresholds=(Threshold("rtt-warning", 100, "ms", "round trip of SELECT 1"),
                   Threshold("rtt-critical", 1000, "ms", "round trip of SELECT 1")))
def connection(ctx: Context) -> Check:
    """CRITICAL with the one-line reason when the server did not answer; the probes report the
    timings without judging them (a probe's answer is its exit code)."""
    if ctx.connect_error is not None:
        return Check("connection", Status.CRITICAL, value=ctx.connect_error.kind, hint=ctx.connect_error.message)
    if ctx.probe == "live":
        return Check("connection", Status.OK, value=f"answered SELECT 1 in {ctx.rtt_ms:.2f} ms",
                     hint=f"connected in {ctx.connect_ms:.1f} ms",
                     perfdata={"rtt_ms": (round(ctx.rtt_ms, 3), "ms", None, None),
                               "connect_ms": (round(ctx.connect_ms, 3), "ms", None, None)})
    if ctx.probe == "ready":
        return Check("connection", Status.OK, f"answered SELECT 1 in {ctx.rtt_ms:.2f} ms",
                     perfdata={"rtt_ms": (round(ctx.rtt_ms, 3), "ms", None, None)})
    warn, crit, text = ctx.pair("rtt", "ms")
    rtt_ms = round(ctx.rtt_ms, 3)  # judged as shown (perfdata)
    status = level(rtt_ms, warn, crit)
    return Check("connection", status, f"answered SELECT 1 in {rtt_ms:.2f} ms (connected in "
                 f"{ctx.connect_ms:.1f} ms)", text, "" if status == Status.OK else "the network or the server is slow",
                 perfdata={"rtt_ms": (rtt_ms, "ms", warn, crit),
                           "connect_ms": (round(ctx.connect_ms, 3), "ms", None, None)})
