"""Output: Rich tables in a terminal; JSON, CSV and tabulate's plain formats for scripts.

The only module that owns a Console. Results go to stdout; notes, warnings and errors to stderr.
No colour when the stream is not a terminal or NO_COLOR is set (Rich honours both).
Rich and tabulate are imported inside the functions, so `minnoctl --help` stays fast.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import decimal
import enum
import json
import logging
import sys
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from collections.abc import Callable, Iterable, Iterator, Sequence

from minnoctl.formats import FORMATS, TABULATE_FORMATS  # noqa: F401  (re-exported)

_consoles: dict[bool, Any] = {}


def console(stderr: bool = False) -> Any:
    """The Console for stdout or stderr, created on first use."""
    if stderr not in _consoles:
        from rich.console import Console

        _consoles[stderr] = Console(stderr=stderr, highlight=False, soft_wrap=False)
    return _consoles[stderr]


def reset() -> None:
    """Forget the consoles (tests swap sys.stdout between invocations)."""
    _consoles.clear()


def is_terminal(stream: Any = None) -> bool:
    stream = stream or sys.stdout
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def color_allowed(stream: Any = None) -> bool:
    from minnoctl.config import plain_terminal

    return is_terminal(stream) and plain_terminal() is None


def jsonable(value: Any) -> Any:
    """Stable JSON types: ISO-8601 times, strings for decimals/UUIDs/paths, enum values."""
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, (uuid.UUID, Path)):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [jsonable(v) for v in value]
    return value


# -- what a column holds: one declaration, by column name, for every command's tables ----------
#
# IDENTIFIERS are values an operator copies (file names, checksums, ids, index and view names,
# ports, roles, keys): in a terminal they are never wrapped, folded or cut; when a table is too
# wide, DESCRIPTIVE columns (prose) wrap first, then the others; when even the identifiers do not
# fit, each row is shown as `column  value` lines instead (psql's expanded display). Numbers stay
# whole too; a time may break only at the space between its date and its time.
# A column named *_bytes holds integer bytes: JSON, csv and tsv carry them exactly, the other
# formats show them human (`1.2 MB`) under the name without the suffix.
IDENTIFIERS = frozenset({
    "file", "sha256", "id", "name", "check", "port", "hostname", "project", "service", "range", "role",
    "task", "module", "modules", "table", "column", "row", "key", "master_key", "workspace", "slack_team_id",
    "notion_workspace_id", "channel", "thread_ts", "user", "provider", "database", "setting", "kind",
    "applied_by", "search_path", "index", "view", "sequence",
})
DESCRIPTIVE = frozenset({
    "description", "hint", "message", "note", "detail", "error", "reason", "value", "threshold", "thresholds",
    "policy", "scopes", "by_column", "label", "source", "missing", "extra", "service_types", "parent",
})
BYTES_SUFFIX = "_bytes"
MACHINE_FORMATS = ("csv", "tsv")  # text formats for scripts: exact bytes, no human sizes


def human_size(size: int) -> str:
    """Bytes as PostgreSQL's pg_size_pretty names them (1024-based): 512 bytes, 413.7 kB, 1.2 MB."""
    if abs(size) < 1024:
        return f"{size} bytes"
    value = float(size)
    for unit in ("kB", "MB", "GB", "TB", "PB"):
        value /= 1024
        if abs(value) < 1024 or unit == "PB":
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")


def header(column: str, fmt: str) -> str:
    """A column's heading in a format: *_bytes columns, human there, lose the suffix."""
    if column.endswith(BYTES_SUFFIX) and fmt not in MACHINE_FORMATS:
        return column[: -len(BYTES_SUFFIX)]
    return column


