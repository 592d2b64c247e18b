"""Alerting benchmark: what the alert evaluator adds to each sample instant of the generated district.

    python bench/alerts.py [--hours N] [--seed N] [--samples N]

The district (~110,000 devices, the shipped rules/alerts.yaml) is fed ``--hours`` of synthetic
traffic with a street outage from the second hour, then sample instants are taken on two
engines in the same state, one with the alert evaluator attached (the month tally and the sla
points on both). Printed: ms per sample instant without alerting (the peer) and with it, the
time alerting adds, its ratio to the peer, and the memory the evaluator holds (windows and
per-device snapshots). Target: alerting adds ≤ 5 ms per sample instant — the budget
bench/engine.py sets for the engine's own full-district sample — so a day of sample
instants (1,440) costs seconds, and a replayed archive tail after a crash is not held up.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from ptmon.alerting.evaluate import AlertEvaluator
from ptmon.alerting.rules import load_alert_rules
from ptmon.engine import Engine
from ptmon.live import MonthTallies, SlaPoints
from ptmon.registry import load_registry
from ptmon.rules import DEFAULT_RULES_DIR, load_rules
from ptmon.simulators.district import write_registry
from ptmon.simulators.synthetic import Outage, Scenario, decoded_batches
from ptmon.timebase import US_PER_S, parse_instant

START = parse_instant("2026-11-03T00:00")


def build(hours: int, seed: int, *, alerting: bool) -> tuple[Engine, AlertEvaluator | None]:
    rules = load_rules()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "registry.csv"
        write_registry(path, rules, seed)
        registry = load_registry(path, rules)
    engine = Engine(registry)
    months = MonthTallies(engine)
    sla = SlaPoints(months, lambda lines: None)
    evaluator = None
    if alerting:
        alert_rules = load_alert_rules(DEFAULT_RULES_DIR / "alerts.yaml", rules)
        evaluator = AlertEvaluator(engine, months, sla, alert_rules, on_change=lambda n, s: None)
    end = START + hours * 3600 * US_PER_S
    scenario = Scenario(seed=seed, outages=(Outage(street="changzheng", from_us=START + 3600 * US_PER_S, to_us=end),))
    for batch in decoded_batches(registry, rules, START, end, scenario):
        engine.apply(batch)
    return engine, evaluator


def per_sample_ms(engine: Engine, count: int) -> float:
    first = engine.next_tick
    began = time.perf_counter()
    for k in range(count):
        engine._sample(first + k * engine.tick)
    engine.next_tick = first + count * engine.tick
    return (time.perf_counter() - began) * 1000 / count


def held_bytes(evaluator: AlertEvaluator) -> int:
    obs = evaluator.observations
    samples = sum(c.nbytes for q in obs.samples.values() for _, c in q)
    deltas = sum(s.nbytes for _, s in obs.deltas)
    snapshots = sum(a.nbytes + b.nbytes + c.nbytes for q in obs.snapshots.taken.values() for _, a, b, c in q)
    return samples + deltas + snapshots


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hours", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--samples", type=int, default=120)
    args = parser.parse_args()
    plain, _ = build(args.hours, args.seed, alerting=False)
    alerting, evaluator = build(args.hours, args.seed, alerting=True)
    assert evaluator is not None
    devices = len(plain.registry)
    peer = per_sample_ms(plain, args.samples)
    with_alerts = per_sample_ms(alerting, args.samples)
    added = with_alerts - peer
    print(f"district: {devices:,} devices, {args.hours} h of traffic, {args.samples} sample instants timed")
    print(f"sample instant without alerting (peer): {peer:8.2f} ms")
    print(f"sample instant with alerting:           {with_alerts:8.2f} ms   ratio to the peer {with_alerts / peer:.2f}")
    print(f"added by alerting:                      {added:8.2f} ms   target ≤ 5 ms: "
          f"{'PASS' if added <= 5 else 'MISS'} (ratio {added / 5:.2f})")
    print(f"a day of sample instants with alerting: {with_alerts * 1440 / 1000:8.1f} s")
    print(f"held by the evaluator: {held_bytes(evaluator) / 2**20:.1f} MB; alerts not ok: "
          f"{len(evaluator.book.alerts)}; firing: {sum(1 for s in evaluator.book.alerts.values() if s.phase.active)}")


if __name__ == "__main__":
    main()
