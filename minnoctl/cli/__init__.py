"""The minnoctl command line: thin Typer commands over the logic modules.

Every command parses options, calls one function in minnoctl/<area>.py, renders its result, and
lets MinnoctlError reach MinnoctlGroup.main, which prints one line on stderr and exits with the
error's code. Anything else is a bug: its traceback is printed (never with locals) and the exit
code is INTERNAL.
"""

from __future__ import annotations

import os
import sys
import traceback
from dataclasses import dataclass
from collections.abc import Sequence
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

try:  # recent Typer vendors click as typer._click
    from typer._click.globals import get_current_context as current_click_context  # noqa: F401 (cli/fleet.py)
    from typer._click.exceptions import ClickException, NoArgsIsHelpError
except ImportError:  # pragma: no cover - older Typer on real click
    from click import get_current_context as current_click_context  # type: ignore[import-not-found,no-redef,unused-ignore]  # noqa: F401
    from click.exceptions import ClickException, NoArgsIsHelpError  # type: ignore[import-not-found,no-redef,unused-ignore]

from minnoctl import __version__
from minnoctl.cli.options import QUIET_HELP, TRACEBACK_HELP
from minnoctl.errors import ExitCode, MinnoctlError, UsageError


@dataclass
class State:
    """Options of the root command, available to every subcommand as ctx.obj."""

    database_url: str | None = None
    traceback: bool = False
    quiet: bool = False


_state = State()


def _environment() -> Any:
    """The environment and the .env file (config.environment); the environment alone when the
    .env file cannot be read (the command reports that itself)."""
    from minnoctl.config import environment, process_environment
    from minnoctl.errors import ConfigError

    try:
        return environment()
    except ConfigError:
        return process_environment()


def _secrets_in_environment() -> list[str]:
    from minnoctl.config import URL_VARS

    env = _environment()
    names = ("DB_PASSWORD", "PGPASSWORD", "MINNO_MASTER_KEY", "MINNO_NEW_MASTER_KEY")
    found = [env[n] for n in names if env.get(n)]
    from urllib.parse import urlsplit

    for name in URL_VARS:
        try:
            password = urlsplit(env.get(name, "")).password
        except ValueError:
            password = None
        if password:
            found.append(password)
    return found


def _print_traceback(exc: BaseException) -> None:
    from minnoctl.config import scrub

    text = "".join(traceback.format_exception(exc))
    sys.stderr.write(scrub(text, _secrets_in_environment()))


def _report(exc: BaseException) -> int:
    """Print one line (or the help, or a bug's traceback) for `exc`; return the exit code."""
    from minnoctl import render  # loaded only when something fails, not for --help

    if isinstance(exc, MinnoctlError):
        if _state.traceback:
            _print_traceback(exc)
        render.error(exc.message)
        return int(exc.exit_code)
    if isinstance(exc, NoArgsIsHelpError):  # bare `minnoctl`: the help is the answer
        sys.stdout.write(exc.format_message() + "\n")
        return 0
    if isinstance(exc, ClickException):
        ctx = getattr(exc, "ctx", None)
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        render.error(exc.format_message() + hint)
        return exc.exit_code
    if isinstance(exc, (typer.Abort, KeyboardInterrupt)):
        render.error("interrupted")
        return 130
    if isinstance(exc, BrokenPipeError):
        sys.stderr = open(os.devnull, "w")  # the reader left; say nothing more
        return int(ExitCode.FAILURE)
    if isinstance(exc, OSError) and exc.filename is not None:  # a path given or configured: not a bug
        import errno

        from minnoctl.render_text import shown

        if _state.traceback:
            _print_traceback(exc)
        render.error(f"cannot use {shown(exc.filename)}: {exc.strerror or exc.__class__.__name__}")
        bad_name = exc.errno in (errno.ENAMETOOLONG, errno.EINVAL, errno.EILSEQ)
        return int(ExitCode.USAGE if bad_name else ExitCode.FAILURE)
    refused = _server_refusal(exc)
    if refused is not None:
        if _state.traceback:
            _print_traceback(exc)
        from minnoctl.config import scrub

        render.error(scrub(refused[0], _secrets_in_environment()))
        return int(refused[1])
    _print_traceback(exc)
    render.error(f"unexpected {exc.__class__.__name__}: this is a bug in minnoctl {__version__}; "
                 "please report it with the traceback above")
    return int(ExitCode.INTERNAL)


