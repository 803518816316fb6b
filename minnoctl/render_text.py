"""One escaping of values echoed into messages (standard library only, so any module may use it).

A value an operator typed, or read from a file or the environment, can hold a newline, a terminal
escape sequence or a bidi override. Echoed raw it would break the one-line rule for errors, forge a
second line in a cron mail, or repaint the operator's terminal. `shown` quotes and escapes a value
for a message; `one_line` is the last line of defence that render applies to every stderr line.
"""

from __future__ import annotations

import unicodedata

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\x1b": "\\e", "\\": "\\\\"}


def escape_controls(text: str, *, backslash: bool = False) -> str:
    """Control and format characters (C0, DEL, C1, bidi overrides, zero-width) as visible escapes."""
    out = []
    for ch in text:
        if ch == "\\" and not backslash:
            out.append(ch)
        elif ch in _NAMED:
            out.append(_NAMED[ch])
        elif unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp"):
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)


def shown(value: object, limit: int = 80) -> str:
    """A value as a message quotes it: '...' with controls escaped, long values cut with a count."""
    text = escape_controls(str(value), backslash=True)
    if len(text) > limit:
        text = f"{text[:limit - 20]}…({len(str(value))} characters)"
    return f"'{text}'"


def one_line(message: str) -> str:
    """A message as one printable line (newlines and escape sequences made visible)."""
    return escape_controls(message.rstrip("\n"))
