"""`minnoctl db init` and `minnoctl migrate [status|rollback|new|verify]`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from minnoctl.cli.options import (DatabaseUrl, Duration, ForceProduction, Format, LockTimeout, Modules, Number, Yes,
                                  confirm, guard_production, note as _note)
from minnoctl.locks import DDL_LOCK_TIMEOUT_S
from minnoctl.safety import names_help

if TYPE_CHECKING:
    from minnoctl.context import Context

DdlLockTimeout = Annotated[
    float,
    typer.Option("--ddl-lock-timeout", click_type=Duration(minimum=0.01, maximum=3600),
                 help="How long each migration statement may wait for a table lock: a duration (500ms, 5s, "
                 "2min; a bare number is seconds), 10ms to 1 hour. Waiting "
                 "for ACCESS EXCLUSIVE queues the application's queries behind it, so a migration waits at most "
                 "this long, gives way, retries a few times with backoff, then fails (exit 13) naming the "
                 f"blocking session. Default: {DDL_LOCK_TIMEOUT_S:g}s.", show_default=False),
]

# the module names are left out: they are the migration set's folders (read only when a command runs,
# never for --help); an unknown name lists them
_MODULES = ("Comma-separated modules (the folders of the migration set; `minnoctl migrate status` shows "
            "them); their dependencies are added. Default: ")
MigrateModules = Annotated[str | None, typer.Option(
    "--modules", "-m", help=_MODULES + "the installed modules (all of them on a new database).", show_default=False)]
InitModules = Annotated[str | None, typer.Option(
    "--modules", "-m", help=_MODULES + "all; run again on a database that holds modules, all the server can hold "
    "(knowledge needs pgvector).", show_default=False)]


db_app = typer.Typer(help="Create the database, schemas and extensions (db init).\n\n"
                     "Example: minnoctl db init", no_args_is_help=True)
migrate_app = typer.Typer(help="Apply, plan, verify and roll back schema migrations.\n\n"
                          "Example: minnoctl migrate --dry-run", invoke_without_command=True)


def _context(database_url: str | None, fmt: str = "table") -> Context:
    from minnoctl.cli import context

    return context(database_url, fmt)


def _applied(migrations) -> list[dict]:
    return [{"id": f.id, "module": f.module, "transactional": f.transactional} for f in migrations]


APPLIED_COLUMNS = ["id", "module", "transactional"]


@db_app.command("init")
def init(
    modules: InitModules = None,
    force: Annotated[bool, typer.Option("--force", help="Drop minnoctl's module schemas and its bookkeeping "
                                        "first (asks; --yes in scripts). Nothing else is touched: if objects "
                                        "outside them (a view, a foreign key, ...) depend on them, it refuses "
                                        "and lists them.")] = False,
    cascade: Annotated[bool, typer.Option("--cascade", help="With --force: also drop the objects outside "
                                          "minnoctl's schemas that depend on them (it lists what it "
                                          "dropped).")] = False,
    yes: Yes = False,
    force_production: ForceProduction = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="List every object created.")] = False,
    environment: Annotated[str | None, typer.Option(
        "--environment", "-e", help="Record what this database is in the database itself, one of: "
        f"{names_help()}. seed, db init --force, migrate rollback and backup restore --clean refuse a "
        "production database without --force-production; lifting the mark needs it too.",
        show_default=False)] = None,
    distributed: Annotated[bool | None, typer.Option(
        "--distributed/--no-distributed", help="On a Citus coordinator (detected when the citus extension is in "
        "the database and nodes may hold shards): lay the tables out by each module's distribution plan "
        "(migrations/<module>/distribution.toml). --distributed refuses anything else; --no-distributed leaves "
        "every table on the coordinator.", show_default=False)] = None,
    lock_timeout: LockTimeout = 30,
    ddl_lock_timeout: DdlLockTimeout = DDL_LOCK_TIMEOUT_S,
    fmt: Format = "table",
    database_url: DatabaseUrl = None,
) -> None:
    """Create the database if needed, its extensions and schemas, and apply every migration.

    Running it again is a no-op that says so. On a server without pgvector, leave knowledge out the
    first time: --modules minno,chatbot,assistant,supervisor,slackbot; a plain db init after that
    leaves it out too, and says so. It ends with a note naming the next step (seed, app create).

    Example: minnoctl db init --environment production
    """
    from minnoctl import migrate, render
    from minnoctl import modules as registry

    from minnoctl.errors import UsageError

    chosen = registry.parse_list(modules)
    if cascade and not force:
        raise UsageError("--cascade goes with --force")
    if environment is not None:
        environment = migrate.check_environment(environment)
    ctx = _context(database_url, fmt)
    settings = ctx.settings
    target = settings.label()

    def approve(reason: str | None, recorded: str | None) -> None:
        """Before anything changes: the production guard, then the ordinary confirmations."""
        lifting = environment is not None and environment != "production" and recorded == "production"
        confirmed = False
        if force or lifting:
            action = ("drop minnoctl's schemas (db init --force)" if force else
                      f"mark it {environment}, lifting its production mark")
            confirmed = guard_production(reason, force=force_production, yes=yes, action=action, target=target)
        if force and not confirmed:
            schemas = ", ".join([m.schema for m in registry.MODULES] + [migrate.BOOKKEEPING])
            also = " and the objects outside them that depend on them" if cascade else ""
            confirm(f"Drop the schemas {schemas} and everything in them{also} at {target}?", yes)
        if lifting and not confirmed:
            confirm(f"{target} is marked production; mark it {environment}, which lifts the production guard?", yes)

    result = migrate.init(settings, chosen, force=force, lock_timeout=lock_timeout, verbose=verbose,
                          environment=environment, cascade=cascade, ddl_lock_timeout=ddl_lock_timeout,
                          approve=approve, distributed=distributed)
    if environment is not None and environment != result.environment_before:
        _note("marked the database as %s", environment)
    if result.database_created:
        _note("created the database")
    _extension_notes(result)
    for module, missing in result.skipped.items():
        _note("module %s left out: this server does not have the extension %s%s; once it does, run "
              "`minnoctl db init --modules %s`", module, ", ".join(missing),
              " (pgvector)" if missing == ["vector"] else "", module)
    _distribution_notes(result, verbose)
    if result.up_to_date:
        _note("the database is already initialised and up to date; nothing to do")
        return
    if not result.applied:
        return
    rows = _applied(result.applied)
    if verbose:
        created = [{"kind": k, "name": n} for k, n in result.objects]
        ctx.show(render.Result(created, ["kind", "name"], document={"applied": rows, "created": created}))
    else:
        ctx.show(render.Result(rows, APPLIED_COLUMNS))
    _note("applied %d migration(s)", len(result.applied))
    _note("next: minnoctl seed for development data, or minnoctl app create <module> for an application's "
          "login role")


def _distribution_notes(result, verbose: bool = False) -> None:
    """What laying the schema out on a Citus cluster did: one line, and with --verbose each change."""
    done = result.distribution
    if done is None or not done.changed:
        return
    kinds = done.kinds
    _note("laid the schema out on the Citus cluster (%d node(s) holding shards): %d distributed table(s), "
          "%d reference table(s), the others on the coordinator; %d key change(s)", result.cluster.shard_nodes,
          kinds.get("distributed", 0), kinds.get("reference", 0), len(done.constraints))
    if verbose:
        for line in done.constraints:
            _note("  %s", line)
    from minnoctl import render

    for table in done.unplanned:
        render.warn(f"{table} is in no distribution plan: it stays on the coordinator")


def _extension_notes(result) -> None:
    """The extensions a module's applications use that this database cannot have: one line per
    module saying which to ask an admin for (the ones created are logged as they are)."""
    from minnoctl import render

    for module, names in result.extensions_unavailable.items():
        render.warn(f"{module}: its applications' own SQL uses {', '.join(names)}, which this server does not have "
                    "or this role may not create — ask an admin to "
                    "install PostgreSQL's contrib extensions and run "
                    + " ".join(f'CREATE EXTENSION IF NOT EXISTS "{n}";' for n in names) + " in this database")


def _adoption_notes(plan) -> None:
    """What the next migrate adopts (earlier ids and checksums, stock yoyo's runs): not drift."""
    for line in plan.adoption.notes(done=False) if plan.adoption else ():
        _note("%s", line)


def _plan_result(plan):
    """The dry run's plan: the pending migrations with their SQL (render.Result's listing)."""
    from minnoctl import render

    pending = plan.pending
    listing = []
    for f in pending:
        mode = "transactional" if f.transactional else "NOT transactional"
        listing.append((f"{f.id}  [{f.module}, {mode}]", f"{f.id} ({mode})", f.sql()))
    return render.Result(_applied(pending), APPLIED_COLUMNS, listing=listing, document={
        "pending": [{"id": f.id, "module": f.module, "transactional": f.transactional,
                     "description": f.description, "sql": f.sql()} for f in pending],
        "drift": [d.__dict__ for d in plan.drift]})


@migrate_app.callback()
def migrate_main(
    ctx: typer.Context,
    dry_run: Annotated[bool, typer.Option("--dry-run", "-n", "-d", help="Print the plan (id, module, transaction mode, "
                                          "SQL) and change nothing; takes no lock.")] = False,
    exit_code: Annotated[bool, typer.Option("--exit-code", help="With --dry-run: exit 9 (PENDING) when "
                                            "something is pending, for CI.")] = False,
    modules: MigrateModules = None,
    allow_drift: Annotated[bool, typer.Option("--allow-drift", help="Apply even if applied migrations "
                                              "were edited, removed or renamed, or the live schema of a module "
                                              "to migrate no longer matches what they built (see migrate "
                                              "verify).")] = False,
    lock_timeout: LockTimeout = 30,
    ddl_lock_timeout: DdlLockTimeout = DDL_LOCK_TIMEOUT_S,
    fmt: Format = "table",
    database_url: DatabaseUrl = None,
) -> None:
    """Apply pending migrations of the installed modules (all, on a new database).

    Example: minnoctl migrate --dry-run --exit-code
    """
    if ctx.invoked_subcommand is not None:
        return
    from minnoctl import migrate, render
    from minnoctl import modules as registry
    from minnoctl.errors import ExitCode, UsageError

    if exit_code and not dry_run:
        raise UsageError("--exit-code goes with --dry-run")
    chosen = registry.parse_list(modules)
    run = _context(database_url, fmt)  # `ctx` is Typer's here
    settings = run.settings
    if dry_run:
        plan = migrate.plan_only(settings, chosen)
        _adoption_notes(plan)
        for d in plan.drift:
            render.warn(f"drift: {d.id}: {d.detail}")
        if not plan.pending:
            _note("nothing to apply: the database is up to date")
        else:
            run.show(_plan_result(plan))
            _note("%d migration(s) pending; nothing was changed (dry run)", len(plan.pending))
        if exit_code and plan.pending:
            raise typer.Exit(int(ExitCode.PENDING))
        return
    result = migrate.migrate(settings, chosen, lock_timeout=lock_timeout, allow_drift=allow_drift,
                             ddl_lock_timeout=ddl_lock_timeout)
    _extension_notes(result)
    if result.up_to_date:
        _note("nothing to apply: the database is up to date")
        return
    _distribution_notes(result)
    run.show(render.Result(_applied(result.applied), APPLIED_COLUMNS))
    _note("applied %d migration(s)", len(result.applied))


@migrate_app.command("status")
def status(modules: Modules = None, fmt: Format = "table", database_url: DatabaseUrl = None) -> None:
    """List every migration: applied or pending, when, by whom. Takes no lock.

    Example: minnoctl migrate status --format json
    """
    from minnoctl import migrate, render
    from minnoctl import modules as registry

    chosen = registry.parse_list(modules)
    ctx = _context(database_url, fmt)
    plan = migrate.plan_only(ctx.settings)
    rows = migrate.status_rows(plan)
    if chosen is not None:
        names = {m.name for m in chosen}
        rows = [r for r in rows if r["module"] in names]
    ctx.show(render.Result(rows, ["id", "module", "state", "applied_at", "applied_by", "transactional"],
                           styles={"state": lambda v: {"applied": "green", "pending": "yellow"}.get(v, "bold red")}))


@migrate_app.command("verify")
def verify(fmt: Format = "table", database_url: DatabaseUrl = None) -> None:
    """Detect drift: applied migrations whose files were edited, removed or renamed, and a live schema
    that no longer matches what they built (a missing, altered or extra table, column, constraint,
    index, trigger, view, function or sequence; copies of module tables in other schemas). Exit 10 if any.

    Example: minnoctl migrate verify
    """
    from minnoctl import drift, render
    from minnoctl.errors import ExitCode

    ctx = _context(database_url, fmt)
    plan, schema = drift.verify(ctx.settings)
    _adoption_notes(plan)
    for module in schema.no_baseline:
        _note("module %s: no current baseline of its schema (migrated before minnoctl recorded one, or the last "
              "run stopped part-way), so its live "
              "schema is not compared; the next `minnoctl migrate` records it", module)
    for d in schema.unmanaged:
        _note("%s", d.detail)
    rows = [d.__dict__ for d in plan.drift] + [d.as_row() for d in schema.drift]
    ctx.show(render.Result(rows, ["kind", "id", "detail"], document=rows, text=bool(rows)))  # JSON: [] when none
    if not rows:
        _note("no drift: %d applied migration(s) match their files, and the live schema what they built",
              len(plan.applied))
        return
    raise typer.Exit(int(ExitCode.DRIFT))


@migrate_app.command("rollback")
def rollback(
    steps: Annotated[int | None, typer.Option("--steps", click_type=Number(1, 100_000, integer=True),
                                              help="How many of the last applied migrations to roll back "
                                              "(default 1).")] = None,
    to: Annotated[str | None, typer.Option("--to", help="Roll back every migration applied after this id "
                                              "(it stays applied).")] = None,
    yes: Yes = False,
    force_production: ForceProduction = False,
    lock_timeout: LockTimeout = 30,
    ddl_lock_timeout: DdlLockTimeout = DDL_LOCK_TIMEOUT_S,
    database_url: DatabaseUrl = None,
) -> None:
    """Roll back applied migrations, newest first (asks; --yes in scripts). On a production database
    (marked, or MINNO_ENV / APP_ENV / NODE_ENV) it refuses without --force-production.

    Example: minnoctl migrate rollback --steps 2 --yes
    """
    from minnoctl import migrate
    from minnoctl.errors import UsageError

    if steps is not None and to is not None:
        raise UsageError("use --steps or --to, not both")
    settings = _context(database_url).settings

    def approve(victims: list[str], reason: str | None) -> None:
        """Under the migrate lock, before anything changes: the production guard, then the question."""
        if not guard_production(reason, force=force_production, yes=yes, target=settings.label(),
                                action=f"roll back {len(victims)} migration(s)"):
            confirm(f"Roll back {len(victims)} migration(s): {', '.join(victims)}?", yes)

    done = migrate.rollback(settings, steps=steps, to=to, lock_timeout=lock_timeout,
                            ddl_lock_timeout=ddl_lock_timeout, approve=approve)
    if not done:
        _note("nothing to roll back")
        return
    _note("rolled back %d migration(s)", len(done))


@migrate_app.command("new")
def new(
    name: Annotated[str, typer.Argument(metavar="NAME", help="What the migration does, e.g. add_user_index.")],
    module: Annotated[str, typer.Option("--module", "-m", help="The module it belongs to.")],
) -> None:
    """Write the next numbered migration and rollback file pair of a module.

    It writes into MINNOCTL_MIGRATIONS_DIR, else into the migrations/ of the minnoctl checkout the
    current directory is in, the set migrate then applies; never into an installed package (exit 3).

    Example: minnoctl migrate new add_user_index --module chatbot
    """
    from minnoctl import migrate

    forward, back = migrate.new_migration(name, module)
    typer.echo(str(forward))
    typer.echo(str(back))


def register(app: typer.Typer) -> None:
    app.add_typer(db_app, name="db")
    app.add_typer(migrate_app, name="migrate")
