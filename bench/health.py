"""bench/health: `minnoctl health` on the seeded database, and `health --live` against psql.

Targets (issue 9): the full report <= 1 s wall on the seeded database; `health --live` <= 3x
`psql -c 'select 1'` in the same run. Every command is a fresh process (what cron and probes run),
interleaved so that machine noise hits each alike; figures are medians. Two floors are measured in
the same run beside psql, to show what any Python tool pays before it does anything: the bare
interpreter (`python -c pass`, with site-packages, as a console script starts) and the interpreter
importing psycopg, connecting and running SELECT 1.

  python bench/health.py [--runs N]
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

FULL_TARGET_S = 1.0
LIVE_TARGET = 3.0


def wall(cmd: list[str], env: dict[str, str], ok: tuple[int, ...] = (0,)) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - start
    if proc.returncode not in ok:
        raise SystemExit(f"{cmd[2:] if cmd[0] == sys.executable else cmd}: exit {proc.returncode}: "
                         f"{proc.stderr.decode()[-300:]}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21)
    args = parser.parse_args()
    from minnoctl import backup, crypto

    with server("bench_health") as bench:
        name = bench.new_db()
        dsn = bench.dsn(name)
        env = dict(os.environ, MINNO_DATABASE_URL=dsn, MINNO_MASTER_KEY=crypto.encode_key(crypto.generate_key()))
        minnoctl = [sys.executable, "-m", "minnoctl", "-q"]
        subprocess.run(minnoctl + ["db", "init", "--yes"], env=env, check=True, stdout=subprocess.DEVNULL)
        subprocess.run(minnoctl + ["seed", "--yes"], env=env, check=True, stdout=subprocess.DEVNULL)
        psql = backup.find_tool("psql", int(bench.server_version().split(".")[0])).path
        pg_env = backup.tool_env(__import__("minnoctl.config", fromlist=["load_settings"]).load_settings(dsn))
        cmds = {
            "full": (minnoctl + ["health", "--format", "json"], env, (0, 1, 2, 3)),
            "live": (minnoctl + ["health", "--live"], env, (0,)),
            "psql": ([str(psql), "-X", "-q", "-c", "select 1"], pg_env, (0,)),
            "python": ([sys.executable, "-c", "pass"], env, (0,)),
            "psycopg": ([sys.executable, "-c", "import os, psycopg; psycopg.connect(os.environ['MINNO_DATABASE_URL'])"
                         ".execute('select 1')"], env, (0,)),
        }
        for cmd, e, ok in cmds.values():  # warm the page cache, .pyc files and the server's catalogs
            wall(cmd, e, ok)
        times: dict[str, list[float]] = {k: [] for k in cmds}
        for _ in range(args.runs):
            for key, (cmd, e, ok) in cmds.items():
                times[key].append(wall(cmd, e, ok))
        version = bench.server_version()
    med = {k: statistics.median(v) for k, v in times.items()}
    full_met = med["full"] <= FULL_TARGET_S
    ratio = med["live"] / med["psql"]
    print(f"health (PostgreSQL {version}, the seeded database, {args.runs} interleaved runs, medians):")
    print(f"  minnoctl health (every check, a process): {med['full'] * 1000:.0f} ms "
          f"(target <= {FULL_TARGET_S * 1000:.0f} ms: {'met' if full_met else 'NOT met'}); "
          f"health --live in the same run {med['live'] * 1000:.0f} ms, so the checks take "
          f"{(med['full'] - med['live']) * 1000:.0f} ms")
    report("health", f"full report {med['full'] * 1000:.0f} ms", f"--live {med['live'] * 1000:.0f} ms",
           med["full"] / med["live"], f"<= {FULL_TARGET_S * 1000:.0f} ms", full_met)
    print(f"  minnoctl health --live {med['live'] * 1000:.1f} ms; psql -c 'select 1' {med['psql'] * 1000:.1f} ms; "
          f"ratio {ratio:.1f} (target <= {LIVE_TARGET:g}: {'met' if ratio <= LIVE_TARGET else 'NOT met'})")
    report("health", f"--live {med['live'] * 1000:.1f} ms", f"psql -c 'select 1' {med['psql'] * 1000:.1f} ms", ratio,
           f"<= {LIVE_TARGET:g}x", ratio <= LIVE_TARGET)
    print(f"  floors in the same run: python -c pass {med['python'] * 1000:.1f} ms "
          f"({med['python'] / med['psql']:.1f}x psql); python + import psycopg + connect + select 1 "
          f"{med['psycopg'] * 1000:.1f} ms ({med['psycopg'] / med['psql']:.1f}x psql); "
          f"minnoctl --live is {med['live'] / med['psycopg']:.2f}x the psycopg floor")
    return 0


if __name__ == "__main__":
    sys.exit(main())
