"""What a health run returns, and how each format shows it: statuses, one Check per row, the Report.

Statuses and exit codes follow the monitoring convention: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
The JSON document is {"status", "target", "checks": [{"name", "status", "value", "threshold", "hint",
"metrics"}]}. The overall status is the worst check in the order CRITICAL > WARNING > UNKNOWN > OK
(check_multi's and Icinga's rule for aggregated checks): one check that could not look must not hide
a CRITICAL one, and must not be reported as OK either.
"""

from __future__ import annotations

import enum
import re
import time
from dataclasses import dataclass, field
from collections.abc import Mapping
from typing import Any


class Status(enum.IntEnum):
    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3
    # the server cannot have what the check needs (pg_stat_statements on a build without it): shown
    # as N/A, counted as OK for the exit code, never part of the Nagios status; a check the operator
    # asked for (--only, or one of its thresholds) is UNKNOWN instead
    NOT_AVAILABLE = 4

    @property
    def label(self) -> str:
        return "N/A" if self is Status.NOT_AVAILABLE else self.name


# the order in which statuses win when checks are combined
SEVERITY = {Status.NOT_AVAILABLE: -1, Status.OK: 0, Status.UNKNOWN: 1, Status.WARNING: 2, Status.CRITICAL: 3}
COLUMNS = ["name", "status", "value", "threshold", "hint"]  # the table's columns (as_dict's keys)
STATUS_STYLES = {"OK": "green", "WARNING": "yellow", "CRITICAL": "bold red", "N/A": "dim"}  # else magenta


@dataclass
class Check:
    name: str
    status: Status
    value: Any = None
    threshold: Any = None
    hint: str = ""
    # nagios perfdata: label -> (value, unit, warn, crit); also the JSON's numeric "metrics". A limit
    # is the upper bound (plugin range `N`: alert above N) unless given as a range string (`99:`)
    perfdata: Mapping[str, tuple[float, str, float | str | None, float | str | None]] = field(default_factory=dict)
    sql: list[str] = field(default_factory=list)  # the maintenance SQL the finding calls for (--hints)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status.label, "value": self.value, "threshold": self.threshold,
                "hint": self.hint, "metrics": {k: v[0] for k, v in self.perfdata.items()}}


def worst(statuses: list[Status]) -> Status:
    return max(statuses, key=SEVERITY.__getitem__, default=Status.UNKNOWN)


def status_style(value: str) -> str:
    """The Rich style of a status cell in a colour terminal."""
    return STATUS_STYLES.get(value, "magenta")


@dataclass
class Report:
    checks: list[Check]
    target: str
    error: str | None = None  # the one-line connection error, when the server did not answer
    duration: float = 0.0  # seconds the run took (set by the runner)
    finished: float = field(default_factory=time.time)  # when it ended, Unix time

    @property
    def status(self) -> Status:
        status = worst([c.status for c in self.checks])
        return Status.OK if status is Status.NOT_AVAILABLE else status

    def count(self, status: Status) -> int:
        return sum(c.status is status for c in self.checks)

    def summary(self) -> str:
        """`overall: WARNING (1 warning, 0 critical)`: the line that ends the health table."""
        w, c = self.count(Status.WARNING), self.count(Status.CRITICAL)
        parts = [f"{w} warning{'s' if w != 1 else ''}", f"{c} critical"]
        parts += [f"{n} {what}" for n, what in ((self.count(Status.UNKNOWN), "unknown"),
                                                 (self.count(Status.NOT_AVAILABLE), "not available")) if n]
        return f"overall: {self.status.name} ({', '.join(parts)})"

    def as_dict(self) -> dict[str, Any]:
        return {"status": self.status.name, "target": self.target,
                "checks": [c.as_dict() for c in self.checks]}

    def shown_as_rows(self, fmt: str) -> bool:
        """Whether `fmt` shows the checks as rows: JSON always; the table formats not when the server
        did not answer (its error is on stderr, a table of the one failed connection would repeat it)."""
        return fmt == "json" or (fmt != "nagios" and not self.error)

    def footer(self, fmt: str) -> str | None:
        """The line after the rows in the formats read by people: the overall line."""
        return self.summary() if fmt in ("table", "plain") and not self.error else None

    def nagios(self) -> str:
        """MINNOCTL <STATUS> - <summary> | <perfdata> (one line; perfdata as the Nagios plugin API has it)."""
        bad = sorted((c for c in self.checks if c.status not in (Status.OK, Status.NOT_AVAILABLE)),
                     key=lambda c: -SEVERITY[c.status])
        if bad:
            summary = "; ".join(f"{c.name} {c.status.name}: {c.value}" for c in bad)
        else:
            na = self.count(Status.NOT_AVAILABLE)
            summary = f"{len(self.checks) - na} checks OK" + (f", {na} not available" if na else "")
        perf = []
        for c in self.checks:
            for label, (value, unit, warn, crit) in c.perfdata.items():
                item = f"{_label(label)}={_num(value)}{unit}"
                if warn is not None or crit is not None:
                    item += f";{_limit(warn)};{_limit(crit)}"
                perf.append(item)
        return nagios_line(self.status.name, summary) + (f" | {' '.join(perf)}" if perf else "")

    def openmetrics(self) -> str:
        """The OpenMetrics exposition (health/openmetrics.py has the families)."""
        from minnoctl.health.openmetrics import exposition

        return exposition(self)

    def hints_sql(self) -> list[str]:
        return [s for c in self.checks for s in c.sql]


def nagios_line(status: str, summary: str) -> str:
    """`MINNOCTL <STATUS> - <summary>` on one line, without the `|` that would start perfdata (also
    the line of a bad argument under --format nagios: UNKNOWN, as the plugin guidelines have it)."""
    return f"MINNOCTL {status} - {summary}".replace("|", "/").replace("\n", " ")


def _num(value: float) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _limit(limit: float | str | None) -> str:
    """A perfdata threshold: a number is the plugin range `N` (alert above N, or below 0); a string
    is a range as written (`99:` alerts below 99)."""
    return "" if limit is None else limit if isinstance(limit, str) else _num(limit)


def below(limit: float | None) -> str | None:
    """The plugin range of a lower bound: `99:` (alert when the value is below 99)."""
    return None if limit is None else f"{_num(float(limit))}:"


def _label(name: str) -> str:
    """A perfdata label; quoted when it holds a space, a quote or an equals sign (plugin API)."""
    return f"'{name.replace(chr(39), chr(39) * 2)}'" if re.search(r"[\s'=]", name) else name
