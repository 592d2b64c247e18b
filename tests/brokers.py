"""Real servers for integration tests: Mosquitto on a free loopback port, and a subscriber."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import paho.mqtt.client as mqtt

from ptmon.simulators.loopback import free_port, wait_for_port

from .programs import program


class MosquittoServer:
    """Debian's Mosquitto on a free port; ``stop()`` and ``start()`` again keep the port.

    ``max_queued_messages 0``: the default of 1,000 silently drops messages for a slow
    subscriber (silently: 72–82 % of a 500,000-message burst was lost here), which would make
    counting tests flaky or wrong.
    """

    def __init__(self, workdir: Path, extra_config: str = "", *, anonymous: bool = True) -> None:
        self.port = free_port()
        self.config = workdir / f"mosquitto-{self.port}.conf"
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous {str(anonymous).lower()}\npersistence false\n"
            f"max_queued_messages 0\nlog_dest stderr\nlog_type error\n{extra_config}"
        )
        self.log_path = workdir / f"mosquitto-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("a") as log:
            self.proc = subprocess.Popen([program("mosquitto"), "-c", str(self.config)], stdout=log, stderr=subprocess.STDOUT)
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None


@contextmanager
def mosquitto(workdir: Path, extra_config: str = "", *, anonymous: bool = True) -> Iterator[int]:
    """Run Mosquitto until the block ends; yields the port."""
    server = MosquittoServer(workdir, extra_config, anonymous=anonymous)
    server.start()
    try:
        yield server.port
    finally:
        server.stop()


class Subscriber:
    """A paho subscriber collecting (topic, payload, retain) in a background thread."""

    def __init__(self, port: int, topic: str = "putuo/#") -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda c, u, mid, rc, p: self._ready.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if not self._ready.wait(10):
            raise TimeoutError("subscription not acknowledged")

    def _on_message(self, client, userdata, msg) -> None:  # type: ignore[no-untyped-def]
        with self._lock:
            self.messages.append((msg.topic, msg.payload, bool(msg.retain)))

    def wait_for(self, count: int, timeout: float = 20.0) -> list[tuple[str, bytes, bool]]:
        """Wait until at least ``count`` messages arrived (or time out); returns them all."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.messages) >= count:
                    return list(self.messages)
            time.sleep(0.02)
        with self._lock:
            return list(self.messages)

    def quiet(self, seconds: float = 0.3) -> list[tuple[str, bytes, bool]]:
        """Wait until no message arrived for ``seconds``; returns them all."""
        last, same_since = -1, time.monotonic()
        while time.monotonic() - same_since < seconds:
            time.sleep(0.05)
            with self._lock:
                if len(self.messages) != last:
                    last, same_since = len(self.messages), time.monotonic()
        with self._lock:
            return list(self.messages)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
