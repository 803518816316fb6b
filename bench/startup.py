"""bench/startup: `minnoctl --help` wall time against a bare two-command Typer app, same run.

The baseline is Typer's default app, which renders --help with Rich. minnoctl renders plain click
help (rich_markup_mode=None), so the bench also reports the stricter ratio against a bare app
with plain help; the target applies to the first, and both are printed.

Both are started the same way (this interpreter, a fresh process each time), interleaved so that
machine noise hits both alike; the figure is the ratio of medians. Target: ratio <= 1.3.

  python bench/startup.py [--runs N]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BARE_APP = '''
import typer

app = typer.Typer()


@app.command()
def hello(name: str) -> None:
    """Say hello."""
    print(f"hello {name}")


@app.command()
def goodbye(name: str) -> None:
    """Say goodbye."""
    print(f"goodbye {name}")


if __name__ == "__main__":
    app()
'''

TARGET = 1.3


def wall(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21)
    args = parser.parse_args()
    from benchlib import report

    with tempfile.TemporaryDirectory() as tmp:
        bare = Path(tmp) / "bare_app.py"
        bare.write_text(BARE_APP)
        plain = Path(tmp) / "bare_plain_app.py"
        plain.write_text(BARE_APP.replace("typer.Typer()", "typer.Typer(rich_markup_mode=None)"))
        cmds = {
            "minnoctl": [sys.executable, "-m", "minnoctl", "--help"],
            "bare": [sys.executable, str(bare), "--help"],
            "bare_plain": [sys.executable, str(plain), "--help"],
        }
        for cmd in cmds.values():  # warm the page cache and .pyc files
            wall(cmd)
        times: dict[str, list[float]] = {name: [] for name in cmds}
        for _ in range(args.runs):
            for name, cmd in cmds.items():
                times[name].append(wall(cmd))
    med = {name: statistics.median(t) for name, t in times.items()}
    ratio = med["minnoctl"] / med["bare"]
    strict = med["minnoctl"] / med["bare_plain"]
    met = ratio <= TARGET
    print(f"startup: minnoctl --help median {med['minnoctl'] * 1000:.1f} ms; bare two-command Typer app "
          f"median {med['bare'] * 1000:.1f} ms; ratio {ratio:.2f} (target <= {TARGET}): "
          f"{'met' if met else 'NOT met'}; against a bare app with plain help "
          f"({med['bare_plain'] * 1000:.1f} ms): {strict:.2f}; {args.runs} interleaved runs")
    report("startup", f"--help {med['minnoctl'] * 1000:.1f} ms", f"bare Typer app {med['bare'] * 1000:.1f} ms",
           ratio, f"<= {TARGET}x", met)
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
