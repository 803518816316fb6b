"""A health Report in the OpenMetrics text format (`health --format openmetrics`, `health --serve`'s /metrics).

Written by hand (https://prometheus.io/docs/specs/om/open_metrics_spec/): no client library at run
time. Every sample carries `target`, the database the report is about (its URL without password).

- minnoctl_health_status{check,target}: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN, -1 N/A (the server
  cannot have what the check needs; counted as OK, so an alert on `>= 1` leaves it out);
- minnoctl_health_overall_status{target}: the exit code of `minnoctl health`;
- minnoctl_health_metric{check,metric,unit,target}: each perfdata value of a check (`unit` only
  when the value has one: %, s, ms, B, ...);
- minnoctl_health_metric_warning / _critical{check,metric,unit,target,alert}: its limits, when it
  has them; alert="above" (the value alerts above the limit) or "below" (under it);
- minnoctl_health_up{target}: 1 when the server answered, else 0;
- minnoctl_health_duration_seconds{target}: how long the run took;
- minnoctl_health_last_run_timestamp_seconds{target}: when it ended (Unix time).
"""

from __future__ import annotations

import math
import re
from typing import Any

from minnoctl.health.report import Report, Status

CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"
PREFIX = "minnoctl_health_"
NOT_AVAILABLE = -1


def escape(value: str) -> str:
    """A label value (or HELP text) as the spec has it: backslash, double quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def number(value: Any) -> str:
    """A sample value: an integer as is, a float in Python's shortest form, +Inf, -Inf, NaN."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def _labels(labels: dict[str, str]) -> str:
    return "{" + ",".join(f'{k}="{escape(v)}"' for k, v in labels.items()) + "}"


def _limit(limit: float | str | None) -> tuple[float, str] | None:
    """A perfdata limit as (value, alert direction): N alerts above N, `N:` below N; else None."""
    if limit is None:
        return None
    if isinstance(limit, str):
        found = re.fullmatch(r"\s*(-?[0-9.]+):\s*", limit)
        return (float(found.group(1)), "below") if found else None
    return float(limit), "above"


class _Families:
    def __init__(self) -> None:
        self.order: list[str] = []
        self.meta: dict[str, tuple[str, str | None]] = {}
        self.samples: dict[str, list[str]] = {}

    def family(self, name: str, help_: str, unit: str | None = None) -> None:
        self.order.append(name)
        self.meta[name] = (help_, unit)
        self.samples[name] = []

    def add(self, name: str, labels: dict[str, str], value: Any) -> None:
        self.samples[name].append(f"{name}{_labels(labels)} {number(value)}")

    def text(self) -> str:
        lines = []
        for name in self.order:
            help_, unit = self.meta[name]
            lines.append(f"# HELP {name} {escape(help_)}")
            lines.append(f"# TYPE {name} gauge")
            if unit:
                lines.append(f"# UNIT {name} {unit}")
            lines.extend(self.samples[name])
        return "\n".join(lines + ["# EOF"]) + "\n"


def exposition(report: Report) -> str:
    """The report as an OpenMetrics exposition, ending in `# EOF` and a newline."""
    target = {"target": report.target}
    out = _Families()
    status, overall = PREFIX + "status", PREFIX + "overall_status"
    metric, warning, critical = PREFIX + "metric", PREFIX + "metric_warning", PREFIX + "metric_critical"
    up, duration, last = PREFIX + "up", PREFIX + "duration_seconds", PREFIX + "last_run_timestamp_seconds"
    out.family(status, "Status of a check: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN, -1 N/A (counted as OK).")
    out.family(overall, "Overall status, the exit code of minnoctl health: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.")
    out.family(metric, "A value a check measured (its perfdata), in the unit of the unit label.")
    out.family(warning, "The WARNING limit of a measured value; alert says on which side it alerts.")
    out.family(critical, "The CRITICAL limit of a measured value; alert says on which side it alerts.")
    out.family(up, "1 when the server answered, else 0.")
    out.family(duration, "How long the health run took.", "seconds")
    out.family(last, "When the health run ended, in Unix time.", "seconds")
    for c in report.checks:
        shown = NOT_AVAILABLE if c.status is Status.NOT_AVAILABLE else int(c.status)
        out.add(status, {"check": c.name} | target, shown)
        for label, (value, unit, warn, crit) in c.perfdata.items():
            labels = {"check": c.name, "metric": label} | ({"unit": unit} if unit else {}) | target
            out.add(metric, labels, value)
            for family, limit in ((warning, _limit(warn)), (critical, _limit(crit))):
                if limit is not None:
                    out.add(family, labels | {"alert": limit[1]}, limit[0])
    out.add(overall, target, int(report.status))
    out.add(up, target, 0 if report.error else 1)
    out.add(duration, target, report.duration)
    out.add(last, target, report.finished)
    return out.text()


def merge(texts: list[str]) -> str:
    """Several expositions (one per target of a fleet run) as one: each family's HELP, TYPE and
    UNIT once, then the samples of every text (their target labels tell them apart), one `# EOF`."""
    order: list[str] = []
    meta: dict[str, list[str]] = {}
    samples: dict[str, list[str]] = {}
    for text in texts:
        family = None
        for line in text.splitlines():
            if line == "# EOF" or not line:
                continue
            if line.startswith("# "):
                kind, name = line.split(" ", 3)[1:3]
                if kind == "HELP":
                    family = name
                    if name not in meta:
                        order.append(name)
                        meta[name], samples[name] = [], []
                if meta[name] is not None and len(meta[name]) < 3 and line not in meta[name]:
                    meta[name].append(line)
            elif family is not None:
                samples[family].append(line)
    lines = [line for name in order for line in (*meta[name], *samples[name])]
    return "\n".join(lines + ["# EOF"]) + "\n"
