"""Options declared once and reused by every command (GUIDE habit 7)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from minnoctl.formats import FORMATS
from minnoctl.render_text import one_line, shown


def format_option(choices: tuple[str, ...] = FORMATS, flags: tuple[str, ...] = ("--format", "-f"),
                  help: str | None = None) -> Any:
    """A --format option accepting `choices` (the metadata of `Annotated[str, format_option()]`, so
    the alias stays a type); anything else is a usage error, never a fallback. `flags`: another
    name where --format means something else (backup create's --output-format)."""

    def check(value: str) -> str:
        if value not in choices:
            raise typer.BadParameter(f"unknown format {shown(value)} — use one of: {', '.join(choices)}")
        return value

    return typer.Option(
        *flags,
        help=help or f"Output format: table (Rich in a terminal), {', '.join(c for c in choices if c != 'table')}.",
        callback=check,
    )


DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="Database URL (postgresql://user@host:port/db). Overrides MINNO_DATABASE_URL and the rest. "
        "Keep passwords out of it: they show in `ps`; use PGPASSWORD or ~/.pgpass.",
        show_default=False,
    ),
]

Format = Annotated[str, format_option()]


Yes = Annotated[bool, typer.Option("--yes", "-y", help="Answer yes to the confirmation (for scripts).")]


def _param_name(param: object) -> str:
    opts = getattr(param, "opts", None) or []
    if getattr(param, "param_type_name", "") == "option" and opts:
        return max(opts, key=len)
    return getattr(param, "human_readable_name", None) or "value"


try:  # recent Typer vendors click as typer._click
    from typer._click.types import ParamType as _ParamType
except ImportError:  # pragma: no cover - older Typer on real click
    from click.types import ParamType as _ParamType  # type: ignore[import-not-found,no-redef,unused-ignore]


class Number(_ParamType):
    """A number option or argument through config.parse_number: finite (no nan, inf, 1e400) and
    within its bounds, else one line naming it (exit 2). Typer's own min=/max= let nan through."""

    def __init__(self, minimum: float | None = 0, maximum: float | None = None, *, integer: bool = False,
                 above: bool = False, unit: str = "") -> None:
        from minnoctl.config import MAX_COUNT

        self.minimum, self.above, self.integer, self.unit = minimum, above, integer, unit
        self.maximum = MAX_COUNT if maximum is None and integer else maximum
        self.name = "integer" if integer else "number"

    def convert(self, value, param, ctx):  # noqa: ANN001 - click's signature
        from minnoctl.config import parse_number

        return parse_number(value, _param_name(param), minimum=self.minimum, maximum=self.maximum,
                            integer=self.integer, above=self.above, unit=self.unit)


class Duration(_ParamType):
    """A duration option through config.parse_duration, the one syntax of every option and variable
    (500ms, 90s, 5min, 2m, 1h30m, 1d; a bare number counts in `per` seconds: 1, or 86400 for an
    option that has always taken days). The value is in units of `per` (seconds unless said);
    bounded (10 years unless less is given), never nan or an overflow; one line else (exit 2)."""

    name = "duration"

    def __init__(self, *, allow_zero: bool = False, minimum: float = 0, maximum: float | None = None,
                 per: float = 1) -> None:
        from minnoctl.config import MAX_SPAN_S

        self.allow_zero, self.minimum, self.per = allow_zero, minimum, per
        self.maximum = MAX_SPAN_S if maximum is None else maximum

    def convert(self, value, param, ctx):  # noqa: ANN001 - click's signature
        from minnoctl.config import parse_duration

        if isinstance(value, (int, float)):  # a default
            return value
        seconds = parse_duration(value, _param_name(param), allow_zero=self.allow_zero, minimum=self.minimum,
                                 maximum=self.maximum, bare=self.per)
        return seconds / self.per if self.per != 1 else seconds


class Text(_ParamType):
    """Every string option and argument: an empty value is a usage error, never "all" or "none"
    (`--modules ''` is not every module, `--expires-at ''` is not "no expiry": say `never`); so is
    a control character (a newline, ESC): no name, path or label minnoctl takes holds one, and
    stored it would reach every terminal that lists it."""

    name = "text"

    def convert(self, value, param, ctx):  # noqa: ANN001 - click's signature
        import unicodedata

        from minnoctl.errors import UsageError

        if isinstance(value, str) and not value.strip():
            raise UsageError(f"{_param_name(param)} is empty — give a value, or leave the option out")
        if isinstance(value, str):
            at = next((i for i, ch in enumerate(value) if unicodedata.category(ch) == "Cc"), None)
            if at is not None:  # shown escaped; a URL is not echoed at all (it may hold a password)
                name = _param_name(param)
                what = f"{name}" if "url" in name.lower() else f"{name} {shown(value)}"
                raise UsageError(f"{what} holds a control character (a newline, tab or escape sequence) at "
                                 f"character {at + 1} — give it without")
        return value


