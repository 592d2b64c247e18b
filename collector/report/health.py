"""设备健康（在线但失效）: the month's anomalies per street, and what they cost the street's figures.

A blind camera, a degraded one or a stuck sensor is online, so the online rate does not show it;
what it costs shows in the success KPI's counts. Per street of a contract, from the ledger's
``anomalies`` rows of the month (each with its counts inside the month, and what the device's own
baseline expected of the same messages):

* ``missing_attempts``: attempts (captures, reads) the devices should have made and did not — a
  blind camera's lost captures;
* ``missing_successes``: successes below what their baselines expected (lost captures, failed reads);
* the street's success KPI as measured (Σ ok / Σ tries of the month) and *had these devices worked
  as their baselines*: (Σ ok + missing successes) / (Σ tries + missing attempts). The difference is
  what the anomalies cost the street's rate; it is shown for the reviewers, never paid on.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from ..anomaly.records import Anomaly
from ..results import Results
from ..rules import Contract


@dataclass(frozen=True, kw_only=True)
class StreetHealth:
    code: str
    anomalies: list[Anomaly]
    tries: int  # the street's month sums of the contract's success KPI
    ok: int
    missing_attempts: float
    missing_successes: float

    @property
    def measured(self) -> Fraction | None:
        return Fraction(self.ok, self.tries) if self.tries else None

    @property
    def at_baseline(self) -> Fraction | None:
        """The street's rate had its anomalous devices worked as their own baselines."""
        tries = self.tries + round(self.missing_attempts)
        return Fraction(self.ok + round(self.missing_successes), tries) if tries else None

    def count(self, kind: str) -> int:
        return len({a.device for a in self.anomalies if a.kind == kind})


def success_kpi(contract: Contract) -> str | None:
    """The contract KPI whose counts the anomalies touch (capture for cameras, sensing for sensors)."""
    codes = [k.code for k in contract.kpis if not k.informational]
    return next((k for k in ("capture", "sensing", "face", "plate") if k in codes), None)


def street_health(anomalies: list[Anomaly], results: Results, contract: Contract, streets: list[str]) -> list[StreetHealth]:
    """The streets of ``contract`` that had an anomaly this month, in street order."""
    kpi = success_kpi(contract)
    by_street: dict[str, list[Anomaly]] = {}
    for a in anomalies:
        if a.contract == contract.code:
            by_street.setdefault(a.street, []).append(a)
    out = []
    for street, found in by_street.items():
        row = next((r for r in results.rows if r.contract == contract.code and r.street == street and r.kpi == kpi), None)
        out.append(StreetHealth(code=street, anomalies=sorted(found, key=lambda a: (a.kind, a.start, a.device)),
                                tries=row.denominator if row else 0, ok=row.numerator if row else 0,
                                missing_attempts=sum(a.missing_attempts for a in found),
                                missing_successes=sum(a.missing_successes for a in found)))
    order = {code: i for i, code in enumerate(streets)}
    return sorted(out, key=lambda s: (order.get(s.code, len(order)), s.code))
