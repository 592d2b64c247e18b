"""The devices an alert email lists, read from the engine at the notification instant.

Per device: id, type, community (小区), gateway, its last heartbeat and since when it is
offline (its last heartbeat timing out), both as engine instants (the email formats them to
the second, Shanghai time); for a success-rate breach, what the device did in the alert's
window — attempts, successes and their rate — rather than its counters since boot.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import numpy as np

from ..engine import NEVER, Engine
from ..timebase import day_of
from .observe import Observations

WORST = 20


def device_rows(engine: Engine, rows: np.ndarray, t: int) -> list[dict[str, Any]]:
    registry = engine.registry
    rules = registry.rules
    out = []
    for i in rows.tolist():
        heard = int(engine.last_heartbeat[i])
        online = bool(engine.online_until[i] > t)
        out.append({
            "device": registry.ids[i],
            "type": rules.types[int(registry.type[i])].name,
            "street": rules.streets[int(registry.street[i])].code,
            "contract": rules.contracts[int(registry.contract[i])].code,
            "community": registry.communities[int(registry.community[i])],
            "gateway": registry.gateways[int(registry.gateway[i])],
            "last_heartbeat": heard if heard != NEVER else None,
            "offline_since": None if online or heard == NEVER else int(engine.online_until[i]),
            "online": online,
        })
    return out


def group_rows(engine: Engine, ci: int, si: int) -> np.ndarray:
    """Registry rows of a contract × street (the registry keeps each group contiguous)."""
    group = ci * engine.n_streets + si
    bounds = engine.registry.group_bounds
    return np.arange(int(bounds[group]), int(bounds[group + 1]))


def offline_devices(engine: Engine, ci: int, si: int, t: int, *, exclude_dead_gateways: bool) -> list[dict[str, Any]]:
    """The street's expected devices offline at ``t``, offline longest first."""
    rows = group_rows(engine, ci, si)
    expected = _expected(engine, ci, rows, t)
    offline = rows[expected & (engine.online_until[rows] <= t)]
    if exclude_dead_gateways:
        offline = offline[engine.gateway_online[engine.registry.gateway[offline]]]
    order = np.argsort(engine.online_until[offline], kind="stable")
    return device_rows(engine, offline[order], t)


def silent_devices(engine: Engine, ci: int, si: int, t: int) -> list[dict[str, Any]]:
    """The street's expected devices behind a live gateway (those a street silence is about),
    longest unheard first."""
    rows = group_rows(engine, ci, si)
    rows = rows[_expected(engine, ci, rows, t)]
    rows = rows[engine.gateway_online[engine.registry.gateway[rows]]]
    return device_rows(engine, rows[np.argsort(engine.last_heartbeat[rows], kind="stable")], t)


def worst_success(engine: Engine, observations: Observations, ci: int, si: int, kpi: str, window: int,
                  t: int) -> tuple[int, list[dict[str, Any]]]:
    """(window start used, the devices with the lowest success rate in the window, worst first)."""
    sl = engine.contract_slices[ci]
    rows = group_rows(engine, ci, si)
    local = rows - sl.start
    start, ok, tries, known = observations.snapshots.deltas(ci, kpi, local, window, t)
    has = known & (tries > 0)
    rate = np.where(has, ok / np.maximum(tries, 1), 2.0)
    order = np.argsort(rate, kind="stable")
    order = order[has[order]][:WORST]
    table = device_rows(engine, rows[order], t)
    for entry, i in zip(table, order.tolist()):
        entry["tries"], entry["ok"] = int(tries[i]), int(ok[i])
        entry["rate"] = Fraction(int(ok[i]), int(tries[i]))
    return start, table


def _expected(engine: Engine, ci: int, rows: np.ndarray, t: int) -> np.ndarray:
    sl = engine.contract_slices[ci]
    mask, _ = engine.expected_by_street(ci, day_of(t))
    expected = mask[rows - sl.start]
    exempt = engine.exemptions.at(t) if engine.exemptions is not None else None
    if exempt is not None:
        expected = expected & ~exempt[rows]
    return expected


def expected_now(engine: Engine, ci: int, si: int, t: int) -> int:
    return int(np.count_nonzero(_expected(engine, ci, group_rows(engine, ci, si), t)))


def anomaly_details(engine: Engine, monitor: Any, key: Any) -> dict[str, Any]:
    """A device alert's device, and its anomaly's figures this month (from the device-health monitor)."""
    registry = engine.registry
    row = registry.index.get(key.device)
    if row is None:
        return {"table": []}
    entry = device_rows(engine, np.array([row]), 0)[0]
    found = [a for a in monitor.open_anomalies() if a.device == key.device and a.kind == key.kpi] if monitor else []
    if found:
        a = found[0]
        entry.update(anomaly=a.kind, anomaly_since=a.start, detected=a.detected, attempts=a.attempts,
                     successes=a.successes, expected_attempts=a.expected_attempts, expected_successes=a.expected_successes)
    else:
        entry.update(anomaly=key.kpi)
    return {"table": [entry]}
