"""The payment rule (付款与扣款): what a street's contractor is paid for a month.

For a contract × street, with the contract's ``payment`` section (rules/contracts.yaml):

    deduction fraction = min(cap, Σ over the contract's KPIs of
                                  max(0, threshold − value) × 100 × rate_per_point)
    deduction          = fee × deduction fraction, rounded half-up to 0.01 yuan
    payable            = fee − deduction

Only contract KPIs count (not ``informational`` ones such as face and plate beside capture).
Values are the exact fractions of :class:`~ptmon.results.KpiRow`, so a shortfall is
exact too: 0.9499999995 against 0.95 is 0.0000000005 points, never rounded away or up.

The deduction is rounded, once, and the payable is what remains, so deduction + payable
equals the fee to the fen in every line and in every sum of lines.

A KPI with no value (nothing expected: no device under lease, no attempt counted) deducts
nothing; the line lists it in ``undetermined`` so the report can say that a reviewer must
decide it. A street without any such KPI row is treated the same way.

Pure: no I/O; the report and the month-at-risk alert both call :func:`payment_for`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

from .errors import ConfigError
from .results import KpiRow
from .rules import Contract

FEN = Decimal("0.01")


@dataclass(frozen=True, kw_only=True)
class Shortfall:
    """One contract KPI below its threshold: by how many percentage points (exact)."""

    kpi: str
    threshold: Decimal
    value: Fraction
    points: Fraction  # (threshold − value) × 100


@dataclass(frozen=True, kw_only=True)
class PaymentLine:
    """A contract × street's payment for the period (or the sum of several: see :func:`total`)."""

    contract: str
    street: str
    fee: Decimal
    deduction_fraction: Fraction  # exact, after the cap (0 for a sum of lines)
    deduction: Decimal  # yuan, half-up to the fen
    payable: Decimal  # fee − deduction
    shortfalls: tuple[Shortfall, ...] = ()
    undetermined: tuple[str, ...] = ()  # contract KPIs without a value: no deduction, to be decided
    capped: bool = False  # the cap cut the deduction

    def deduction_percent_text(self, decimals: int = 4) -> str:
        """The deduction fraction in per cent, half-up to ``decimals`` places."""
        return _half_up_text(self.deduction_fraction * 100, decimals)


def payment_for(contract: Contract, street: str, rows: Iterable[KpiRow]) -> PaymentLine:
    """The payment of ``street`` under ``contract`` from its KPI rows (others in ``rows`` are ignored).

    Raises :class:`ConfigError` when the contract has no payment rule or no fee for the street.
    """
    rule = contract.payment
    if rule is None:
        raise ConfigError(f"contracts.yaml: {contract.code}.payment is missing: no payment rule for this contract")
    fee = rule.fee(street)
    if fee is None:
        raise ConfigError(f"contracts.yaml: {contract.code}.payment.fees.{street} is missing")
    mine = {r.kpi: r for r in rows if r.contract == contract.code and r.street == street}
    shortfalls, undetermined = [], []
    for kpi in contract.kpis:
        if kpi.informational:
            continue
        row = mine.get(kpi.code)
        value = row.value if row is not None else None
        if value is None:
            undetermined.append(kpi.code)
            continue
        threshold = Fraction(kpi.threshold)
        if value < threshold:
            shortfalls.append(Shortfall(kpi=kpi.code, threshold=kpi.threshold, value=value,
                                        points=(threshold - value) * 100))
    uncapped = sum((s.points for s in shortfalls), Fraction(0)) * Fraction(rule.rate_per_point)
    fraction = min(Fraction(rule.cap), uncapped)
    deduction = round_fen(Fraction(fee) * fraction)
    return PaymentLine(
        contract=contract.code, street=street, fee=fee, deduction_fraction=fraction,
        deduction=deduction, payable=fee - deduction, shortfalls=tuple(shortfalls),
        undetermined=tuple(undetermined), capped=uncapped > fraction,
    )


def total(lines: Sequence[PaymentLine], *, contract: str, street: str = "district") -> PaymentLine:
    """The sum of several lines (a contract's district total): fees, deductions and payables
    added, so the total's deduction + payable = fee still holds exactly. The fraction shown
    is the deduction's share of the fees, exact."""
    fee = sum((line.fee for line in lines), Decimal(0))
    deduction = sum((line.deduction for line in lines), Decimal(0))
    return PaymentLine(
        contract=contract, street=street, fee=fee,
        deduction_fraction=Fraction(deduction) / Fraction(fee) if fee else Fraction(0),
        deduction=deduction, payable=fee - deduction,
        undetermined=tuple(sorted({k for line in lines for k in line.undetermined})),
    )


def round_fen(amount: Fraction) -> Decimal:
    """A non-negative exact amount in yuan, rounded half-up to 0.01 (四舍五入到分)."""
    if amount < 0:
        raise ValueError(f"negative amount {amount}")
    fen = (2 * amount.numerator * 100 + amount.denominator) // (2 * amount.denominator)
    return (Decimal(fen) / 100).quantize(FEN)


def _half_up_text(value: Fraction, decimals: int) -> str:
    scale = 10**decimals
    scaled = (2 * value.numerator * scale + value.denominator) // (2 * value.denominator)
    return f"{scaled // scale}.{scaled % scale:0{decimals}d}" if decimals else str(scaled)
