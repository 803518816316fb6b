"""Output: Rich tables in a terminal; JSON, CSV and tabulate's plain formats for scripts.

The only module that owns a Console. Results go to stdout; notes, warnings and errors to stderr.
No colour when the stream is not a terminal or NO_COLOR is set (Rich honours both).
Rich and tabulate are imported inside the functions, so `minnoctl --help` stays fast.
"""

from __future__ import annotations

import csv
import datetime as dt
import decimal
import enum
import json
import logging
import os
import sys
import uuid
from pathlib import Path
from typing import Any, Iterable, Sequence

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
    return is_terminal(stream) and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"


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


def _cell(value: Any, lines: bool = False) -> str:
    """A value as text for tables and csv; `lines`: newlines and tabs stay (csv quotes them)."""
    if value is None:
        return ""
    if isinstance(value, float):
        # no float noise (0.1 + 0.2 -> 0.3), but no rounding either: ':g' alone keeps 6 digits
        return f"{value:.15g}"
    value = jsonable(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    # a stored value with an escape sequence (or, outside csv, a newline) is shown escaped: it
    # would repaint the terminal or forge a row; JSON carries it exactly
    from minnoctl.render_text import escape_controls

    text = str(value)
    if text.isprintable():  # the common case: no control or format character to escape
        return text
    if lines:
        return "".join(ch if ch in "\n\r\t" else escape_controls(ch) for ch in text)
    return escape_controls(text)


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
            writer.writerow([_cell(row.get(c), lines=True) for c in columns])
        return
    if fmt == "table" and is_terminal(out):
        from rich.table import Table

        rich_table = Table(title=title, header_style="bold" if color_allowed(out) else None,
                           title_style=None, box=None if not color_allowed(out) else _box())
        for col in columns:
            rich_table.add_column(col)
        for row in rows:
            cells = []
            for col in columns:
                text = _cell(row.get(col))
                style = styles.get(col)(row.get(col)) if styles and col in styles and color_allowed(out) else None
                cells.append(f"[{style}]{_escape(text)}[/]" if style else _escape(text))
            rich_table.add_row(*cells)
        if out is sys.stdout or out is sys.stderr:
            console(stderr=out is sys.stderr).print(rich_table)
        else:
            from rich.console import Console

            Console(file=out, highlight=False).print(rich_table)
        return
    from tabulate import tabulate

    tab_fmt = "simple" if fmt == "table" else fmt
    body = [[_cell(row.get(c)) for c in columns] for row in rows]
    if tab_fmt == "plain" and len(columns) == 1:
        # one value per line, nothing else: `X=$(minnoctl ... --format plain)` works
        for line in body:
            out.write(f"{line[0]}\n")
        return
    text = tabulate(body, headers=[] if tab_fmt == "plain" else list(columns), tablefmt=tab_fmt,
                    disable_numparse=True)
    out.write(text + "\n")


def _box() -> Any:
    from rich import box

    return box.SIMPLE_HEAD


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


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
    import contextlib

    if not color_allowed(sys.stderr):
        return contextlib.nullcontext()
    return console(stderr=True).status(message)


def progress_bar(unit: str) -> ProgressBar | None:
    """A progress bar when stderr is a colour terminal; None otherwise (cron, pipes, NO_COLOR)."""
    return ProgressBar(unit) if color_allowed(sys.stderr) else None


# -- stderr: notes, warnings, errors ---------------------------------------------------------


def _stderr_line(prefix: str, message: str, style: str) -> None:
    from minnoctl.config import scrub
    from minnoctl.render_text import one_line

    # one line, whatever a value in it held (newline, ESC, bidi); and never a password, whichever
    # message quoted a URL (user:password@ and password=... are masked before escaping)
    message = one_line(scrub(message))
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
