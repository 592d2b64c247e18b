"""Device health (设备健康): devices online but no longer doing their job, and KPI rollups.

``engine → monitor → anomalies → ledger, InfluxDB, alerts, report``, one module per concern:

* :mod:`.rules` — ``rules/anomaly.yaml``;
* :mod:`.shapes`, :mod:`.cameras`, :mod:`.sensors` — baselines and detectors (blind, degraded, stuck);
* :mod:`.cusum` — the evidence the detectors share;
* :mod:`.monitor` — the engine listener that drives them on engine time;
* :mod:`.state` — its state in the checkpoint, by device id;
* :mod:`.rollup` — ``sla_type`` and ``sla_community`` points; :mod:`.points` — ``anomaly`` points;
* :mod:`.ledger` — the ``anomalies`` table; :mod:`.metrics` — Prometheus counts.

:class:`DeviceHealth` attaches what a pipeline needs to an engine: the live collector all of it, a
recomputation from the archive (``ledger rebuild``, ``report --from-archive``) the monitor alone.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..engine import Engine
from .monitor import AnomalyMonitor
from .points import anomaly_line, change_lines
from .records import Anomaly
from .rollup import Rollups
from .rules import AnomalyRules
from .state import restore_state, state_arrays

OnAnomalies = Callable[[list[Anomaly]], None]
EmitLines = Callable[[list[str]], None]


class DeviceHealth:
    """The monitor (and with ``emit_points`` the rollups) on ``engine``, restored from ``saved``
    (a checkpoint's or snapshot's extensions) when given; ``on_anomalies`` gets every change."""

    def __init__(self, engine: Engine, rules: AnomalyRules, *, on_anomalies: OnAnomalies | None = None,
                 emit_points: EmitLines | None = None, saved: dict[str, np.ndarray] | None = None) -> None:
        self.rules = rules
        self.on_anomalies = on_anomalies
        self.emit_points = emit_points
        self.monitor = AnomalyMonitor(engine, rules, emit=self._changed)
        self.rollups = Rollups(engine, rules.rollup_interval, self._rollup_lines, self.monitor) if emit_points else None
        self.notes: list[str] = []
        if saved is not None:
            self.notes = restore_state(self.monitor, saved)
            if self.rollups is not None:
                self.rollups.restore(saved)

    def _changed(self, changes: list[Anomaly]) -> None:
        if self.on_anomalies is not None:
            self.on_anomalies(changes)
        if self.emit_points is not None:
            self.emit_points(change_lines(changes))

    def _rollup_lines(self, lines: list[str], stamp: int) -> None:
        """The interval's rollups, and a point per anomaly open at its end (the dashboards' list)."""
        assert self.emit_points is not None
        opened = [anomaly_line(a, stamp, open_=True) for a in self.monitor.open_anomalies()]
        self.emit_points(lines + [x for x in opened if x])

    def state_arrays(self) -> dict[str, np.ndarray]:
        """For the checkpoint and the month-start snapshot (applies what the monitor holds first)."""
        arrays = state_arrays(self.monitor)
        if self.rollups is not None:
            arrays |= self.rollups.state_arrays()
        return arrays


__all__ = ["Anomaly", "AnomalyMonitor", "AnomalyRules", "DeviceHealth"]