def text(value: Any, lines: bool = False) -> str:
    """A value as every text format shows it: booleans yes/no, times `2026-12-02 04:30:00+00:00`
    (to the second, with the offset; JSON keeps ISO 8601 in full), control characters escaped.
    `lines`: newlines and tabs stay (csv quotes them)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        # no float noise (0.1 + 0.2 -> 0.3), but no rounding either: ':g' alone keeps 6 digits
        return f"{value:.15g}"
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ", timespec="seconds")
    value = jsonable(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    # a stored value with an escape sequence (or, outside csv, a newline) is shown escaped: it
    # would repaint the terminal or forge a row; JSON carries it exactly
    from minnoctl.render_text import escape_controls

    shown = str(value)
    if shown.isprintable():  # the common case: no control or format character to escape
        return shown
    if lines:
        return "".join(ch if ch in "\n\r\t" else escape_controls(ch) for ch in shown)
    return escape_controls(shown)


def _cell(value: Any, lines: bool = False, column: str = "", fmt: str = "") -> str:
    if column.endswith(BYTES_SUFFIX) and fmt not in MACHINE_FORMATS and isinstance(value, int) \
            and not isinstance(value, bool):
        return human_size(value)
    return text(value, lines)


def _tsv_field(value: Any, column: str, fmt: str) -> str:
    from minnoctl.render_text import escape_controls

    return escape_controls(value if isinstance(value, str) else _cell(value, True, column, fmt), backslash=True)


def emit_json(document: Any, out: Any = None) -> None:
    out = out or sys.stdout
    out.write(json.dumps(jsonable(document), indent=2, sort_keys=False) + "\n")


def table(
    rows: Sequence[dict[str, Any]],
    columns: Sequence[str],
    fmt: str = "table",
    *,
    title: str | None = None,
    document: Any = None,
    styles: dict[str, Any] | None = None,
    out: Any = None,
) -> None:
    """Render rows (dicts) in the chosen format. `document` replaces the rows for JSON when a
    command's JSON has a richer documented shape. `styles` maps a column to a function giving a
    Rich style for a value (used only in a colour terminal)."""
    out = out or sys.stdout
    if fmt not in FORMATS:  # the CLI validates first; this guards library callers
        raise ValueError(f"unknown format {fmt!r}")
    if fmt == "json":
        emit_json(document if document is not None else [{c: r.get(c) for c in columns} for r in rows], out)
        return
    if fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_cell(row.get(c), True, c, fmt) for c in columns])
        return
    if fmt == "tsv":
        # unpadded, one field per column in every row; a tab or newline in a value is shown escaped
        # (\t, \n), so a field never holds the separator (tabulate's tsv pads to align), and a
        # backslash as \\ (as PostgreSQL's COPY text format), so `\t` always means a tab
        out.write("\t".join(_tsv_field(c, "", fmt) for c in columns) + "\n")
        for row in rows:
            out.write("\t".join(_tsv_field(row.get(c), c, fmt) for c in columns) + "\n")
        return
    if fmt == "table" and is_terminal(out):
        _rich_table(rows, columns, title, styles, out)
        return
    from tabulate import tabulate

    tab_fmt = "simple" if fmt == "table" else fmt
    body = [[_cell(row.get(c), False, c, fmt) for c in columns] for row in rows]
    if tab_fmt == "plain" and len(columns) == 1:
        # one value per line, nothing else: `X=$(minnoctl ... --format plain)` works
        for line in body:
            out.write(f"{line[0]}\n")
        return
    text_ = tabulate(body, headers=[] if tab_fmt == "plain" else [header(c, fmt) for c in columns],
                     tablefmt=tab_fmt, disable_numparse=True)
    out.write(text_ + "\n")


def _fit(natural: list[int], steps: list[list[int]], room: int) -> list[int] | None:
    """Column widths within `room`: step by step (each a width per column not to go under), the
    widest column above its floor gives up a character until the table fits; None if it never does."""
    widths = list(natural)
    for floors in steps:
        while sum(widths) > room:
            wide = [i for i, w in enumerate(widths) if w > floors[i]]
            if not wide:
                break
            widths[max(wide, key=lambda i: widths[i])] -= 1
        if sum(widths) <= room:
            return widths
    return None


def _rich_table(rows: Sequence[dict[str, Any]], columns: Sequence[str], title: str | None,
                styles: dict[str, Any] | None, out: Any) -> None:
    """A Rich table as wide as the terminal allows. Identifier columns (IDENTIFIERS, and times)
    keep their full width on one line; descriptive ones wrap at words first (then fold), then the
    rest; nothing is ever cut or ellipsised. When the identifiers alone do not fit, each row is
    printed as `column  value` lines, a value longer than the terminal on one line (the terminal
    wraps it, and copying it gives it whole)."""
    from rich.cells import cell_len
    from rich.console import Console
    from rich.table import Table

    colour = color_allowed(out)
    printer = console(stderr=out is sys.stderr) if out is sys.stdout or out is sys.stderr else \
        Console(file=out, highlight=False, soft_wrap=False)
    cells = [[_cell(row.get(c), False, c, "table") for c in columns] for row in rows]
    heads = [header(c, "table") for c in columns]

    def styled(col: str, row: dict[str, Any], shown: str) -> str:
        style = styles[col](row.get(col)) if styles and col in styles and colour else None
        return f"[{style}]{_escape(shown)}[/]" if style else _escape(shown)

    # identifiers and numbers keep their width (a header longer than its values folds); times may
    # break at the space between date and time; prose wraps at words, then folds
    whole = [c in IDENTIFIERS or all(isinstance(r.get(c), (int, float, decimal.Decimal)) for r in rows
                                     if r.get(c) is not None) for c in columns]
    longest = [max([cell_len(h)] + [cell_len(row[i]) for row in cells]) for i, h in enumerate(heads)]
    values = [max([cell_len(row[i]) for row in cells] + [min(cell_len(heads[i]), 6)]) for i in range(len(columns))]
    word = [max([cell_len(w) for w in heads[i].split()] + [cell_len(w) for row in cells for w in row[i].split()]
                + [1]) for i in range(len(columns))]
    box = _box() if colour else None
    probe = Table(box=box, pad_edge=False)
    for _ in columns:
        probe.add_column()
    extra = probe._extra_width + sum(probe._get_padding_width(i) for i in range(len(columns)))
    room = printer.width - extra
    keep = [values[i] if whole[i] else None for i in range(len(columns))]
    at_words = [min(longest[i], word[i]) for i in range(len(columns))]
    least = [min(at_words[i], 6) if c in DESCRIPTIVE or not any(isinstance(r.get(c), dt.date) for r in rows)
             else at_words[i] for i, c in enumerate(columns)]

    def step(descriptive: list[int], other: list[int]) -> list[int]:
        return [kept if (kept := keep[i]) is not None else descriptive[i] if c in DESCRIPTIVE else other[i]
                for i, c in enumerate(columns)]

    widths = _fit(longest, [step(at_words, longest), step(at_words, at_words), step(least, at_words),
                            step(least, least)], room)
    if widths is None:
        _records(rows, columns, cells, heads, styled, printer, title, whole)
        return
    rich_table = Table(title=title, header_style="bold" if colour else None, title_style=None, box=box,
                       pad_edge=False)
    for i in range(len(columns)):
        rich_table.add_column(heads[i], width=widths[i], overflow="fold")  # wide enough for identifiers
    for row, shown in zip(rows, cells):
        rich_table.add_row(*[styled(col, row, s) for col, s in zip(columns, shown)])
    printer.print(rich_table, crop=False)


def _records(rows, columns, cells, heads, styled, printer, title, whole) -> None:
    """Rows too wide for the terminal (psql's expanded display): one `column  value` line per
    column, a blank line between rows. Identifiers, numbers and short values stay on their line,
    whole, even past the terminal's edge (soft wrap: the terminal wraps it and copying gives it
    whole); descriptive values wrap under themselves."""
    import textwrap

    if title:
        printer.print(_escape(title), soft_wrap=True)
    pad = max(len(h) for h in heads)
    room = max(printer.width - pad - 2, 20)
    for n, (row, shown) in enumerate(zip(rows, cells)):
        if n:
            printer.print("", soft_wrap=True)
        for i, (col, head, value) in enumerate(zip(columns, heads, shown)):
            parts = [value] if whole[i] or col not in DESCRIPTIVE else textwrap.wrap(value, room) or [""]
            for k, part in enumerate(parts):
                printer.print(f"{_escape((head if k == 0 else '').ljust(pad))}  {styled(col, row, part)}",
                              soft_wrap=True)


def _box() -> Any:
    from rich import box

    return box.SIMPLE_HEAD


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


@dataclass
class Result:
    """What a command shows on stdout, for show() to turn into the chosen format. A command builds
    one and hands it over; the formats' differences live here, not in the commands.

    - rows/columns: the table (table, plain, simple, csv, tsv, the tabulate formats);
    - document: what JSON prints when it has a richer documented shape than the rows;
    - value: what `--format plain` prints alone, for `X=$(minnoctl ... --format plain)`;
    - cells: column -> function giving its text in every format but JSON (which keeps the value);
    - before: tables shown first in the text formats (JSON carries them in `document`);
    - listing: (rule, comment, SQL) blocks: in a terminal table each SQL highlighted under its rule,
      in place of the table; in table/plain/simple after the table, each after a `-- comment` line;
    - text: False when the text formats show nothing (an empty result: the stderr note says it);
    - nagios: the one line of `--format nagios` (health); a result without one shows plain there;
    - openmetrics: the exposition of `--format openmetrics` (health); without one, plain there too;
    - footer: a line after the table in the text formats."""

    rows: Sequence[dict[str, Any]] = ()
    columns: Sequence[str] = ()
    document: Any = None
    value: Any = None
    cells: dict[str, Callable[[Any], str]] | None = None
    before: Sequence["Result"] = ()
    listing: Sequence[tuple[str, str, str]] = ()
    title: str | None = None
    styles: dict[str, Any] | None = None
    text: bool = True
    nagios: str | None = None
    openmetrics: str | None = None
    footer: str | None = None


class Capture:
    """What one target of a fleet run shows (minnoctl/fleet.py): its Results and its stderr lines,
    kept for the fleet's summary instead of written while the other targets run beside it."""

    def __init__(self) -> None:
        self.results: list[Result] = []
        self.lines: list[tuple[str, str]] = []  # (prefix, message): "warning: ", "error: ", "" (a note)


