"""`minnoctl app create|list|drop`: the applications' own login roles (logic in minnoctl/apps.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from minnoctl.cli.options import DatabaseUrl, Format, Yes, confirm

app_app = typer.Typer(help="Application connections: a least-privilege login role per system, its search_path "
                      "set for this database, its URL in a 0600 env file.\n\n"
                      "Example: minnoctl app create chatbot", no_args_is_help=True)

CREATE_COLUMNS = ["role", "modules", "search_path", "url", "env_file", "password"]
LIST_COLUMNS = ["role", "modules", "search_path", "allow_ddl", "status", "missing", "extra"]


def _context(database_url: str | None, fmt: str):
    from minnoctl.cli import context

    return context(database_url, fmt)


def _read_password() -> str:
    """One line from stdin (without echo in a terminal); the line break is not part of it."""
    import sys

    if sys.stdin.isatty():
        import getpass

        return getpass.getpass("password for the app role: ")
    line = sys.stdin.readline()
    return line[:-1] if line.endswith("\n") else line


@app_app.command("create")
def create(
    module: Annotated[list[str] | None, typer.Argument(
        metavar="[MODULE]...", help="Modules the application uses (default: one role per installed module).",
        show_default=False)] = None,
    role: Annotated[str | None, typer.Option(
        "--role", help="One role for all the MODULEs given, in that order (created, or an existing role "
        "updated). Default: <module>_app per module.", show_default=False)] = None,
    password_stdin: Annotated[bool, typer.Option(
        "--password-stdin", help="Read the role's password from one line of stdin (one role only).")] = False,
    new_password: Annotated[bool, typer.Option(
        "--new-password", help="Generate a new password for an existing role (a new role always gets one).")] = False,
    env_file: Annotated[str | None, typer.Option(
        "--env-file", help="Where to write DATABASE_URL=... with the password (mode 0600; one role only). "
        "Default: ./<role>.env.", show_default=False)] = None,
    allow_ddl: Annotated[bool, typer.Option(
        "--allow-ddl", help="Also CREATE on its schemas, for applications that create tables of their own "
        "(spec 002's migrations, spec 000's audit_log); minnoctl's tables stay the migrating role's.")] = False,
    fmt: Format = "table",
    database_url: DatabaseUrl = None,
) -> None:
    """Create or update the login role of an application: its search_path (its schemas, minno, public) as a
    setting of the role in this database, so it holds through PgBouncer transaction pooling, and
    least-privilege grants kept after every migration.

    A new role (or --new-password) gets a generated password, written with the URL to ./<role>.env
    (mode 0600); --password-stdin reads one instead. The password is never printed: the output
    shows the URL without it.

    Example: minnoctl app create supervisor knowledge --role supervisor_app
    """
    from minnoctl import apps, render

    if role is not None:
        apps.check_role_name(role)  # before anything connects
    password = _read_password() if password_stdin else None
    ctx = _context(database_url, fmt)
    with ctx.session("app-create") as conn:
        created = apps.create(conn, module or [], role=role, password=password, new_password=new_password,
                              env_file=Path(env_file) if env_file is not None else None, allow_ddl=allow_ddl,
                              sslmode=ctx.settings.params.get("sslmode"))
    records = [c.record() for c in created]
    ctx.show(render.Result(records, CREATE_COLUMNS, document=records))


@app_app.command("list")
def list_(fmt: Format = "table", database_url: DatabaseUrl = None) -> None:
    """List the app roles of this database: modules, search_path as set, and whether their grants
    are complete (what is missing or extra is named). Exit 1 when one is incomplete or gone.

    Example: minnoctl app list --format json
    """
    from minnoctl import apps, render
    from minnoctl.errors import ExitCode

    ctx = _context(database_url, fmt)
    with ctx.session("app-list") as conn:
        listed = apps.list_roles(conn)
    records = [item.record() for item in listed]
    ctx.show(render.Result(records, LIST_COLUMNS, document=records,
                           styles={"status": lambda v: "green" if v == "complete" else "red"}))
    if any(item.status != "complete" for item in listed):
        raise typer.Exit(int(ExitCode.FAILURE))


@app_app.command("drop")
def drop(
    role: Annotated[str, typer.Argument(metavar="ROLE", help="The app role to remove.")],
    yes: Yes = False,
    fmt: Format = "table",
    database_url: DatabaseUrl = None,
) -> None:
    """Revoke an app role's privileges in this database, remove its search_path setting and record,
    and drop the role unless it owns objects or holds privileges elsewhere (then it says so).
    Asks first; --yes in scripts.

    Example: minnoctl app drop chatbot_app --yes
    """
    from minnoctl import apps, render

    apps.check_role_name(role)
    ctx = _context(database_url, fmt)
    with ctx.session("app-drop") as conn:
        result = apps.drop(conn, role, approve=lambda: confirm(
            f"Revoke every privilege of role {role} in {ctx.settings.label()} and drop it?", yes))
    ctx.show(render.Result([result.record()], ["role", "revoked", "dropped", "note"]))


def register(app: typer.Typer) -> None:
    app.add_typer(app_app, name="app")
