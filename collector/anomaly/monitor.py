"""The device-health monitor: an engine listener that learns baselines and raises anomalies.

It takes each applied heartbeat's counter deltas from the engine's delta hook
(:class:`~ptmon.engine_listeners.DeltaListener`), gathers them per evaluation slot (``SLOT_US``, five
minutes on the Shanghai clock), and at the slot's end sums them per device and runs the detectors
once (:mod:`.cameras`, :mod:`.sensors`): a handful of numpy calls per slot rather than per message,
which keeps the engine's throughput. Time is the engine's: slots, hours, baseline days and months
close at the first message or sample past them, so a replay of the archive and the live collector,
whatever their batching, reach the same state and raise the same anomalies at the same instants
(every sum is over whole slots, each device's messages in their own order).

What changed goes to ``emit`` (a list of :class:`Anomaly`) at each sample instant: an anomaly
raised, one cleared, and at a month's end every open one's figures for that month. The state
travels in the collector's checkpoint by device id (:mod:`.state`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..engine import Engine
from ..rules import COUNTERS
from ..timebase import US_PER_S, UTC_OFFSET_US, day_of, day_to_date
from .cameras import Cameras
from .cusum import Detector, Steps
from .records import Anomaly
from .rules import AnomalyRules
from .sensors import Sensors

SLOT_US = 300 * US_PER_S  # evaluation slot: divides an hour
MAX_BUFFERED = 200_000  # rows kept between sample instants before they are applied anyway
US_PER_HOUR = 3600 * US_PER_S
CAPTURE_KPIS = {"capture", "face", "plate"}
ATTEMPTS = [COUNTERS.index("face_try"), COUNTERS.index("plate_try")]
SUCCESSES = [COUNTERS.index("face_ok"), COUNTERS.index("plate_ok")]
READS, READ_OK = COUNTERS.index("reads"), COUNTERS.index("read_ok")

Emit = Callable[[list[Anomaly]], None]


@dataclass
class Opened:
    """An open anomaly: when its evidence began and when it was raised."""

    since: int
    detected: int


class AnomalyMonitor:
    def __init__(self, engine: Engine, rules: AnomalyRules, emit: Emit | None = None) -> None:
        self.engine = engine
        self.rules = rules
        self.emit = emit
        registry = engine.registry
        kpis = [{k.code for k in c.kpis} for c in registry.rules.contracts]
        contract = registry.contract.astype(np.int64)
        is_camera = np.array([bool(k & CAPTURE_KPIS) for k in kpis])[contract]
        is_sensor = np.array(["sensing" in k for k in kpis])[contract] & ~is_camera
        self.camera_rows = np.flatnonzero(is_camera)
        self.sensor_rows = np.flatnonzero(is_sensor)
        self.camera_of = _index_of(self.camera_rows, len(registry))
        self.sensor_of = _index_of(self.sensor_rows, len(registry))
        n_streets = len(registry.rules.streets)
        # pooled shapes only for the type × street groups that have cameras (the checkpoint carries them)
        pairs = registry.type[self.camera_rows].astype(np.int64) * n_streets + registry.street[self.camera_rows]
        present, groups = np.unique(pairs, return_inverse=True)
        types, streets = registry.rules.types, registry.rules.streets
        self.group_codes = [f"{types[p // n_streets].code}/{streets[p % n_streets].code}" for p in present.tolist()]
        self.cameras = Cameras(rules, groups.astype(np.int64), len(self.group_codes))
        # per contract: (any cameras, their positions in its registry slice, their camera indices) for the
        # samples; None, None when the slice is the cameras, in order (the district's cam contract)
        self.sampled: list[tuple[bool, np.ndarray | None, np.ndarray | None]] = []
        for sl in engine.contract_slices:
            positions = np.flatnonzero(self.camera_of[sl] >= 0)
            cameras = self.camera_of[sl][positions]
            whole = len(positions) == sl.stop - sl.start and np.array_equal(cameras, np.arange(len(cameras)))
            self.sampled.append((len(positions) > 0, None if whole else positions, None if whole else cameras))
        self.sensors = Sensors(rules, len(self.sensor_rows))
        self.night_to_hour = rules.night_to // 3600
        self.hour: int | None = None  # the open hour (Shanghai hours since 1970)
        self.slot: int | None = None  # the open evaluation slot (Shanghai slots since 1970)
        self.open: dict[tuple[str, int], Opened] = {}  # (kind, registry row) -> its start
        self.pending: list[Anomaly] = []
        self.detections: dict[str, int] = {"blind": 0, "degraded": 0, "stuck": 0}  # raised since this process began
        self._place: tuple[int, np.ndarray] | None = None
        self.rounds: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # the engine's rounds since the last sample
        self.buffered = 0
        engine.delta_listeners.append(self)
        engine.device_listeners.append(self)

    # --- engine hooks ------------------------------------------------------------------

    def on_device_deltas(self, t: np.ndarray, devices: np.ndarray, deltas: np.ndarray) -> None:
        """Kept until the next sample instant (the engine's arrays are fresh per call and read only): the
        engine's rounds are often a hundred rows, too few to pay for numpy calls of their own."""
        self.rounds.append((t, devices, deltas))
        self.buffered += len(t)
        if self.buffered >= MAX_BUFFERED:
            self._drain()

    def on_device_sample(self, contract: int, t: int, online: np.ndarray, expected: np.ndarray) -> None:
        self._drain()
        slot = (t + UTC_OFFSET_US) // SLOT_US
        if self.slot is not None and self.slot < slot:
            self._close_slot()
        self.slot = slot
        self._advance((t + UTC_OFFSET_US) // US_PER_HOUR)
        has_cameras, positions, cameras = self.sampled[contract]
        if has_cameras:
            heard = self._heard(contract, t)
            self.cameras.add_sample(cameras, heard if positions is None else heard[positions],
                                    self.engine.sample_interval[contract])
        self.flush()

    def _heard(self, contract: int, t: int) -> np.ndarray:
        """The contract's devices online and under lease at sample ``t``, exemptions aside: an exemption
        excuses the street's figures, not the device, and it may be recorded late or revoked, so a device's
        health seen through exemptions would differ between the live run (which learns of one when it is
        recorded) and a recomputation from the archive (which knows them all, or none)."""
        engine = self.engine
        under_lease, _ = engine.expected_by_street(contract, day_of(t))
        return engine.sampled_online[engine.contract_slices[contract]] & under_lease

    def settle(self) -> None:
        """Apply what is kept for the next sample instant and hand over what changed (before a
        checkpoint): sums are order-free, so nothing differs from applying it later."""
        self._drain()
        self._note_sensors()
        self.sensors.fold()
        self.flush()

    def flush(self) -> None:
        """Hand what changed to ``emit``."""
        if self.pending and self.emit is not None:
            changes, self.pending = self.pending, []
            self.emit(changes)

    # --- messages ----------------------------------------------------------------------

    def _drain(self) -> None:
        """Apply the rounds kept so far, slot by slot (a slot closes when the next one's rows come)."""
        if not self.rounds:
            return
        parts, self.rounds, self.buffered = self.rounds, [], 0
        t, d, deltas = (np.concatenate(p) for p in zip(*parts)) if len(parts) > 1 else parts[0]
        slots = (t + UTC_OFFSET_US) // SLOT_US  # rounds come in time order: slots ascend
        if self.slot is None:
            self.slot = int(slots[0])
            self._advance(int(slots[0]) * SLOT_US // US_PER_HOUR)
        if slots[0] == slots[-1] == self.slot:
            self._apply(t, d, deltas)
            return
        for slot in np.unique(slots).tolist():
            rows = slots == slot
            if slot != self.slot:
                self._close_slot()
                self.slot = slot
                self._advance(slot * SLOT_US // US_PER_HOUR)  # sensors are judged per heartbeat: their hour first
            self._apply(t[rows], d[rows], deltas[rows])

    def _apply(self, t: np.ndarray, d: np.ndarray, deltas: np.ndarray) -> None:
        assert self.slot is not None
        place = self._places(self.slot * SLOT_US // (24 * US_PER_HOUR)).take(d)
        cams = np.flatnonzero(place >= 0)
        if len(cams):
            attempts = deltas[:, ATTEMPTS[0]] + deltas[:, ATTEMPTS[1]]
            successes = deltas[:, SUCCESSES[0]] + deltas[:, SUCCESSES[1]]
            self.cameras.add(place.take(cams), attempts.take(cams), successes.take(cams))
        sens = np.flatnonzero(place <= -2)
        if len(sens):
            self.sensors.add(-2 - place.take(sens), t.take(sens), deltas[:, READS].take(sens),
                             deltas[:, READ_OK].take(sens))

    def _places(self, day: int) -> np.ndarray:
        """Per registry row on ``day``: its camera index (≥ 0), −2 − its sensor index, or −1 (neither, or
        not under lease: the engine zeroes deltas outside the lease, and zeroes are no counts)."""
        if self._place is None or self._place[0] != day:
            registry = self.engine.registry
            place = np.full(len(registry), -1, dtype=np.int32)
            place[self.camera_rows] = np.arange(len(self.camera_rows), dtype=np.int32)
            place[self.sensor_rows] = -2 - np.arange(len(self.sensor_rows), dtype=np.int32)
            place[(registry.accepted_day > day) | (day >= registry.retired_day)] = -1
            self._place = (day, place)
        return self._place[1]

    # --- a slot ------------------------------------------------------------------------

    def _close_slot(self) -> None:
        """Run the camera detectors on the slot's sums (sensors were judged heartbeat by heartbeat)."""
        if self.slot is None:
            return
        start = self.slot * SLOT_US - UTC_OFFSET_US
        hour = (start + UTC_OFFSET_US) // US_PER_HOUR
        self._advance(hour)
        end = start + SLOT_US
        self._note_sensors()
        counts = self.cameras.take_slot()
        if counts is not None:
            blind, degraded = self.cameras.update(counts, hour, start, end)
            self._note("blind", blind, self.cameras.blind, self.camera_rows)
            self._note("degraded", degraded, self.cameras.degraded, self.camera_rows)

    def _note_sensors(self) -> None:
        for steps in self.sensors.take_slot():  # turn by turn: a turn's notes read the state it left
            self._note("stuck", steps, self.sensors.stuck, self.sensor_rows)

    def _note(self, kind: str, steps: Steps, detector: Detector, rows: np.ndarray) -> None:
        for i, at in zip(steps.opened.tolist(), steps.opened_at.tolist()):
            row = int(rows[i])
            self.open[kind, row] = Opened(detector.since(i), at)
            self.detections[kind] += 1
            self.pending.append(self._record(kind, row, None, event="raised"))
        for i, at in zip(steps.closed.tolist(), steps.closed_at.tolist()):
            row = int(rows[i])
            self.pending.append(self._record(kind, row, at, event="cleared"))
            del self.open[kind, row]

    def _record(self, kind: str, row: int, end: int | None, month: str | None = None, event: str = "") -> Anomaly:
        registry = self.engine.registry
        rules = registry.rules
        opened = self.open[kind, row]
        detector, i = self._detector(kind, row)
        attempts, successes, expected_attempts, expected_successes = detector.run(i)
        return Anomaly(device=registry.ids[row], kind=kind, contract=rules.contracts[int(registry.contract[row])].code,
                       street=rules.streets[int(registry.street[row])].code, type=rules.types[int(registry.type[row])].code,
                       community=registry.communities[int(registry.community[row])],
                       gateway=registry.gateways[int(registry.gateway[row])], start=opened.since,
                       detected=opened.detected, end=end, month=month or _month(self.hour or 0), attempts=attempts,
                       successes=successes, expected_attempts=expected_attempts, expected_successes=expected_successes,
                       event=event)

    def _detector(self, kind: str, row: int) -> tuple[Detector, int]:
        if kind == "stuck":
            return self.sensors.stuck, int(self.sensor_of[row])
        return getattr(self.cameras, kind), int(self.camera_of[row])

    # --- hours, baseline days, months --------------------------------------------------

    def _advance(self, hour: int) -> None:
        """Close every hour before ``hour`` (and the baseline days and months they end)."""
        if self.hour is None:
            self.hour = hour
            return
        while self.hour < hour:
            self.cameras.shapes.close_hour(self.hour)
            self.sensors.fold()
            self.hour += 1
            if self.hour % 24 == self.night_to_hour:
                self.cameras.close_day()
                self.sensors.close_day()
            if self.hour % 24 == 0 and day_to_date(self.hour // 24).day == 1:
                self._close_month()

    def _close_month(self) -> None:
        """Every open anomaly's figures of the month that ended; its next month's start from zero."""
        assert self.hour is not None
        ended = _month(self.hour - 1)
        for kind, row in sorted(self.open):
            self.pending.append(self._record(kind, row, None, month=ended, event="month_end"))
            detector, i = self._detector(kind, row)
            detector.clear_runs(i)

    # --- what it shows -----------------------------------------------------------------

    def open_anomalies(self) -> list[Anomaly]:
        """Every open anomaly with its figures so far this month."""
        return [self._record(kind, row, None) for kind, row in sorted(self.open)]

    def open_mask(self, kind: str) -> np.ndarray:
        """Registry rows with an open anomaly of ``kind``."""
        mask = np.zeros(len(self.engine.registry), dtype=bool)
        mask[[row for k, row in self.open if k == kind]] = True
        return mask

    def learning_mask(self) -> np.ndarray:
        """Registry rows judged by no detector yet (cameras without counters stay here)."""
        mask = np.zeros(len(self.engine.registry), dtype=bool)
        mask[self.camera_rows[self.cameras.learning()]] = True
        mask[self.sensor_rows[self.sensors.learning()]] = True
        return mask

    def state_bytes(self) -> int:
        maps = self.camera_rows.nbytes + self.sensor_rows.nbytes + self.camera_of.nbytes + self.sensor_of.nbytes
        shapes = self.cameras.shapes
        return (self.cameras.nbytes() + self.sensors.nbytes() + maps + shapes.open.nbytes + shapes.bins.nbytes
                + shapes.shape.nbytes + shapes.fshape.nbytes)


def _index_of(rows: np.ndarray, n: int) -> np.ndarray:
    out = np.full(n, -1, dtype=np.int32)
    out[rows] = np.arange(len(rows), dtype=np.int32)
    return out


def _month(hour: int) -> str:
    """YYYY-MM of a Shanghai hour index."""
    return day_to_date(hour // 24).strftime("%Y-%m")
