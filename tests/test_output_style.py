"""One output style (issue 17 items 6 and 7), checked through real minnoctl processes on one seeded
database: booleans yes/no in text formats, times with their UTC offset (JSON too), sizes human in
tables and integer bytes in JSON, tsv unpadded with even rows, and values an operator copies (file
names, checksums, ids, ports) never cut, folded or ellipsised in a narrow terminal (a real pty)."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

LISTINGS = [("token", "list"), ("token", "keys"), ("cleanup", "--list"), ("cleanup", "--dry-run"),
            ("backup", "list"), ("ports", "list"), ("ports", "range", "list"), ("migrate", "status"),
            ("app", "list"), ("health",), ("config", "show"), ("local", "status")]
FORMATS = ("json", "tsv", "plain", "table")
ROLE = f"h4_style_{uuid.uuid4().hex[:8]}"

TIME_LIKE = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")
WITH_OFFSET = re.compile(r"(Z|[+-]\d{2}:?\d{2})$")
TEXT_TIME = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}[+-]\d{2}:\d{2}")  # the one format of tables
PYTHON_BOOL = re.compile(r"\b(True|False)\b")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


def _process(args: list[str], env: dict[str, str], stdout=subprocess.PIPE, timeout: float = 120):
    return subprocess.run([sys.executable, "-m", "minnoctl", *args], stdout=stdout, stderr=subprocess.PIPE,
                          text=True, env=env, timeout=timeout)


@pytest.fixture(scope="module")
def seeded(server, tmp_path_factory):
    """One database with every module, the seed data and its overdue scenario, a backup and an app
    role: an environment for minnoctl processes that points at it."""
    import psycopg

    from minnoctl import crypto

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server.admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    work = tmp_path_factory.mktemp("style")
    env = {**os.environ, "MINNO_DATABASE_URL": server.url(name), "MINNO_BACKUP_DIR": str(work / "backups"),
           "MINNO_MASTER_KEY": crypto.encode_key(crypto.generate_key())}
    (work / "backups").mkdir()
    steps = [["db", "init"], ["seed", "--scenario", "overdue", "--yes"],
             ["backup", "create", "--label", "before-the-style-test"], ["app", "create", "chatbot", "--role", ROLE]]
    for step in steps:
        done = subprocess.run([sys.executable, "-m", "minnoctl", *step], capture_output=True, text=True, env=env,
                              cwd=work, timeout=300)
        assert done.returncode == 0, (step, done.stderr)
    yield env
    with psycopg.connect(server.admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'DROP ROLE IF EXISTS "{ROLE}"')


def _json_strings(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from _json_strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _json_strings(v)
    elif isinstance(value, str):
        yield value


def test_every_listing_speaks_one_style_in_every_format(seeded):
    def formats_of(cmd):  # one command's formats one after another (cleanup runs one at a time)
        return {(cmd, fmt): _process([*cmd, "--format", fmt], seeded) for fmt in FORMATS}

    results = {}
    with ThreadPoolExecutor(max_workers=8) as pool:
        for done in pool.map(formats_of, LISTINGS):
            results.update(done)
    for (cmd, fmt), done in results.items():
        where = f"minnoctl {' '.join(cmd)} --format {fmt}"
        allowed = (0, 1, 2) if cmd == ("health",) else (0,)
        assert done.returncode in allowed and "Traceback" not in done.stderr, (where, done.stderr)
        out = done.stdout
        if fmt == "json":
            doc = json.loads(out)
            assert doc, where  # the seeded database gives every listing something to show
            for text in _json_strings(doc):
                if TIME_LIKE.match(text):
                    assert WITH_OFFSET.search(text), f"{where}: time without its offset: {text!r}"
            continue
        assert not PYTHON_BOOL.search(out), f"{where} prints Python's booleans:\n{out}"
        if fmt == "tsv":
            lines = out.splitlines()
            assert lines, where
            widths = {len(line.split("\t")) for line in lines}
            assert len(widths) == 1, f"{where}: rows of different lengths {widths}:\n{out}"
            for line in lines:
                for field in line.split("\t"):
                    assert field == field.strip(), f"{where}: padded field {field!r}"
                    if TIME_LIKE.match(field):
                        assert TEXT_TIME.fullmatch(field), f"{where}: time not in the table format: {field!r}"


def test_the_listings_that_had_no_offset_have_it_and_sizes_are_bytes_in_json_human_in_tables(seeded):
    tokens = json.loads(_process(["token", "list", "--format", "json"], seeded).stdout)
    assert any(t["expires_at"] for t in tokens)
    for t in tokens:
        assert t["expires_at"] is None or WITH_OFFSET.search(t["expires_at"]), t
        assert isinstance(t["has_refresh_token"], bool)  # JSON keeps true/false
    tasks = json.loads(_process(["cleanup", "--list", "--format", "json"], seeded).stdout)
    assert any(t["oldest_due"] for t in tasks)
    assert all(t["oldest_due"] is None or WITH_OFFSET.search(t["oldest_due"]) for t in tasks), tasks
    listed = json.loads(_process(["backup", "list", "--format", "json"], seeded).stdout)
    assert isinstance(listed[0]["size_bytes"], int) and listed[0]["size_bytes"] > 1000, listed[0]
    assert "size" not in listed[0]
    table = _process(["backup", "list", "--format", "plain"], seeded).stdout
    assert re.search(r"\b\d+(\.\d)? (kB|MB)\b", table), table
    assert str(listed[0]["size_bytes"]) not in table
    for fmt in ("csv", "tsv"):  # the formats for scripts carry the exact bytes
        assert str(listed[0]["size_bytes"]) in _process(["backup", "list", "--format", fmt], seeded).stdout


def _in_a_terminal(args: list[str], env: dict[str, str], columns: int) -> tuple[int, str]:
    """Run minnoctl with stdout on a pty `columns` wide; its output without colour codes."""
    import fcntl
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "minnoctl", *args], stdout=slave, stderr=subprocess.PIPE,
                            env={**env, "COLUMNS": str(columns), "TERM": "xterm-256color"})
    os.close(slave)
    chunks = []
    while True:
        ready, _, _ = select.select([master], [], [], 60)
        assert ready, f"minnoctl {' '.join(args)} printed nothing for 60 s"
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the process closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    proc.wait(timeout=60)
    text = ANSI.sub("", b"".join(chunks).decode()).replace("\r\n", "\n")
    return proc.returncode, text


def _as_shown(value) -> str:
    """A JSON value as a table shows it (times in the one table format)."""
    import datetime as dt

    from minnoctl import render

    if isinstance(value, str) and TIME_LIKE.match(value):
        value = dt.datetime.fromisoformat(value)
    return render.text(value)


# command, the keys of its JSON rows whose values an operator copies
COPIED = [(("backup", "list"), ("file", "created_at")),
          (("cleanup", "--list"), ("task", "module")),
          (("ports", "list"), ("port", "project", "service", "allocated_at")),
          (("migrate", "status"), ("id", "applied_at")),
          (("token", "keys"), ("name", "master_key", "created_at")),
          (("token", "list"), ("workspace", "provider"))]


@pytest.mark.parametrize("columns", [80, 60])
def test_values_an_operator_copies_are_whole_in_a_narrow_terminal(seeded, columns):
    code, shown = _in_a_terminal(["backup", "create", "--label", "copied-whole-" + "y" * 20,
                                  "--output-format", "table"], seeded, columns)
    assert code == 0, shown
    newest = json.loads(_process(["backup", "list", "--format", "json"], seeded).stdout)[0]["file"]
    manifest = json.loads((Path(seeded["MINNO_BACKUP_DIR"]) / f"{newest}.manifest.json").read_text())
    checks = [(("backup", "create"), shown, [manifest["sha256"], newest])]
    for cmd, keys in COPIED:
        rows = json.loads(_process([*cmd, "--format", "json"], seeded).stdout)
        code, shown = _in_a_terminal([*cmd, "--format", "table"], seeded, columns)
        assert code == 0, (cmd, shown)
        values = [_as_shown(r[k]) for r in rows for k in keys if r.get(k) is not None]
        assert values, cmd
        checks.append((cmd, shown, values))
    for cmd, shown, values in checks:
        assert "…" not in shown and "..." not in shown.replace("(PostgreSQL, Redis, ...)", ""), (cmd, shown)
        lines = shown.splitlines()
        for value in values:
            assert any(value in line for line in lines), f"{' '.join(cmd)} at {columns} columns cut {value!r}:\n{shown}"
        for line in lines:  # nothing runs past the terminal's edge, but a `column  value` line whose value
            # (one word: an identifier) is longer than a line can hold: the terminal wraps it, copying gives it whole
            assert len(line) <= columns or len(line.split()) == 2, (cmd, line)


def test_a_descriptive_column_wraps_rather_than_an_identifier(seeded):
    """cleanup --list at 80 columns: the task names stay whole, each on one line; a description
    longer than the terminal wraps over several lines, every word of it shown, nothing past the edge."""
    rows = json.loads(_process(["cleanup", "--list", "--format", "json"], seeded).stdout)
    code, shown = _in_a_terminal(["cleanup", "--list"], seeded, 80)
    assert code == 0, shown
    lines = shown.splitlines()
    assert all(len(line) <= 80 for line in lines), shown
    words = set(" ".join(lines).split())
    for row in rows:
        assert any(row["task"] in line.split() for line in lines), (row["task"], shown)
        for word in row["description"].split():
            assert word in words, (word, shown)
    longest = max((r["description"] for r in rows), key=len)
    assert len(longest) > 80 and not any(longest in line for line in lines), shown
