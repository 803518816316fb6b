"""`minnoctl seed`: development data for every module, and bulk synthetic rows for load tests."""

from __future__ import annotations

from typing import Annotated

import typer

from minnoctl.cli.options import (DatabaseUrl, Format, LockTimeout, Modules, Number, Yes, confirm, guard_production,
                                  note as _note)

MAX_SCALE = 10_000_000  # seed --scale: rows per run (documented in the README); run it again for more



def _load_key(settings, needed: bool):
    if not needed:
        return None
    from minnoctl import crypto

    return crypto.load_master_key(embedded=settings.embedded, minno_home=settings.minno_home)


def seed(
    modules: Modules = None,
    force: Annotated[bool, typer.Option("--force-production", "--force", help="Seed even a production database "
                                        "(MINNO_ENV, APP_ENV or NODE_ENV = production, or db init --environment "
                                        "production); "
                                        "in a terminal it still asks.")] = False,
    yes: Yes = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Also show the workspaces and sessions "
                                          "loaded.")] = False,
    scale: Annotated[int | None, typer.Option("--scale", click_type=Number(1, MAX_SCALE, integer=True),
                                              help="Instead: add this many (1 to 10000000) synthetic rows "
                                              "to the large tables (messages, audit logs, query history, "
                                              "OAuth tokens, knowledge chunks) with COPY.",
                                              show_default=False)] = None,
    random_seed: Annotated[int | None, typer.Option("--random-seed", click_type=Number(0, integer=True),
                                                    help="With --scale: the seed that makes the rows (same seed, "
                                                    "same rows).", show_default=False)] = None,
    scenario: Annotated[str | None, typer.Option("--scenario", metavar="NAME", help="Also load a named "
                                                    "scenario's rows: overdue adds expired and expiring tokens and "
                                                    "secrets and rows past their retention, for cleanup and health "
                                                    "tests (the default data is healthy).",
                                                    show_default=False)] = None,
    lock_timeout: LockTimeout = 30,
    fmt: Format = "table",
    database_url: DatabaseUrl = None,
) -> None:
    """Replace the data of the installed modules with development data, in one transaction.

    Asks before replacing data (--yes in scripts); refuses a production database without --force-production.
    The default data is healthy (nothing expired or due); --scenario overdue adds the rows that are.
    With --scale N it adds N synthetic rows instead, for load tests and benchmarks.

    Example: minnoctl seed --modules chatbot,slackbot --yes
    """
    from minnoctl import render
    from minnoctl import modules as registry
    from minnoctl import seed as seedlib
    from minnoctl.cli import context
    from minnoctl.errors import UsageError
    from minnoctl.safety import production_reason

    if random_seed is not None and scale is None:
        raise UsageError("--random-seed goes with --scale")
    if scenario is not None and scale is not None:
        raise UsageError("--scenario goes without --scale (a scenario adds rows to the development data)")
    seedlib.check_scenario(scenario)
    chosen = registry.parse_list(modules)
    ctx = context(database_url, fmt)
    settings = ctx.settings
    where = settings.label()
    with ctx.session("seed") as conn:
        reason = production_reason(conn)
        if scale is not None:
            scaled = seedlib.scale_modules(conn, chosen)
            kek = _load_key(settings, any(m.name == "minno" for m in scaled))
            guard_production(reason, force=force, yes=yes, action="add synthetic rows", target=where)
            if random_seed is None:
                import secrets

                random_seed = secrets.randbelow(2**31)
                _note("random seed %d (pass --random-seed %d to make the same rows again)", random_seed, random_seed)
            bar = render.progress_bar("rows")
            try:
                grown = seedlib.scale(conn, scale, random_seed, scaled, kek, lock_timeout=lock_timeout,
                                 progress=bar.update if bar else None)
            finally:
                if bar:
                    bar.close()
            ctx.show(render.Result(grown.counts, ["table", "rows", "parent"],
                                   document={"random_seed": grown.random_seed, "rows": grown.rows,
                                             "seconds": round(grown.seconds, 3), "tables": grown.counts}))
            _note("added %d synthetic rows (and %d parent rows) in %.1f s", grown.rows,
                  sum(c["rows"] for c in grown.counts) - grown.rows, grown.seconds)
            return
        target = seedlib.plan(conn, chosen)
        kek = _load_key(settings, target.needs_key)
        confirmed = guard_production(reason, force=force, yes=yes, action="replace its data with development data",
                                     target=where)
        for module in target.added:
            _note("seeding %s too: its tables refer to the seeded ones", module.name)
        if target.nonempty and not confirmed:
            names = ", ".join(m.name for m in target.seeded)
            confirm(f"Replace the data of {names} at {where} ({len(target.nonempty)} table(s) hold rows)?", yes)
        result = seedlib.load(conn, target, kek, lock_timeout=lock_timeout, verbose=verbose, scenario=scenario)
    before = [render.Result(result.workspaces, ["slack_team_id", "name", "notion_workspace_id", "tokens"],
                            title="workspaces"),
              render.Result(result.sessions, ["workspace", "channel", "thread_ts", "status", "messages"],
                            title="sessions")] if verbose and result.workspaces else []
    ctx.show(render.Result(result.counts, ["module", "table", "rows"], before=before,  # JSON: in the document
                           document={"modules": result.modules, "scenario": result.scenario, "tables": result.counts,
                                     **({"workspaces": result.workspaces, "sessions": result.sessions}
                                        if verbose else {})}))
    _note("seeded %s%s: %d rows in %d tables (%.1f s)", ", ".join(result.modules),
          f" with scenario {result.scenario}" if result.scenario else "",
          sum(c["rows"] for c in result.counts), len(result.counts), result.seconds)


def register(app: typer.Typer) -> None:
    app.command("seed")(seed)