_capturing = threading.local()


@contextlib.contextmanager
def captured(capture: Capture) -> Iterator[Capture]:
    """In this thread, show() and the stderr lines go to `capture` (a fleet run's target)."""
    _capturing.current = capture
    try:
        yield capture
    finally:
        _capturing.current = None


def capturing() -> Capture | None:
    return getattr(_capturing, "current", None)


def show(result: Result, fmt: str = "table", out: Any = None) -> None:
    """Render a command's Result in `fmt` (see Result for what each field does in which format)."""
    capture = capturing()
    if capture is not None and out is None:
        capture.results.append(result)
        return
    out = out or sys.stdout
    if fmt == "ndjson":  # one JSON object per row (the fleet's records carry their target)
        for row in result.rows:
            out.write(json.dumps(jsonable(dict(row)), ensure_ascii=False) + "\n")
        return
    if fmt == "nagios":
        if result.nagios is not None:
            out.write(result.nagios + "\n")
            return
        fmt = "plain"
    if fmt == "openmetrics":
        if result.openmetrics is not None:
            out.write(result.openmetrics)
            return
        fmt = "plain"
    if fmt == "json":
        table(result.rows, result.columns, "json", document=result.document, out=out)
        return
    if fmt == "plain" and result.value is not None:
        out.write(f"{text(result.value)}\n")
        return
    if not result.text:
        return
    rows = result.rows
    if result.cells:
        rows = [{c: (result.cells[c](v) if c in result.cells and v is not None else v) for c, v in row.items()}
                for row in rows]
    for part in result.before:
        show(part, fmt, out)
    if result.listing and fmt == "table" and is_terminal(out):
        _rich_listing(result.listing)
    else:
        table(rows, result.columns, "simple" if result.listing and fmt == "table" else fmt, title=result.title,
              styles=result.styles, out=out)
        if result.listing and fmt in ("table", "plain", "simple"):
            for _rule, comment, sql in result.listing:
                out.write(f"\n-- {comment}\n{sql.rstrip()}\n")
    if result.footer:
        out.write(result.footer + "\n")


