"""What the benchmarks share: databases on a throw-away server, dropped at the end.

With MINNO_DATABASE_URL set, the databases are made on that server; otherwise on an embedded
PostgreSQL under a temporary MINNO_HOME, stopped at the end (never the developer's own).

report() records one target's result for bench/run, which prints them all as one table.
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path
from collections.abc import Iterator


class Bench:
    def __init__(self, admin: dict[str, str], prefix: str, tmp: Path):
        self.admin, self.prefix, self.tmp = admin, prefix, tmp
        self.made: list[str] = []

    def dsn(self, name: str) -> str:
        return " ".join(f"{k}='{v}'" for k, v in (self.admin | {"dbname": name}).items())

    def new_db(self, template: str | None = None) -> str:
        """A new database (a copy of `template`); returns its name."""
        import psycopg

        name = f"{self.prefix}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(**self.admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
        self.made.append(name)
        return name

    def drop(self, names: list[str] | None = None) -> None:
        import psycopg

        names = list(self.made) if names is None else names
        with psycopg.connect(**self.admin, autocommit=True) as conn:
            for name in names:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.made = [n for n in self.made if n not in names]

    def server_version(self) -> str:
        import psycopg

        with psycopg.connect(**self.admin) as conn:
            return conn.execute("SHOW server_version").fetchone()[0]


def report(benchmark: str, figure: str, baseline: str, ratio: float | None, target: str, met: bool) -> None:
    """One target's result, as one JSON line appended to $MINNOCTL_BENCH_RESULTS (bench/run sets
    it); nothing when the variable is unset. `figure` and `baseline` are short strings with their
    units ("31,644 rows/s", "p99 20.1 ms"), `target` what the figure must meet (">= 0.7x")."""
    path = os.environ.get("MINNOCTL_BENCH_RESULTS")
    if not path:
        return
    row = {"benchmark": benchmark, "figure": figure, "baseline": baseline,
           "ratio": None if ratio is None else float(ratio), "target": target, "met": bool(met)}
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


@contextmanager
def server(prefix: str) -> Iterator[Bench]:
    from minnoctl.config import load_settings
    from minnoctl.connection import connect_kwargs, resolve

    with tempfile.TemporaryDirectory() as tmp:
        url = os.environ.get("MINNO_DATABASE_URL")
        if not url:
            os.environ["MINNO_HOME"] = str(Path(tmp) / "home")
        base = load_settings(url)
        bench = Bench(connect_kwargs(base, resolve(base)) | {"dbname": "postgres"}, prefix, Path(tmp))
        try:
            yield bench
        finally:
            bench.drop()
            if not url:
                from minnoctl.local import Embedded

                Embedded(Path(os.environ["MINNO_HOME"])).stop(wait_s=10)
