"""The demo's embedded MQTT broker: Debian's Mosquitto when installed, else the pure-Python amqtt.

Which one: ``ptmon demo --broker``, else the environment variable ``PTMON_DEMO_BROKER``
(``auto``, ``mosquitto`` or ``amqtt``), else ``auto`` (Mosquitto if installed). The variable
lets a machine that has Mosquitto run the demo as one without it would.

amqtt (asyncio) is the slower by far (``bench/demo_broker.py``, 2 cores): it took about a minute
to connect the district's 1,290 gateways (each with a Will and a retained status, a client
subscribed to the statuses) where Mosquitto took 4 s, routed under half of Mosquitto's rate to
one paho subscriber, and once lost 1.4 % of the heartbeats at QoS 0. A quarter of the
communities (330 gateways) connected in 6 s and lost nothing, which is why the demo plays that
on amqtt (:data:`AMQTT_SCALE`).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

from ptmon.errors import UsageError

from .loopback import wait_for_port

BROKER_ENV = "PTMON_DEMO_BROKER"
CHOICES = ("auto", "mosquitto", "amqtt")
INSTALL_HINT = "pip install 'ptmon[demo]' (amqtt, pure Python) or apt-get install mosquitto"
AMQTT_SCALE = 0.25  # share of the district's devices the demo plays on amqtt (see the module docstring)
START_TIMEOUT = 20.0  # seconds for the broker to listen


def find_mosquitto() -> str | None:
    found = shutil.which("mosquitto")
    if found:
        return found
    return "/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None


def amqtt_installed() -> bool:
    return importlib.util.find_spec("amqtt") is not None


def broker_choice(option: str | None) -> str:
    """The ``--broker`` option, else ``$PTMON_DEMO_BROKER``, else ``auto``; checked."""
    choice = option or os.environ.get(BROKER_ENV, "").strip() or "auto"
    if choice not in CHOICES:
        raise UsageError(f"{BROKER_ENV}={choice!r}: must be one of {', '.join(CHOICES)}")
    return choice


def resolve_broker(choice: str) -> str:
    """``mosquitto`` or ``amqtt`` for a choice, or a UsageError saying what to install."""
    if choice in ("auto", "mosquitto") and find_mosquitto():
        return "mosquitto"
    if choice == "mosquitto":
        raise UsageError("the demo's broker was set to mosquitto, which is not installed: apt-get install mosquitto")
    if amqtt_installed():
        return "amqtt"
    if choice == "amqtt":
        raise UsageError("the demo's broker was set to amqtt, which is not installed: pip install 'ptmon[demo]'")
    raise UsageError(f"the demo needs an MQTT broker and found none: {INSTALL_HINT}")


def start_broker(workdir: Path, port: int, name: str) -> subprocess.Popen[bytes]:
    """Start ``name`` on 127.0.0.1:``port`` with its log in ``workdir/broker.log``; returns once it listens."""
    log_path = workdir / "broker.log"
    with log_path.open("wb") as log:
        if name == "mosquitto":
            conf = workdir / "mosquitto.conf"
            # Unbounded queues: Mosquitto's default of 1,000 queued messages drops the rest silently.
            conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                            "max_queued_messages 0\nmax_inflight_messages 0\n")
            command = [find_mosquitto() or "mosquitto", "-c", str(conf)]
        else:
            conf = workdir / "amqtt.yaml"
            conf.write_text(f"listeners:\n  default:\n    type: tcp\n    bind: 127.0.0.1:{port}\nplugins:\n"
                            "  amqtt.plugins.authentication.AnonymousAuthPlugin:\n    allow_anonymous: true\n")
            code = "from amqtt.scripts.broker_script import main; main()"
            command = [sys.executable, "-c", code, "-c", str(conf)]
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, START_TIMEOUT, alive=lambda: proc.poll() is None)
    except RuntimeError:
        raise UsageError(f"the {name} broker exited with status {proc.returncode}: {_tail(log_path)}") from None
    except TimeoutError:
        stop_broker(proc)
        raise UsageError(f"the {name} broker did not listen on port {port} within {START_TIMEOUT:.0f} s "
                         f"(log: {log_path})") from None
    return proc


def stop_broker(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def _tail(path: Path, lines: int = 5) -> str:
    text = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    return " | ".join(text[-lines:]) or f"nothing in {path}"