def plugin_unknown(message: str, fmt: str, out: Any = None) -> bool:
    """A bad argument under `--format nagios`: the plugin guidelines make it UNKNOWN, one line on
    stdout (exit 3, the caller's). True when written; in every other format the caller raises it."""
    if fmt != "nagios" or (capturing() is not None and out is None):  # a fleet's target: its outcome says it
        return False
    from minnoctl.health.report import nagios_line

    (out or sys.stdout).write(nagios_line("UNKNOWN", message) + "\n")
    return True


def _rich_listing(listing: Sequence[tuple[str, str, str]]) -> None:
    from rich.markup import escape
    from rich.syntax import Syntax

    printer = console()
    for rule, _comment, sql in listing:
        printer.rule(escape(rule))
        printer.print(Syntax(sql, "sql", theme="ansi_dark", background_color="default", word_wrap=True))


def records(rows: Iterable[tuple[str, Any]]) -> list[dict[str, Any]]:
    """Key/value pairs as two-column rows (for `config show`, `local status`)."""
    return [{"setting": k, "value": v} for k, v in rows]


class ProgressBar:
    """A Rich progress bar on stderr, one line per label; `update(label, done, total)`."""

    def __init__(self, unit: str) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                 TextColumn(f"{{task.completed:,}} {unit}"), TimeElapsedColumn(),
                                 console=console(stderr=True), transient=True)
        self.progress.start()
        self.tasks: dict[str, Any] = {}

    def update(self, label: str, done: int, total: int | None = None) -> None:
        if label not in self.tasks:
            self.tasks[label] = self.progress.add_task(label, total=total)
        self.progress.update(self.tasks[label], completed=done)

    def close(self) -> None:
        self.progress.stop()


