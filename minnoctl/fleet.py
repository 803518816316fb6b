"""Fleet runs: one command over many targets of the targets file, in one process.

`minnoctl health --group tenants` is `minnoctl health` once per target, each with its own Context
(Context.on_target): the command's own code runs unchanged in a worker thread, with what it shows
and says captured (render.captured) for the fleet's summary instead of written while the others
run. One process instead of one per database: Python's start-up, the imports and the migration set
are paid once, and the targets run `--parallel N` at a time (default DB_POOL_SIZE, 10).

- `--canary N`: the first N targets run first; when one of them fails, the rollout stops there and
  the others are `skipped` (a failure: an exit code other than 0 — for health other than OK and
  WARNING; `migrate --dry-run --exit-code`'s PENDING is not one);
- `--target-timeout DURATION`: a target still running after it is `timeout`: its statements are
  cancelled on the server (its connections are watched: connection.watching) and the run goes on;
- one summary (target, server, database, status, exit code, seconds, what it said), one exit code,
  the worst: for health CRITICAL, then WARNING, then UNKNOWN (a timed-out target is CRITICAL, as an
  unreachable one is); for the other commands the highest exit code (a timed-out target: 4,
  UNREACHABLE); JSON and NDJSON carry the target, server and database in every record;
- health runs the checks of the whole server (scope "server": connections, long queries, xid age,
  replication, ...) once per server, on its first target, not once per database.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from minnoctl import render
from minnoctl.errors import ExitCode

if TYPE_CHECKING:
    from minnoctl.context import Context
    from minnoctl.targets import Target

HEALTH_SEVERITY = {0: 0, 3: 1, 1: 2, 2: 3}  # OK < UNKNOWN < WARNING < CRITICAL
HEALTH_STATUS = {0: "ok", 1: "warning", 2: "critical", 3: "unknown"}
COLUMNS = ["target", "server", "database", "status", "exit_code", "seconds", "summary"]

_current = threading.local()


def current() -> "Context | None":
    """The target's Context when this thread runs one target of a fleet run (cli.context() uses it)."""
    return getattr(_current, "context", None)


@dataclass
class Outcome:
    """One target's part of a fleet run."""

    target: "Target"
    server_checks: bool = True
    canary: bool = False
    status: str = "skipped"  # ok, failed, pending, timeout, interrupted, skipped; health: ok, warning, critical,
    # unknown (and timeout, interrupted, skipped)
    exit_code: int | None = None
    seconds: float | None = None
    capture: render.Capture = field(default_factory=render.Capture)
    opened: list = field(default_factory=list)  # its connections (to cancel at a timeout)
    started: float | None = None
    note: str | None = None  # the fleet's own word on it (skipped after a canary, timed out)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def done(self) -> bool:
        return self.exit_code is not None

    def summary(self) -> str:
        """What the target said: the fleet's note, else its last error, else its result's line
        (health: the nagios summary), else its last note, else its row count."""
        if self.note:
            return self.note
        lines = self.capture.lines
        errors = [m for p, m in lines if p == "error: "]
        if errors:
            return errors[-1]
        for result in self.capture.results:
            if result.nagios:
                return result.nagios.split(" - ", 1)[-1].split(" | ", 1)[0]
        notes = [m for p, m in lines if p == ""]
        if notes:
            return notes[-1]
        rows = sum(len(r.rows) for r in self.capture.results)
        warnings = [m for p, m in lines if p == "warning: "]
        return warnings[-1] if warnings else f"{rows} row(s)" if self.capture.results else ""

    def record(self) -> dict[str, Any]:
        return {"target": self.target.name, "server": self.target.server, "database": self.target.database,
                "status": self.status, "exit_code": self.exit_code,
                "seconds": None if self.seconds is None else round(self.seconds, 3), "summary": self.summary()}

    def where(self) -> dict[str, Any]:
        return {"target": self.target.name, "server": self.target.server, "database": self.target.database}

    def document(self) -> dict[str, Any]:
        results = [r.document if r.document is not None else list(r.rows) for r in self.capture.results]
        return {**self.record(), "canary": self.canary, "server_checks": self.server_checks,
                "result": results[0] if len(results) == 1 else results or None,
                "messages": [f"{p}{m}" for p, m in self.capture.lines]}


