"""The monitor's state as checkpoint arrays, restored by device id.

Saved beside the engine's own arrays in the collector's checkpoint and in the month-start
snapshots (``ext.anomaly.*``, numeric arrays only: the file is read without pickle):

* ``anomaly.meta``: UTF-8 JSON as uint8: format version, the open hour and slot, the camera groups
  (type/street codes) the pooled shapes are kept for, and the open anomalies (kind, device id, since,
  detected);
* ``anomaly.camera_ids`` / ``anomaly.sensor_ids``: the device ids of the rows below, ``\\n``-joined;
* ``anomaly.camera.*``, ``anomaly.sensor.*``: one row per camera / sensor;
* ``anomaly.shapes.*``: one row per group.

A device that is new since the save starts learning; one no longer in the registry is dropped; a
group the rules no longer have is dropped. Everything derived (medians, judged flags) is recomputed.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from ..errors import CheckpointError
from .monitor import AnomalyMonitor, Opened

PREFIX = "anomaly."
VERSION = 1


def state_arrays(monitor: AnomalyMonitor) -> dict[str, np.ndarray]:
    """Everything the monitor needs to continue, after applying what it holds (no slot closes early)."""
    monitor.settle()
    ids = monitor.engine.registry.ids
    meta = {"version": VERSION, "hour": monitor.hour, "slot": monitor.slot, "groups": monitor.group_codes,
            "open": [[kind, ids[row], o.since, o.detected] for (kind, row), o in sorted(monitor.open.items())]}
    arrays = {"meta": _text(json.dumps(meta, ensure_ascii=False)),
              "camera_ids": _text("\n".join(ids[r] for r in monitor.camera_rows.tolist())),
              "sensor_ids": _text("\n".join(ids[r] for r in monitor.sensor_rows.tolist())),
              **{f"camera.{k}": v for k, v in monitor.cameras.arrays().items()},
              **{f"sensor.{k}": v for k, v in monitor.sensors.arrays().items()},
              **monitor.cameras.shapes.arrays()}
    return {PREFIX + name: array for name, array in arrays.items()}


def restore_state(monitor: AnomalyMonitor, saved: dict[str, np.ndarray]) -> list[str]:
    """Put saved arrays (the checkpoint's extensions) back by id; returns notes for the log."""
    mine = {name[len(PREFIX):]: a for name, a in saved.items() if name.startswith(PREFIX)}
    if not mine:
        return ["no device-health state in the checkpoint: every device starts learning"]
    try:
        return _restore(monitor, mine)
    except (KeyError, TypeError, ValueError, IndexError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"device-health state unreadable ({type(exc).__name__}: {exc})") from exc


def _restore(monitor: AnomalyMonitor, saved: dict[str, np.ndarray]) -> list[str]:
    meta: dict[str, Any] = json.loads(saved["meta"].tobytes().decode("utf-8"))
    if meta.get("version") != VERSION:
        raise ValueError(f"device-health state version {meta.get('version')!r}, this ptmon reads {VERSION}")
    ids = monitor.engine.registry.ids
    notes = []
    for kind, rows, target in (("camera", monitor.camera_rows, monitor.cameras),
                               ("sensor", monitor.sensor_rows, monitor.sensors)):
        source, dest, n_saved = _by_id(_ids(saved[f"{kind}_ids"]), [ids[r] for r in rows.tolist()])
        take = {}
        for name, current in target.arrays().items():  # every array one row per device
            array = saved[f"{kind}.{name}"]
            if array.dtype != current.dtype or array.shape[1:] != current.shape[1:] or len(array) != n_saved:
                raise ValueError(f"{kind}.{name} is {array.dtype} {array.shape}, expected {current.dtype} "
                                 f"({n_saved}, {', '.join(map(str, current.shape[1:]))})")
            fresh = np.array(current)
            fresh[dest] = array[source]
            take[name] = fresh
        target.restore(take)
        if n_saved - len(source) or len(rows) - len(dest):
            notes.append(f"device health: {len(rows) - len(dest)} new {kind}s start learning, "
                         f"{n_saved - len(source)} no longer in the registry dropped")
    shapes = monitor.cameras.shapes
    source, dest, _ = _by_id(list(meta["groups"]), monitor.group_codes)
    shapes.restore(saved["shapes.open"], saved["shapes.bins"], dest, source)
    monitor.hour = meta["hour"]
    monitor.slot = meta["slot"]
    index = monitor.engine.registry.index
    for kind, device, since, detected in meta["open"]:
        if device in index:
            monitor.open[str(kind), index[device]] = Opened(int(since), int(detected))
    return notes


def _by_id(saved_ids: list[str], ids: list[str]) -> tuple[np.ndarray, np.ndarray, int]:
    """(saved positions, current positions) of the ids in both, and how many were saved."""
    where = {key: i for i, key in enumerate(ids)}
    pairs = [(i, where[key]) for i, key in enumerate(saved_ids) if key in where]
    source = np.array([p[0] for p in pairs], dtype=np.int64)
    dest = np.array([p[1] for p in pairs], dtype=np.int64)
    return source, dest, len(saved_ids)


def _text(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).copy()


def _ids(blob: np.ndarray) -> list[str]:
    text = blob.tobytes().decode("utf-8")
    return text.split("\n") if text else []