def _server_refusal(exc: BaseException) -> tuple[str, ExitCode] | None:
    """A server-side condition, not a bug: the server went away, is read-only (a standby), denied a
    privilege, cancelled a statement, ran out of disk. One line and an exit code; anything else a
    psycopg error can be (a syntax error in minnoctl's SQL) stays a bug with its traceback."""
    psycopg = sys.modules.get("psycopg")
    if psycopg is None or not isinstance(exc, psycopg.Error):
        return None
    from minnoctl.connection import first_line

    errors = psycopg.errors
    detail = first_line(str(exc))
    if isinstance(exc, errors.ReadOnlySqlTransaction):
        return (f"the server is read-only ({detail}): minnoctl is connected to a standby or a read-only "
                "session — point it at the primary; nothing more was changed", ExitCode.FAILURE)
    if isinstance(exc, errors.InsufficientPrivilege):
        return (f"permission denied: {detail} — connect as the role that owns minnoctl's schemas, or grant "
                "it the privilege", ExitCode.FAILURE)
    if isinstance(exc, errors.StringDataRightTruncation):  # 22001: a value longer than its column
        return (f"a value is too long for its column ({detail}) — shorten it", ExitCode.USAGE)
    if isinstance(exc, (psycopg.DataError, errors.CheckViolation)):  # 22xxx, 23514: a value the server refuses
        return (f"the server refused a value given ({detail}) — check the options", ExitCode.USAGE)
    if isinstance(exc, errors.QueryCanceled):
        return (f"the server cancelled a statement ({detail}): raise DB_STATEMENT_TIMEOUT or the role's "
                "statement_timeout, or run it when the database is quieter", ExitCode.FAILURE)
    if isinstance(exc, psycopg.OperationalError):
        lost = getattr(exc, "sqlstate", None) is None or str(getattr(exc, "sqlstate", "")).startswith(("08", "57P"))
        if lost:
            return (f"lost the connection to the server: {detail} — check that it is up "
                    "(`minnoctl health --live`) and run the command again", ExitCode.UNREACHABLE)
        return f"the server failed the command: {detail}", ExitCode.FAILURE
    return None


ORDER = ("db", "migrate", "app", "seed", "backup", "token", "ports", "port", "cleanup", "health", "local", "config")


