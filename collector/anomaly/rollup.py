"""KPI rollups per contract × street × device type, and per community for cameras.

The ``sla`` measurement answers per street; ops also ask "which sensor type is flaky?" and "which
community's cameras fail?". Dashboards must not scan per-device series for that, so the collector
writes, every rollup ``interval`` (Shanghai clock), one point per cell with exact sums over the
interval, from which any range's rates follow exactly (Σ online / Σ expected, Σ ok / Σ tries):

* ``sla_type`` (tags ``contract, street, type``) and ``sla_community`` (tags ``contract, street,
  community``; cameras only);
* ``samples``: the contract's sample instants in the interval; ``online``, ``expected``: Σ over them
  of devices online and expected (exemptions applied, as in ``sla``);
* the counter deltas received in the interval: ``reads, read_ok`` (sensors), ``face_try, face_ok,
  plate_try, plate_ok`` (cameras);
* device health at the interval's end: ``blind, degraded, stuck`` (devices with that anomaly open),
  ``learning`` (devices not judged yet).

The point is stamped with the interval's start. A sample belongs to the interval holding its
instant, a delta to the one holding its receive time (as the ledger's hours), so the sums of a
month's points equal the month's ``sla`` figures.

Online counts per cell are kept from the engine's status changes (a handful of devices a sample)
and recounted when the day (the lease) changes; only while an exemption is in force is every sample
counted in full.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import numpy as np

from ..engine import Engine
from ..rules import COUNTERS
from ..sinks.lineproto import series_prefix
from ..timebase import US_PER_S, UTC_OFFSET_US, day_of
from .monitor import AnomalyMonitor

KIND_FIELDS = ("blind", "degraded", "stuck")
SENSOR_FIELDS = ("reads", "read_ok")
CAMERA_FIELDS = ("face_try", "face_ok", "plate_try", "plate_ok")

Emit = Callable[[list[str], int], None]  # an interval's lines and its start


class _Cells:
    """One kind of rollup cell (type × street, or community) and its open interval's sums."""

    def __init__(self, cell_of: np.ndarray, n: int, contract_slices: list[slice]) -> None:
        self.cell_of = cell_of  # per registry row, -1: not rolled up here
        self.n = n
        self.slices = [cell_of[sl] for sl in contract_slices]
        self.online = np.zeros(n, dtype=np.int64)
        self.expected = np.zeros(n, dtype=np.int64)
        self.counters = np.zeros((n, len(COUNTERS)), dtype=np.int64)
        self.status = np.zeros(n, dtype=np.int64)  # devices heard within their timeout and under lease, now
        self.leased = np.zeros(n, dtype=np.int64)  # devices under lease today
        self.contract: np.ndarray | None = None  # each cell's contract index, filled when first needed

    def count(self, contract: int, mask: np.ndarray) -> np.ndarray:
        cells = self.slices[contract]
        keep = cells >= 0
        return np.bincount(cells[keep & mask], minlength=self.n).astype(np.int64)

    def reset(self) -> None:
        self.online[:] = 0
        self.expected[:] = 0
        self.counters[:] = 0


