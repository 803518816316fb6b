"""Health checks. Returns data; never prints.

The package: report.py (statuses, Check, Report and how the formats show it), threshold.py
(declared by the checks, parsed from options and variables), registry.py (the `check` decorator,
the order, --list and the README's table), runner.py (the report and the --live / --ready probes),
and one small file per check or family of checks in checks/ — a module's own checks in its folder,
migrations/<module>/health/. A new check is one new file.

The anchors are check_postgres (txn_wraparound, sequence, last_analyze, replicate slots, ...) and
PgHero (invalid / unused / duplicate indexes, cache hit ratio, long queries); the checks of this
database's own jobs (cleanup, backups, keys, ports, tokens) sit with the modules that own them.
"""

from __future__ import annotations

from typing import Any

from minnoctl.health import registry
from minnoctl.health.registry import LIST_COLUMNS, CheckSpec, check, list_checks, markdown_table, select
from minnoctl.health.report import COLUMNS, SEVERITY, Check, Report, Status, below, nagios_line, status_style, worst
from minnoctl.health.runner import LOCK_TIMEOUT, STATEMENT_TIMEOUT, Context, live, ready, run
from minnoctl.health.threshold import (
    Threshold,
    asked_for,
    count_limit,
    human_age,
    human_size,
    level,
    parse_threshold,
    show,
    thresholds,
)

SUPPORTED_MAJORS = (15, 18)  # the versions minnoctl is tested on, and the community still supports (Dec 2026)

__all__ = ["CHECKS", "BY_CHECK", "THRESHOLDS", "BY_THRESHOLD", "COLUMNS", "LIST_COLUMNS", "LOCK_TIMEOUT", "SEVERITY",
           "STATEMENT_TIMEOUT", "SUPPORTED_MAJORS", "Check", "CheckSpec", "Context", "Report", "Status", "Threshold",
           "asked_for", "below", "check", "count_limit", "human_age", "human_size", "level", "list_checks", "live",
           "markdown_table", "nagios_line", "parse_threshold", "ready", "run", "select", "show", "status_style",
           "thresholds", "worst"]


def __getattr__(name: str) -> Any:
    """CHECKS, BY_CHECK, THRESHOLDS and BY_THRESHOLD, from the registry when asked for: the checks
    of a module come from the migration set in use, known only once the settings are."""
    if name == "CHECKS":
        return tuple(registry.checks())
    if name == "BY_CHECK":
        return registry.by_name()
    if name == "THRESHOLDS":
        return tuple(registry.thresholds().values())
    if name == "BY_THRESHOLD":
        return registry.thresholds()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

