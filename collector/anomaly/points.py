"""The ``anomaly`` measurement: one point when an anomaly opens or closes, and one per open anomaly
at every rollup interval (so a dashboard lists what is open now without scanning history).

Tags ``contract, street, type, kind, device`` (the device tag: this measurement only ever holds the
devices that had an anomaly); fields ``community``, ``gateway`` (strings), ``since`` and ``detected``
(unix seconds), ``open`` (1 open, 0 closed), ``attempts``, ``successes``, ``expected_attempts``,
``expected_successes`` (this month's counts of the anomaly so far: reads for a sensor).
"""

from __future__ import annotations

from ..sinks.lineproto import FieldValue, line
from ..timebase import US_PER_S
from .records import Anomaly


def anomaly_line(a: Anomaly, at: int, *, open_: bool) -> str | None:
    tags = {"contract": a.contract, "street": a.street, "type": a.type, "kind": a.kind, "device": a.device}
    fields: dict[str, FieldValue] = {"community": a.community, "gateway": a.gateway, "since": a.start // US_PER_S,
              "detected": a.detected // US_PER_S, "open": int(open_), "attempts": float(a.attempts),
              "successes": float(a.successes), "expected_attempts": round(float(a.expected_attempts), 3),
              "expected_successes": round(float(a.expected_successes), 3)}
    return line("anomaly", tags, fields, at)


def change_lines(changes: list[Anomaly]) -> list[str]:
    """Points of anomalies raised (at their detection) and cleared (at their end); a month's
    figures written at its end are no change."""
    out = [anomaly_line(a, a.end if a.end is not None else a.detected, open_=a.end is None)
           for a in changes if a.event in ("raised", "cleared")]
    return [x for x in out if x]
