"""End-to-end ingest benchmark through a real Mosquitto on loopback.

    python bench/ingest.py [--messages N] [--no-influx] [--seed N] [--protocol 3.1.1|5|both]

Measured the way that keeps the publisher off the CPU: for each subscriber, a persistent
QoS 1 session is created and left, the broker is pre-loaded with ``N`` (≥ 300,000)
heartbeats of the full generated district (a raw-socket publisher of pre-built PUBLISH
packets), and then the subscriber reconnects and the drain is timed, from CONNECT to the
N-th message handled. Each subscriber runs in a process of its own:

1. ``mosquitto_sub`` writing to /dev/null (the broker's own ceiling);
2. a bare paho-mqtt subscriber that only counts (QoS 1, auto-acknowledged);
3. ``ptmon``'s collector: archive (gzip, committed before each acknowledgement), decode,
   engine, heartbeat and sla points to a real InfluxDB 1.6.7 (``--no-influx``: without),
   once per MQTT protocol (``--protocol``, default both).

Printed: msg/s of each, the collector's ratio to bare paho (target ≥ 0.80) and absolute rate
(target ≥ 25,000 msg/s), its peak RSS (VmHWM; target ≤ 250 MB), and for InfluxDB how long
after the drain the last point was written. Expect ±20 % between runs on 2 shared cores.

The bare paho subscriber speaks MQTT 3.1.1, so the 3.1.1 collector is the like-for-like
comparison. paho-mqtt 2.2 builds a ``Properties`` object for every MQTT 5 PUBLISH it
receives, which costs the collector about a third of its rate here.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rss import peak_rss

from tests.brokers import mosquitto

MB = 1_000_000


def encode_length(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = n >> 7, n & 0x7F
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def heartbeats(registry_path: Path, count: int, seed: int) -> list[tuple[str, bytes]]:
    """``count`` heartbeats cycling over the district's devices, each with the wire contract's keys."""
    from ptmon.registry import load_registry
    from ptmon.rules import load_rules

    rules = load_rules()
    registry = load_registry(registry_path, rules)
    contracts, streets = [c.code for c in rules.contracts], rules.street_codes()
    topics = [f"putuo/{contracts[c]}/{streets[s]}/{d}/hb"
              for c, s, d in zip(registry.contract.tolist(), registry.street.tolist(), registry.ids)]
    now = time.time()
    out = []
    for i in range(count):
        device, seq = i % len(topics), i // len(topics) + 1
        body = {"ts": round(now, 3), "seq": seq, "bat": 87, "rssi": -71, "boot": "b1"}
        if topics[device].startswith("putuo/iot/"):
            body |= {"reads": seq * 10, "read_ok": seq * 10 - (seq % 3)}
        else:
            body |= {"face_try": seq * 40, "face_ok": seq * 39, "plate_try": seq * 20, "plate_ok": seq * 19}
        out.append((topics[device], orjson.dumps(body)))
    return out


def preload(port: int, messages: list[tuple[str, bytes]]) -> float:
    """Publish at QoS 1 from pre-built packets on a raw socket; returns seconds until all were acknowledged."""
    sock = socket.create_connection(("127.0.0.1", port))
    client_id = b"bench-publisher"
    variable = b"\x00\x04MQTT\x04\x02\x00\x3c" + len(client_id).to_bytes(2, "big") + client_id
    sock.sendall(b"\x10" + encode_length(len(variable)) + variable)
    assert sock.recv(4)[:1] == b"\x20", "no CONNACK"
    acked = [0]

    def read_acks() -> None:
        buffer = b""
        while acked[0] < len(messages):
            chunk = sock.recv(1 << 16)
            if not chunk:
                return
            buffer += chunk
            whole = len(buffer) // 4 * 4  # PUBACKs are 4 bytes
            acked[0] += whole // 4
            buffer = buffer[whole:]

    reader = threading.Thread(target=read_acks, daemon=True)
    reader.start()
    began = time.perf_counter()
    packets = []
    for i, (topic, payload) in enumerate(messages):
        t = topic.encode()
        body = len(t).to_bytes(2, "big") + t + ((i % 65535) + 1).to_bytes(2, "big") + payload
        packets.append(b"\x32" + encode_length(len(body)) + body)
        if len(packets) >= 2000:
            sock.sendall(b"".join(packets))
            packets.clear()
    sock.sendall(b"".join(packets))
    reader.join(120)
    sock.sendall(b"\xe0\x00")
    sock.close()
    return time.perf_counter() - began


# --- subscribers, each in a child process -------------------------------------------------------


def child_paho(port: int, client_id: str, count: int, register_only: bool) -> None:
    import paho.mqtt.client as mqtt

    done = threading.Event()
    received = [0]

    def on_message(client, userdata, msg) -> None:  # type: ignore[no-untyped-def]
        received[0] += 1
        if received[0] >= count:
            done.set()

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
    client.on_connect = lambda c, u, f, rc, p: c.subscribe("putuo/#", qos=1)
    client.on_message = on_message
    subscribed = threading.Event()
    client.on_subscribe = lambda *a: subscribed.set()
    began = time.perf_counter()
    client.connect("127.0.0.1", port)
    client.loop_start()
    if register_only:
        subscribed.wait(10)
        client.loop_stop()
        client.disconnect()
        return
    done.wait(600)
    elapsed = time.perf_counter() - began
    client.loop_stop()
    print(orjson.dumps({"seconds": elapsed, "received": received[0], "rss": peak_rss() / MB}).decode())


def child_collector(port: int, client_id: str, count: int, register_only: bool, registry: str,
                    data_dir: str, influx_url: str, protocol: str) -> None:
    from ptmon.collect import Collector
    from ptmon.config import CollectorConfig, InfluxConfig, MqttConfig

    config = CollectorConfig(
        registry=Path(registry), data_dir=Path(data_dir), metrics_listen="", checkpoint_interval=3600,
        mqtt=MqttConfig(port=port, client_id=client_id, qos=1, topics=("putuo/#",), protocol=protocol),
        influx=InfluxConfig(url=influx_url, database="bench"),
    )
    collector = Collector(config)
    collector.restore()  # the state restored before the clock starts, as the figures always measured

    async def main() -> dict[str, float]:
        stop = asyncio.Event()
        began = time.perf_counter()
        task = asyncio.create_task(collector.run(stop))
        if register_only:
            while not collector.source.connected:
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)
            stop.set()
            await task
            return {}
        while collector.decoder.accepted + sum(collector.decoder.rejects.values()) < count:
            await asyncio.sleep(0.02)
            if time.perf_counter() - began > 600:
                break
        drained = time.perf_counter() - began
        sink = collector.influx
        while sink is not None and sink.pending_points and time.perf_counter() - began < 900:
            await asyncio.sleep(0.05)
        written = time.perf_counter() - began
        stop.set()
        await task
        return {"seconds": drained, "influx_done": written, "received": collector.decoder.accepted,
                "written": sink.written_points if sink else 0, "rss": peak_rss() / MB}

    result = asyncio.run(main())
    if result:
        print(orjson.dumps(result).decode())


def run_child(role: str, port: int, client_id: str, count: int, register_only: bool, extra: list[str]) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--child", role, "--port", str(port), "--client-id", client_id,
           "--messages", str(count), *(["--register-only"] if register_only else []), *extra]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=1200, cwd=ROOT)
    if out.returncode:
        raise SystemExit(f"{role} failed:\n{out.stderr[-3000:]}")
    return orjson.loads(out.stdout.strip().splitlines()[-1]) if not register_only else {}


def time_mosquitto_sub(port: int, count: int, preload_messages: list[tuple[str, bytes]]) -> float:
    sub = shutil.which("mosquitto_sub")
    if sub is None:
        return float("nan")
    args = [sub, "-p", str(port), "-i", "bench-mosquitto-sub", "-c", "-q", "1", "-t", "putuo/#"]
    subprocess.run([*args, "-W", "2", "-C", "1"], capture_output=True)  # register the session
    preload(port, preload_messages)
    began = time.perf_counter()
    subprocess.run([*args, "-C", str(count)], stdout=subprocess.DEVNULL, timeout=600)
    return time.perf_counter() - began


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=300_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-influx", action="store_true")
    parser.add_argument("--child", choices=["paho", "collector"])
    parser.add_argument("--port", type=int)
    parser.add_argument("--client-id")
    parser.add_argument("--register-only", action="store_true")
    parser.add_argument("--registry")
    parser.add_argument("--data-dir")
    parser.add_argument("--influx-url", default="")
    parser.add_argument("--protocol", choices=["3.1.1", "5", "both"], default="both",
                        help="the collector's MQTT protocol (default: a run with each)")
    args = parser.parse_args()
    if args.child == "paho":
        child_paho(args.port, args.client_id, args.messages, args.register_only)
        return 0
    if args.child == "collector":
        child_collector(args.port, args.client_id, args.messages, args.register_only, args.registry, args.data_dir,
                        args.influx_url, args.protocol)
        return 0
    return orchestrate(args)


def orchestrate(args: argparse.Namespace) -> int:
    from ptmon.rules import load_rules
    from ptmon.simulators.district import write_registry

    work = Path(tempfile.mkdtemp(prefix="ptmon-bench-ingest-"))
    registry = work / "registry.csv"
    write_registry(registry, load_rules(), args.seed)
    messages = heartbeats(registry, args.messages, args.seed)
    mean_bytes = sum(len(t) + len(p) for t, p in messages) / len(messages)
    print(f"{len(messages):,} heartbeats of {registry} ({mean_bytes:.0f} bytes each)")
    influx = None
    try:
        influx_url = ""
        if not args.no_influx:
            from tests.servers import InfluxServer, influxql

            influx = InfluxServer(work)
            influx.start()
            influx_url = influx.url
            influxql(influx_url, "", "CREATE DATABASE bench")
        # max_inflight 0: the bare paho subscriber speaks MQTT 3.1.1 (the collector, MQTT 5, sets its own receive maximum)
        with mosquitto(work, "max_inflight_messages 0\n") as port:
            sub_s = time_mosquitto_sub(port, len(messages), messages)
            run_child("paho", port, "bench-paho", len(messages), True, [])
            preload(port, messages)
            paho = run_child("paho", port, "bench-paho", len(messages), False, [])
            collectors = {}
            for protocol in ("3.1.1", "5") if args.protocol == "both" else (args.protocol,):
                client_id = f"bench-collector-{protocol}"
                extra = ["--registry", str(registry), "--data-dir", str(work / client_id), "--influx-url", influx_url,
                         "--protocol", protocol]
                run_child("collector", port, client_id, len(messages), True, extra)
                preload(port, messages)
                collectors[protocol] = run_child("collector", port, client_id, len(messages), False, extra)
        report(len(messages), sub_s, paho, collectors, bool(influx_url))
    finally:
        if influx is not None:
            influx.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


def report(n: int, sub_s: float, paho: dict[str, float], collectors: dict[str, dict[str, float]],
           with_influx: bool) -> None:
    sub_rate, paho_rate = n / sub_s, n / paho["seconds"]
    print(f"{'subscriber':<38}{'msg/s':>10}")
    print(f"{'mosquitto_sub > /dev/null':<38}{sub_rate:>10,.0f}")
    print(f"{'bare paho, count only (QoS 1, 3.1.1)':<38}{paho_rate:>10,.0f}")
    for protocol, col in collectors.items():
        rate = n / col["seconds"]
        label = f"ptmon collector, MQTT {protocol}" + (" + InfluxDB" if with_influx else "")
        print(f"{label:<38}{rate:>10,.0f}   ({col['received']:,.0f} accepted)")
        ratio = rate / paho_rate
        print(f"  / bare paho       {ratio:.2f}   target ≥ 0.80   {'PASS' if ratio >= 0.8 else 'MISS'}")
        print(f"  / 25,000          {rate / 25_000:.2f}   target ≥ 1.00   {'PASS' if rate >= 25_000 else 'MISS'}")
        print(f"  / mosquitto_sub   {rate / sub_rate:.2f}")
        print(f"  peak RSS          {col['rss']:.0f} MB   target ≤ 250 MB   {'PASS' if col['rss'] <= 250 else 'MISS'}")
        if with_influx:
            print(f"  InfluxDB: {col['written']:,.0f} points written, the last "
                  f"{col['influx_done'] - col['seconds']:.1f} s after the drain")


if __name__ == "__main__":
    sys.exit(main())
