"""Restoring a checkpoint's per-device and per-gateway arrays by id onto the current registry's
rows: a device or gateway gone since the save is dropped, a new one starts afresh, and each
saved array is checked to hold one row per saved id, shaped and typed as the engine's."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .decode import RateState
from .engine import Engine
from .errors import CheckpointError
from .ids import DeviceIds
from .registry import Registry

RATE_ARRAYS = {  # RateState attribute: (array name, rows of, fill for a row new since the save)
    "device_window": ("rate_device_window", "device", -1),
    "device_count": ("rate_device_count", "device", 0),
    "gateway_window": ("rate_gateway_window", "gateway", -1),
    "gateway_count": ("rate_gateway_count", "gateway", 0),
}


def saved_device_ids(blob: np.ndarray) -> DeviceIds:
    if blob.dtype != np.uint8 or blob.ndim != 1:
        raise ValueError("device_ids is not a uint8 vector")
    raw = blob.tobytes()
    raw.decode("utf-8")  # UnicodeDecodeError (a ValueError): not a ptmon checkpoint's ids
    return DeviceIds.from_joined(raw)


@dataclass(frozen=True)
class Rows:
    """Saved row ``source[i]`` is row ``target[i]`` now; ``saved`` and ``now`` count the rows."""

    source: np.ndarray
    target: np.ndarray
    saved: int
    now: int


def device_rows(saved: DeviceIds, registry: Registry) -> Rows:
    """Saved device rows onto the registry's rows of the same id, looked up in the registry's
    index in bulk (no dict of two million ids)."""
    if saved.has_duplicates():
        raise ValueError("the checkpoint lists a device id twice")
    target = registry.index.lookup(saved.words, saved.starts, saved.lengths)
    source = np.flatnonzero(target >= 0)
    return Rows(source, target[source], len(saved), len(registry))


def rows_by_id(saved_ids: list[str], ids: list[str], what: str) -> Rows:
    if len(set(saved_ids)) != len(saved_ids):
        raise ValueError(f"the checkpoint lists a {what} id twice")
    index = {key: i for i, key in enumerate(ids)}
    target = np.fromiter((index.get(key, -1) for key in saved_ids), dtype=np.int64,
                         count=len(saved_ids))
    source = np.flatnonzero(target >= 0)
    return Rows(source, target[source], len(saved_ids), len(ids))


def _saved_rows(path: Path, arrays: dict[str, np.ndarray], name: str, rows: Rows,
                like: np.ndarray) -> np.ndarray:
    """The saved array ``name``, checked to have a row per saved id shaped and typed as ``like``'s."""
    saved = arrays[name]
    shape = (rows.saved, *like.shape[1:])
    if saved.dtype != like.dtype or saved.shape != shape:
        raise CheckpointError(f"{path}: array {name} is {saved.dtype} {saved.shape}, "
                              f"expected {like.dtype} {shape}")
    return saved


def restore_rows(path: Path, arrays: dict[str, np.ndarray], names: tuple[str, ...], rows: Rows,
                  engine: Engine, notes: list[str], what: str) -> None:
    """Copy saved rows onto the engine's rows of the same id; note the ids dropped and new."""
    for name in names:
        mine = getattr(engine, name)
        mine[rows.target] = _saved_rows(path, arrays, name, rows, mine)[rows.source]
    if dropped := rows.saved - len(rows.source):
        notes.append(f"{_count(dropped, what)} in the checkpoint {_are(dropped)} no longer in the "
                     "registry; their state is dropped")
    if new := rows.now - len(rows.source):
        notes.append(f"{_count(new, 'registry ' + what)} {_are(new)} new since the checkpoint; "
                     "they start afresh")


def restore_rates(path: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any],
                   rows: dict[str, Rows]) -> RateState | None:
    """The decoder's rate windows by id onto the current rows (new rows start fresh)."""
    doc = meta.get("decoder_rate")
    if doc is None:
        return None
    moved = {}
    for attribute, (name, of, fill) in RATE_ARRAYS.items():
        restored = np.full(rows[of].now, fill, dtype=np.int64)
        restored[rows[of].target] = _saved_rows(path, arrays, name, rows[of], restored)[rows[of].source]
        moved[attribute] = restored
    clock = None if doc["clock"] is None else whole(doc["clock"])
    return RateState(window=whole(doc["window"]), clock=clock, **moved)


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def _are(n: int) -> str:
    return "is" if n == 1 else "are"


def whole(value: Any) -> int:
    if type(value) is not int:
        raise TypeError(f"expected an integer, found {value!r}")
    return value
