"""Month at risk (本月达标风险): from the ledger's month so far, can a street still make its threshold?

Evaluated on whole hours ``H`` from the ledger's closed hours ``[month start, H)`` — the numbers
any reviewer gets from the ledger for that range — for each contract × street × contract KPI:

* online rate (time weighted): ``a / b`` so far; ``R`` sample instants left in the month
  (``(month end − H) / Δ``); ``E`` devices expected now. Then

      best      = (a + E·R) / (b + E·R)          every device back now, none failing again
      projected = (a + r·E·R) / (b + E·R)        the recent level ``r``: the ledger's last 24 hours

  (daily method: ``R`` is the days left including today, ``a / b`` device-days);
* success rates: ``ok / tries`` so far, ``T = tries × (seconds left) / (seconds observed)``
  attempts still to come at the month's observed pace; best ``(ok + T) / (tries + T)``,
  projected ``(ok + r·T) / (tries + T)``.

**Level 2** (本月已无法达到阈值) only when ``best`` is below the threshold: it is never said
while every device coming back now would still pass. **Level 1** when ``projected`` is below.
Nothing is said before ``min_observed`` of the month (and ``min_elapsed``) has been observed.
The recent level ``r`` covers whole days, so that a night hour (cameras capture less well in the
dark) does not raise a risk every night: it is the ledger's level over the last 24 hours when
at least 18 of them were observed, else the month so far (then ``projected`` is ``a / b``).
The amount at risk is the payment rule's
deduction for the projected values (:func:`ptmon.payment.payment_for`).

Pure: the caller reads the ledger and the engine.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

from ..errors import ConfigError
from ..payment import payment_for
from ..results import KpiRow, Results
from ..rules import Contract, Rules
from ..timebase import DAY_US, US_PER_S, day_of, day_start
from .rules import MonthRiskRule


@dataclass(frozen=True, kw_only=True)
class MonthRisk:
    contract: str
    street: str
    kpi: str
    level: int  # 0 fine, 1 projected below, 2 unreachable
    threshold: Decimal
    as_of: int  # µs, a whole hour: the ledger's month so far ends here
    month_start: int
    month_end: int
    numerator: int  # the ledger's month so far
    denominator: int
    observed_seconds: int
    remaining: int  # sample instants (online) or seconds (success rates) left in the month
    future: Fraction  # device-samples or attempts still to come
    expected_now: int  # devices expected now (online rate)
    recent: Fraction | None  # the rate projected with; None: the month's own so far
    recent_window: int  # seconds
    best: Fraction
    projected: Fraction
    fee: Decimal | None = None
    at_risk: Decimal | None = None  # deduction for the projected values
    deduction_now: Decimal | None = None  # deduction were the month to end at as_of

    @property
    def month_value(self) -> Fraction | None:
        return Fraction(self.numerator, self.denominator) if self.denominator else None

    @property
    def days_left(self) -> Fraction:
        return Fraction(self.month_end - self.as_of, DAY_US)

    @property
    def observed_share(self) -> Fraction:
        return Fraction(self.observed_seconds * US_PER_S, self.month_end - self.month_start)


Recent = Mapping[tuple[str, str, str], tuple[Fraction, int]]  # (contract, street, kpi) -> (rate, window s)
RECENT_WINDOW = 86_400  # seconds: the recent level covers a whole day, night and day alike
RECENT_MIN_OBSERVED = 18 * 3600  # seconds of it observed, else the month so far is the level


def recent_levels(last_day: Results | None) -> dict[tuple[str, str, str], tuple[Fraction, int]]:
    """Each KPI's level over the ledger's last 24 hours (``last_day``), where enough was observed."""
    if last_day is None:
        return {}
    window = (last_day.end - last_day.start) // US_PER_S
    return {(r.contract, r.street, r.kpi): (Fraction(r.numerator, r.denominator), window)
            for r in last_day.rows if r.denominator and r.observed_seconds >= RECENT_MIN_OBSERVED}


def month_risks(so_far: Results, rules: Rules, setting: MonthRiskRule, *, as_of: int, month_end: int,
                expected_now: Mapping[tuple[str, str], int], recent: Recent) -> Iterator[MonthRisk]:
    """Every contract KPI of every street, with its level (0 included, for resolution)."""
    for contract in rules.contracts:
        observed = int(so_far.coverage.get(contract.code, {}).get("observed_seconds", 0))
        share = Fraction(observed * US_PER_S, month_end - so_far.start)
        if share < Fraction(setting.min_observed) or observed < setting.min_elapsed or observed == 0:
            continue
        for street in rules.street_codes():
            yield from _street(so_far, contract, street, observed, as_of=as_of, month_end=month_end,
                               expected=expected_now.get((contract.code, street), 0), recent=recent)


def _street(so_far: Results, contract: Contract, street: str, observed: int, *, as_of: int, month_end: int,
            expected: int, recent: Recent) -> Iterator[MonthRisk]:
    risks, projected_rows, now_rows = [], [], []
    for kpi in contract.kpis:
        row = so_far.row(contract.code, street, kpi.code)
        now_rows.append(row)
        if kpi.informational or not row.denominator:
            continue
        if kpi.code == "online":
            remaining = _online_remaining(contract, as_of, month_end)
            future = Fraction(expected * remaining)
        else:
            remaining = (month_end - as_of) // US_PER_S
            future = Fraction(row.denominator * remaining, observed)
        rate, window = recent.get((contract.code, street, kpi.code), (None, 0))
        best = (row.numerator + future) / (row.denominator + future)
        pace = rate if rate is not None else Fraction(row.numerator, row.denominator)
        projected = (row.numerator + pace * future) / (row.denominator + future)
        threshold = Fraction(kpi.threshold)
        level = 2 if best < threshold else 1 if projected < threshold else 0
        projected_rows.append(_row(row, projected))
        risks.append(MonthRisk(
            contract=contract.code, street=street, kpi=kpi.code, level=level, threshold=kpi.threshold, as_of=as_of,
            month_start=so_far.start, month_end=month_end, numerator=row.numerator, denominator=row.denominator,
            observed_seconds=observed, remaining=remaining, future=future, expected_now=expected, recent=rate,
            recent_window=window, best=best, projected=projected))
    if not risks:
        return
    fee, at_risk = _deduction(contract, street, projected_rows + [r for r in now_rows if r.kpi not in
                                                                 {p.kpi for p in projected_rows}])
    _, now = _deduction(contract, street, now_rows)
    for risk in risks:
        yield MonthRisk(**{**risk.__dict__, "fee": fee, "at_risk": at_risk, "deduction_now": now})


def _online_remaining(contract: Contract, as_of: int, month_end: int) -> int:
    if contract.online_method == "daily":
        return (month_end - day_start(day_of(as_of))) // DAY_US
    interval = contract.sample_interval * US_PER_S
    return (month_end - as_of + interval - 1) // interval


def _row(row: KpiRow, value: Fraction) -> KpiRow:
    return KpiRow(contract=row.contract, street=row.street, kpi=row.kpi, numerator=value.numerator,
                  denominator=value.denominator, threshold=row.threshold,
                  expected_device_samples=row.expected_device_samples, observed_seconds=row.observed_seconds)


def _deduction(contract: Contract, street: str, rows: list[KpiRow]) -> tuple[Decimal | None, Decimal | None]:
    try:
        line = payment_for(contract, street, rows)
    except ConfigError:  # no payment rule or fee for the street: the risk is still worth saying
        return None, None
    return line.fee, line.deduction
