"""The README's generated tables, each between its two marker lines: the health checks (from the
health registry) and the environment variables (from config.SETTINGS).
`python -m minnoctl.readme --write [README]` rewrites them (tests/test_s18_health_docs.py and
tests/test_s18_settings.py fail while one differs)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from minnoctl.errors import MinnoctlError

README = Path(__file__).resolve().parents[1] / "README.md"


def replace_between(text: str, start: str, end: str, body: str, what: str) -> str:
    """`text` with what lies between the marker lines `start` and `end` replaced by `body`."""
    first, last = text.find(start), text.find(end)
    if first < 0 or last < first:
        raise MinnoctlError(f"the README has no generated {what} (the lines {start} and {end} around it)")
    return text[:first + len(start)] + "\n" + body + "\n" + text[last:]


def markdown_rows(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table; an empty cell stays one space wide."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["|" + "|".join(f" {c} " if c else " " for c in row) + "|" for row in rows]
    return "\n".join(lines)


def generated(text: str) -> str:
    """`text` with every generated table as the code declares it now."""
    from minnoctl import config
    from minnoctl.health import registry

    return config.readme_with_table(registry.readme_with_table(text))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minnoctl.readme", description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", required=True,
                        help="rewrite the generated tables between the README's markers")
    parser.add_argument("readme", nargs="?", type=Path, default=README)
    args = parser.parse_args(argv)
    text = args.readme.read_text(encoding="utf-8")
    new = generated(text)
    if new != text:
        args.readme.write_text(new, encoding="utf-8")
    print(f"{args.readme}: the generated tables {'rewritten' if new != text else 'are current'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
