"""Partitioned collectors' data, made once for the tests that use it (the session fixture
``collected`` in conftest.py): one Mosquitto, the simulator's traffic for three streets, two
collectors owning two streets and one, and one collector that sees everything.

The three collectors share one stepped clock: each slice of traffic is published, every collector
receives its share, then the clock moves on. So each message is stamped with the same receive time
in every collector, and any difference between the partitions' merge and the whole is the merge's."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import paho.mqtt.client as mqtt

from ptmon.config import CollectorConfig, MqttConfig
from ptmon.registry import load_registry
from ptmon.rules import DEFAULT_RULES_DIR, load_rules
from ptmon.simulators.synthetic import Scenario, iter_records
from ptmon.timebase import US_PER_S

from .conftest import HEADER, T0, restored_collector

STREETS = ("changzheng", "taopu", "wanli")
PARTS = {"all": (), "a": ("changzheng", "taopu"), "b": ("wanli",)}
START = T0 + 600  # 2026-11-01 00:10 Shanghai
END = START + 2 * 3600 + 600  # across two hour boundaries
STEP = 20  # simulated seconds per clock step; stamps sit mid-step, never on the 60 s sample grid


class SteppedClock:
    """Unix seconds that move only when the test says so (read by the collectors' threads)."""

    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def write_rules(target: Path) -> Path:
    """The shipped rules cut down to the three streets (every street of the rules must be covered)."""
    shutil.copytree(DEFAULT_RULES_DIR, target, ignore=shutil.ignore_patterns("__*"))
    others = [s.code for s in load_rules().streets if s.code not in STREETS]
    for name in ("streets.yaml", "contracts.yaml", "alerts.yaml"):
        lines = (target / name).read_text(encoding="utf-8").splitlines(keepends=True)
        (target / name).write_text("".join(line for line in lines if line.strip().split(":")[0] not in others),
                                   encoding="utf-8")
    assert load_rules(target).street_codes() == ["wanli", "changzheng", "taopu"]
    return target


def write_registry(path: Path) -> Path:
    lines = [HEADER]
    for s in STREETS:
        for i in range(6):
            lines.append(f"{s}-cam{i},cam,face_cam,{s},scn,{s}-c1,gw-{s}-cam,2026-01-01,")
            lines.append(f"{s}-lift{i},iot,elevator,{s},scn,{s}-c1,gw-{s}-iot,2026-01-01,")
    path.write_text("\n".join(lines) + "\n")
    return path


def config(tmp_path: Path, name: str, registry: Path, port: int) -> CollectorConfig:
    return CollectorConfig(registry=registry, rules=tmp_path / "rules", data_dir=tmp_path / name, checkpoint_interval=3600.0,
                           metrics_listen="",
                           mqtt=MqttConfig(port=port, client_id=f"collector-{name}-{time.monotonic_ns()}", qos=1),
                           streets=PARTS[name])


def street_of(topic: str) -> str:
    return topic.split("/")[2] if not topic.startswith("putuo/gw/") else topic.split("/")[2].split("-")[1]


async def wait_for(condition, what: str, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


def traffic(registry_path: Path) -> list[tuple[float, str, str]]:
    """The simulator's heartbeats (a camera street's gateway drops for a while, with its devices silent),
    plus the gateway's status messages as it would send them, an unknown gateway's status and a
    malformed status (every partition receives every gateway's status)."""
    rules = load_rules(registry_path.parent / "rules")
    registry = load_registry(registry_path, rules)
    records = list(iter_records(registry, rules, START * US_PER_S, (END - 300) * US_PER_S,
                                Scenario(seed=7, silent_fraction=0.1, loss=0.02)))
    gw = "putuo/gw/gw-wanli-cam/status"
    quiet = (START + 3000, START + 4200)
    records = [r for r in records if not (r[1].startswith("putuo/cam/wanli/") and quiet[0] <= r[0] < quiet[1])]
    records += [(quiet[0] + 1.0, gw, "offline"), (quiet[1] + 1.0, gw, "online"),
                (START + 901.0, "putuo/gw/gw-nowhere-iot/status", "offline"),  # a gateway not in the registry
                (START + 1801.0, "putuo/gw/gw-changzheng-iot/status", '{"x": 1}')]  # no status
    return sorted(records, key=lambda r: r[0])


def collect(tmp: Path) -> dict[str, object]:
    """Run the three collectors over the same traffic into ``tmp``; their data directories and the registry."""
    from .brokers import mosquitto

    write_rules(tmp / "rules")
    registry = write_registry(tmp / "registry.csv")
    records = traffic(registry)
    clock = SteppedClock(START - STEP / 2)
    with mosquitto(tmp) as port:
        collectors = {name: restored_collector(config(tmp, name, registry, port), clock=clock) for name in PARTS}
        publisher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"feeder-{time.monotonic_ns()}")
        publisher.connect("127.0.0.1", port)
        publisher.loop_start()

        async def run() -> None:
            stop = asyncio.Event()
            tasks = [asyncio.create_task(c.run(stop)) for c in collectors.values()]
            await wait_for(lambda: all(c.source.subscribed.is_set() for c in collectors.values()), "subscriptions")
            expected = dict.fromkeys(PARTS, 0)
            i = 0
            for step_start in range(START, END, STEP):
                clock.t = step_start + STEP / 2
                while i < len(records) and records[i][0] < step_start + STEP:
                    _, topic, payload = records[i]
                    publisher.publish(topic, payload, qos=1, retain=topic.startswith("putuo/gw/"))
                    for name, streets in PARTS.items():
                        if not streets or street_of(topic) in streets or topic.startswith("putuo/gw/"):
                            expected[name] += 1
                    i += 1
                await wait_for(lambda: all(collectors[n].source.received >= expected[n] for n in PARTS),
                               f"the messages of {step_start}")
            clock.t = END
            await asyncio.sleep(1.5)  # every collector turns at the final instant
            assert {n: c.source.received for n, c in collectors.items()} == expected
            stop.set()
            await asyncio.gather(*tasks)

        try:
            asyncio.run(run())
        finally:
            publisher.loop_stop()
            publisher.disconnect()
    return {"tmp": tmp, "registry": registry, "rules": str(tmp / "rules"), "records": len(records)}
