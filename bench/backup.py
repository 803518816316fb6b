"""bench/backup: `minnoctl backup create` of a database of at least 1 GB (made with `minnoctl seed
--scale`) against a raw `pg_dump -Fc` of the same database in the same run, interleaved.

minnoctl's figure includes everything it does beyond pg_dump: the exported snapshot, the row count
of every table in that snapshot, the fsyncs and rename, the SHA-256 of the file and the manifest.

Target: <= 1.15x the raw pg_dump's time.

  python bench/backup.py [--rows N] [--runs R]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET = 1.15
MIN_BYTES = 1 << 30


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_200_000, help="seed --scale N (2.2 M: about 1.05 GB)")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    import psycopg

    from benchlib import report, server as bench_server
    from minnoctl import backup, crypto, migrate
    from minnoctl.config import load_settings

    with bench_server("bench_backup") as bench:
        name = bench.new_db()
        dsn = bench.dsn(name)
        env = dict(os.environ, MINNO_DATABASE_URL=dsn, MINNO_MASTER_KEY=crypto.encode_key(crypto.generate_key()))
        migrate.init(load_settings(dsn))
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "minnoctl", "-q", "seed", "--yes"], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        subprocess.run([sys.executable, "-m", "minnoctl", "-q", "seed", "--scale", str(args.rows),
                        "--random-seed", "1"], env=env, check=True, stdout=subprocess.DEVNULL)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")
            size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
            major = conn.info.server_version // 10000
        dump = backup.find_tool("pg_dump", major)
        print(f"bench/backup: PostgreSQL {bench.server_version()}, database of {size / 2**30:.2f} GB "
              f"(seed --scale {args.rows:,}, made in {time.perf_counter() - t0:.0f} s), {dump.path} {dump.version}",
              flush=True)
        if size < MIN_BYTES:
            print("warning: the database is under 1 GB; raise --rows", flush=True)
        tool_env = backup.tool_env(load_settings(dsn))
        raw_s, ours_s, ratios = [], [], []
        with tempfile.TemporaryDirectory(dir=bench.tmp) as out:
            for i in range(args.runs):
                target = Path(out) / f"raw-{i}.dump"
                t0 = time.perf_counter()
                subprocess.run([str(dump.path), "-Fc", f"--file={target}"], env=tool_env, check=True)
                raw = time.perf_counter() - t0
                raw_size = target.stat().st_size
                target.unlink()
                t0 = time.perf_counter()
                subprocess.run([sys.executable, "-m", "minnoctl", "-q", "backup", "create", "--output-dir", out],
                               env=env, check=True, stdout=subprocess.DEVNULL)
                ours = time.perf_counter() - t0
                made = [p for p in Path(out).iterdir() if p.suffix == ".dump"]
                ours_size = sum(p.stat().st_size for p in made)
                for p in Path(out).iterdir():
                    p.unlink()
                raw_s.append(raw)
                ours_s.append(ours)
                ratios.append(ours / raw)
                print(f"  run {i + 1}: raw pg_dump -Fc {raw:.1f} s ({raw_size / 2**20:,.0f} MB); "
                      f"minnoctl backup create {ours:.1f} s ({ours_size / 2**20:,.0f} MB, manifest and checksum "
                      f"included); ratio {ours / raw:.2f}",
                      flush=True)
        ratio = statistics.median(ratios)
        print(f"raw pg_dump -Fc: median {statistics.median(raw_s):.1f} s; minnoctl backup create: median "
              f"{statistics.median(ours_s):.1f} s")
        print(f"ratio (median of same-run ratios): {ratio:.2f}  "
              f"(target <= {TARGET}: {'met' if ratio <= TARGET else 'NOT met'})")
        report("backup", f"{statistics.median(ours_s):.1f} s", f"pg_dump -Fc {statistics.median(raw_s):.1f} s",
               ratio, f"<= {TARGET}x", ratio <= TARGET)
        report("backup", f"database {size / 2**30:.2f} GB", "", None, ">= 1 GB", size >= MIN_BYTES)
        return 0 if ratio <= TARGET and size >= MIN_BYTES else 1


if __name__ == "__main__":
    sys.exit(main())
