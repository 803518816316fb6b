"""This database's own jobs: `cleanup`, `backup` and `verified_backup` — when they last ran."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from minnoctl.health import Check, Context, Status, Threshold, check, human_age, level


def _initialised_at(ctx: Context) -> dt.datetime | None:
    return min((a.applied_at for a in ctx.applied.values()), default=None)


def _age_check(ctx: Context, name: str, base: str, when: dt.datetime | None, what: str, never_hint: str,
               hint: str, where: str = "") -> Check:
    """How long since `when`; never is fine only while the database is younger than the warning age
    (a new installation is not yet late), and as bad as the worst level after that."""
    warn, crit, text = ctx.pair(base, "s")
    assert ctx.now is not None  # the runner reads now() before any check runs
    if when is None:
        since = _initialised_at(ctx)
        if since is not None and warn is not None and (ctx.now - since).total_seconds() <= warn:  # young
            return Check(name, Status.OK, f"no {what} yet{where} (database initialised "
                         f"{human_age((ctx.now - since).total_seconds())} ago)", text, never_hint)
        status = Status.CRITICAL if crit is not None else Status.WARNING if warn is not None else Status.OK
        return Check(name, status, f"no {what}{where}", text, never_hint)
    age = round((ctx.now - when).total_seconds(), 1)  # judged as shown (perfdata)
    status = level(age, warn, crit)
    return Check(name, status, f"last {what} {human_age(age)} ago ({when:%Y-%m-%d %H:%M %Z}){where}", text,
                 "" if status == Status.OK else hint, perfdata={f"{name}_age_s": (age, "s", warn, crit)})


@check("cleanup", order=230, description="when `minnoctl cleanup` last succeeded",
       doc="when `minnoctl cleanup` last succeeded (`minnoctl.cleanup_runs`)", levels="2 days, 7 days",
       thresholds=(Threshold("cleanup-age-warning", 2 * 86400, "s", "since `minnoctl cleanup` last succeeded"),
                   Threshold("cleanup-age-critical", 7 * 86400, "s", "since `minnoctl cleanup` last succeeded")))
def cleanup(ctx: Context) -> Check:
    from minnoctl import modules

    if not any(m.retention for m in modules.MODULES if m.name in ctx.installed):
        return Check("cleanup", Status.OK, "no installed module has retention tasks", "")
    if ctx.one("SELECT to_regclass('minnoctl.cleanup_runs')")[0] is None:
        last, failed = None, None
    else:
        last = ctx.one("SELECT max(finished_at) FROM minnoctl.cleanup_runs WHERE status = 'ok' AND NOT dry_run")[0]
        failed = ctx.one("SELECT status, error FROM minnoctl.cleanup_runs WHERE NOT dry_run AND status <> 'running' "
                         "ORDER BY id DESC LIMIT 1")
    found = _age_check(ctx, "cleanup", "cleanup-age", last, "successful cleanup",
                       "schedule `minnoctl cleanup --quiet` in cron",
                       "`minnoctl cleanup` has not succeeded lately: run it, and check its cron entry")
    if failed and failed[0] != "ok":
        found.value += f"; the latest run ended {failed[0]}" + (f" ({failed[1]})" if failed[1] else "")
    return found


def _manifests(ctx: Context) -> tuple[Path | None, list[dict[str, Any]]]:
    folder = Path(_backup_dir(ctx)).expanduser()
    if not folder.is_dir():
        return None, []
    from minnoctl.backup import identity, manifests

    owner = identity(ctx.conn)  # this server's (system identifier) and this database's real name
    return folder, [doc for backup, doc in manifests(folder) if owner.owns(doc) and backup.exists()]


def _backup_dir(ctx: Context) -> str:
    """--backup-dir, else MINNO_BACKUP_DIR (the environment, else .env), else ./backups."""
    from minnoctl.config import env_value

    return ctx.backup_dir or (env_value("MINNO_BACKUP_DIR") or ("backups",))[0]


def _stamp(text: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(text) if text else None


@check("backup", order=240, description="the age of the last backup (manifests in the backup directory)",
       doc="the newest backup of this database in the backup directory (its manifest)", levels="26 h, 3 days",
       thresholds=(Threshold("backup-age-warning", 26 * 3600, "s", "since the last backup"),
                   Threshold("backup-age-critical", 3 * 86400, "s", "since the last backup")))
def backup(ctx: Context, verified: bool = False) -> Check:
    folder, docs = _manifests(ctx)
    where = f" in {folder}" if folder else f" (no directory {_backup_dir(ctx)})"
    key = "verified_at" if verified else "created_at"
    stamps = [s for s in (_stamp(d.get(key)) for d in docs) if s is not None]
    if verified:  # the newest backup that passed `backup verify`: when that backup was taken
        stamps = [dt.datetime.fromisoformat(d["created_at"]) for d in docs
                  if d.get("verified_at") and d.get("created_at")]
    when = max(stamps, default=None)
    name = "verified_backup" if verified else "backup"
    what = "verified backup" if verified else "backup"
    return _age_check(ctx, name, f"{'verified-' if verified else ''}backup-age", when, what,
                      "`minnoctl backup verify latest --restore-test`" if verified else
                      "schedule `minnoctl backup create` (and `backup prune`) in cron; set MINNO_BACKUP_DIR "
                      "or --backup-dir where they are",
                      "`minnoctl backup verify latest --restore-test`" if verified else
                      "`minnoctl backup create` has not run lately: run it, and check its cron entry", where)


@check("verified_backup", order=250, description="the age of the last backup that passed `backup verify`",
       doc="the newest backup that passed `backup verify`", levels="7 days",
       thresholds=(Threshold("verified-backup-age-warning", 7 * 86400, "s", "since the last verified backup"),
                   Threshold("verified-backup-age-critical", None, "s",
                             "since the last verified backup (off unless set)")))
def verified_backup(ctx: Context) -> Check:
    return backup(ctx, verified=True)
