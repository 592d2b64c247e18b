"""Engine benchmark: the issue's targets, measured on the generated district.

    python bench/engine.py [--days N] [--devices N] [--seed N] [--only all|traffic|memory]

Figures (each printed with its target, the ratio figure / target and PASS or MISS):

1. engine updates from pre-decoded batches (``simulators.synthetic.decoded_batches``,
   16,384 per batch as in replay): events/s of ``Engine.apply`` with a ``Tally`` attached,
   the samples it fires between events included. Target ≥ 1,000,000.
2. the same traffic as ``(t, topic, payload)`` tuples through ``Decoder.decode`` and
   ``Engine.apply``: events/s (target ≥ 300,000), and its ratio to bare ``orjson.loads`` of
   the same payloads, timed batch by batch in the same run (target ≥ 0.5); beside it, the
   same messages as archive lines (what ``ptmon replay`` decodes: lines.py scans them in
   bulk) through scan, ``Decoder.decode`` and ``Engine.apply``, against the same floor.
   Generating the traffic is not timed.
3. one full-district sample (every device of both contracts, with a Tally): ms per
   ``Engine._sample``, over a day of sample instants after the traffic of (1). Target ≤ 5 ms.
4. memory for ``--devices`` devices (default 2,000,000: the district's rows repeated with
   suffixed ids), measured in a fresh process that loads the registry CSV and builds the
   engine and the decoder: engine state (``Engine.state_bytes()``) plus the registry's arrays,
   target < 300 MB; the process's RSS with registry, engine and decoder once every device has
   reported, target ≤ 500 MB; its peak RSS while ``load_registry`` reads the CSV, target
   ≤ 700 MB; beside them, the id blob, the id index and the decoder's topic lookup.

Default: one synthetic day (about 9 million heartbeats), ~1.5 min on 2 cores; ``--days 30``
is the synthetic month (the decode figure alone then takes ~20 min).
"""

from __future__ import annotations

import argparse
import csv
import gc
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import orjson
from rss import current_rss, peak_rss

from ptmon import kernels
from ptmon.archive import encode_record
from ptmon.decode import Decoder
from ptmon.engine import Engine
from ptmon.lines import scan
from ptmon.registry import Registry, load_registry, parse_registry
from ptmon.replay import BATCH_SIZE, freeze_startup_heap
from ptmon.rules import load_rules
from ptmon.simulators.district import COLUMNS, generate_registry
from ptmon.simulators.synthetic import Scenario, TrafficGenerator
from ptmon.tally import Tally
from ptmon.timebase import US_PER_S, date_to_day, day_start, format_instant

DAY_US = 86_400 * US_PER_S
START_DAY = date_to_day(date(2026, 11, 1))  # a month start; the district's replacements are all done by then
MB = 1_000_000


def district(seed: int) -> Registry:
    rules = load_rules()
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows(generate_registry(rules, seed))
    return parse_registry(buffer.getvalue(), rules, "district")


def batches(generator: TrafficGenerator, start: int, end: int, size: int = BATCH_SIZE) -> Iterator:
    for traffic in generator.chunks(start, end):
        for a in range(0, len(traffic), size):
            yield traffic.take(slice(a, a + size))


def bench_predecoded(registry: Registry, start: int, end: int, seed: int) -> tuple[int, float, Engine]:
    """(events, seconds in Engine.apply, the engine) for pre-decoded traffic."""
    generator = TrafficGenerator(registry, scenario=Scenario(seed=seed, lead_in=True))
    engine = Engine(registry)
    Tally.attach(engine, start, end)
    freeze_startup_heap()
    events, busy = 0, 0.0
    for traffic in batches(generator, start, end):
        batch = generator.decoded(traffic)
        began = time.perf_counter()
        engine.apply(batch)
        busy += time.perf_counter() - began
        events += len(batch)
    return events, busy, engine


