"""Exemptions as the engine sees them: which registry devices leave the denominator when.

An exemption names a device, a street or a gateway; here it becomes the set of registry rows
it covers. The engine asks :meth:`ExemptionMask.at` at each sample instant and drops the
exempted devices from ``expected`` (docs/domain.md: Expected … minus devices with an approved
exemption covering t). Revoked exemptions are not applied.

A live collector learns of an exemption when it is recorded, possibly after its window has
begun; samples already taken cannot change. ``known_from`` is the first instant the engine
applied it (``None``: from the start, as in a replay), so the ledger can tell which hours were
computed with the whole exemption and which need a recomputation from the archive.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from .ledger.records import Exemption
from .registry import Registry

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class _Window:
    exemption: Exemption
    rows: np.ndarray  # registry indices covered
    known_from: int | None


class ExemptionMask:
    """The active exemptions over a registry; ``at(t)`` is the exempt-device mask at ``t``."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.windows: dict[int, _Window] = {}
        self.unmatched: dict[int, str] = {}  # exemption id -> why it covers no device
        self._cache: tuple[tuple[int, ...], np.ndarray | None] = ((), None)

    def __len__(self) -> int:
        return len(self.windows)

    def load(self, exemptions: Iterable[Exemption], *, known_from: int | None = None) -> list[Exemption]:
        """Take the current list: new ones apply from ``known_from``; returns those new here."""
        current = {e.id: e for e in exemptions if e.active}
        added = []
        for exemption_id in list(self.windows):
            if exemption_id not in current:
                del self.windows[exemption_id]
        for exemption_id, e in current.items():
            if exemption_id in self.windows or exemption_id in self.unmatched:
                continue
            rows = self.rows_of(e)
            if len(rows) == 0:
                self.unmatched[exemption_id] = f"exemption {exemption_id}: no registry device has {e.scope} {e.target!r}"
                log.warning("%s", self.unmatched[exemption_id])
                continue
            self.windows[exemption_id] = _Window(e, rows, known_from)
            added.append(e)
        self._cache = ((), None)
        return added

    def rows_of(self, e: Exemption) -> np.ndarray:
        registry = self.registry
        if e.scope == "device":
            index = registry.index.get(e.target)
            return np.array([] if index is None else [index], dtype=np.int64)
        if e.scope == "street":
            codes = registry.rules.street_codes()
            if e.target not in codes:
                return np.array([], dtype=np.int64)
            return np.flatnonzero(registry.street == codes.index(e.target))
        if e.target not in registry.gateways or not e.target:
            return np.array([], dtype=np.int64)
        return np.flatnonzero(registry.gateway == registry.gateways.index(e.target))

    def active_ids(self, t: int) -> tuple[int, ...]:
        return tuple(sorted(i for i, w in self.windows.items()
                            if w.exemption.start <= t < w.exemption.end and (w.known_from is None or w.known_from <= t)))

    def at(self, t: int) -> np.ndarray | None:
        """Bool mask over the registry of devices exempt at ``t``, None when none is."""
        ids = self.active_ids(t)
        if not ids:
            return None
        if self._cache[0] != ids:
            mask = np.zeros(len(self.registry), dtype=bool)
            for i in ids:
                mask[self.windows[i].rows] = True
            self._cache = (ids, mask)
        return self._cache[1]

    def applied_in(self, start: int, end: int) -> list[str]:
        """Exemptions overlapping ``[start, end)``: ``"id"`` when applied over all of the overlap,
        ``"~id"`` when the engine learned of it only part-way (those samples need a recomputation)."""
        out = []
        for i, w in sorted(self.windows.items()):
            e = w.exemption
            if e.start < end and start < e.end:
                whole = w.known_from is None or w.known_from <= max(e.start, start)
                out.append(str(i) if whole else f"~{i}")
        return out
