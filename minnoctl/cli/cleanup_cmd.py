"""`minnoctl cleanup`: the modules' retention tasks, in short batches, one run at a time (for cron)."""

from __future__ import annotations

from typing import Annotated

import typer

from minnoctl.cli.options import MAX_RUNTIME_S, DatabaseUrl, Duration, Format, Number




def cleanup(
    dry_run: Annotated[bool, typer.Option("--dry-run", "-n", help="Count exactly what a run would do; change "
                                          "nothing.")] = False,
    only: Annotated[list[str] | None, typer.Option("--only", help="Run only this task (repeatable).",
                                                      show_default=False)] = None,
    skip: Annotated[list[str] | None, typer.Option("--skip", help="Leave this task out (repeatable).",
                                                      show_default=False)] = None,
    older_than: Annotated[list[str] | None, typer.Option(
        "--older-than", help="TASK=AGE: another age for a task in days (120) or a duration (36h, 1d12h) (for a task "
                             "due at expiry: a grace period "
        "after it); repeatable.", show_default=False)] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", click_type=Number(1, 50_000, integer=True),
                                            help="Rows in the first batch; the size then adapts to keep each "
                                            "transaction near 50 ms.")] = 500,
    max_runtime: Annotated[float | None, typer.Option("--max-runtime",
                                                      click_type=Duration(minimum=0.1, maximum=MAX_RUNTIME_S),
                                                      help="Stop cleanly between batches after this long (a "
                                                      "duration: 90s, 5min, 1h30m; a bare number is seconds; exit "
                                                      "15); the next run resumes.", show_default=False)] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="The global --quiet (no notes on stderr), and print "
                                        "nothing at all when there was nothing to do.")] = False,
    list_tasks: Annotated[bool, typer.Option("--list", help="List the tasks, their policies and how many rows "
                                             "are due now.")] = False,
    fmt: Format = "table",
    database_url: DatabaseUrl = None,
) -> None:
    """Apply the retention policies of the installed modules; made for cron.

    One run at a time: a second exits at once with code 8. Exit 15 when --max-runtime stopped it
    with work left. Each run is recorded in minnoctl.cleanup_runs; a --dry-run writes nothing
    (it works on a standby and for a read-only role).

    Example: minnoctl cleanup --dry-run --older-than chatbot-conversations=120
    """
    import logging

    from minnoctl import cleanup as logic
    from minnoctl import render
    from minnoctl.cli import _state, context

    quiet = quiet or _state.quiet  # the same option before or after the command
    if quiet:
        logging.getLogger("minnoctl").setLevel(logging.WARNING)
    ages = logic.parse_ages(older_than or [])
    ctx = context(database_url, fmt)
    with ctx.session("cleanup", time_zone="UTC") as conn:
        plans = logic.plan(conn, only=only or [], skip=skip or [], ages=ages)
        if list_tasks:
            rows = logic.list_tasks(conn, plans)
            ctx.show(render.Result(rows, ["task", "module", "action", "policy", "due_now", "oldest_due",
                                          "description"]))
            return
        bar = render.progress_bar("rows") if not dry_run else None
        try:
            result = logic.run(conn, plans, dry_run=dry_run, batch_size=batch_size, max_runtime=max_runtime,
                               progress=bar.update if bar else None)
        finally:
            if bar:
                bar.close()
    if quiet and result.rows == 0 and result.status == "ok":
        return
    docs = [t.document() for t in result.tasks]
    ctx.show(render.Result(docs, ["task", "action", "status", "rows", "archived", "batches", "longest_transaction_ms",
                                  "oldest_overdue", "note"],
                           document={"status": result.status, "dry_run": result.dry_run, "run_id": result.run_id,
                                     "rows": result.rows, "seconds": round(result.seconds, 3),
                                     "longest_transaction_ms": round(result.longest_ms, 1), "tasks": docs}))
    raise typer.Exit(int(result.exit_code))


def register(app: typer.Typer) -> None:
    app.command("cleanup")(cleanup)