def bench_decoding(registry: Registry, start: int, end: int, seed: int) -> tuple[int, float, float, float, float]:
    """(events, seconds in decode + apply, of which decode, seconds of bare ``orjson.loads`` of the
    same payloads, seconds to scan, decode and apply the same messages as archive lines) for the
    same traffic as tuples and as the archive's lines (``ptmon replay``'s input, lines.py; a
    second decoder and engine, so both see the traffic fresh). The floor is timed batch by batch
    right after its batch, alike (a list of the parsed objects, the cyclic GC paused), so machine
    load hits all."""
    generator = TrafficGenerator(registry, scenario=Scenario(seed=seed, lead_in=True))
    engine, decoder = Engine(registry), Decoder(registry)
    Tally.attach(engine, start, end)
    line_engine, line_decoder = Engine(registry), Decoder(registry)
    Tally.attach(line_engine, start, end)
    freeze_startup_heap()  # as replay and the collector do after start-up
    events, busy, decoding, floor, from_lines = 0, 0.0, 0.0, 0.0, 0.0
    for traffic in batches(generator, start, end):
        payloads = generator.payloads(traffic)
        messages = list(zip((traffic.t / US_PER_S).tolist(), generator.topics[traffic.device].tolist(), payloads))
        began = time.perf_counter()
        batch = decoder.decode(messages)
        decoded = time.perf_counter()
        engine.apply(batch)
        busy += time.perf_counter() - began
        decoding += decoded - began
        events += len(batch)
        gc.disable()
        began = time.perf_counter()
        objects = list(map(orjson.loads, payloads))
        floor += time.perf_counter() - began
        gc.enable()
        del objects
        data = b"".join(encode_record(*m) for m in messages)
        began = time.perf_counter()
        lines = scan(data).lines
        line_engine.apply(line_decoder.decode(lines))
        from_lines += time.perf_counter() - began
        assert len(lines) == len(messages)
    assert not decoder.rejects and not line_decoder.rejects, (decoder.rejects, line_decoder.rejects)
    return events, busy, decoding, floor, from_lines


def bench_sample(engine: Engine, after: int, count: int) -> float:
    """Milliseconds per full-district sample (both contracts), over ``count`` tick instants."""
    first = engine.ceil_tick(after)
    began = time.perf_counter()
    for k in range(count):
        engine._sample(first + k * engine.tick)
    return (time.perf_counter() - began) * 1000 / count


# --- memory, in a fresh process -----------------------------------------------------------


def write_big_registry(path: Path, devices: int, seed: int) -> None:
    """The district's rows repeated (ids suffixed ``-r``) until ``devices`` rows."""
    rows = generate_registry(load_rules(), seed)
    with open(path, "w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(COLUMNS)
        for n in range(devices):
            row = rows[n % len(rows)]
            writer.writerow(row._replace(device_id=f"{row.device_id}-{n // len(rows)}"))


def memory_child(path: str) -> None:
    """Runs in a fresh process: load the registry, build the engine and the decoder, report sizes as JSON."""
    rules = load_rules()
    began = time.perf_counter()
    registry = load_registry(path, rules)
    loaded = time.perf_counter() - began
    rss_load_peak = peak_rss()
    engine = Engine(registry)
    sample_ms = bench_sample(engine, day_start(START_DAY), 20)
    arrays = sum(getattr(registry, f).nbytes for f in ("contract", "street", "type", "accepted_day", "retired_day",
                                                       "community", "gateway", "scenario"))
    gc.collect()
    rss_engine = current_rss()
    decoder = Decoder(registry)
    contracts, streets = [c.code for c in rules.contracts], rules.street_codes()
    found = 0
    for a in range(0, len(registry), 50_000):  # every device reports once: the topic lookup at its fullest
        batch = decoder.decode([(1.0, f"putuo/{contracts[registry.contract[i]]}/{streets[registry.street[i]]}/"
                                      f"{registry.ids[i]}/hb", "{}") for i in range(a, min(a + 50_000, len(registry)))])
        found += len(batch)
    assert found == len(registry), (found, len(registry))
    gc.collect()
    decoder_bytes = decoder.nbytes()
    print(json.dumps({
        "devices": len(registry), "load_s": loaded, "state": engine.state_bytes(), "arrays": arrays,
        "ids": registry.ids.nbytes(), "index": registry.index.nbytes(), "decoder": decoder_bytes, "sample_ms": sample_ms,
        "rss_engine": rss_engine, "rss_load_peak": rss_load_peak, "rss_decoder": current_rss(), "rss_peak": peak_rss(),
    }))


def bench_memory(devices: int, seed: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "registry.csv"
        write_big_registry(path, devices, seed)
        repo = str(Path(__file__).resolve().parent.parent)
        done = subprocess.run([sys.executable, __file__, "--memory-child", str(path)], check=True,
                              capture_output=True, text=True, env=os.environ | {"PYTHONPATH": repo})
    return json.loads(done.stdout)


# --- report -----------------------------------------------------------------------------


def row(name: str, value: float, unit: str, limit: str, target: float) -> tuple[str, ...]:
    """A table row; ``limit`` is ≥ (higher is better), ≤ or < (lower is better)."""
    ok = {"≥": value >= target, "≤": value <= target, "<": value < target}[limit]
    shown = f"{value:,.3g}" if value < 100 else f"{value:,.0f}"
    wanted = f"{target:,.0f}" if target >= 10 else f"{target:g}"
    return (name, f"{shown} {unit}".strip(), f"{limit} {wanted} {unit}".strip(), f"{value / target:.2f}",
            "PASS" if ok else "MISS")


def show(rows: list[tuple[str, ...]]) -> None:
    header = ("figure", "measured", "target", "ratio", "")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for n, r in enumerate([header, *rows]):
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))