def no_empty_values(command: object) -> None:
    """Give every plain string parameter of `command` and its subcommands the Text type (once)."""
    for param in getattr(command, "params", ()):
        if type(param.type).__name__ == "StringParamType":
            param.type = Text()
    for sub in (getattr(command, "commands", None) or {}).values():
        no_empty_values(sub)


QUIET_HELP = "Print no notes on stderr, only warnings and errors."
TRACEBACK_HELP = "Show the Python traceback for user errors too."


def _global_quiet(ctx, param, value):  # noqa: ANN001 - click's callback signature
    if value:
        from minnoctl import render
        from minnoctl.cli import _state

        _state.quiet = True
        render.setup_logging(quiet=True)


def _global_traceback(ctx, param, value):  # noqa: ANN001 - click's callback signature
    if value:
        from minnoctl.cli import _state

        _state.traceback = True


def add_global_options(group: object, path: tuple[str, ...] = ()) -> None:
    """The root's --quiet / -q and --traceback, also after the command: every command and group
    below `group` gets them (the root parses them before the command; the command's own copy sets
    the same state once its own options are parsed, so either place means the same). A command
    with its own --quiet (cleanup) keeps it; --database-url is each command's own option already."""
    from typer.core import TyperOption

    from minnoctl.cli.fleet import add_target_options

    for name, sub in (getattr(group, "commands", None) or {}).items():
        add_target_options(sub, (*path, name))  # --target, --group, --all-targets (cli/fleet.py)
        taken = {o for p in sub.params for o in p.opts}
        if "--quiet" not in taken:
            sub.params.append(TyperOption(param_decls=["--quiet", "-q"], is_flag=True, default=False,
                                          expose_value=False, callback=_global_quiet, help=QUIET_HELP))
        if "--traceback" not in taken:
            sub.params.append(TyperOption(param_decls=["--traceback"], is_flag=True, default=False,
                                          expose_value=False, callback=_global_traceback, help=TRACEBACK_HELP))
        add_global_options(sub, (*path, name))


MAX_LOCK_TIMEOUT_S = 24 * 3600  # --lock-timeout: a day
MAX_RUNTIME_S = 30 * 86400  # --max-runtime: 30 days

LockTimeout = Annotated[
    float,
    typer.Option("--lock-timeout", click_type=Duration(allow_zero=True, maximum=MAX_LOCK_TIMEOUT_S),
                 help="How long to wait for another migrate / db init to finish: a duration (90s, 5min; "
                 "a bare number is seconds), 0 to 1 day."),
]

Modules = Annotated[
    str | None,
    typer.Option("--modules", "-m", help="Comma-separated modules (the folders of the migration set; "
                 "`minnoctl migrate status` shows them); their dependencies are added. Default: all.",
                 show_default=False),
]


def note(message: str, *args: object) -> None:
    """A note on stderr through the logic modules' logger (logging is imported only when used)."""
    import logging

    logging.getLogger("minnoctl").info(message, *args)


def confirm(question: str, yes: bool) -> None:
    """Go on if --yes, or if a person at a terminal says yes; otherwise raise NotConfirmed."""
    import sys

    from minnoctl.errors import NotConfirmed

    if yes:
        return
    if not sys.stdin.isatty():
        raise NotConfirmed(f"{question.rstrip('?')}: this needs --yes when not run in a terminal")
    if not typer.confirm(one_line(question), default=False, err=True):  # a value in it is shown escaped
        raise NotConfirmed("declined; nothing was changed")


ForceProduction = Annotated[
    bool,
    typer.Option("--force-production", help="Go on even though the target is production (MINNO_ENV, APP_ENV or "
                 "NODE_ENV naming production, or db init --environment production); in a terminal it still asks."),
]


def guard_production(reason: str | None, *, force: bool, yes: bool, action: str, target: str,
                     option: str = "--force-production") -> bool:
    """The one production guard of every destructive command (`reason` from safety.production_reason).

    Not production: returns False. Production without `force`: ProductionRefused (exit 16). With it, a
    person at a terminal must still type yes (even with --yes); a script needs --yes. Returns True
    once confirmed, so the command need not ask a second time."""
    import sys

    from minnoctl.errors import ProductionRefused

    if reason is None:
        return False
    if not force:
        raise ProductionRefused(f"refusing to {action} at {target}: it is production ({reason}) — "
                                f"add {option} only if you really mean to")
    if sys.stdin.isatty():
        confirm(f"{target} is PRODUCTION ({reason}). {action[0].upper()}{action[1:]} anyway?", False)
    else:
        confirm(f"{action} on a production database ({reason})", yes)
    return True
