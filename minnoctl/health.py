"""Health checks. Returns data; never prints.

Statuses and exit codes follow the monitoring convention: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
The JSON document is {"status": ..., "checks": [{"name", "status", "value", "threshold", "hint"}]}.
"""

from __future__ import annotations

import enum
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from minnoctl.config import Settings
from minnoctl.errors import ConnectError


class Status(enum.IntEnum):
    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3


@dataclass
class Check:
    name: str
    status: Status
    value: Any = None
    threshold: Any = None
    hint: str = ""
    perfdata: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["status"] = self.status.name
        data.pop("perfdata")
        return data


@dataclass
class Report:
    checks: list[Check]
    target: str
    error: str | None = None  # the one-line connection error, when the server did not answer

    @property
    def status(self) -> Status:
        return max((c.status for c in self.checks), default=Status.UNKNOWN)

    def as_dict(self) -> dict[str, Any]:
        return {"status": self.status.name, "target": self.target,
                "checks": [c.as_dict() for c in self.checks]}

    def nagios(self) -> str:
        """MINNOCTL <STATUS> - <summary> | <perfdata>"""
        bad = [c for c in self.checks if c.status != Status.OK]
        summary = "; ".join(f"{c.name}: {c.value}" for c in (bad or self.checks))
        perf = " ".join(f"{k}={v:g}{'ms' if k.endswith('_ms') else ''}"
                        for c in self.checks for k, v in c.perfdata.items())
        return f"MINNOCTL {self.status.name} - {summary}" + (f" | {perf}" if perf else "")


def live(settings: Settings) -> Report:
    """Connect, run SELECT 1, report the server version and the round-trip time."""
    from minnoctl.connection import connect, server_version

    target = settings.display_url() if not settings.embedded else f"embedded PostgreSQL in {settings.minno_home}"
    started = time.perf_counter()
    try:
        conn = connect(settings, autocommit=True)
    except ConnectError as exc:
        return Report(
            checks=[Check("connection", Status.CRITICAL, value=exc.kind, hint=exc.message)],
            target=target, error=exc.message,
        )
    connect_ms = (time.perf_counter() - started) * 1000
    with conn:
        t0 = time.perf_counter()
        conn.execute("SELECT 1").fetchone()
        rtt_ms = (time.perf_counter() - t0) * 1000
        version = server_version(conn)
    return Report(
        checks=[
            Check("connection", Status.OK, value=f"answered SELECT 1 in {rtt_ms:.2f} ms",
                  hint=f"connected in {connect_ms:.1f} ms",
                  perfdata={"rtt_ms": round(rtt_ms, 3), "connect_ms": round(connect_ms, 3)}),
            Check("server_version", Status.OK, value=f"PostgreSQL {version}"),
        ],
        target=target,
    )
