"""What the demo's embedded brokers carry: amqtt against Mosquitto, measured in the same run.

For each broker: start it as ``ptmon demo`` does (``simulators/demo_broker.py``), subscribe a
paho client to the heartbeats and gateway statuses, run ``ptmon simulate --speed 0`` (as fast
as possible) over the registry, and time (1) from the simulator's start until the last
gateway's retained ``online`` has arrived ("online s": loading the registry, then the gateways
connecting, each with a Will) and (2) the heartbeats' delivery, first to last ("msg/s"). Prints a
table and amqtt's ratios to Mosquitto.

    python bench/demo_broker.py                     # the whole district and a quarter of it
    python bench/demo_broker.py --minutes 10 --scales 1

This is what sizes the demo on amqtt (``AMQTT_SCALE``): its connection set-up grows faster
than linearly with the number of gateways while a client subscribes to their status topic.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import threading
import time
from fractions import Fraction
from pathlib import Path

import paho.mqtt.client as mqtt

from ptmon.registry import load_registry
from ptmon.rules import load_rules
from ptmon.simulators.demo_broker import find_mosquitto, start_broker, stop_broker
from ptmon.simulators.district import write_registry
from ptmon.simulators.live_demo import _thin
from ptmon.simulators.loopback import free_port

TIMEOUT = 600.0


class Counter:
    """A paho subscriber counting heartbeats and gateway statuses, with the time of each kind's first and last."""

    def __init__(self, port: int) -> None:
        self.lock = threading.Lock()
        self.counts = {"hb": 0, "status": 0}
        self.first: dict[str, float] = {}
        self.last: dict[str, float] = {}
        ready = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe([("putuo/+/+/+/hb", 0), ("putuo/gw/+/status", 0)])
        self.client.on_subscribe = lambda *a: ready.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if not ready.wait(30):
            raise TimeoutError("subscription not acknowledged")

    def _on_message(self, client, userdata, message) -> None:  # type: ignore[no-untyped-def]
        kind = "status" if message.topic.startswith("putuo/gw/") else "hb"
        now = time.monotonic()
        with self.lock:
            self.counts[kind] += 1
            self.first.setdefault(kind, now)
            self.last[kind] = now

    def wait(self, kind: str, count: int, quiet: float = 3.0) -> None:
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            with self.lock:
                if self.counts[kind] >= count and time.monotonic() - self.last.get(kind, 0) > quiet:
                    return
            time.sleep(0.1)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def measure(broker: str, registry: Path, gateways: int, minutes: int, workdir: Path) -> dict[str, float]:
    port = free_port()
    proc = start_broker(workdir, port, broker)
    try:
        counter = Counter(port)
        began = time.monotonic()
        sim = subprocess.run([sys.executable, "-m", "ptmon.cli", "simulate", "--registry", str(registry),
                              "--broker", f"mqtt://127.0.0.1:{port}", "--speed", "0", "--start", "2026-11-24T09:00",
                              "--duration", f"{minutes}m"], capture_output=True, text=True, timeout=TIMEOUT)
        if sim.returncode:
            raise RuntimeError(f"{broker}: the simulator failed: {sim.stderr[-2000:]}; broker log "
                               f"{(workdir / 'broker.log').read_text(errors='replace')[-1000:]}")
        found = re.search(r"heartbeat ([\d,]+)", sim.stderr)
        sent = int(found.group(1).replace(",", "")) if found else 0
        counter.wait("hb", sent)
        counter.close()
        hb = counter.counts["hb"]
        return {"gateways": gateways, "connect_s": counter.last["status"] - began if gateways else 0.0,
                "sent": sent, "received": hb,
                "msg_per_s": hb / max(counter.last["hb"] - counter.first["hb"], 1e-9)}
    finally:
        stop_broker(proc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=int, default=20, help="simulated minutes of traffic (default 20)")
    parser.add_argument("--scales", default="1,0.25", help="shares of the district's communities (default 1,0.25)")
    args = parser.parse_args(argv)
    if find_mosquitto() is None:
        print("mosquitto is not installed: apt-get install mosquitto (the peer of the comparison)", file=sys.stderr)
        return 2
    rules = load_rules()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        full = work / "registry.csv"
        write_registry(full, rules, 1)
        print(f"{'broker':<10} {'scale':>5} {'gateways':>8} {'online s':>9} {'sent':>9} {'received':>9} {'msg/s':>8}")
        for scale in (float(x) for x in args.scales.split(",")):
            registry = full
            if scale < 1:
                registry = work / f"registry-{scale:g}.csv"
                _thin(full, registry, Fraction(str(scale)))
            gateways = sum(1 for g in load_registry(registry, rules).gateways if g)
            rows = {}
            for name in ("mosquitto", "amqtt"):
                try:
                    rows[name] = r = measure(name, registry, gateways, args.minutes, work)
                except (RuntimeError, subprocess.TimeoutExpired) as exc:
                    reason = str(exc).split(";")[0].splitlines()[-1]
                    print(f"{name:<10} {scale:>5g} {gateways:>8,} failed: {reason}")
                    continue
                print(f"{name:<10} {scale:>5g} {r['gateways']:>8,} {r['connect_s']:>9.1f} {r['sent']:>9,} "
                      f"{r['received']:>9,} {r['msg_per_s']:>8,.0f}")
            if len(rows) == 2:
                m, a = rows["mosquitto"], rows["amqtt"]
                print(f"{'amqtt/mosquitto':<16} connect ×{a['connect_s'] / max(m['connect_s'], 1e-9):.1f}, "
                      f"rate ×{a['msg_per_s'] / m['msg_per_s']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