class MinnoctlGroup(TyperGroup):
    """The root group: maps every way a command can fail to one stderr line and an exit code."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        from minnoctl.cli.options import add_global_options

        add_global_options(self)  # --quiet and --traceback after the command too

    def list_commands(self, ctx: Any) -> list[str]:
        # the product's order in --help, whether a name is a command or a group
        return sorted(super().list_commands(ctx), key=lambda n: ORDER.index(n) if n in ORDER else len(ORDER))

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, windows_expand_args: bool = True, **extra: Any) -> Any:
        from minnoctl.cli.options import no_empty_values

        no_empty_values(self)  # an empty string is never "all" or "none"
        if not standalone_mode:
            return super().main(args=args, prog_name=prog_name, complete_var=complete_var,
                                standalone_mode=False, windows_expand_args=windows_expand_args, **extra)
        try:
            rv = super().main(args=args, prog_name=prog_name or "minnoctl", complete_var=complete_var,
                              standalone_mode=False, windows_expand_args=windows_expand_args, **extra)
        except (Exception, KeyboardInterrupt) as exc:
            sys.exit(_report(exc))
        finally:
            _end_invocation()
        if rv == 130:  # Typer turns a KeyboardInterrupt (Ctrl-C, SIGINT) into a silent Exit(130)
            sys.exit(_report(KeyboardInterrupt()))
        sys.exit(rv if isinstance(rv, int) else 0)


app = typer.Typer(
    cls=MinnoctlGroup,
    name="minnoctl",
    help="Admin tool for the PostgreSQL database behind Minno.\n\n"
    "With no database configured it runs on an embedded PostgreSQL that it starts itself.\n\n"
    "Example: minnoctl health --live",
    no_args_is_help=True,
    rich_markup_mode=None,  # plain click help: fast, and no Rich import for --help
    pretty_exceptions_enable=False,  # never print locals: they can hold passwords and keys
    add_completion=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"minnoctl {__version__}")
        raise typer.Exit(0)


@app.callback()
def root(
    ctx: typer.Context,
    database_url: Annotated[str | None, typer.Option(
        "--database-url", help="Database URL; overrides every environment variable. Keep passwords out "
        "of it (they show in `ps`): use PGPASSWORD, ~/.pgpass or MINNO_DATABASE_URL.", show_default=False)] = None,
    show_traceback: Annotated[bool, typer.Option("--traceback", help=TRACEBACK_HELP)] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help=QUIET_HELP)] = False,
    version: Annotated[bool | None, typer.Option(
        "--version", callback=_version, is_eager=True, help="Print the version and exit.")] = None,
) -> None:
    """Admin tool for the PostgreSQL database behind Minno."""
    from minnoctl import config, render
    from minnoctl.errors import ConfigError

    render.reset()
    try:  # the environment and .env of this invocation, read once (config.use_environment)
        config.use_environment(config.Environment())
    except ConfigError:
        config.use_environment(None)  # an unreadable .env: the command reports it itself
    _state.database_url = database_url
    from minnoctl.cli import fleet

    fleet.reset()  # the target options of this invocation (cli/fleet.py)
    _state.traceback = show_traceback or _environment().get("MINNOCTL_TRACEBACK") == "1"
    _state.quiet = quiet
    render.setup_logging(quiet=quiet)
    ctx.obj = _state


def _end_invocation() -> None:
    """Forget the invocation's environment (tests run many invocations in one process)."""
    from minnoctl import config

    config.use_environment(None)


def context(database_url: str | None = None, fmt: str = "table") -> Any:
    """The command's Context (minnoctl/context.py): its own --database-url, else the root one; the
    environment read once for the invocation; the output format and the global flags."""
    from dataclasses import replace

    from minnoctl import config, render
    from minnoctl import fleet as fleets
    from minnoctl.cli import fleet
    from minnoctl.context import Context

    running = fleets.current()
    if running is not None:  # one target of a fleet run (this thread's)
        return replace(running, fmt=fmt)
    url = database_url or _state.database_url
    target = fleet.single_target()
    if target is not None and url:
        raise UsageError("--database-url and --target both name a database — give one of them")
    if config.has_password_in_url(url):
        render.warn("a password on the command line is visible to other users (ps); "
                    "prefer MINNO_DATABASE_URL, PGPASSWORD or ~/.pgpass")
    return Context(environment=config.environment(), database_url=url, fmt=fmt, quiet=_state.quiet,
                   traceback=_state.traceback, target=target)


from minnoctl.cli import (  # noqa: E402  (register)
    app_cmd, backup_cmd, cleanup_cmd, config_cmd, health, local_cmd, migrate_cmd, ports_cmd, seed_cmd, token_cmd)

# the product's order: db, migrate, seed, backup, token, ports, cleanup, health, local, config
migrate_cmd.register(app)
app_cmd.register(app)
seed_cmd.register(app)
token_cmd.register(app)
backup_cmd.register(app)
ports_cmd.register(app)
cleanup_cmd.register(app)
health.register(app)
local_cmd.register(app)
config_cmd.register(app)


def main() -> None:
    """Console-script entry point."""
    app(prog_name="minnoctl")
