"""A closed month's report: its version (第 N 版), the versions before it, and what changed.

A report rendered from a sealed closing (:mod:`ptmon.report.sealed`) carries a
:class:`ClosingInfo`: the version, its seal (the SHA-256 the signed copy pins), who closed it and
when, and for a restatement the previous version's KPI rows and money beside this version's,
with what changed and why. :func:`compare` lines them up per street and KPI, and per street's
money to the fen; every format renders those same lines.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

from ..results import KpiRow


@dataclass(frozen=True, kw_only=True)
class VersionSummary:
    """One version of the month as the version history lists it."""

    version: int
    closed_at: int  # µs
    closed_by: str
    reason: str
    seal: str
    payable: Decimal | None  # the contract's district total; None without a payment rule


@dataclass(frozen=True, kw_only=True)
class MoneyFigures:
    street: str
    fee: Decimal
    deduction: Decimal
    payable: Decimal


@dataclass(frozen=True, kw_only=True)
class ChangeLine:
    """One input that changed since the previous version, and the payable it moved (on top of
    the changes listed before it)."""

    title: str
    details: tuple[str, ...]
    payable_delta: Decimal


@dataclass(frozen=True, kw_only=True)
class ClosingInfo:
    contract: str
    version: int
    seal: str
    closed_at: int
    closed_by: str
    reason: str  # why this version was made ('' for the first)
    gaps_accepted: bool  # the closing accepted a coverage below 100 %: the amounts are not provisional
    gaps_accepted_by: str = ""  # who accepted them
    gaps_accepted_in: int = 0  # in which version (this one, or an earlier one whose gaps these are)
    late: str  # what the late heartbeats did, one sentence
    history: tuple[VersionSummary, ...]  # versions 1 … this one
    previous_rows: tuple[KpiRow, ...] = ()  # the previous version's KPI rows (a restatement)
    previous_money: tuple[MoneyFigures, ...] = ()
    changes: tuple[ChangeLine, ...] = ()

    @property
    def label(self) -> str:
        return f"第 {self.version} 版"

    @property
    def gaps_note(self) -> str:
        """Who accepted the monitoring gaps, and when (the sealing of this version or of an earlier one)."""
        when = "于封存时" if self.gaps_accepted_in in (0, self.version) else f"于第 {self.gaps_accepted_in} 版封存时"
        return f"监测缺口已由 {self.gaps_accepted_by or self.closed_by} {when}审核认定"

    @property
    def restated(self) -> bool:
        return self.version > 1

    @property
    def previous_label(self) -> str:
        return f"第 {self.version - 1} 版"


@dataclass(frozen=True, kw_only=True)
class KpiPair:
    street: str
    kpi: str
    before: KpiRow | None
    after: KpiRow | None

    @property
    def changed(self) -> bool:
        def key(r: KpiRow | None) -> tuple[int, int, int] | None:
            return None if r is None else (r.numerator, r.denominator, r.observed_seconds)

        return key(self.before) != key(self.after)

    @property
    def points(self) -> Fraction | None:
        """The change of the value in percentage points, exact; None when either has no value."""
        a = self.before.value if self.before else None
        b = self.after.value if self.after else None
        return None if a is None or b is None else (b - a) * 100


@dataclass(frozen=True, kw_only=True)
class MoneyPair:
    street: str
    before: MoneyFigures | None
    after: MoneyFigures | None

    @property
    def deduction_delta(self) -> Decimal:
        return (self.after.deduction if self.after else Decimal(0)) - (self.before.deduction if self.before else Decimal(0))

    @property
    def payable_delta(self) -> Decimal:
        return (self.after.payable if self.after else Decimal(0)) - (self.before.payable if self.before else Decimal(0))

    @property
    def changed(self) -> bool:
        return self.before != self.after


def compare(info: ClosingInfo, rows: list[KpiRow], money: list[MoneyFigures]) -> tuple[list[KpiPair], list[MoneyPair]]:
    """The previous version's figures beside this version's, in this version's order."""
    old = {(r.street, r.kpi): r for r in info.previous_rows}
    new = {(r.street, r.kpi): r for r in rows if r.contract == info.contract}
    keys = list(dict.fromkeys([*new, *old]))
    kpis = [KpiPair(street=s, kpi=k, before=old.get((s, k)), after=new.get((s, k))) for s, k in keys]
    kpis = [p for p in kpis if (p.before and p.before.denominator) or (p.after and p.after.denominator)]  # no data in either
    old_money = {m.street: m for m in info.previous_money}
    new_money = {m.street: m for m in money}
    streets = list(dict.fromkeys([*new_money, *old_money]))
    return kpis, [MoneyPair(street=s, before=old_money.get(s), after=new_money.get(s)) for s in streets]


def signed_money(value: Decimal) -> str:
    """``+1,234.56`` / ``-0.01`` / ``0.00``."""
    return "0.00" if value == 0 else f"{value:+,.2f}"


def signed_points(value: Fraction | None, decimals: int = 4) -> str:
    """A change in percentage points, half-up: ``+1.2345``, ``-0.0001``, ``0``; ``—`` without values."""
    if value is None:
        return "—"
    if value == 0:
        return "0"
    scale = 10**decimals
    magnitude = abs(value)
    scaled = (2 * magnitude.numerator * scale + magnitude.denominator) // (2 * magnitude.denominator)
    return f"{'+' if value > 0 else '-'}{scaled // scale}.{scaled % scale:0{decimals}d}"
