"""`minnoctl backup create|list|verify|restore|prune`: pg_dump backups that are proven to restore."""

from __future__ import annotations

import contextlib
from typing import Annotated

import typer

from minnoctl.cli.options import (DatabaseUrl, Duration, ForceProduction, Format, Modules, Number, Yes, confirm,
                                  format_option, guard_production, note as _note)
from minnoctl.render_text import shown

backup_app = typer.Typer(help="Create, verify, list, restore and prune backups.\n\n"
                         "Example: minnoctl backup create --label before-deploy", no_args_is_help=True)

OutputDir = Annotated[str | None, typer.Option(
    "--output-dir", "-o", help="Where backups are (default: MINNO_BACKUP_DIR, else ./backups).", show_default=False)]
File = Annotated[str, typer.Argument(metavar="FILE", help="The backup: a path, a name in the backup directory, or "
                                                          "latest (the newest there of the connected database).")]
OutputFormat = Annotated[str, format_option(flags=("--output-format",), help="How to print the result: table, "
                                            "json, csv, plain, ... (--format is the dump's format here).")]
All = Annotated[bool, typer.Option("--all", help="Every database's backups in the directory, not only those of the "
                                   "connected database (same server and database).")]



def _context(database_url: str | None, fmt: str = "table"):
    from minnoctl.cli import context

    return context(database_url, fmt)


def _settings(database_url: str | None):
    return _context(database_url).settings


@backup_app.command("create")
def create(
    output_dir: OutputDir = None,
    fmt_: Annotated[str, typer.Option("--format", "-F", help="custom (pg_restore), directory (parallel with "
                                      "--jobs) or plain (SQL, psql).")] = "custom",
    jobs: Annotated[int | None, typer.Option("--jobs", "-j", click_type=Number(1, 64, integer=True),
                                             help="Parallel dump jobs (--format directory).",
                                             show_default=False)] = None,
    compress: Annotated[str | None, typer.Option("--compress", help="gzip, lz4 or zstd, optionally :LEVEL, or "
                                                    "none (default: gzip; plain: none).", show_default=False)] = None,
    schema_only: Annotated[bool, typer.Option("--schema-only", help="Only the schema.")] = False,
    data_only: Annotated[bool, typer.Option("--data-only", help="Only the data.")] = False,
    modules: Modules = None,
    label: Annotated[str | None, typer.Option("--label", help="A note kept in the manifest and the file name.",
                                                 show_default=False)] = None,
    lock_timeout: Annotated[float, typer.Option("--lock-timeout", click_type=Duration(maximum=86400),
                                                help="On a Citus coordinator: how long to wait for the locks that "
                                                "make writes wait for the dump (exit 8 when not had in time).",
                                                show_default="30s")] = 30.0,
    out: OutputFormat = "table",
    database_url: DatabaseUrl = None,
) -> None:
    """Back up the database (or some modules' schemas) with pg_dump, with a manifest beside it.

    The file appears under its final name only when it is whole and synced; mode 0600. The
    manifest has its SHA-256, size, versions, migration state and every table's row count. On a
    Citus coordinator writes wait for the dump (consistent across the nodes) and the manifest
    records the distribution.

    Example: minnoctl backup create --format directory --jobs 2 --label before-deploy
    """
    from minnoctl import backup, render
    from minnoctl import modules as registry

    chosen = registry.parse_list(modules)
    ctx = _context(database_url, out)
    if ctx.target is not None:  # a target's name is in its backups' names: two servers' `minno` never meet
        label = f"{label}-{ctx.target.name}" if label else ctx.target.name
    bar = render.progress_bar("bytes")
    try:
        with backup.stopping_on_signals("backup create", "a backup is whole or absent: no half-written one is kept"):
            made = backup.create(ctx.settings, output_dir=output_dir, fmt=fmt_, jobs=jobs,
                                 compress=compress, schema_only=schema_only, data_only=data_only, chosen=chosen,
                                 label=label, progress=(lambda n: bar.update("pg_dump", n)) if bar else None,
                                 lock_timeout=lock_timeout)
    finally:
        if bar:
            bar.close()
    m = made.manifest
    row = {"file": str(made.path), "format": m["format"], "compress": m["compress"], "size_bytes": m["size"],
           "tables": len(m["rows"]), "rows": sum(m["rows"].values()), "sha256": m["sha256"]}
    ctx.show(render.Result([row], list(row), document={**m, "file": str(made.path)}))


@backup_app.command("list")
def list_(output_dir: OutputDir = None, fmt: Format = "table", all_: All = False,
          database_url: DatabaseUrl = None) -> None:
    """List the connected database's backups, newest first, from their manifests (--all: every one).

    Dumps without a manifest (an older minnoctl killed between the two) are listed as orphans.
    Example: minnoctl backup list --format json
    """
    from minnoctl import backup, render

    ctx = _context(database_url, fmt)
    owner = None if all_ else backup.identity_of(ctx.settings)
    ctx.show(render.Result(backup.list_backups(output_dir, owner), ["file", "created_at", "size_bytes", "format",
                                                                    "label", "database", "verified_at",
                                                                    "restore_tested_at", "status"]))


