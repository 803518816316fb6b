"""Options declared once and reused by every command (GUIDE habit 7)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from minnoctl.formats import FORMATS


def format_option(choices: tuple[str, ...] = FORMATS) -> object:
    """A --format option accepting `choices`; anything else is a usage error, never a fallback."""

    def check(value: str) -> str:
        if value not in choices:
            raise typer.BadParameter(f"unknown format '{value}' — use one of: {', '.join(choices)}")
        return value

    return Annotated[
        str,
        typer.Option(
            "--format", "-f",
            help=f"Output format: table (Rich in a terminal), {', '.join(c for c in choices if c != 'table')}.",
            callback=check,
        ),
    ]


DatabaseUrl = Annotated[
    Optional[str],
    typer.Option(
        "--database-url",
        help="Database URL (postgresql://user@host:port/db). Overrides MINNO_DATABASE_URL and the rest. "
        "Keep passwords out of it: they show in `ps`; use PGPASSWORD or ~/.pgpass.",
        show_default=False,
    ),
]

Format = format_option()


Yes = Annotated[bool, typer.Option("--yes", "-y", help="Answer yes to the confirmation (for scripts).")]

LockTimeout = Annotated[
    float,
    typer.Option("--lock-timeout", min=0, help="Seconds to wait for another migrate / db init to finish."),
]

Modules = Annotated[
    Optional[str],
    typer.Option("--modules", "-m", help="Comma-separated modules (minno, chatbot, assistant, supervisor, "
                 "knowledge, slackbot); their dependencies are added. Default: all.", show_default=False),
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
    if not typer.confirm(question, default=False, err=True):
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
