"""Synthetic heartbeat traffic of a registry: vectorised, memory-bounded, deterministic.

Not an MQTT simulator: it writes message archives and yields ``(t, topic, payload)``
tuples or pre-decoded :class:`~ptmon.decode.DecodedBatch` objects for the demo, the
tests and the benchmarks, over ``[start_us, end_us)``.

The traffic model (the constants below are assumptions, chosen to look like the field):

* every device reports every ``heartbeat_period`` of its type (rules/types.yaml), from a
  per-device random phase, each message a little late by a jitter of up to ``jitter`` ×
  period (never early, so a device's messages stay in order);
* the payload follows the wire contract (docs/domain.md): ``ts`` (the device clock, a few seconds
  off), ``seq`` (+1 per heartbeat), ``boot``, sensors also ``bat`` and ``rssi`` (cameras are
  mains-powered and wired), and the **cumulative** counters: sensors ``reads``/``read_ok``
  (a few reads per heartbeat, 98–99.5 % successful), face cameras ``face_try``/``face_ok``,
  plate cameras ``plate_try``/``plate_ok`` (captures per minute higher by day, 97–99 %
  successful by day and 4–9 points worse at night, 20:00–06:00 Shanghai); other camera
  types carry no counters;
* a :class:`Scenario` adds street outages, degraded streets, silent devices and loss. A
  message that is not sent still advances its device's counters, as on a real device, so
  the next message that gets through carries the counts.

Time is cut into one-hour chunks (``CHUNK_US``) generated one after another, so memory is
bounded by an hour of traffic; the random draws of a chunk come from ``(seed, chunk
number)``, so the same registry, window and scenario always give the same records.
"""

from __future__ import annotations

import multiprocessing
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

from ptmon.archive import MONITOR_TOPIC, encode_record
from ptmon.decode import DecodedBatch, boot_key
from ptmon.registry import Registry
from ptmon.rules import COUNTERS, Rules
from ptmon.timebase import US_PER_S, UTC_OFFSET_US, days_of

from .faults import DeviceWindows, FaultPlan
from .synthetic_scenario import Degradation, Flapping, Outage, Scenario, Silence, SuccessWindow
from .synthetic_text import FACE, PLAIN, PLATE, SENSOR, TEXTS, counter_kind

__all__ = ["Degradation", "Flapping", "Outage", "Scenario", "Silence", "SuccessWindow", "Traffic", "TrafficGenerator",
           "decoded_batches", "iter_records", "write_archive"]

CHUNK_US = 3600 * US_PER_S
HOUR_US = 3600 * US_PER_S
NIGHT_FROM_HOUR, NIGHT_TO_HOUR = 20, 6  # Shanghai: fewer captures, and worse ones
PAIR_COLUMN = {SENSOR: COUNTERS.index("reads"), FACE: COUNTERS.index("face_try"), PLATE: COUNTERS.index("plate_try")}
READS_EXTRA_MEAN = 1.5  # reads per heartbeat: 1 + Poisson(1.5)
SENSOR_SUCCESS = (0.98, 0.995)  # per-device sensing success, uniform in this range
CAMERA_SUCCESS_DAY = (0.97, 0.99)
CAMERA_NIGHT_DROP = (0.04, 0.09)  # success points lost at night
CAPTURES_PER_MIN_DAY = {FACE: 4.0, PLATE: 1.5}  # mean; each camera × U(0.3, 2.0)
NIGHT_TRAFFIC = {FACE: 0.15, PLATE: 0.25}  # night capture rate as a share of the day's
# Day capture traffic by Shanghai hour (06..19), relative to the day's mean: the morning and evening
# rush at community gates; weekends are quieter, with fewer commuting cars.
DAY_PROFILE = np.array([0.6, 1.3, 1.6, 1.1, 0.9, 0.9, 1.0, 0.9, 0.8, 0.9, 1.0, 1.3, 1.5, 1.2]) / (15.0 / 14)
WEEKEND_TRAFFIC = {FACE: 0.8, PLATE: 0.6}
CLOCK_DRIFT_S = 30


@dataclass(eq=False)
class Traffic:
    """Messages of one chunk, sorted by receive time; counters are cumulative, 0 where absent."""

    t: np.ndarray  # int64 µs receive time
    device: np.ndarray  # int64 registry index
    seq: np.ndarray  # int64
    counters: np.ndarray  # int64 [m, 6] in COUNTERS order
    ts: np.ndarray  # int64 device clock, unix seconds
    rssi: np.ndarray  # int64 dBm (sensors)

    def __len__(self) -> int:
        return len(self.t)

    def take(self, rows: np.ndarray | slice) -> Traffic:
        return Traffic(self.t[rows], self.device[rows], self.seq[rows], self.counters[rows], self.ts[rows], self.rssi[rows])

    @staticmethod
    def concat(parts: list[Traffic]) -> Traffic:
        return Traffic(*(np.concatenate([getattr(p, f) for p in parts])
                         for f in ("t", "device", "seq", "counters", "ts", "rssi")))


