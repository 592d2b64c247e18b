"""Helpers for the InfluxDB sink tests: a scriptable stub, point counts, waits. The real servers'
fixtures (``influx_server``, ``influx_db``, ``vm_url``) are in conftest.py, module-scoped, so each
module that uses them starts its servers once."""

from __future__ import annotations

import asyncio
import gzip
import threading
import time
from collections.abc import Awaitable, Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

from ptmon.sinks.lineproto import split_lines
from tests.servers import influx_rows

T = TypeVar("T")
Respond = Callable[[int, list[bytes]], "tuple[int, dict[str, str]]"]


def count_points(url: str, db: str, measurement: str, field: str = "v") -> int:
    rows = influx_rows(url, db, f'SELECT count("{field}") FROM "{measurement}"')
    return int(rows[0][1]) if rows else 0


def run(scenario: Awaitable[T], timeout: float = 60.0) -> T:
    """Run a test's async scenario with a hard timeout."""
    async def bounded() -> T:
        return await asyncio.wait_for(scenario, timeout)
    return asyncio.run(bounded())


async def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout} s")
        await asyncio.sleep(0.02)


def wait_until_sync(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout} s")
        time.sleep(0.1)


class StubInflux:
    """A tiny write endpoint on a free loopback port.

    ``respond(request_number, lines)`` gives the status and headers of each answer; the
    lines of 2xx answers are collected in ``accepted``; ``requests`` holds (monotonic time,
    lines) of every request.
    """

    def __init__(self, respond: Respond | None = None) -> None:
        self.respond: Respond = respond or (lambda n, lines: (204, {}))
        self.requests: list[tuple[float, list[bytes]]] = []
        self.accepted: list[bytes] = []
        self.queries: list[bytes] = []  # bodies of POST /query (CREATE DATABASE)
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path.startswith("/query"):  # CREATE DATABASE at the sink's start: not a write
                    stub.queries.append(body)
                    self._answer(200, {}, b'{"results":[{"statement_id":0}]}')
                    return
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                lines = split_lines(body)
                with stub.lock:
                    number = len(stub.requests)
                    stub.requests.append((time.monotonic(), lines))
                    status, headers = stub.respond(number, lines)
                    if 200 <= status < 300:
                        stub.accepted.extend(lines)
                payload = b"" if status == 204 else b'{"error":"stub says %d"}' % status
                self._answer(status, headers, payload)

            def _answer(self, status: int, headers: dict[str, str], payload: bytes) -> None:
                self.send_response(status)
                for key, value in {**headers, "Content-Length": str(len(payload))}.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        return Handler

    def __enter__(self) -> StubInflux:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def spool_points(spool_dir: Path) -> int:
    """Points in the spool files of a directory, from their names."""
    return sum(int(p.name.split("-")[1].split(".")[0]) for p in spool_dir.glob("*.lp.gz"))
