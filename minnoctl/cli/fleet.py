"""`--target`, `--group`, `--all-targets` on every command that takes a database, and the fleet run.

The options are added to each command that has `--database-url` (add_target_options, from the
root group, like --quiet), so no command lists them itself. They only choose the database(s):

- one target (`--target main`): the command runs as always, on that target's database
  (cli.context() builds its Context from the target);
- a group, every target, several `--target`s or a discovering target: the commands made for
  fleets (FLEET_COMMANDS) run once per target in this process (minnoctl/fleet.py), with
  `--parallel`, `--canary` and `--target-timeout`; the others refuse with one line (a fleet `seed`
  or `token rotate` is a loop a person should write on purpose).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from minnoctl.errors import UsageError

FLEET_COMMANDS = {("migrate",): "migrate", ("migrate", "status"): "migrate status",
                  ("migrate", "verify"): "migrate verify", ("health",): "health", ("cleanup",): "cleanup",
                  ("backup", "create"): "backup create"}
# options of a fleet command that make no sense once per target
NOT_IN_FLEETS: dict[tuple[str, ...], dict[str, str]] = {
    ("health",): {"serve": "--serve", "hints": "--hints", "list_checks": "--list"}}
TARGET_HELP = ("A target of the targets file (minnoctl.toml; README: Targets and fleets); repeatable. A discovering "
               "target stands for every database it finds (NAME/DATABASE: one of them).")
GROUP_HELP = "The targets of a group of the targets file, or tag:TAG; repeatable."
ALL_HELP = "Every target of the targets file."
PARALLEL_HELP = "With several targets: how many run at once (1 to 1000; default DB_POOL_SIZE, 10)."
CANARY_HELP = "With several targets: run the first N first, and stop the rollout if one of them fails."
TIMEOUT_HELP = ("With several targets: a target still running after this long (90s, 5min) is cancelled and "
                "counted as timed out; the others go on. Default: none.")


@dataclass
class Chosen:
    """The invocation's target options (reset by the root command)."""

    targets: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    all_targets: bool = False
    parallel: int | None = None
    canary: int = 0
    timeout: float | None = None

    def selection(self) -> Any:
        from minnoctl.targets import Selection

        return Selection(tuple(self.targets), tuple(self.groups), self.all_targets)


chosen = Chosen()


def reset() -> None:
    global chosen
    chosen = Chosen()


def _store(attribute: str) -> Callable[..., None]:
    def callback(ctx: Any, param: Any, value: Any) -> None:
        if value in (None, (), False):
            return
        if isinstance(value, tuple):
            getattr(chosen, attribute).extend(value)
        else:
            setattr(chosen, attribute, value)
    return callback


def add_target_options(command: Any, path: tuple[str, ...]) -> None:
    """--target/--group/--all-targets on a command with --database-url; and on a fleet command
    --parallel/--canary/--target-timeout, with its callback run once per target when asked."""
    from typer.core import TyperOption

    from minnoctl.cli.options import Duration, Number

    taken = {o for p in command.params for o in p.opts}
    if "--database-url" not in taken or "--target" in taken:
        return
    command.params += [
        TyperOption(param_decls=["--target"], multiple=True, expose_value=False, callback=_store("targets"),
                    metavar="NAME", help=TARGET_HELP, autocompletion=_complete("targets")),
        TyperOption(param_decls=["--group"], multiple=True, expose_value=False, callback=_store("groups"),
                    metavar="NAME", help=GROUP_HELP, autocompletion=_complete("groups")),
        TyperOption(param_decls=["--all-targets"], is_flag=True, default=False, expose_value=False,
                    callback=_store("all_targets"), help=ALL_HELP),
    ]
    if path not in FLEET_COMMANDS:
        return
    command.params += [
        TyperOption(param_decls=["--parallel"], type=Number(1, 1000, integer=True), expose_value=False,
                    callback=_store("parallel"), metavar="N", help=PARALLEL_HELP),
        TyperOption(param_decls=["--canary"], type=Number(0, 1_000_000, integer=True), expose_value=False,
                    callback=_store("canary"), metavar="N", help=CANARY_HELP),
        TyperOption(param_decls=["--target-timeout"], type=Duration(minimum=0.1), expose_value=False,
                    callback=_store("timeout"), metavar="DURATION", help=TIMEOUT_HELP),
    ]
    if command.callback is not None:
        command.callback = _fleet_callback(command.callback, path)


def _complete(kind: str) -> Callable[..., list[str]]:
    """Tab completion of --target / --group: the names of the targets file (none when it is unreadable)."""
    def complete(ctx: Any, args: list[str], incomplete: str) -> list[str]:
        try:
            file = _file()
        except Exception:  # noqa: BLE001 - a completion never fails the shell
            return []
        if kind == "targets":
            names = list(file.targets)
        else:
            names = [*file.groups, *sorted({f"tag:{t}" for target in file.targets.values() for t in target.tags})]
        return [n for n in names if n.startswith(incomplete)]
    return complete


