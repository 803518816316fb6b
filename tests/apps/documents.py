"""The seed documents' code blocks, exactly as the documents write them.

The documents live outside the repository (../shared/spec, see minnoctl/modules.py). Each piece the
outside-in tests run is named in PIECES by its document, the section heading it sits under and its
language; `piece(name)` extracts it from the document at test time. A verbatim copy of every piece
is kept in tests/apps/vendored/ for machines without the documents (a CI checkout); the test
`test_vendored_copies_are_the_documents_own` checks that each copy is still the document's text, so
either way the tests run what the document says.

Regenerate the copies after a document changes:  python tests/apps/documents.py --write
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

SPEC_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "spec"
VENDORED = Path(__file__).parent / "vendored"

DOC_000 = "000_d66b7bc0cd2780cd.txt"  # minno core
DOC_001 = "001_38c6132699592170.txt"  # chatbot
DOC_002 = "002_4be4f1a339a0167f.txt"  # assistant
DOC_004 = "004_9bcff1184c811c83.txt"  # slackbot


@dataclass(frozen=True)
class Block:
    heading: str  # the nearest heading above the block, markdown marks stripped
    label: str  # a bold line right above the block ("Example Data:"), or ""
    lang: str
    code: str


@dataclass(frozen=True)
class Piece:
    document: str
    section: str  # a heading; the piece is every block of that section (and its subsections)
    lang: str
    label: str | None = None  # only blocks with this label

    @property
    def suffix(self) -> str:
        return {"typescript": ".ts", "javascript": ".js", "sql": ".sql", "bash": ".sh"}[self.lang]


PIECES: dict[str, Piece] = {
    # 002, the AI Assistant Platform: DatabaseService and its persistence methods (TypeScript)
    "002-database-service": Piece(DOC_002, "Core Database Service", "typescript"),
    "002-user-tokens": Piece(DOC_002, "User Token Management", "typescript"),
    "002-sessions": Piece(DOC_002, "Session Management", "typescript"),
    "002-confirmations": Piece(DOC_002, "Confirmation Management", "typescript"),
    "002-health": Piece(DOC_002, "Database Health Monitoring", "typescript"),
    "002-migration-file": Piece(DOC_002, "Migration System", "typescript"),  # SQL, in a typescript fence
    "002-run-migrations": Piece(DOC_002, "Migration Execution", "typescript"),
    # 001, the Micro Chatbot Service: the Drizzle schema file and the SQL it documents
    "001-schema": Piece(DOC_001, "Drizzle Schema Definition", "typescript"),
    "001-example-data": Piece(DOC_001, "Tables", "sql", label="Example Data:"),
    "001-common-queries": Piece(DOC_001, "Common Queries", "sql"),
    # 000, Minno: the node-postgres pools of "Connection Security", its queries, the optional audit_log
    "000-connection-security": Piece(DOC_000, "Connection Security", "javascript"),
    "000-common-queries": Piece(DOC_000, "Table Descriptions", "sql"),
    "000-audit-log": Piece(DOC_000, "Data Protection", "sql"),
    # 004, the Slackbot: how it writes DATABASE_URL, its maintenance functions and monitoring views
    "004-environment": Piece(DOC_004, "2. Set Environment Variables", "bash"),
    "004-maintenance": Piece(DOC_004, "Maintenance Functions", "sql"),
    "004-monitoring": Piece(DOC_004, "Performance Monitoring", "sql"),
}

_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*$")
_FENCE = re.compile(r"^```(\S*)\s*$")


def _plain(heading: str) -> str:
    """'### **Core Database Service**' -> 'Core Database Service' (emphasis and code marks gone)."""
    return heading.replace("*", "").replace("`", "").strip()


def sections(text: str) -> list[tuple[list[str], Block]]:
    """Every fenced block of a document with the chain of headings above it (outermost first)."""
    out: list[tuple[list[str], Block]] = []
    chain: list[tuple[int, str]] = []
    label = ""
    lines = text.splitlines(keepends=True)
    i = 0
    while i < len(lines):
        line = lines[i].rstrip("\n")
        fence = _FENCE.match(line)
        if fence:
            j = i + 1
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            code = "".join(lines[i + 1:j])
            heading = chain[-1][1] if chain else ""
            out.append(([h for _, h in chain], Block(heading, label, fence.group(1), code)))
            label = ""
            i = j + 1
            continue
        heading = _HEADING.match(line)
        if heading:
            level = len(heading.group(1))
            chain = [c for c in chain if c[0] < level] + [(level, _plain(heading.group(2)))]
            label = ""
        elif line.strip().startswith("**") and line.strip().endswith("**"):
            label = _plain(line)
        elif line.strip():
            label = ""
        i += 1
    return out


def extract(piece: Piece) -> list[Block]:
    text = (SPEC_DIR / piece.document).read_text(encoding="utf-8")
    found = []
    for chain, block in sections(text):
        if (piece.section in chain or any(h.endswith(piece.section) for h in chain)) and block.lang == piece.lang \
                and (piece.label is None or block.label == piece.label):
            found.append(block)
    if not found:
        raise LookupError(f"{piece.document} has no {piece.lang} block under {piece.section!r}")
    return found


def _comment(lang: str) -> str:
    return {"sql": "--", "bash": "#"}.get(lang, "//")


def render(name: str, blocks: list[Block]) -> str:
    """The vendored copy: a header naming the document and section, then each block verbatim after
    a marker line naming its heading."""
    piece = PIECES[name]
    c = _comment(piece.lang)
    out = [f"{c} VERBATIM from ../shared/spec/{piece.document}, section \"{piece.section}\" "
           f"({piece.lang} blocks{', labelled ' + repr(piece.label) if piece.label else ''}).\n",
           f"{c} Generated by tests/apps/documents.py --write; checked by test_apps_outside_in.py. Do not edit.\n"]
    for block in blocks:
        out.append(f"{c} @block {block.heading}\n")
        out.append(block.code)
    return "".join(out)


def _parse_vendored(name: str) -> list[Block]:
    piece = PIECES[name]
    marker = f"{_comment(piece.lang)} @block "
    blocks: list[Block] = []
    heading, code = None, []
    for line in (VENDORED / f"{name}{piece.suffix}").read_text(encoding="utf-8").splitlines(keepends=True):
        if line.startswith(marker):
            if heading is not None:
                blocks.append(Block(heading, piece.label or "", piece.lang, "".join(code)))
            heading, code = line[len(marker):].rstrip("\n"), []
        elif heading is not None:
            code.append(line)
    if heading is not None:
        blocks.append(Block(heading, piece.label or "", piece.lang, "".join(code)))
    return blocks


def documents_present() -> bool:
    return all((SPEC_DIR / p.document).is_file() for p in PIECES.values())


def piece(name: str) -> list[Block]:
    """The blocks of a piece: from the document when it is here, else from the vendored copy."""
    return extract(PIECES[name]) if documents_present() else _parse_vendored(name)


def code(name: str) -> str:
    """The one block of a single-block piece."""
    blocks = piece(name)
    assert len(blocks) == 1, f"{name}: {len(blocks)} blocks"
    return blocks[0].code


def vendored_text(name: str) -> str:
    return (VENDORED / f"{name}{PIECES[name].suffix}").read_text(encoding="utf-8")


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python tests/apps/documents.py --write")
    VENDORED.mkdir(exist_ok=True)
    for key in PIECES:
        (VENDORED / f"{key}{PIECES[key].suffix}").write_text(render(key, extract(PIECES[key])), encoding="utf-8")
        print(f"wrote {key}{PIECES[key].suffix}")