@backup_app.command("verify")
def verify(
    file: File,
    restore_test: Annotated[bool, typer.Option("--restore-test", help="Also restore it into a scratch database, "
                                               "compare every table's rows with the manifest, drop it. Needs "
                                               "CREATEDB (exit 1 without).")] = False,
    output_dir: OutputDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Check a backup: its checksum, that pg_restore can read it, and with --restore-test that it restores.

    Exit 20 when it fails; a pass is recorded in the manifest.
    Example: minnoctl backup verify backups/minno-minno-20261201T120000Z.dump --restore-test
    """
    from minnoctl import backup, render

    settings = _settings(database_url) if restore_test or file == "latest" else None
    with render.spinner(f"verifying {file}" + (" (restoring into a scratch database)" if restore_test else "")), \
            backup.stopping_on_signals(f"backup verify {file}", "its temporary database was dropped"):
        done = backup.verify(settings, file, restore_test=restore_test, output_dir=output_dir)
    if restore_test:
        _note("%s is whole and restores: %d table(s) match the manifest", done.backup.name, done.rows_compared)
    else:
        _note("%s is whole and readable (checksum and pg_restore --list)", done.backup.name)


@backup_app.command("restore")
def restore(
    file: File,
    into: Annotated[str | None, typer.Option("--into", help="The new database to restore into, a name (default: "
                                                "<database>_restored_<time>); never an existing one. Needs CREATEDB "
                                                "(exit 1 without).",
                                                show_default=False)] = None,
    clean: Annotated[bool, typer.Option("--clean", help="Restore over the database the connection uses "
                                        "(current_database(); asks; --yes in scripts).")] = False,
    yes: Yes = False,
    force_production: ForceProduction = False,
    output_dir: OutputDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Restore a backup into a new database, or over the source with --clean. One transaction.

    A backup that does not match its checksum is refused.
    Example: minnoctl backup restore backups/minno-minno-20261201T120000Z.dump --into minno_copy
    """
    from minnoctl import backup, render

    settings = _settings(database_url)

    def approve(database: str, reason: str | None) -> None:  # before --clean writes anything
        where = f"database {shown(database)} at {settings.label()}"
        if not guard_production(reason, force=force_production, yes=yes, action="restore a backup over it",
                                target=where):
            confirm(f"Restore {file} over {where}, replacing what it holds?", yes)

    with backup.stopping_on_signals(f"backup restore {file}", "the database is as it was, and no new one was left"):
        with render.spinner(f"restoring {file}") if not clean else contextlib.nullcontext():  # --clean may ask
            done = backup.restore(settings, file, into=into, clean=clean, output_dir=output_dir, approve=approve)
    _note("restored %s into database %s", file, done.database)
    typer.echo(done.database)


@backup_app.command("prune")
def prune(
    keep_last: Annotated[int, typer.Option("--keep-last", click_type=Number(1, integer=True),
                                                help="Keep this many of the newest backups.")],
    keep_days: Annotated[float | None, typer.Option("--keep-days", click_type=Duration(maximum=3650 * 86400, per=86400),
                                                       help="Also keep every backup younger than this: days (a bare "
                                                       "number, e.g. 7) or a duration (36h, 2d; at most 3650 days).",
                                                       show_default=False)] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", "-n",
                                          help="List what would be deleted; delete nothing.")] = False,
    yes: Yes = False,
    output_dir: OutputDir = None,
    fmt: Format = "table",
    all_: All = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Delete the connected database's old backups; never its newest verified one. Orphans too.

    --all prunes every database's backups in the directory, each database by the same rules.
    Example: minnoctl backup prune --keep-last 7 --keep-days 30 --yes
    """
    from minnoctl import backup, render

    ctx = _context(database_url, fmt)
    owner = None if all_ else backup.identity_of(ctx.settings)
    kept, deleted = backup.prune_plan(output_dir, keep_last, keep_days, owner)
    rows = [{"file": r["file"], "created_at": r["created_at"], "database": r["database"], "action": action}
            for action, chosen in (("delete", deleted), ("keep", kept)) for r in chosen]
    if deleted and not dry_run:
        confirm(f"Delete {len(deleted)} backup(s)?", yes)
        backup.prune(output_dir, deleted)
    ctx.show(render.Result(rows, ["file", "created_at", "database", "action"]))
    _note("%s %d backup(s), kept %d", "would delete" if dry_run else "deleted", len(deleted), len(kept))


def register(app: typer.Typer) -> None:
    app.add_typer(backup_app, name="backup")