class Rollups:
    def __init__(self, engine: Engine, interval_s: int, emit: Emit, monitor: AnomalyMonitor | None = None) -> None:
        self.engine, self.emit, self.monitor = engine, emit, monitor
        self.interval = interval_s * US_PER_S
        registry = engine.registry
        rules = registry.rules
        n_streets = len(rules.streets)
        self.contracts = [c.code for c in rules.contracts]
        cameras = np.array([bool({k.code for k in c.kpis} & {"capture", "face", "plate"}) for c in rules.contracts])
        self.type_names = [(t.contract, s.code, t.code) for t in rules.types for s in rules.streets]
        by_type = registry.type.astype(np.int64) * n_streets + registry.street
        community = np.where(cameras[registry.contract], registry.community, -1).astype(np.int64)
        self.types = _Cells(by_type, len(self.type_names), engine.contract_slices)
        self.communities = _Cells(community, len(registry.communities), engine.contract_slices)
        self.community_street = {int(c): int(s) for c, s in zip(community.tolist(), registry.street.tolist()) if c >= 0}
        self.samples = np.zeros(len(self.contracts), dtype=np.int64)
        self.period: int | None = None  # the open interval (intervals since 1970, Shanghai clock)
        self.rounds: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._day: dict[int, int] = {}  # contract -> the day its status counts are for
        engine.delta_listeners.append(self)
        engine.status_listeners.append(self)
        engine.device_listeners.append(self)

    # --- engine hooks ------------------------------------------------------------------

    def on_device_deltas(self, t: np.ndarray, devices: np.ndarray, deltas: np.ndarray) -> None:
        self.rounds.append((t, devices, deltas))

    def on_status(self, contract: int, t: int, changed: np.ndarray, online: np.ndarray) -> None:
        if self._day.get(contract) != day_of(t):
            return  # recounted at this sample
        lease = self._leased_mask(day_of(t))[changed]
        step = np.where(online, 1, -1)[lease]
        for cells in (self.types, self.communities):
            cell = cells.cell_of[changed][lease]
            kept = cell >= 0
            np.add.at(cells.status, cell[kept], step[kept])

    def on_device_sample(self, contract: int, t: int, online: np.ndarray, expected: np.ndarray) -> None:
        self._drain()
        period = (t + UTC_OFFSET_US) // self.interval
        if self.period is not None and period > self.period:
            self._close(t)
        self.period = period
        day = day_of(t)
        exempt = self.engine.exemptions.at(t) if self.engine.exemptions is not None else None
        if self._day.get(contract) != day:
            self._recount(contract, day)
        self.samples[contract] += 1
        for cells in (self.types, self.communities):
            if exempt is None:
                cells.online += cells.status * (self._cell_contract(cells) == contract)
                cells.expected += cells.leased * (self._cell_contract(cells) == contract)
            else:  # exemptions change the denominator sample by sample: count this one in full
                cells.online += cells.count(contract, online)
                cells.expected += cells.count(contract, expected)

    # --- counts ------------------------------------------------------------------------

    def _recount(self, contract: int, day: int) -> None:
        sl = self.engine.contract_slices[contract]
        lease = self._leased_mask(day)[sl]
        status = self.engine.sampled_online[sl] & lease
        for cells in (self.types, self.communities):
            mine = self._cell_contract(cells) == contract
            cells.status[mine] = cells.count(contract, status)[mine]
            cells.leased[mine] = cells.count(contract, lease)[mine]
        self._day[contract] = day

    def _leased_mask(self, day: int) -> np.ndarray:
        registry = self.engine.registry
        cached = getattr(self, "_lease", None)
        if cached is None or cached[0] != day:
            cached = self._lease = (day, (registry.accepted_day <= day) & (day < registry.retired_day))
        return cached[1]

    def _cell_contract(self, cells: _Cells) -> np.ndarray:
        cached = cells.contract
        if cached is None:
            cached = np.full(cells.n, -1, dtype=np.int64)
            rows = np.flatnonzero(cells.cell_of >= 0)
            cached[cells.cell_of[rows]] = self.engine.registry.contract[rows]
            cells.contract = cached
        return cached

    def _drain(self) -> None:
        if not self.rounds:
            return
        parts, self.rounds = self.rounds, []
        t, d, deltas = (np.concatenate(p) for p in zip(*parts)) if len(parts) > 1 else parts[0]
        periods = (t + UTC_OFFSET_US) // self.interval
        if self.period is not None and periods[-1] > self.period:  # a delta at the next interval's first instant
            later = periods > self.period
            self._add(d[~later], deltas[~later])
            self.rounds = [(t[later], d[later], deltas[later])]
            return
        self._add(d, deltas)

    def _add(self, d: np.ndarray, deltas: np.ndarray) -> None:
        for cells in (self.types, self.communities):
            cell = cells.cell_of[d]
            kept = cell >= 0
            for i in range(len(COUNTERS)):
                cells.counters[:, i] += np.bincount(cell[kept], weights=deltas[kept, i], minlength=cells.n).astype(np.int64)

    # --- points ------------------------------------------------------------------------

    def _close(self, t: int) -> None:
        assert self.period is not None
        stamp = self.period * self.interval - UTC_OFFSET_US
        health = self._health()
        lines = [*self._lines("sla_type", self.types, stamp, health[0]),
                 *self._lines("sla_community", self.communities, stamp, health[1])]
        for cells in (self.types, self.communities):
            cells.reset()
        self.samples[:] = 0
        carried, self.rounds = self.rounds, []
        for _t, dd, de in carried:  # deltas already received for the interval now open
            self._add(dd, de)
        self.emit(lines, stamp)

    def _health(self) -> tuple[dict[tuple[int, str], int], dict[tuple[int, str], int]]:
        by_type: Counter[tuple[int, str]] = Counter()
        by_community: Counter[tuple[int, str]] = Counter()
        if self.monitor is None:
            return by_type, by_community
        for kind, row in self.monitor.open:
            by_type[int(self.types.cell_of[row]), kind] += 1
            if self.communities.cell_of[row] >= 0:
                by_community[int(self.communities.cell_of[row]), kind] += 1
        learning = self.monitor.learning_mask()
        for cells, counter in ((self.types, by_type), (self.communities, by_community)):
            rows = cells.cell_of[learning]
            for cell, n in enumerate(np.bincount(rows[rows >= 0], minlength=cells.n).tolist()):
                if n:
                    counter[cell, "learning"] = n
        return by_type, by_community

    def _lines(self, measurement: str, cells: _Cells, stamp: int, health: dict[tuple[int, str], int]) -> list[str]:
        contract_of = self._cell_contract(cells)
        registry = self.engine.registry
        streets = registry.rules.street_codes()
        lines = []
        for cell in np.flatnonzero((cells.expected > 0) | cells.counters.any(axis=1)).tolist():
            ci = int(contract_of[cell])
            code = self.contracts[ci]
            if measurement == "sla_type":
                _, street, type_code = self.type_names[cell]
                tags = {"contract": code, "street": street, "type": type_code}
            else:
                tags = {"contract": code, "street": streets[self.community_street[cell]], "community": registry.communities[cell]}
            names = CAMERA_FIELDS if self._is_camera(ci) else SENSOR_FIELDS
            fields = [f"samples={int(self.samples[ci])}i", f"online={int(cells.online[cell])}i",
                      f"expected={int(cells.expected[cell])}i"]
            fields += [f"{name}={int(cells.counters[cell, COUNTERS.index(name)])}i" for name in names]
            fields += [f"{kind}={health.get((cell, kind), 0)}i" for kind in (*KIND_FIELDS, "learning")]
            lines.append(f"{series_prefix(measurement, tags)}{','.join(fields)} {stamp}")
        return lines

    # --- state -------------------------------------------------------------------------

    def state_arrays(self) -> dict[str, np.ndarray]:
        """The open interval's sums, by cell name (the checkpoint's ``ext.rollup.*``)."""
        self._drain()
        rounds = self.rounds
        t, d, deltas = ((np.concatenate(p) for p in zip(*rounds)) if rounds else
                        (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, len(COUNTERS)), np.int64)))
        ids = self.engine.registry.ids
        out = {"rollup.period": np.array([-1 if self.period is None else self.period], dtype=np.int64),
               "rollup.samples": self.samples, "rollup.contracts": _text("\n".join(self.contracts)),
               "rollup.carried_t": t, "rollup.carried_deltas": deltas,
               "rollup.carried_ids": _text("\n".join(ids[i] for i in d.tolist()))}
        for key, cells, names in (("types", self.types, ["/".join(n) for n in self.type_names]),
                                  ("communities", self.communities, self.engine.registry.communities)):
            out[f"rollup.{key}.names"] = _text("\n".join(names))
            out[f"rollup.{key}.sums"] = np.column_stack([cells.online, cells.expected, cells.counters])
        return out

    def restore(self, saved: dict[str, np.ndarray]) -> None:
        """The open interval's sums as saved (cells no longer defined are dropped)."""
        if "rollup.period" not in saved:
            return
        period = int(saved["rollup.period"][0])
        self.period = None if period < 0 else period
        contracts = _names(saved["rollup.contracts"])
        for i, code in enumerate(contracts):
            if code in self.contracts:
                self.samples[self.contracts.index(code)] = saved["rollup.samples"][i]
        for key, cells, names in (("types", self.types, ["/".join(n) for n in self.type_names]),
                                  ("communities", self.communities, self.engine.registry.communities)):
            where = {name: i for i, name in enumerate(names)}
            sums = saved[f"rollup.{key}.sums"]
            for j, name in enumerate(_names(saved[f"rollup.{key}.names"])):
                if name in where:
                    i = where[name]
                    cells.online[i], cells.expected[i], cells.counters[i] = sums[j, 0], sums[j, 1], sums[j, 2:]
        index = self.engine.registry.index
        ids = _names(saved["rollup.carried_ids"])
        known = np.array([i in index for i in ids], dtype=bool)
        if known.any():
            rows = np.array([index[i] for i in ids if i in index], dtype=np.int64)
            self.rounds = [(saved["rollup.carried_t"][known], rows, saved["rollup.carried_deltas"][known])]

    def _is_camera(self, contract: int) -> bool:
        kpis = {k.code for k in self.engine.registry.rules.contracts[contract].kpis}
        return bool(kpis & {"capture", "face", "plate"})


def _text(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).copy()


def _names(blob: np.ndarray) -> list[str]:
    text = blob.tobytes().decode("utf-8")
    return text.split("\n") if text else []
