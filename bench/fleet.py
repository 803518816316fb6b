"""bench/fleet: `health` and `migrate --dry-run` over N tenant databases on one server, in one
process (a targets file with a discovering target, `--parallel`), against the same commands run
one process per database in a shell loop, in the same run.

Target (issue 19): the fleet run >= 10x faster than the loop, for both commands; and a projected
1,000-database `health` well inside a five-minute cron interval (here: <= 150 s, half of it). The
projection is linear in the databases from the measured run (`t(N) * 1000 / N`, start-up included,
so it errs high). Figures are medians of --runs; the loop runs once per command (N processes).

The floor, measured in the same run: each database's health work itself (the checks' SQL on the
server and their Python), in this process, one database after the other. A fleet cannot do less
than that per database; with C CPUs it can at best spread it C ways, so the most it can gain over
the loop is loop / (floor x N / C), which the last line prints.

  python bench/fleet.py [--databases N] [--runs R] [--parallel P]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from benchlib import report, server  # noqa: E402

SPEEDUP_TARGET = 10.0
PROJECTED_LIMIT_S = 150.0


def run(cmd: list[str], env: dict[str, str], targets: int | None = None) -> float:
    """Wall time of one command; a fleet run must have reported on every target (its JSON)."""
    import json

    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True)
    elapsed = time.perf_counter() - start
    if proc.returncode not in (0, 1, 3) or (targets is not None and not proc.stdout.strip()):  # health: OK,
        # WARNING, UNKNOWN; a single database's `migrate --dry-run` with nothing pending prints nothing
        raise SystemExit(f"{' '.join(cmd[2:])}: exit {proc.returncode}: {proc.stderr.decode()[-400:]}")
    if targets is not None:
        doc = json.loads(proc.stdout)
        ran = [t for t in doc["targets"] if t["status"] not in ("failed", "timeout", "skipped", "critical")]
        if len(ran) != targets:
            raise SystemExit(f"{' '.join(cmd[2:])}: {len(ran)} of {targets} targets ran: {doc['summary']}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--databases", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--parallel", type=int, default=None, help="default: the command's own (DB_POOL_SIZE, 10)")
    args = parser.parse_args()

    import psycopg

    from minnoctl import migrate
    from minnoctl.config import load_settings

    with server("bench_fleet") as bench:
        template = bench.new_db()
        migrate.init(load_settings(bench.dsn(template)))  # every module: what a tenant holds
        with psycopg.connect(**bench.admin, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{template}" WITH IS_TEMPLATE true')
        try:
            return measure(bench, template, args)
        finally:
            with psycopg.connect(**bench.admin, autocommit=True) as conn:
                conn.execute(f'ALTER DATABASE "{template}" WITH IS_TEMPLATE false')
            bench.drop()


def targets_file(bench, folder: Path) -> Path:
    """One discovering target: every tenant database of the bench (the template is one no more)."""
    admin = bench.admin
    url = (f"postgresql://{admin.get('user', '')}@/postgres?host={admin['host']}&port={admin['port']}"
           if admin.get("host", "").startswith("/") else
           f"postgresql://{admin.get('user', '')}@{admin['host']}:{admin['port']}/postgres")
    query = (f"SELECT datname FROM pg_database WHERE datname LIKE '{bench.prefix}\\_%' AND NOT datistemplate "
             "ORDER BY 1")
    literal = "'''"  # a TOML literal string: the LIKE pattern's backslash stays as it is
    folder.mkdir()
    path = folder / "minnoctl.toml"
    path.write_text(f'[targets.tenants]\nurl = "{url}"\ndiscover_query = {literal}{query}{literal}\n')
    return path


def floor_per_database(bench, tenants: list[str]) -> float:
    """The work of one database's health itself, in this process, one after the other: what any
    fleet run pays per database at --parallel 1 (the server's SQL and the checks' Python)."""
    from minnoctl import health
    from minnoctl.config import load_settings

    started = time.perf_counter()
    for db in tenants:
        health.run(load_settings(bench.dsn(db)), server_checks=False)
    return (time.perf_counter() - started) / len(tenants)


def measure(bench, template: str, args: argparse.Namespace) -> int:
    tenants = [bench.new_db(template) for _ in range(args.databases)]
    env = dict(os.environ, MINNOCTL_TARGETS=str(targets_file(bench, bench.tmp / "project")))
    env.pop("MINNO_DATABASE_URL", None)
    python = [sys.executable, "-m", "minnoctl", "-q"]
    print(f"bench/fleet: PostgreSQL {bench.server_version()}, {len(tenants)} tenant databases (every module "
          f"migrated), --parallel {args.parallel or 'default (10)'}, {os.cpu_count()} CPUs", flush=True)
    commands = {"health": ["health", "--format", "json"],
                "migrate --dry-run": ["migrate", "--dry-run", "--format", "json"]}
    figures, loops = {}, {}
    for name, argv in commands.items():
        given = ["--parallel", str(args.parallel)] if args.parallel else []
        fleet = [run([*python, *argv, "--target", "tenants", *given], env, len(tenants)) for _ in range(args.runs)]
        started = time.perf_counter()
        for db in tenants:  # the shell loop: one process per database
            run([*python, *argv, "--database-url", bench.dsn(db)], env)
        loop = time.perf_counter() - started
        median = statistics.median(fleet)
        ratio = loop / median
        figures[name], loops[name] = median, loop
        met = ratio >= SPEEDUP_TARGET
        print(f"  {name}: fleet {median:.2f} s (median of {args.runs}: {', '.join(f'{t:.2f}' for t in fleet)}) "
              f"vs loop {loop:.1f} s ({loop / len(tenants) * 1000:.0f} ms/database): {ratio:.1f}x, "
              f"target >= {SPEEDUP_TARGET:g}x: {'met' if met else 'NOT met'}", flush=True)
        report(f"fleet {name} ({len(tenants)} dbs)", f"{median:.2f} s", f"loop {loop:.1f} s", ratio,
               f">= {SPEEDUP_TARGET:g}x", met)
    floor = floor_per_database(bench, tenants)
    per_db = figures["health"] / len(tenants)
    cpus = os.cpu_count() or 1
    bound = loops["health"] / (floor * len(tenants) / cpus)
    print(f"  floor: one database's health work itself (its SQL on the server, the checks' Python), in-process, "
          f"one at a time: {floor * 1000:.0f} ms/database; the fleet: {per_db * 1000:.0f} ms/database "
          f"({floor / per_db:.1f}x of it on {cpus} CPUs); the loop adds each process's start-up to it. The most a "
          f"fleet can gain on {cpus} CPUs: loop / (floor / CPUs) = {bound:.1f}x", flush=True)
    projected = figures["health"] * 1000 / len(tenants)
    met = projected <= PROJECTED_LIMIT_S
    print(f"  health of 1,000 databases, projected: {projected:.0f} s, limit {PROJECTED_LIMIT_S:.0f} s of a "
          f"300 s cron interval: {'met' if met else 'NOT met'}", flush=True)
    report("fleet health, 1,000 dbs projected", f"{projected:.0f} s", "cron interval 300 s", projected / 300,
           f"<= {PROJECTED_LIMIT_S:.0f} s", met)
    return 0


if __name__ == "__main__":
    sys.exit(main())
