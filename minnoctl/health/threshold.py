"""Thresholds: declared by the checks that use them (registry.check(thresholds=...)), parsed from
--threshold NAME=VALUE and MINNOCTL_HEALTH_<NAME>, and the helpers that judge and show a value."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from minnoctl.errors import UsageError
from minnoctl.health.report import Status
from minnoctl.render_text import shown


@dataclass(frozen=True)
class Threshold:
    name: str
    default: float | None  # None: off
    unit: str  # ms | s | % | bytes | count
    help: str

    @property
    def env(self) -> str:
        return "MINNOCTL_HEALTH_" + self.name.upper().replace("-", "_")


_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*(b|kb|mb|gb|tb)?$", re.IGNORECASE | re.ASCII)  # 0-9 only
_SIZE_UNITS = {None: 1, "b": 1, "kb": 1024, "mb": 1024 ** 2, "gb": 1024 ** 3, "tb": 1024 ** 4}
MAX_PERCENT = 100_000  # xid-age is a share of autovacuum_freeze_max_age and may pass 100 %
MAX_BYTES = 1024 ** 6  # 1 EiB
MAX_COUNT = 10 ** 15


def parse_threshold(t: Threshold, text: str, origin: str) -> float | None:
    """One threshold's value from an option or a variable; `off` turns that level off. Bounded
    through config's one parser: never nan, inf or an overflow; durations at most 10 years."""
    from minnoctl.config import parse_duration, parse_number
    raw = text.strip().lower()
    if raw in ("off", "none"):
        return None
    if t.unit in ("s", "ms"):
        seconds = parse_duration(text.strip(), origin, allow_zero=True, bare=1 if t.unit == "s" else 0.001)
        return seconds if t.unit == "s" else seconds * 1000
    if t.unit == "%":
        return float(parse_number(raw[:-1] if raw.endswith("%") else raw, origin, maximum=MAX_PERCENT,
                                  unit="percent"))
    if t.unit == "bytes":
        m = _SIZE.match(raw)
        value = float(m.group(1)) * _SIZE_UNITS[m.group(2)] if m else float("nan")
        if not 0 <= value <= MAX_BYTES:  # nan, too many digits or too large
            raise UsageError(f"{origin} {shown(text)} is not a size — use e.g. 512MB, 10GB (at most 1 EiB), or off")
        return value
    return float(parse_number(raw, origin, maximum=MAX_COUNT, integer=True))


def thresholds(options: Sequence[str] = (), env: Mapping[str, str] | None = None) -> dict[str, float | None]:
    """Defaults, then MINNOCTL_HEALTH_<NAME> variables (the environment, else .env), then --threshold
    NAME=VALUE options."""
    from minnoctl.config import environment
    from minnoctl.health import registry

    env = environment(env)
    declared = registry.thresholds()
    values = {t.name: t.default for t in declared.values()}
    for t in declared.values():
        if env.get(t.env, "").strip():
            values[t.name] = parse_threshold(t, env[t.env], t.env)
    for item in options:
        name, sep, text = item.partition("=")
        name = name.strip().replace("_", "-")
        if not sep or not text.strip():
            raise UsageError(f"--threshold {shown(item)} must be NAME=VALUE, e.g. long-query-warning=2m "
                             "(`minnoctl health --list` shows the names)")
        if name not in declared:
            raise UsageError(f"--threshold: unknown threshold {shown(name)} — `minnoctl health --list` shows the names")
        values[name] = parse_threshold(declared[name], text, f"--threshold {name}")
    return values


def asked_for(only: Sequence[str] = (), options: Sequence[str] = (), env: Mapping[str, str] | None = None) -> set[str]:
    """The checks the operator asked for by name (--only) or by giving one of their thresholds (an
    option or a variable): for them a missing extension is UNKNOWN, not N/A."""
    from minnoctl.config import environment
    from minnoctl.health import registry

    env = environment(env)
    given = {item.partition("=")[0].strip().replace("_", "-") for item in options}
    given |= {t.name for t in registry.thresholds().values() if env.get(t.env, "").strip()}
    names = set(registry.select(only)) if only else set()
    return names | {c.name for c in registry.checks() if given & set(c.threshold_names)}


def show(value: float | None, unit: str) -> str:
    if value is None:
        return "off"
    if unit == "%":
        return f"{value:g}%"
    if unit == "ms":
        return f"{value:g} ms"
    if unit == "s":
        return human_age(value)
    if unit == "bytes":
        return human_size(value)
    return f"{value:g}"


def human_age(seconds: float) -> str:
    """90 -> '1.5 min', 93600 -> '26 h' (days only from two, or whole ones), 172800 -> '2 d'."""
    seconds = abs(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and (unit != "d" or seconds >= 2 * size or seconds % size == 0):
            amount = seconds / size
            return f"{amount:.1f} {unit}".replace(".0 ", " ")
    return f"{seconds:.1f} s".replace(".0 ", " ")


def human_size(size: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(size) < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"


def level(value: float, warn: float | None, crit: float | None, *, above: bool = True) -> Status:
    """CRITICAL / WARNING when `value` passes the limit (above it, or below it with above=False)."""
    def passes(limit: float | None) -> bool:
        return limit is not None and (value > limit if above else value < limit)

    return Status.CRITICAL if passes(crit) else Status.WARNING if passes(warn) else Status.OK


def count_limit(pct: float | None, total: float) -> float | None:
    """A percentage limit as a count limit for an integer metric: count > pct% of total exactly when
    count > floor(pct% of total), so the range says what the status says."""
    return None if pct is None else math.floor(pct * total / 100)
