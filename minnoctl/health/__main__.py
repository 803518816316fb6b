"""`python -m minnoctl.health --write-readme [README]`: regenerate the README's table of health checks
from the registry (tests/test_s18_health_docs.py fails while it differs)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from minnoctl.health import registry


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minnoctl.health", description=__doc__.splitlines()[0])
    parser.add_argument("--write-readme", action="store_true", required=True,
                        help="rewrite the table between the README's health-check markers")
    parser.add_argument("readme", nargs="?", type=Path, default=Path(__file__).resolve().parents[2] / "README.md")
    args = parser.parse_args(argv)
    text = args.readme.read_text(encoding="utf-8")
    new = registry.readme_with_table(text)
    if new != text:
        args.readme.write_text(new, encoding="utf-8")
    print(f"{args.readme}: the health table {'rewritten' if new != text else 'is current'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
