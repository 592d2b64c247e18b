"""A contract's month as a closing seals it, and how two versions of it differ.

The figures are read from a ledger — the real one, or a scratch one recomputed from the archive
(:func:`recomputed`) — with the exemptions given (applied when read, as always) and the late
heartbeats that count under the contract's rule added (:mod:`ptmon.month.late`). The result is
the report's :class:`~ptmon.report.model.ReportInputs` and the contract's money lines.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path

from ..errors import LedgerError
from ..ledger.read import ledger_daily, ledger_tally, ledger_warnings
from ..ledger.rebuild import Recomputed, recompute_month
from ..ledger.records import Exemption
from ..ledger.store import Ledger
from ..outputs import scratch_directory
from ..payment import PaymentLine, payment_for, total
from ..registry import Registry
from ..replay import Progress
from ..report.model import InputFile, ReportInputs
from ..report.status import last_observed
from ..results import KpiRow
from ..rules import Contract
from ..tally import DISTRICT
from ..timebase import day_of, day_to_date, month_bounds
from .late import LateCredit, LateHeartbeat, counted, late_credit, of_contract
from .room import disk_full, no_room
from .sealdoc import Money, money_of


@dataclass
class Figures:
    """One contract's month: the report's inputs (all contracts' KPI rows, this contract's daily
    figures and episodes), its money lines (streets, then the district), and the late credit."""

    contract: str
    inputs: ReportInputs
    money: list[PaymentLine]
    credit: LateCredit
    late: list[LateHeartbeat] = field(default_factory=list)  # the contract's late heartbeats found
    counted: list[LateHeartbeat] = field(default_factory=list)  # of those, the ones that count

    def rows(self) -> list[KpiRow]:
        return [r for r in self.inputs.results.rows if r.contract == self.contract]

    def money_by_street(self) -> dict[str, Money]:
        return money_of(self.money)


def month_figures(ledger: Ledger, registry: Registry, month: str, contract: str, exemptions: Sequence[Exemption],
                  late: Sequence[LateHeartbeat], *, source: str, made_at: int, files: Sequence[InputFile] = ()) -> Figures:
    """The figures of ``contract`` for ``month`` from ``ledger``."""
    start, end = month_bounds(month)
    terms = registry.rules.contract(contract)
    mine = of_contract(late, registry, contract)
    counting = counted(mine, registry, terms, month)
    credit = late_credit(ledger, registry, month, terms, counting, exemptions)
    tally = ledger_tally(ledger, registry, start, end, exemptions)
    ci = [c.code for c in registry.rules.contracts].index(contract)
    streets = registry.rules.street_codes()
    for street, n in credit.by_street().items():
        tally.online[ci, streets.index(street)] += n
    results = tally.results()
    daily = [d for d in ledger_daily(ledger, registry, start, end, exemptions) if d.contract == contract]
    daily = _with_credit(daily, credit)
    digest = hashlib.sha256("".join(f"{f.role}\0{f.sha256}\n" for f in files).encode()).hexdigest()
    inputs = ReportInputs(
        month=month, start=start, end=end, source=source, rules=registry.rules, registry=registry, results=results,
        daily=daily, exemptions=list(exemptions), episodes=[e for e in ledger.episodes(start, end) if e.contract == contract],
        files=list(files), digest=digest, warnings=ledger_warnings(ledger, registry, start, end), made_at=made_at,
        observed_until=last_observed(ledger.spans(), start, end))
    return Figures(contract=contract, inputs=inputs, money=money_lines(terms, results.rows, streets), credit=credit,
                   late=mine, counted=counting)


def _with_credit(daily: list, credit: LateCredit) -> list:
    """The daily online numerators with the late credit of each street and day (and the district's)."""
    if not credit.samples:
        return daily
    extra: dict[tuple[str, object], int] = {}
    for (street, day), n in credit.samples.items():
        for key in ((street, day_to_date(day)), (DISTRICT, day_to_date(day))):
            extra[key] = extra.get(key, 0) + n
    return [replace(d, numerator=d.numerator + extra.get((d.street, d.day), 0)) if d.kpi == "online" else d for d in daily]


def money_lines(contract: Contract, rows: Sequence[KpiRow], streets: Sequence[str]) -> list[PaymentLine]:
    """The payment of every street and their total (the district line); [] without a payment rule."""
    if contract.payment is None:
        return []
    lines = [payment_for(contract, street, rows) for street in streets]
    return [*lines, total(lines, contract=contract.code)]


# --- recomputation from the archive --------------------------------------------------------------

@contextmanager
def recomputed(archive_dirs: Sequence[Path], registry: Registry, month: str, beside: Path,
               progress: Callable[[Progress], None] | None = None) -> Iterator[tuple[Ledger, Recomputed]]:
    """A scratch ledger holding ``month`` recomputed from the archive (deleted afterwards); a full
    disk under ``beside`` is one clear error."""
    with ExitStack() as stack:
        try:
            scratch = stack.enter_context(scratch_directory("ptmon-month-", beside))
            ledger = stack.enter_context(Ledger(Path(scratch) / "recomputed.sqlite"))
            done = recompute_month(list(archive_dirs), registry, month, ledger, progress=progress)
        except (OSError, sqlite3.DatabaseError, LedgerError) as exc:
            if no_room(exc, beside):
                raise disk_full(beside, f"recomputing {month} from the archive into a scratch ledger") from exc
            raise
        yield ledger, done


def ledger_month_digest(ledger: Ledger, month: str) -> str:
    """SHA-256 of the ledger rows a month's figures are read from (hours, days, message counts,
    unknown topics, device status changes, observed spans clipped to the month): equal digests,
    equal figures for any exemptions."""
    start, end = month_bounds(month)
    digest = hashlib.sha256()
    for item in (*ledger.hours(start, end), *ledger.days(day_of(start), day_of(end)), *ledger.counts(start, end)):
        digest.update(repr(item).encode())
    digest.update(repr(sorted(ledger.unknown_topics(start, end).items())).encode())
    for row in ledger.db.execute("SELECT device, t, online FROM status WHERE t >= ? AND t < ? ORDER BY device, t",
                                 (start, end)):
        digest.update(repr(row).encode())
    for a, b in ledger.spans():
        if a < end and b >= start:
            digest.update(repr((max(a, start), min(b, end))).encode())
    return digest.hexdigest()


# --- differences between versions ------------------------------------------------------------------

@dataclass(frozen=True)
class KpiChange:
    street: str
    kpi: str
    before: KpiRow | None
    after: KpiRow | None


@dataclass(frozen=True)
class MoneyChange:
    street: str
    before: Money | None
    after: Money | None

    @property
    def payable_delta(self) -> Decimal:
        return (self.after.payable if self.after else Decimal(0)) - (self.before.payable if self.before else Decimal(0))

    @property
    def deduction_delta(self) -> Decimal:
        return (self.after.deduction if self.after else Decimal(0)) - (self.before.deduction if self.before else Decimal(0))


@dataclass
class Difference:
    kpis: list[KpiChange]
    money: list[MoneyChange]  # streets, then the district when it changed

    @property
    def none(self) -> bool:
        return not self.kpis and not self.money

    def payable_delta(self) -> Decimal:
        """The district's payable after − before (the sum of the streets')."""
        return sum((m.payable_delta for m in self.money if m.street != DISTRICT), Decimal(0))


def difference(before_rows: Sequence[KpiRow], before_money: dict[str, Money], after_rows: Sequence[KpiRow],
               after_money: dict[str, Money]) -> Difference:
    """KPI rows whose sums changed, and money lines whose deduction or payable changed."""
    def key(r: KpiRow) -> tuple[int, int, int]:
        return (r.numerator, r.denominator, r.observed_seconds)

    old = {(r.street, r.kpi): r for r in before_rows}
    new = {(r.street, r.kpi): r for r in after_rows}
    order = list(dict.fromkeys([*old, *new]))
    kpis = [KpiChange(s, k, old.get((s, k)), new.get((s, k))) for s, k in order
            if (s, k) not in old or (s, k) not in new or key(old[s, k]) != key(new[s, k])]
    streets = list(dict.fromkeys([*before_money, *after_money]))
    money = [MoneyChange(s, before_money.get(s), after_money.get(s)) for s in streets
             if before_money.get(s) != after_money.get(s)]
    return Difference(kpis=kpis, money=money)