def spinner(message: str) -> Any:
    """A spinner on stderr for work of unknown length, in a colour terminal only; else a no-op."""
    if capturing() is not None or not color_allowed(sys.stderr):
        return contextlib.nullcontext()
    return console(stderr=True).status(message)


def progress_bar(unit: str) -> ProgressBar | None:
    """A progress bar when stderr is a colour terminal; None otherwise (cron, pipes, NO_COLOR)."""
    return ProgressBar(unit) if color_allowed(sys.stderr) and capturing() is None else None


# -- stderr: notes, warnings, errors ---------------------------------------------------------


def _stderr_line(prefix: str, message: str, style: str) -> None:
    from minnoctl.config import scrub
    from minnoctl.render_text import one_line

    # one line, whatever a value in it held (newline, ESC, bidi); and never a password, whichever
    # message quoted a URL (user:password@ and password=... are masked before escaping)
    message = one_line(scrub(message))
    capture = capturing()
    if capture is not None:
        capture.lines.append((prefix, message))
        return
    if color_allowed(sys.stderr):
        from rich.markup import escape

        console(stderr=True).print(f"[{style}]minnoctl: {prefix}[/]{escape(message)}", soft_wrap=True)
    else:
        sys.stderr.write(f"minnoctl: {prefix}{message}\n")
        sys.stderr.flush()


def error(message: str) -> None:
    _stderr_line("error: ", message, "bold red")


def warn(message: str) -> None:
    _stderr_line("warning: ", message, "yellow")


def note(message: str) -> None:
    _stderr_line("", message, "dim")


class NoteHandler(logging.Handler):
    """Routes the logic modules' log records to stderr as minnoctl notes and warnings."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.levelno >= logging.WARNING:
                warn(message)
            else:
                note(message)
        except Exception:  # pragma: no cover - logging must never break a command
            self.handleError(record)


def setup_logging(quiet: bool = False, verbose: bool = False) -> None:
    logger = logging.getLogger("minnoctl")
    for handler in list(logger.handlers):
        if isinstance(handler, NoteHandler):
            logger.removeHandler(handler)
    logger.addHandler(NoteHandler())
    logger.setLevel(logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False
