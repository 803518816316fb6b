"""`health --serve ADDRESS`: a read-only HTTP endpoint for Prometheus and for probes (stdlib only).

GET /metrics is the OpenMetrics exposition of a health run; one run at a time, its text kept for
`cache_for` seconds, so a scrape every second costs one run per interval. GET /livez is 200 when
the server answers SELECT 1 (`health --live`), GET /readyz 200 when `health --ready` is OK, else
503; anything else 404. One line on stderr per request; SIGTERM or SIGINT stops it (exit 0).
"""

from __future__ import annotations

import re
import signal
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from minnoctl.health.openmetrics import CONTENT_TYPE

USAGE = "HOST:PORT or :PORT, e.g. 127.0.0.1:9187 or :9187 (all interfaces)"


def parse_address(text: str) -> tuple[str, int]:
    """`127.0.0.1:9187`, `[::1]:9187`, `:9187` -> (host, port); UsageError otherwise."""
    from minnoctl.errors import UsageError

    found = re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-]*):([0-9]{1,5})", text.strip())
    port = int(found.group(2)) if found else 0
    if not found or not 0 < port < 65536:
        raise UsageError(f"--serve {text!r} is not an address — use {USAGE}")
    return found.group(1).strip("[]"), port


class Cache:
    """The last /metrics text, recomputed at most once per `seconds`, by one thread at a time."""

    def __init__(self, produce: Callable[[], str], seconds: float) -> None:
        self.produce, self.seconds = produce, seconds
        self.lock = threading.Lock()
        self.text: str | None = None
        self.at = 0.0

    def get(self) -> str:
        with self.lock:
            if self.text is None or time.monotonic() - self.at >= self.seconds:
                self.text = self.produce()
                self.at = time.monotonic()
            return self.text


class _Stop(BaseException):  # not an Exception: socketserver swallows those raised while it handles a request
    pass


def _handler(cache: Cache, probes: dict[str, Callable[[], bool]]) -> type[BaseHTTPRequestHandler]:
    probe_lock = threading.Lock()  # one probe at a time: bounded work, whatever the callers do

    class Handler(BaseHTTPRequestHandler):
        server_version = "minnoctl"

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            path = self.path.split("?", 1)[0]
            try:
                if path == "/metrics":
                    self._send(200, cache.get(), CONTENT_TYPE)
                elif path in probes:
                    with probe_lock:
                        ok = probes[path]()
                    self._send(200 if ok else 503, "ok\n" if ok else "not ok\n")
                else:
                    self._send(404, "not found: /metrics, /livez, /readyz\n")
            except Exception as exc:  # one failed run answers 500, the server goes on
                self._send(500, f"error: {type(exc).__name__}\n")

        def do_HEAD(self) -> None:  # noqa: N802
            self._send(405, "")

        def _send(self, code: int, body: str, content_type: str = "text/plain; charset=utf-8") -> None:
            data = body.encode()
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's signature)
            sys.stderr.write(f"minnoctl: serve: {self.address_string()} {format % args}\n")
            sys.stderr.flush()

        def log_error(self, format: str, *args: Any) -> None:  # noqa: A002
            pass  # the request line that follows says it

    return Handler


def serve(address: tuple[str, int], metrics: Callable[[], str], live: Callable[[], bool],
          ready: Callable[[], bool], cache_for: float) -> None:
    """Serve until SIGTERM or SIGINT; returns then (the caller exits 0)."""
    from minnoctl.errors import UsageError

    import socket

    class Server(ThreadingHTTPServer):
        address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET

    try:
        server = Server(address, _handler(Cache(metrics, cache_for),
                                                       {"/livez": live, "/readyz": ready}))
    except OSError as exc:
        raise UsageError(f"--serve {address[0]}:{address[1]}: cannot listen: {exc.strerror or exc}") from None

    def stop(_signum: int, _frame: Any) -> None:
        raise _Stop

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    port = server.server_address[1]
    sys.stderr.write(f"minnoctl: serving /metrics, /livez, /readyz on {address[0] or '*'}:{port}\n")
    sys.stderr.flush()
    try:
        server.serve_forever()
    except _Stop:
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.server_close()