def _fleet_callback(callback: Callable[..., Any], path: tuple[str, ...]) -> Callable[..., Any]:
    @functools.wraps(callback)
    def run(**kwargs: Any) -> Any:
        from minnoctl.cli import current_click_context

        click_ctx = current_click_context()
        if getattr(click_ctx, "invoked_subcommand", None):  # `migrate status`: the group's part is nothing
            return callback(**kwargs)
        targets = fleet_targets()
        if targets is None:
            if chosen.parallel is not None or chosen.canary or chosen.timeout is not None:
                raise UsageError("--parallel, --canary and --target-timeout go with several targets (--group, "
                                 "--all-targets, a discovering --target)")
            return callback(**kwargs)
        return _run(path, callback, kwargs, click_ctx, targets)
    return run


def fleet_targets() -> list[Any] | None:
    """The targets when the options name a fleet (a group, all, several, a discovering one); None
    for no target options or one plain target."""
    from minnoctl import targets as logic

    selection = chosen.selection()
    if not selection:
        return None
    file = _file()
    picked = logic.choose(file, selection)
    fleet = bool(selection.groups or selection.all_targets or len(picked) > 1 or any(t.discovers for t in picked))
    if not fleet:
        return None
    return picked


def single_target() -> Any | None:
    """The one target the options name (for every command), None when they name none; several:
    UsageError (the command runs on one database)."""
    from minnoctl import targets as logic

    selection = chosen.selection()
    if not selection:
        return None
    picked = logic.choose(_file(), selection)
    if selection.groups or selection.all_targets or len(picked) != 1 or picked[0].discovers:
        from minnoctl.cli import current_click_context

        name = getattr(current_click_context(), "command_path", "minnoctl")
        fleets = ", ".join(f"minnoctl {c}" for c in FLEET_COMMANDS.values())
        raise UsageError(f"{name} runs on one database: {selection.describe()} names "
                         f"{'several' if len(picked) != 1 or picked[0].discovers else 'a group of'} targets — give "
                         f"one --target (several run with {fleets})")
    return picked[0]


def _file() -> Any:
    from minnoctl import config
    from minnoctl import targets as logic

    return logic.load(config.environment())


def _run(path: tuple[str, ...], callback: Callable[..., Any], kwargs: dict[str, Any], click_ctx: Any,
         picked: list[Any]) -> None:
    import os

    import typer

    from minnoctl import fleet, render
    from minnoctl import targets as logic
    from minnoctl import config
    from minnoctl.cli import _report, _state
    from minnoctl.context import Context

    for name, option in NOT_IN_FLEETS.get(path, {}).items():
        if kwargs.get(name):
            raise UsageError(f"{option} works on one database: give one --target")
    if path == ("health",):  # its usage errors once, before any target runs
        from minnoctl.cli.health import precheck

        precheck(kwargs)
    if kwargs.get("database_url"):
        raise UsageError("--database-url and the target options both name a database — give one of them")
    fmt = kwargs.get("fmt") or kwargs.get("out") or "table"
    base = Context(environment=config.environment(), fmt=fmt, quiet=_state.quiet, traceback=_state.traceback)
    failed: dict[str, tuple[int, str]] = {}

    def find(target: Any) -> list[str]:
        try:
            return logic.discover(base.on_target(target))
        except Exception as exc:  # noqa: BLE001 - its own outcome: the others still run
            capture = render.Capture()
            with render.captured(capture):
                code = _report(exc)
            failed[target.name] = (code, capture.lines[-1][1] if capture.lines else str(exc))
            return []

    expanded = logic.expand(picked, find)
    expanded += [t for t in picked if t.name in failed]  # a discovery that failed: a failed target
    if not expanded:
        raise UsageError(f"{chosen.selection().describe()} found no database (its discovery matched none)")

    def job() -> None:
        with click_ctx.scope(cleanup=False):
            callback(**kwargs)

    parallel = chosen.parallel or _pool_size()
    run = fleet.run(FLEET_COMMANDS[path], base, expanded, job, report=_report, parallel=parallel,
                    canary=chosen.canary, timeout=chosen.timeout, health=path == ("health",), failed=failed)
    render.show(run.result(fmt), fmt)
    if run.interrupted:
        import signal

        render.error(f"interrupted by {signal.Signals(run.interrupted).name}: the running targets' statements "
                     "were cancelled; run it again for the rest")
    if run.stopped_by:
        render.error(f"canary {run.stopped_by} failed: the rollout stopped; "
                     f"{sum(o.status == 'skipped' for o in run.outcomes)} target(s) not run")
    if run.abandoned:  # a timed-out target's thread may sit in a call that cannot be cancelled
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(run.exit_code)
    raise typer.Exit(run.exit_code)


def _pool_size() -> int:
    """DB_POOL_SIZE: the most connections a parallel command opens at once (config.SETTINGS)."""
    from minnoctl.config import DEFAULT_POOL_SIZE, MAX_POOL_SIZE, env_value, parse_number

    found = env_value("DB_POOL_SIZE")
    return int(parse_number(found[0], found[1], minimum=1, maximum=MAX_POOL_SIZE, integer=True)) if found \
        else DEFAULT_POOL_SIZE
