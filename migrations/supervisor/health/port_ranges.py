"""`port_ranges`: how full each port range is (a module check of supervisor)."""

from __future__ import annotations

from minnoctl.health import Check, Context, Status, Threshold, check, level


@check("port_ranges", order=290, description="port range utilisation",
       doc="`supervisor.port_range_utilization`", levels="above 80%, above 95%",
       thresholds=(Threshold("port-range-warning", 80, "%", "a port range used above this"),
                   Threshold("port-range-critical", 95, "%", "a port range used above this")))
def port_ranges(ctx: Context) -> Check:
    warn, crit, text = ctx.pair("port-range", "%")
    rows = ctx.all("SELECT range_name, total_ports, allocated_ports, reserved_ports, utilization_percent::float8 "
                   "FROM supervisor.port_range_utilization ORDER BY utilization_percent DESC, range_name")
    if not rows:
        return Check("port_ranges", Status.OK, "no port ranges", text)
    name, total, allocated, reserved, pct = rows[0]
    status = level(pct, warn, crit)
    perf = {f"port_range_{r[0]}_pct": (r[4], "%", warn, crit) for r in rows}
    value = f"fullest {name}: {allocated} of {total} allocated ({pct:.0f}%)" + (
        f", {reserved} reserved" if reserved else "")
    return Check("port_ranges", status, value, text,
                 "" if status == Status.OK else "release unused ports (`minnoctl ports list --status active`) or "
                 "widen the range (`minnoctl ports range add`)", perfdata=perf)
