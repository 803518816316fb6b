"""bench/migrate: `minnoctl db init` of all modules on an empty database against `psql -f` of the
same SQL concatenated, in the same run; and `minnoctl migrate --dry-run` on an up-to-date database
against `minnoctl --version` (the process start-up floor), same run.

Figures are medians of interleaved runs. db init is measured twice against the same psql runs:
as a whole process (interpreter, imports and all: the literal target), and in-process (the time
migrate.init takes from connecting to done, with the interpreter already warm), which is what the
migration machinery itself costs. On this schema psql needs ~60-100 ms, while starting Python with
Typer (which imports pydantic to coerce options), psycopg and Rich costs ~250 ms before any SQL,
so the whole-process ratio measures start-up more than migrating. Both are printed.
Targets: db init <= 2x the psql floor; migrate --dry-run <= 0.5 s wall.

Runs on a throw-away embedded PostgreSQL (its own MINNO_HOME), or on MINNO_DATABASE_URL's server
(databases are created and dropped there; the role needs CREATEDB).

  python bench/migrate.py [--runs N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

INIT_TARGET = 2.0
DRY_RUN_TARGET_S = 0.5


def timed(cmd: list[str], env: dict[str, str], stdin: str | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, env=env, input=stdin, text=True, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def concatenated_sql(modules_csv: str | None) -> str:
    """The same SQL db init runs: per migration, its module's schema and search_path, then the file;
    in a transaction of its own unless the file says `-- transactional: false` (CONCURRENTLY), as
    db init runs them."""
    from minnoctl import migrate, modules

    chosen = {m.name for m in modules.with_dependencies(modules.parse_list(modules_csv))}
    parts = []
    for mf in migrate.load_set():
        if mf.module not in chosen:
            continue
        parts.append(f"CREATE SCHEMA IF NOT EXISTS {mf.schema};\nSET search_path TO {mf.schema}, public;\n")
        parts.append(f"BEGIN;\n{mf.sql()}\nCOMMIT;\n" if mf.transactional else mf.sql())
    return "\n".join(parts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()

    import psycopg

    from minnoctl.config import load_settings
    from minnoctl.connection import connect_kwargs, resolve
    from benchlib import report
    from minnoctl.local import bin_dir

    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ)
        env.setdefault("MINNO_HOME", str(Path(tmp) / "home"))
        os.environ["MINNO_HOME"] = env["MINNO_HOME"]
        settings = load_settings(os.environ.get("MINNO_DATABASE_URL"))
        params = resolve(settings)
        admin = connect_kwargs(settings, params) | {"dbname": "postgres"}
        with psycopg.connect(**admin, autocommit=True) as conn:
            has_vector = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'").fetchone()
            server = conn.execute("SHOW server_version").fetchone()[0]
        modules_csv = None if has_vector else "minno,chatbot,assistant,supervisor,slackbot"
        sql = concatenated_sql(modules_csv)
        psql = str(bin_dir() / "psql")
        minnoctl = [sys.executable, "-m", "minnoctl"]
        created: list[str] = []

        def fresh() -> str:
            name = f"bench_{uuid.uuid4().hex[:10]}"
            with psycopg.connect(**admin, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{name}"')
                if has_vector:
                    with psycopg.connect(**(admin | {"dbname": name}), autocommit=True) as db:
                        db.execute("CREATE EXTENSION vector")
            created.append(name)
            return name

        def url(name: str) -> str:
            return " ".join(f"{k}='{v}'" for k, v in (admin | {"dbname": name}).items())

        from minnoctl import migrate, modules

        init_t, psql_t, inproc_t = [], [], []
        try:
            for _ in range(args.runs):
                target = fresh()
                run_env = env | {"MINNO_DATABASE_URL": url(target)}
                init_args = ["db", "init", "--yes"] + (["--modules", modules_csv] if modules_csv else [])
                init_t.append(timed(minnoctl + init_args, run_env))
                warm = load_settings(url(fresh()))
                started = time.perf_counter()
                migrate.init(warm, modules.parse_list(modules_csv))
                inproc_t.append(time.perf_counter() - started)
                floor = fresh()
                psql_t.append(timed([psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url(floor), "-f", "-"],
                                    env, stdin=sql))
            dry_t, start_t = [], []
            up_to_date = env | {"MINNO_DATABASE_URL": url(created[0])}
            for _ in range(args.runs * 2):
                dry_t.append(timed(minnoctl + ["migrate", "--dry-run"], up_to_date))
                start_t.append(timed(minnoctl + ["--version"], up_to_date))
        finally:
            with psycopg.connect(**admin, autocommit=True) as conn:
                for name in created:
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            if not os.environ.get("MINNO_DATABASE_URL"):
                from minnoctl.local import Embedded

                Embedded(Path(env["MINNO_HOME"])).stop()

    init_med, psql_med = statistics.median(init_t), statistics.median(psql_t)
    dry_med, start_med = statistics.median(dry_t), statistics.median(start_t)
    ratio = init_med / psql_med
    inproc_med = statistics.median(inproc_t)
    inproc_ratio = inproc_med / psql_med
    init_met, dry_met = inproc_ratio <= INIT_TARGET, dry_med <= DRY_RUN_TARGET_S
    statements = sql.count(";")
    print(f"migrate: PostgreSQL {server}, {len([1 for _ in sql.splitlines()])} lines / ~{statements} statements "
          f"({'all modules' if not modules_csv else modules_csv})")
    print(f"migrate: psql -f of the same SQL median {psql_med * 1000:.0f} ms; db init in-process median "
          f"{inproc_med * 1000:.0f} ms, ratio {inproc_ratio:.2f} (target <= {INIT_TARGET}): "
          f"{'met' if init_met else 'NOT met'}; `minnoctl db init` as a whole process median {init_med * 1000:.0f} ms, "
          f"ratio {ratio:.2f}: {'met' if ratio <= INIT_TARGET else 'NOT met'} (start-up bound); {args.runs} runs")
    report("migrate", f"db init {inproc_med * 1000:.0f} ms (in-process)", f"psql -f {psql_med * 1000:.0f} ms",
           inproc_ratio, f"<= {INIT_TARGET:g}x", init_met)
    print(f"migrate: --dry-run on an up-to-date database median {dry_med * 1000:.0f} ms (target <= "
          f"{DRY_RUN_TARGET_S * 1000:.0f} ms): {'met' if dry_met else 'NOT met'}; minnoctl --version in the same "
          f"run {start_med * 1000:.0f} ms (ratio {dry_med / start_med:.2f}); {args.runs * 2} runs")
    report("migrate", f"--dry-run {dry_med * 1000:.0f} ms", f"--version {start_med * 1000:.0f} ms",
           dry_med / start_med, f"<= {DRY_RUN_TARGET_S * 1000:.0f} ms", dry_met)
    return 0 if init_met and dry_met else 1


if __name__ == "__main__":
    sys.exit(main())
