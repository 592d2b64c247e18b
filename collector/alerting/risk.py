"""Month at risk: from the month-to-date sums, can the street still make its threshold?

For each contract × street × contract KPI, with ``R`` the sample instants left in the month
and ``E`` the devices expected now (online), or ``T`` the attempts expected in the rest of the
month at the month's pace so far (success rates):

* **unreachable** (level 2): even if every device came back now and every attempt succeeded,
  (Σ ok + E·R) / (Σ expected + E·R) < threshold;
* **projected** (level 1): at the current rate (the alert rule's trailing window), the month
  ends below the threshold.

The lease amount at risk is the deduction the contract's payment rule gives for the
projected month values (:mod:`ptmon.payment`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from ..results import KpiRow
from ..tally import Tally
from ..timebase import US_PER_S

if TYPE_CHECKING:
    from .evaluate import AlertEvaluator


@dataclass(frozen=True, kw_only=True)
class MonthRisk:
    contract: str
    street: str
    kpi: str
    level: int  # 1 projected below, 2 unreachable
    threshold: Decimal
    month_value: Fraction | None
    best: Fraction
    projected: Fraction
    fee: Decimal | None
    at_risk: Decimal | None  # deduction in yuan under the projected values

    def details(self) -> dict[str, Any]:
        return {"level": self.level, "best": self.best, "projected": self.projected, "fee": self.fee,
                "at_risk": self.at_risk, "month": self.month_value}


def month_risks(evaluator: AlertEvaluator, tally: Tally, t: int, month_end: int) -> Iterator[MonthRisk]:
    engine = evaluator.engine
    rules = engine.registry.rules
    results = evaluator.sla.latest
    if results is None:
        return
    elapsed = (t - tally.start) // US_PER_S
    if elapsed < evaluator.alert_rules.month_risk_min_elapsed:
        return
    observed_rules = {(r.contract, r.kpi): r for r in evaluator.alert_rules.rules}
    for ci, contract in enumerate(rules.contracts):
        interval = contract.sample_interval * US_PER_S
        remaining = max(0, (month_end - t) // interval)
        samples = evaluator.samples.get(ci)
        for si, street in enumerate(evaluator.streets):
            projected_rows: list[KpiRow] = []
            risks: list[tuple[Any, int, Fraction, Fraction]] = []
            for kpi in contract.kpis:
                if kpi.informational:
                    continue
                row = results.row(contract.code, street, kpi.code)
                rule = observed_rules.get((contract.code, kpi.code))
                recent = evaluator._window_rate(ci, si, rule, t) if rule is not None else None
                if kpi.code == "online":
                    now_expected = int(samples[-1][2][si]) if samples else 0
                    extra = now_expected * remaining
                else:
                    extra = row.denominator * (month_end - t) // max(1, t - tally.start)
                if row.denominator + extra == 0:
                    continue
                best = Fraction(row.numerator + extra, row.denominator + extra)
                rate = recent if recent is not None else (row.value if row.value is not None else Fraction(1))
                projected = (row.numerator + rate * extra) / (row.denominator + extra)
                projected_rows.append(KpiRow(
                    contract=contract.code, street=street, kpi=kpi.code, numerator=projected.numerator,
                    denominator=projected.denominator, threshold=kpi.threshold,
                    expected_device_samples=row.expected_device_samples, observed_seconds=row.observed_seconds))
                level = 2 if best < kpi.threshold else 1 if projected < kpi.threshold else 0
                if level:
                    risks.append((kpi, level, best, projected))
            if not risks:
                continue
            fee, at_risk = _at_risk(contract, street, projected_rows)
            for kpi, level, best, projected in risks:
                yield MonthRisk(contract=contract.code, street=street, kpi=kpi.code, level=level,
                                threshold=kpi.threshold, month_value=results.row(contract.code, street, kpi.code).value,
                                best=best, projected=projected, fee=fee, at_risk=at_risk)


def _at_risk(contract: Any, street: str, rows: list[KpiRow]) -> tuple[Decimal | None, Decimal | None]:
    try:
        from ..payment import payment_for
    except ImportError:  # pragma: no cover - the payment rule ships with the report
        return None, None
    try:
        line = payment_for(contract, street, rows)
    except Exception:  # noqa: BLE001 - a missing fee must not stop alerting
        return None, None
    return line.fee, line.deduction
