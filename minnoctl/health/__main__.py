"""`python -m minnoctl.health --write-readme [README]`: regenerate the README's table of health checks
from the registry (tests/test_s18_health_docs.py fails while it differs). The README's marker names
this command; the writing is minnoctl.readme's, which rewrites every generated table at once."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from minnoctl import readme


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minnoctl.health", description=__doc__.splitlines()[0])
    parser.add_argument("--write-readme", action="store_true", required=True,
                        help="rewrite the generated tables between the README's markers (the health checks' too)")
    parser.add_argument("readme", nargs="?", type=Path, default=readme.README)
    args = parser.parse_args(argv)
    return readme.main(["--write", str(args.readme)])


if __name__ == "__main__":
    sys.exit(main())