class TrafficGenerator:
    """Per-device profiles drawn once from the seed, and the chunked message generator."""

    def __init__(self, registry: Registry, rules: Rules | None = None, scenario: Scenario | None = None) -> None:
        self.registry = registry
        self.rules = rules = rules or registry.rules
        self.scenario = sc = scenario or Scenario()
        n = len(registry)
        rng = np.random.default_rng([sc.seed & 0xFFFFFFFF, 0x5EED])
        kinds = np.array([counter_kind(t.code, {k.code for k in rules.contract(t.contract).kpis}) for t in rules.types], np.int8)
        self.kind = kinds[registry.type]
        period_s = np.array([t.heartbeat_period for t in rules.types], np.int64)[registry.type]
        self.period = period_s * US_PER_S
        self.phase = rng.integers(0, period_s * 1000) * 1000  # ms-aligned, like the jitter
        self.max_jitter = np.minimum((self.period * sc.jitter).astype(np.int64), CHUNK_US - 1)

        sensor = self.kind == SENSOR
        self.p_day = np.where(sensor, rng.uniform(*SENSOR_SUCCESS, n), rng.uniform(*CAMERA_SUCCESS_DAY, n))
        self.p_night_drop = np.where(sensor, 0.0, rng.uniform(*CAMERA_NIGHT_DROP, n))
        self.outage_masks = [self._street_mask(o.street, o.contract) for o in sc.outages]
        self.factor = np.ones(n)
        for d in sc.degraded:
            self.factor[self._street_mask(d.street, d.contract)] *= d.factor
        captures = np.array([CAPTURES_PER_MIN_DAY.get(k, 0.0) for k in range(4)])[self.kind]
        self.captures_per_period = captures * rng.uniform(0.3, 2.0, n) * (period_s / 60.0)
        self.night_traffic = np.array([NIGHT_TRAFFIC.get(k, 1.0) for k in range(4)])[self.kind]
        self.weekend_traffic = np.array([WEEKEND_TRAFFIC.get(k, 1.0) for k in range(4)])[self.kind]
        self.faults = FaultPlan(sc.faults)
        self.pair_column = np.array([PAIR_COLUMN.get(k, -1) for k in range(4)], np.int64)[self.kind]

        self.silent = np.zeros(n, dtype=bool)
        self.silent[rng.choice(n, size=round(sc.silent_fraction * n), replace=False)] = True
        self.silent[np.asarray(sc.never_report, dtype=np.int64)] = True
        self.silences = DeviceWindows([(s.devices, s.from_us, s.to_us, 0.0) for s in sc.silences])
        self.success_windows = DeviceWindows([(w.devices, w.from_us, w.to_us, w.factor) for w in sc.success_windows])
        self.flap_half = np.zeros(n, dtype=np.int64)
        for f in sc.flapping:
            self.flap_half[np.asarray(f.devices, dtype=np.int64)] = f.period_us // 2
        self.seq0 = rng.integers(0, 10_000, n)
        self.boot = rng.integers(1, 2**31, n)
        self.bat = np.where(sensor, rng.integers(20, 101, n), -1)
        self.rssi0 = rng.integers(-115, -69, n)
        self.drift = rng.integers(-CLOCK_DRIFT_S, CLOCK_DRIFT_S + 1, n)
        self.tries0 = np.where(self.kind == PLAIN, 0, rng.integers(0, 50_000, n))
        self.oks0 = (self.tries0 * self.p_day).astype(np.int64)

        contracts = [c.code for c in rules.contracts]
        streets = [s.code for s in rules.streets]
        self.topics = np.array(
            [
                f"putuo/{contracts[c]}/{streets[s]}/{i}/hb"
                for c, s, i in zip(registry.contract.tolist(), registry.street.tolist(), registry.ids)
            ],
            dtype=object,
        )
        self._quote_topics = _needs_escape(self.topics)

    def _street_mask(self, street: str, contract: str | None) -> np.ndarray:
        streets = self.rules.street_codes()
        if street not in streets:
            raise ValueError(f"scenario names an unknown street {street!r} (known: {', '.join(streets)})")
        mask = self.registry.street == streets.index(street)
        if contract is not None:
            contracts = [c.code for c in self.rules.contracts]
            if contract not in contracts:
                raise ValueError(f"scenario names an unknown contract {contract!r}")
            mask &= self.registry.contract == contracts.index(contract)
        return mask

    # --- generation ---------------------------------------------------------------------

    def chunks(self, start_us: int, end_us: int) -> Iterator[Traffic]:
        """Messages received in ``[start_us, end_us)`` (plus the lead-in), one time chunk at a time."""
        lead = int(self.period.max()) if self.scenario.lead_in else 0
        tries, oks = self.tries0.copy(), self.oks0.copy()  # each call replays from the same state
        pending: Traffic | None = None
        c0, number = start_us - lead, 0
        while c0 < end_us:
            c1 = min(c0 + CHUNK_US, end_us)
            fresh = self._chunk(start_us, c0, c1, number, tries, oks)
            merged = fresh if pending is None else Traffic.concat([pending, fresh])
            merged = merged.take(np.argsort(merged.t, kind="stable"))
            due = int(np.searchsorted(merged.t, c1))
            pending = merged.take(slice(due, None))
            if due:
                yield merged.take(slice(0, due))
            c0, number = c1, number + 1
        # whatever is still pending was pushed past end_us by its jitter: not in the window

    def _chunk(self, start: int, c0: int, c1: int, number: int, tries: np.ndarray, oks: np.ndarray) -> Traffic:
        """Heartbeats due (before jitter) in ``[c0, c1)``; advances the cumulative counters."""
        sc = self.scenario
        rng = np.random.default_rng([sc.seed & 0xFFFFFFFF, number, 0xC4])
        k_first = -1 if sc.lead_in else 0
        k_lo = np.maximum(-((start + self.phase - c0) // self.period), k_first)  # ceil((c0 - start - phase) / period)
        k_hi = -((start + self.phase - c1) // self.period)
        counts = np.where(self.silent, 0, np.maximum(k_hi - k_lo, 0))
        device = np.repeat(np.arange(len(counts)), counts)
        m = len(device)
        run_start = np.repeat(np.cumsum(counts) - counts, counts)
        k = k_lo[device] + np.arange(m) - run_start
        due = start + self.phase[device] + k * self.period[device]
        t = due + (rng.random(m) * self.max_jitter[device]).astype(np.int64) // 1000 * 1000

        kind = self.kind[device]
        hour = (due + UTC_OFFSET_US) // HOUR_US % 24
        night = (hour >= NIGHT_FROM_HOUR) | (hour < NIGHT_TO_HOUR)
        attempts = np.where(
            kind == SENSOR,
            1 + rng.poisson(READS_EXTRA_MEAN, m),
            rng.poisson(self.captures_per_period[device] * self._capture_profile(device, due, hour, night)
                        * self.faults.capture_factor(due, counts, night)),
        )
        p = (self.p_day[device] - np.where(night, self.p_night_drop[device], 0.0)) * self.factor[device]
        windowed, factors = self.success_windows.hits(due, counts)
        np.multiply.at(p, windowed, factors)
        p -= self.faults.success_minus(due, counts)
        successes = rng.binomial(attempts, np.clip(p, 0.0, 1.0))
        ok_stop, reads_stop = self.faults.stuck(due, counts)
        attempts[reads_stop] = 0
        successes[ok_stop] = 0
        successes[reads_stop] = 0
        cum_tries = self._cumulate(tries, attempts, device, run_start, counts)
        cum_oks = self._cumulate(oks, successes, device, run_start, counts)

        counters = np.zeros((m, len(COUNTERS)), np.int64)
        column = self.pair_column[device]
        rows = np.flatnonzero(column >= 0)
        counters[rows, column[rows]] = cum_tries[rows]
        counters[rows, column[rows] + 1] = cum_oks[rows]
        traffic = Traffic(
            t=t,
            device=device,
            seq=self.seq0[device] + k + 1,
            counters=counters,
            ts=t // US_PER_S + self.drift[device],
            rssi=self.rssi0[device] + rng.integers(-3, 4, m),
        )
        sent = self._sent(t, device, rng)
        sent[self.silences.hits(t, counts)[0]] = False
        return traffic if sent.all() else traffic.take(sent)

    def _capture_profile(self, device: np.ndarray, due: np.ndarray, hour: np.ndarray, night: np.ndarray) -> np.ndarray:
        """Capture traffic relative to a weekday's daytime mean: the rush hours, the quiet night, the weekend."""
        day_hour = np.clip(hour - NIGHT_TO_HOUR, 0, len(DAY_PROFILE) - 1)
        weekend = ((due + UTC_OFFSET_US) // (24 * HOUR_US) + 3) % 7 >= 5  # 1970-01-01 was a Thursday
        return (np.where(night, self.night_traffic[device], DAY_PROFILE[day_hour])
                * np.where(weekend, self.weekend_traffic[device], 1.0))

    @staticmethod
    def _cumulate(state: np.ndarray, increments: np.ndarray, device: np.ndarray, run_start: np.ndarray,
                  counts: np.ndarray) -> np.ndarray:
        """Per-message cumulative values (messages grouped by device, in order); updates ``state``."""
        running = np.cumsum(increments)
        before = np.where(run_start > 0, running[run_start - 1], 0)
        values = state[device] + running - before
        last = np.cumsum(counts) - 1
        has = counts > 0
        state[has] = values[last[has]]
        return values

    def _sent(self, t: np.ndarray, device: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Which messages leave the device and arrive (outages and loss remove the others)."""
        sent = rng.random(len(t)) >= self.scenario.loss
        day = days_of(t)
        # off lease: not installed yet, or already removed
        sent &= (self.registry.accepted_day[device] <= day) & (day < self.registry.retired_day[device])
        for o, silenced in zip(self.scenario.outages, self.outage_masks):
            in_window = (t >= o.from_us) & (t < o.to_us)
            if in_window.any():
                sent &= ~(in_window & silenced[device])
        half = self.flap_half[device]
        sent &= (half == 0) | (t // np.maximum(half, 1) % 2 == 0)
        return sent

    # --- output formats -----------------------------------------------------------------

    def payloads(self, tr: Traffic) -> list[str]:
        """JSON payloads of a chunk, built with f-strings (several times faster than a serializer)."""
        return self._texts(tr, lines=False)

    def records(self, start_us: int, end_us: int) -> Iterator[tuple[float, str, str]]:
        for tr in self.chunks(start_us, end_us):
            yield from zip((tr.t / US_PER_S).tolist(), self.topics[tr.device].tolist(), self.payloads(tr))

    def archive_lines(self, tr: Traffic) -> str:
        """Archive records of a chunk, ``{"t":..,"topic":..,"payload":..}`` per line, as one string."""
        return "".join(self._texts(tr, lines=True))

    def _texts(self, tr: Traffic, *, lines: bool) -> list[str]:
        """Format each kind of device with its own template, then put the messages back in order."""
        out = np.empty(len(tr), dtype=object)
        kinds = self.kind[tr.device]
        seconds = tr.t / US_PER_S
        for kind in (SENSOR, FACE, PLATE, PLAIN):
            rows = np.flatnonzero(kinds == kind)
            if not len(rows):
                continue
            d = tr.device[rows]
            topics = self.topics[d].tolist() if lines else ()
            if lines:
                topics = [orjson.dumps(x).decode() for x in topics] if self._quote_topics else ['"' + x + '"' for x in topics]
            columns = [seconds[rows].tolist(), topics, tr.ts[rows].tolist(), tr.seq[rows].tolist(), self.boot[d].tolist()]
            if kind == SENSOR:
                columns += [self.bat[d].tolist(), tr.rssi[rows].tolist()]
            if kind != PLAIN:
                columns += [tr.counters[rows, PAIR_COLUMN[kind]].tolist(), tr.counters[rows, PAIR_COLUMN[kind] + 1].tolist()]
            texts = np.empty(len(rows), dtype=object)
            texts[:] = TEXTS[kind, lines](*columns)
            out[rows] = texts
        return out.tolist()

    def decoded(self, tr: Traffic) -> DecodedBatch:
        """The chunk as the decoder would have produced it from the payloads."""
        m = len(tr)
        has_counter = np.zeros((m, len(COUNTERS)), dtype=bool)
        column = self.pair_column[tr.device]
        rows = np.flatnonzero(column >= 0)
        has_counter[rows, column[rows]] = True
        has_counter[rows, column[rows] + 1] = True
        sensor = self.kind[tr.device] == SENSOR
        return DecodedBatch(
            t=tr.t, device=tr.device, seq=tr.seq, has_seq=np.ones(m, dtype=bool),
            boot=self.boot_crc[tr.device], has_boot=np.ones(m, dtype=bool),
            counters=tr.counters, has_counter=has_counter, ts=tr.ts.astype(np.float64),
            bat=np.where(sensor, self.bat[tr.device], np.nan), rssi=np.where(sensor, tr.rssi, np.nan),
        )

    @property
    def boot_crc(self) -> np.ndarray:
        """Boot ids as the decoder keeps them (:func:`ptmon.decode.boot_key`)."""
        cached = getattr(self, "_boot_crc", None)
        if cached is None:
            cached = self._boot_crc = np.array([boot_key(b) for b in self.boot.tolist()], np.int64)
        return cached


def _needs_escape(topics: np.ndarray) -> bool:
    """Whether any topic has a character that JSON must escape (device ids may hold ``"`` or ``\\``)."""
    return any('"' in t or "\\" in t or not t.isprintable() for t in topics.tolist())


def iter_records(
    registry: Registry, rules: Rules, start_us: int, end_us: int, scenario: Scenario | None = None
) -> Iterator[tuple[float, str, str]]:
    """``(t seconds, topic, payload)`` of every message received in ``[start_us, end_us)``, in time order."""
    return TrafficGenerator(registry, rules, scenario).records(start_us, end_us)


def decoded_batches(
    registry: Registry, rules: Rules, start_us: int, end_us: int, scenario: Scenario | None = None, *, batch_size: int = 16_384
) -> Iterator[DecodedBatch]:
    """The same messages as :func:`iter_records`, already decoded, in batches of ``batch_size``."""
    generator = TrafficGenerator(registry, rules, scenario)
    for tr in generator.chunks(start_us, end_us):
        for a in range(0, len(tr), batch_size):
            yield generator.decoded(tr.take(slice(a, a + batch_size)))


def write_archive(
    path: str | Path, registry: Registry, rules: Rules, start_us: int, end_us: int, scenario: Scenario | None = None,
    *, progress: Callable[[int, int], None] | None = None, compresslevel: int = 1, workers: int = 0,
) -> int:
    """Write the traffic as a gzip JSON Lines archive; returns the number of heartbeat records.

    The archive opens with a ``$ptmon/monitor up`` record at the first instant of the traffic
    and closes with ``down`` at ``end_us``, so a replay observes the whole window. Each chunk
    is its own gzip member (a gzip file may hold several; every reader concatenates them), so
    ``workers`` processes can format and compress chunks in parallel while this one draws
    the next: the bytes do not depend on ``workers``, and the members carry no name or time,
    so the same inputs give the same file. ``progress(records, clock_us)`` follows each chunk.
    """
    generator = TrafficGenerator(registry, rules, scenario)
    first = start_us - (int(generator.period.max()) if generator.scenario.lead_in else 0)
    count = 0
    with open(path, "wb") as out, _chunk_writer(generator, compresslevel, workers) as compress:
        out.write(_gzip_member(_control_line(first, "up"), compresslevel))
        for member, records, clock in compress(generator.chunks(start_us, end_us)):
            out.write(member)
            count += records
            if progress is not None:
                progress(count, clock)
        out.write(_gzip_member(_control_line(end_us, "down"), compresslevel))
    return count


Compressed = tuple[bytes, int, int]  # (gzip member, records, receive time of the last)


@contextmanager
def _chunk_writer(generator: TrafficGenerator, level: int,
                  workers: int) -> Iterator[Callable[[Iterable[Traffic]], Iterator[Compressed]]]:
    """A function from chunks to their gzip members, in order; in worker processes when asked."""
    if workers <= 0:
        yield lambda chunks: (_compress(generator, tr, level) for tr in chunks)
        return
    context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_set_worker_generator, initargs=(generator,)) as pool:

        def compress(chunks: Iterable[Traffic]) -> Iterator[Compressed]:
            in_flight: deque[Future[Compressed]] = deque()
            for tr in chunks:
                in_flight.append(pool.submit(_compress_in_worker, tr, level))
                if len(in_flight) > 2 * workers:  # bounded: a chunk is tens of MB
                    yield in_flight.popleft().result()
            while in_flight:
                yield in_flight.popleft().result()

        yield compress


_worker_generator: TrafficGenerator | None = None


def _set_worker_generator(generator: TrafficGenerator) -> None:
    global _worker_generator
    _worker_generator = generator


def _compress_in_worker(tr: Traffic, level: int) -> Compressed:
    assert _worker_generator is not None
    return _compress(_worker_generator, tr, level)


def _compress(generator: TrafficGenerator, tr: Traffic, level: int) -> Compressed:
    return _gzip_member(generator.archive_lines(tr).encode(), level), len(tr), int(tr.t[-1])


def _gzip_member(data: bytes, level: int) -> bytes:
    """One complete gzip member (zlib writes a header with no name and mtime 0)."""
    compressor = zlib.compressobj(level, zlib.DEFLATED, 31)
    return compressor.compress(data) + compressor.flush()


def _control_line(t_us: int, payload: str) -> bytes:
    return encode_record(t_us / US_PER_S, MONITOR_TOPIC, payload)