@dataclass
class FleetRun:
    command: str
    outcomes: list[Outcome]
    health: bool = False
    stopped_by: str | None = None  # the canary that stopped the rollout
    interrupted: int | None = None  # the signal that stopped the run (SIGINT, SIGTERM)
    abandoned: bool = False  # a timed-out target's thread was still running at the end

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 128 + int(self.interrupted)  # 130, 143: as shells report a signal
        codes = [o.exit_code for o in self.outcomes if o.exit_code is not None]
        if not codes:
            return 0
        if self.health:
            return max(codes, key=lambda c: HEALTH_SEVERITY.get(c, 3))
        return max(codes)

    def counts(self) -> str:
        found: dict[str, int] = {}
        for o in self.outcomes:
            found[o.status] = found.get(o.status, 0) + 1
        return ", ".join(f"{n} {s}" for s, n in found.items())

    def footer(self) -> str:
        line = f"{len(self.outcomes)} target(s): {self.counts()}; exit {self.exit_code}"
        if self.stopped_by:
            line += f" — canary {self.stopped_by} failed, the rollout stopped"
        if self.interrupted:
            line += f" — interrupted by {signal.Signals(self.interrupted).name}"
        return line

    def rows(self) -> list[dict[str, Any]]:
        """NDJSON: every row of every target's result, with its target, server and database, then
        one summary record per target (record: "row" / "target")."""
        out: list[dict[str, Any]] = []
        for o in self.outcomes:
            for result in o.capture.results:
                out += [{**o.where(), "record": "row", **dict(row)} for row in result.rows]
            out.append({"record": "target", **o.record()})
        return out

    def result(self, fmt: str) -> render.Result:
        records = [o.record() for o in self.outcomes]
        document = {"command": self.command, "exit_code": self.exit_code, "summary": self.counts(),
                    "stopped_by_canary": self.stopped_by, "targets": [o.document() for o in self.outcomes]}
        openmetrics = None
        if self.health:
            from minnoctl.health.openmetrics import merge

            openmetrics = merge([r.openmetrics for o in self.outcomes for r in o.capture.results if r.openmetrics])
        return render.Result(self.rows() if fmt == "ndjson" else records, COLUMNS, document=document,
                             nagios=self.nagios() if self.health else None, openmetrics=openmetrics,
                             styles={"status": _status_style}, footer=self.footer())

    def nagios(self) -> str:
        from minnoctl.health.report import nagios_line

        names = {0: "OK", 1: "WARNING", 2: "CRITICAL", 3: "UNKNOWN"}
        bad = [o for o in self.outcomes if o.exit_code not in (0, None)]
        bad.sort(key=lambda o: -HEALTH_SEVERITY.get(o.exit_code or 0, 3))
        text = "; ".join(f"{o.target.name} {names.get(o.exit_code or 0, 'UNKNOWN')}: {o.summary()}" for o in bad)
        return nagios_line(names.get(self.exit_code, "UNKNOWN"), f"{len(self.outcomes)} targets: {self.counts()}"
                           + (f"; {text}" if text else ""))


def _status_style(value: str) -> str:
    return {"ok": "green", "warning": "yellow", "pending": "yellow", "skipped": "dim"}.get(value, "bold red")


def run(command: str, base: "Context", targets: Sequence["Target"], job: Callable[[], None], *,
        report: Callable[[BaseException], int], parallel: int, canary: int = 0, timeout: float | None = None,
        health: bool = False, failed: dict[str, tuple[int, str]] | None = None) -> FleetRun:
    """Run `job` (the command's own body, which builds its Context with cli.context()) once per
    target; `report(exc)` turns what a target raised into its exit code (and its captured line).
    `failed`: targets that failed before running (their discovery): name -> (exit code, message)."""
    seen_servers: set[str] = set()
    outcomes = []
    for i, target in enumerate(targets):
        first = target.server not in seen_servers
        seen_servers.add(target.server)
        outcomes.append(Outcome(target, server_checks=first or not health, canary=i < canary))
    fleet = FleetRun(command, outcomes, health=health)
    for o in outcomes:
        if failed and o.target.name in failed:
            o.exit_code, o.note = failed[o.target.name]
            o.status = HEALTH_STATUS.get(o.exit_code, "unknown") if health else "failed"
            o.seconds = 0.0
    outcomes = [o for o in outcomes if o.exit_code is None]
    canaries, rest = outcomes[:canary], outcomes[canary:]
    for o in rest:
        o.canary = False
    pool = ThreadPoolExecutor(max_workers=max(1, parallel), thread_name_prefix="minnoctl-target")
    try:
        with _signals_interrupt():
            if canaries:
                _run_phase(pool, canaries, base, job, report, timeout, health, fleet)
                bad = [o for o in canaries if _failed(o, health)]
                if bad:
                    fleet.stopped_by = bad[0].target.name
                    for o in rest:
                        o.note = f"not run: canary {bad[0].target.name} failed ({bad[0].status})"
                    return fleet
            _run_phase(pool, rest, base, job, report, timeout, health, fleet)
    except KeyboardInterrupt as exc:  # SIGINT or SIGTERM: every running target's statements cancelled
        fleet.interrupted = getattr(exc, "signum", signal.SIGINT)
        for o in fleet.outcomes:
            if o.started is not None and o.exit_code is None:
                _stop(o, 128 + int(fleet.interrupted), f"interrupted by {signal.Signals(fleet.interrupted).name}: "
                      "its statements were cancelled (a migration's transaction rolls back)", "interrupted")
        fleet.abandoned = True  # do not wait for a thread in a call that cannot be cancelled
    finally:
        pool.shutdown(wait=not fleet.abandoned, cancel_futures=True)
    return fleet


