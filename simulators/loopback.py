"""Servers on the loopback interface: a free port, and waiting until something listens on it."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 10.0, *, alive: Callable[[], bool] = lambda: True) -> None:
    """Return once 127.0.0.1:``port`` accepts a connection; TimeoutError after ``timeout`` seconds,
    RuntimeError as soon as ``alive()`` says the server process has exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError(f"the server for port {port} exited before listening")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout} s")
