"""bench/seed: `minnoctl seed --scale N` (default 1,000,000) in rows per second, against a raw psycopg
COPY of the same rows in the same run, and the peak memory of the minnoctl process.

Each run makes two fresh databases from one migrated template (every module the server holds):
  - minnoctl: `python -m minnoctl seed --scale N --random-seed S` as a real process (start-up, key
    loading, generation, encryption of the synthetic tokens and COPY all counted); its peak RSS is
    read from the kernel (wait4).
  - raw: the very same rows (minnoctl.seed.scale_jobs, same seed, the second database's own data
    key), written to files beforehand and not timed, then streamed by psycopg's COPY in one
    transaction: the database and driver floor alone.
Runs alternate (raw, minnoctl, raw, minnoctl, ...); medians and the median of the same-run ratios
are printed. A second, smaller N shows that memory does not grow with N.

Targets: rate >= 0.7x the raw COPY rate; peak memory < 200 MB whatever N is.

Runs on a throw-away embedded PostgreSQL (its own MINNO_HOME), or on MINNO_DATABASE_URL's server
(databases are created and dropped there).

  python bench/seed.py [--rows N] [--runs R] [--small-rows M]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

RATE_TARGET = 0.7
MEMORY_TARGET_MB = 200.0
SEED = 20261201


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--small-rows", type=int, default=100_000, help="the smaller N for the memory check")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    import psycopg

    from minnoctl import crypto, migrate, modules, seed, tokens
    from benchlib import report, server as bench_server
    from minnoctl.config import load_settings

    with bench_server("bench_seed") as bench:
        tmp = bench.tmp
        kek = crypto.MasterKey(crypto.generate_key(), "bench")
        env = dict(os.environ, MINNO_MASTER_KEY=crypto.encode_key(kek.key))
        env.pop("MINNO_ENV", None)

        def new_db(template: str | None = None) -> str:
            return bench.dsn(bench.new_db(template))

        template = bench.new_db()
        template_dsn = bench.dsn(template)
        server = bench.server_version()
        with psycopg.connect(**bench.admin) as conn:
            has_vector = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'").fetchone()
        chosen = None if has_vector else modules.parse_list("minno,chatbot,assistant,supervisor,slackbot")
        migrate.init(load_settings(template_dsn), chosen)
        names = {m.name for m in modules.with_dependencies(chosen)}

        def run_minnoctl(n: int) -> tuple[float, float]:
            dsn = new_db(template)
            t0 = time.perf_counter()
            proc = subprocess.Popen([sys.executable, "-m", "minnoctl", "seed", "--scale", str(n), "--random-seed",
                                     str(SEED), "--format", "json"], env=dict(env, MINNO_DATABASE_URL=dsn),
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            _, status, usage = os.wait4(proc.pid, 0)
            seconds = time.perf_counter() - t0
            proc.returncode = os.waitstatus_to_exitcode(status)
            if proc.returncode != 0:
                raise SystemExit(f"minnoctl seed --scale failed: {proc.stderr.read().decode()}")
            return seconds, usage.ru_maxrss / 1024  # kB -> MB on Linux

        def run_raw(n: int) -> float:
            dsn = new_db(template)
            folder = Path(tmp) / f"raw-{uuid.uuid4().hex[:6]}"
            folder.mkdir()
            with psycopg.connect(dsn, autocommit=True) as conn:
                ring = tokens.ensure_active_key(conn, kek)
                now = conn.execute("SELECT now()").fetchone()[0]
                jobs = seed.scale_jobs(n, SEED, now, names, ring)
                files = []
                for job in jobs:  # not timed: the raw run only copies ready-made rows
                    path = folder / f"{job.name}.copy"
                    with path.open("w") as f:
                        for block in job.blocks():
                            f.write(block)
                    files.append((job, path))
                t0 = time.perf_counter()
                with conn.transaction():
                    conn.execute("SET LOCAL TimeZone = 'UTC'")
                    for job, path in files:
                        with conn.cursor() as cur, cur.copy(job.copy_sql()) as copy, path.open("rb") as f:
                            while block := f.read(seed.BLOCK_BYTES):
                                copy.write(block)
                seconds = time.perf_counter() - t0
            for _, path in files:
                path.unlink()
            return seconds

        def drop_runs() -> None:
            bench.drop([n for n in bench.made if n != template])

        print(f"bench/seed: PostgreSQL {server}, seed --scale {args.rows:,} (modules: {', '.join(sorted(names))}), "
              f"{args.runs} interleaved runs", flush=True)
        raw_s, ours_s, ratios, rss = [], [], [], []
        for i in range(args.runs):
            r = run_raw(args.rows)
            o, mb = run_minnoctl(args.rows)
            drop_runs()
            raw_s.append(r)
            ours_s.append(o)
            rss.append(mb)
            ratios.append((args.rows / o) / (args.rows / r))
            print(f"  run {i + 1}: raw COPY {args.rows / r:,.0f} rows/s ({r:.1f} s); minnoctl {args.rows / o:,.0f} "
                  f"rows/s ({o:.1f} s, peak {mb:.0f} MB); ratio {ratios[-1]:.2f}", flush=True)
        small_o, small_mb = run_minnoctl(args.small_rows)
        drop_runs()
        _, base_mb = _version_rss(env)
        ratio = statistics.median(ratios)
        peak = max(rss + [small_mb])
        print(f"raw psycopg COPY: median {args.rows / statistics.median(raw_s):,.0f} rows/s")
        print(f"minnoctl seed --scale: median {args.rows / statistics.median(ours_s):,.0f} rows/s")
        print(f"ratio (median of same-run ratios): {ratio:.2f}  (target >= {RATE_TARGET}: "
              f"{'met' if ratio >= RATE_TARGET else 'NOT met'})")
        report("seed", f"{args.rows / statistics.median(ours_s):,.0f} rows/s",
               f"raw COPY {args.rows / statistics.median(raw_s):,.0f} rows/s", ratio, f">= {RATE_TARGET}x",
               ratio >= RATE_TARGET)
        print(f"peak memory: {max(rss):.0f} MB at N={args.rows:,}, {small_mb:.0f} MB at N={args.small_rows:,}; "
              f"`minnoctl --version` {base_mb:.0f} MB  (target < {MEMORY_TARGET_MB:.0f} MB: "
              f"{'met' if peak < MEMORY_TARGET_MB else 'NOT met'})")
        report("seed", f"peak {peak:.0f} MB", f"--version {base_mb:.0f} MB", peak / base_mb,
               f"< {MEMORY_TARGET_MB:.0f} MB", peak < MEMORY_TARGET_MB)
        return 0 if ratio >= RATE_TARGET and peak < MEMORY_TARGET_MB else 1


def _version_rss(env: dict[str, str]) -> tuple[float, float]:
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "minnoctl", "--version"], env=env, stdout=subprocess.DEVNULL)
    _, _, usage = os.wait4(proc.pid, 0)
    return time.perf_counter() - t0, usage.ru_maxrss / 1024


if __name__ == "__main__":
    sys.exit(main())
