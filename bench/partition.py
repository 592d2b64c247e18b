"""Per-partition figures: what one partition collector of the district costs, by its share of streets.

    python bench/partition.py [--minutes N] [--seed N]

For partitions of 1, 3, 5 and all 10 streets of the generated district, each in a fresh process:
the registry CSV loaded and restricted to the partition's streets (as ``ptmon collect --street``
does), the engine and decoder built, then ``--minutes`` (default 60) of the partition's simulated
traffic decoded and applied. Printed per partition: devices, messages per hour, decode + engine
events/s on one core, the share of one core the live traffic needs, RSS with registry, engine and
decoder built (before any traffic), and the process's peak RSS (the traffic generator included).
docs/scale.md sizes a city deployment from these figures.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rss import current_rss, peak_rss

PARTITIONS = (("wanli",), ("wanli", "changzheng", "taopu"),
              ("wanli", "changzheng", "taopu", "changshou", "caoyang"), ())
MB = 1_000_000


def child(registry_path: str, streets: list[str], minutes: float, seed: int) -> None:
    from ptmon.decode import Decoder
    from ptmon.engine import Engine
    from ptmon.partition import restrict_registry
    from ptmon.registry import load_registry
    from ptmon.replay import freeze_startup_heap
    from ptmon.rules import load_rules
    from ptmon.simulators.synthetic import Scenario, TrafficGenerator
    from ptmon.tally import Tally
    from ptmon.timebase import US_PER_S

    start = 1_793_462_400 * US_PER_S  # 2026-11-01 Shanghai
    end = start + int(minutes * 60) * US_PER_S
    rules = load_rules()
    registry = load_registry(registry_path, rules)
    if streets:
        registry = restrict_registry(registry, streets)
    import gc

    gc.collect()
    engine, decoder = Engine(registry), Decoder(registry)
    Tally.attach(engine, start, end)
    ready = current_rss()  # what the partition's collector holds for its registry, engine and decoder
    generator = TrafficGenerator(registry, scenario=Scenario(seed=seed))  # steady traffic, no lead-in burst
    freeze_startup_heap()
    events, busy = 0, 0.0
    for traffic in generator.chunks(start, end):
        messages = list(zip((traffic.t / US_PER_S).tolist(), generator.topics[traffic.device].tolist(),
                            generator.payloads(traffic)))
        began = time.perf_counter()
        engine.apply(decoder.decode(messages))
        busy += time.perf_counter() - began
        events += len(messages)
    peak = peak_rss()
    print(json.dumps({"devices": len(registry), "events": events, "busy": busy, "rss": ready, "peak": peak}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], [s for s in args.child[1].split(",") if s], args.minutes, args.seed)
        return 0
    from ptmon.cli import main as ptmon

    with tempfile.TemporaryDirectory() as tmp:
        registry = str(Path(tmp) / "registry.csv")
        ptmon(["registry", "generate", "--out", registry, "--seed", str(args.seed)])
        print(f"{'streets':>8} {'devices':>9} {'msgs/h':>11} {'events/s':>10} {'core share':>10} {'ready MB':>8} {'peak MB':>8}")
        for streets in PARTITIONS:
            out = subprocess.run([sys.executable, __file__, "--minutes", str(args.minutes), "--seed", str(args.seed),
                                  "--child", registry, ",".join(streets)], check=True, capture_output=True, text=True)
            r = json.loads(out.stdout.splitlines()[-1])
            per_hour = r["events"] * 60 / args.minutes
            rate = r["events"] / r["busy"]
            print(f"{len(streets) or 10:>8} {r['devices']:>9,} {per_hour:>11,.0f} {rate:>10,.0f} "
                  f"{per_hour / 3600 / rate:>10.2%} {r['rss'] / MB:>8.0f} {r['peak'] / MB:>8.0f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