def report_memory(memory: dict[str, float]) -> list[tuple[str, ...]]:
    n = memory["devices"]
    print(f"memory ({n:,} devices, fresh process): engine state {memory['state'] / MB:.0f} MB, registry arrays "
          f"{memory['arrays'] / MB:.0f} MB, ids {memory['ids'] / MB:.0f} MB, id index {memory['index'] / MB:.0f} MB, "
          f"decoder (topic lookup, rate windows) {memory['decoder'] / MB:.0f} MB; RSS {memory['rss_engine'] / MB:.0f} MB "
          f"with registry and engine, {memory['rss_decoder'] / MB:.0f} MB with the decoder too (every device decoded once); "
          f"peak RSS while loading the CSV {memory['rss_load_peak'] / MB:.0f} MB, of the whole process "
          f"{memory['rss_peak'] / MB:.0f} MB; registry load {memory['load_s']:.1f} s; sample {memory['sample_ms']:.1f} ms",
          flush=True)
    m = f"{n / 1e6:g}M"
    return [
        row(f"state + registry arrays, {m} devices", (memory["state"] + memory["arrays"]) / MB, "MB", "<", 300),
        row(f"RSS, {m}: registry + engine + decoder", memory["rss_decoder"] / MB, "MB", "≤", 500),
        row(f"peak RSS, {m}: during load_registry", memory["rss_load_peak"] / MB, "MB", "≤", 700),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=float, default=1.0, help="synthetic days of district traffic (default 1; 30 = a month)")
    parser.add_argument("--devices", type=int, default=2_000_000, help="devices for the memory figure (default 2,000,000)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--only", choices=("all", "traffic", "memory"), default="all",
                        help="traffic: the rates only; memory: the 2M-device figures only (default: all)")
    parser.add_argument("--memory-child", metavar="CSV", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child)
        return 0

    rows: list[tuple[str, ...]] = []
    if args.only in ("all", "traffic"):
        rows += bench_traffic(args)
    if args.only in ("all", "memory"):
        rows += report_memory(bench_memory(args.devices, args.seed))
    print()
    show(rows)
    return 0


def bench_traffic(args: argparse.Namespace) -> list[tuple[str, ...]]:
    registry = district(args.seed)
    start = day_start(START_DAY)
    end = start + int(args.days * DAY_US) // (60 * US_PER_S) * (60 * US_PER_S)
    print(f"district: {len(registry):,} devices; traffic {format_instant(start)} — {format_instant(end)}", flush=True)
    print(f"archive scanner and payload parser: {kernels.in_use()}", flush=True)
    gc.collect()

    events, busy, engine = bench_predecoded(registry, start, end, args.seed)
    print(f"pre-decoded: {events:,} events in {busy:.2f} s of Engine.apply", flush=True)
    sample_ms = bench_sample(engine, end, 1440)
    print(f"sample: {sample_ms:.3f} ms per full-district sample (1,440 instants)", flush=True)
    del engine
    decoded_events, decode_busy, decoding, floor_busy, lines_busy = bench_decoding(registry, start, end, args.seed)
    print(f"decode + apply: {decoded_events:,} events in {decode_busy:.2f} s ({decoding:.2f} s decoding); "
          f"from archive lines (scan + decode + apply): {lines_busy:.2f} s; "
          f"bare orjson.loads of the same payloads: {floor_busy:.2f} s ({decoded_events / floor_busy:,.0f}/s)", flush=True)
    ratio = (decoded_events / decode_busy) / (decoded_events / floor_busy)
    return [
        row("engine updates, pre-decoded", events / busy, "events/s", "≥", 1_000_000),
        row("decode + engine", decoded_events / decode_busy, "events/s", "≥", 300_000),
        row("decode + engine / bare orjson.loads", ratio, "", "≥", 0.5),
        row("archive lines: scan + decode + engine / orjson", floor_busy / lines_busy, "", "≥", 0.5),
        row("one full-district sample", sample_ms, "ms", "≤", 5),
    ]


if __name__ == "__main__":
    sys.exit(main())