class _Signal(KeyboardInterrupt):
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextmanager
def _signals_interrupt() -> Iterator[None]:
    """SIGTERM stops a fleet run as Ctrl-C does (the main thread's KeyboardInterrupt), so the
    running targets are cancelled and the summary says so, instead of the process just ending."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise _Signal(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _failed(o: Outcome, health: bool) -> bool:
    ok = (0, 1) if health else (0, int(ExitCode.PENDING))
    return o.exit_code not in ok


def _run_phase(pool: ThreadPoolExecutor, outcomes: list[Outcome], base: "Context", job: Callable[[], None],
               report: Callable[[BaseException], int], timeout: float | None, health: bool, fleet: FleetRun) -> None:
    running: dict[Future, Outcome] = {pool.submit(_one, o, base, job, report, health): o for o in outcomes}
    while running:
        done, _ = wait(running, timeout=0.05 if timeout else None, return_when=FIRST_COMPLETED)
        for future in done:
            running.pop(future)
        if timeout:
            now = time.monotonic()
            for future, o in list(running.items()):
                if o.started is not None and now - o.started > timeout:
                    _time_out(o, timeout, health)
                    running.pop(future)
                    fleet.abandoned = fleet.abandoned or not future.done()


def _one(o: Outcome, base: "Context", job: Callable[[], None], report: Callable[[BaseException], int],
         health: bool) -> None:
    import typer

    from minnoctl import connection

    o.started = time.monotonic()
    ctx = base.on_target(o.target, server_checks=o.server_checks)
    code: int
    with render.captured(o.capture), connection.watching(o.opened):
        _current.context = ctx
        try:
            job()
            code = 0
        except typer.Exit as exc:
            code = int(exc.exit_code)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else int(ExitCode.FAILURE)
        except BaseException as exc:  # noqa: B036 - a target's failure is its outcome, never the fleet's
            code = report(exc)
        finally:
            _current.context = None
            for conn in o.opened:
                if not conn.closed:
                    conn.close()
    with o._lock:
        if o.exit_code is not None:  # timed out meanwhile: that stands
            return
        o.exit_code, o.seconds = code, time.monotonic() - o.started
        if health:
            o.status = HEALTH_STATUS.get(code, "unknown")
        else:
            o.status = "ok" if code == 0 else "pending" if code == ExitCode.PENDING else "failed"


def _time_out(o: Outcome, timeout: float, health: bool) -> None:
    from minnoctl.config import span_text

    _stop(o, 2 if health else int(ExitCode.UNREACHABLE),
          f"still running after --target-timeout {span_text(timeout)}: its statements were cancelled", "timeout")


def _stop(o: Outcome, code: int, note: str, status: str) -> None:
    """End a running target's part (timed out, interrupted): its outcome now, its statements cancelled."""
    with o._lock:
        if o.exit_code is not None:
            return
        o.status, o.exit_code, o.note = status, code, note
        o.seconds = time.monotonic() - (o.started or time.monotonic())
    for conn in list(o.opened):
        try:
            cancel = getattr(conn, "cancel_safe", None) or conn.cancel
            cancel()
        except Exception:  # noqa: BLE001 - a connection already gone has nothing to cancel
            pass
