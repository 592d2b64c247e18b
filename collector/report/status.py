"""Final or provisional (临时报告): whether a report's amounts can be signed, and up to when its
figures reach.

A report is **final** when its month is over and every contract in it was observed the whole
month (监测覆盖率 = observed seconds / the month's seconds = 100 %). Otherwise it is
**provisional**, for one of two reasons:

* **the month is not yet over**: the report was made before the month's end (``made_at`` <
  ``end``) and the monitor has not observed the month's end either. The rest of the month has
  not happened; every KPI and amount can still change.
* **the month was not wholly observed**: the month is over but a contract's coverage is below
  100 %. Monitoring gaps count neither as online nor as offline, so the reviewers must judge the
  gaps before the amounts are paid.

Durations (a device's offline time, an episode still open) never extend past the **last
observed instant** (``observed_until``): the end of the monitor's last observed span in the
month, or the month's end when the monitor observed the month's last sample instant. Beyond it
nothing is known, so an open episode is "still offline as of" that instant, not until the
month's end.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from . import fmt
from .model import ReportInputs

PROVISIONAL = "暂定"
TITLE_MARK = "临时报告"
TITLE_MARK_EN = "Provisional report"


@dataclass(frozen=True, kw_only=True)
class ReportStatus:
    start: int  # µs, the month's first instant
    end: int  # µs, the next month's first instant
    month_over: bool
    observed_until: int  # µs, the last observed instant of the month (``end`` when observed to the end)
    coverage: dict[str, Fraction]  # contract code → observed seconds / the month's seconds
    gaps_accepted: bool = False  # a sealed closing whose reviewers accepted the gaps: final all the same

    def contract_provisional(self, code: str) -> bool:
        return not self.month_over or (self.coverage.get(code, Fraction(0)) < 1 and not self.gaps_accepted)

    @property
    def provisional(self) -> bool:
        return not self.month_over or (any(c < 1 for c in self.coverage.values()) and not self.gaps_accepted)

    @property
    def cut_short(self) -> bool:
        """The figures stop before the month's end: durations run to ``observed_until`` only."""
        return self.observed_until < self.end

    def as_of(self) -> str:
        """``2026-11-18 14:05``: the last observed instant, Shanghai time."""
        return fmt.instant(self.observed_until)

    def open_label(self) -> str:
        """What an episode open at the horizon is called: 月末仍离线, or 截至 … 仍离线."""
        return f"截至 {self.as_of()} 仍离线" if self.cut_short else "月末仍离线"

    def reasons(self) -> list[str]:
        """Why the report is provisional, one sentence each (Chinese, English in brackets)."""
        out = []
        if not self.month_over:
            out.append(f"本月尚未结束 (month not yet over)：数据截至 {self.as_of()}（上海时间），其后的时段尚未观测")
        elif any(c < 1 for c in self.coverage.values()) and not self.gaps_accepted:
            until = f"，数据截至 {self.as_of()}（上海时间）" if self.cut_short else ""
            out.append(f"本月未被完整监测 (month not wholly observed)：监测覆盖率不足 100%{until}；"
                       "监测缺口期间既不计在线也不计离线，须审核人对缺口作出认定")
        return out

    def amounts_note(self) -> str:
        """What a reader may do with the provisional amounts."""
        if not self.month_over:
            return ("扣减金额与应付金额均为暂定 (provisional)，不作为付款依据；以本月结束后的正式报告为准"
                    "（月租赁费为合同约定金额，不是暂定）")
        return ("扣减金额与应付金额均为暂定 (provisional)：须审核人对监测缺口作出认定后方可据以付款"
                "（月租赁费为合同约定金额，不是暂定）")


def report_status(inputs: ReportInputs, contracts: Sequence[str]) -> ReportStatus:
    """The status of a report of ``contracts`` (codes) made from ``inputs``."""
    until = observed_until(inputs)
    over = inputs.made_at is None or inputs.made_at >= inputs.end or until >= inputs.end
    coverage = {}
    for code in contracts:
        cov = inputs.results.coverage.get(code, {})
        period = cov.get("period_seconds", 0)
        coverage[code] = Fraction(cov.get("observed_seconds", 0), period) if period else Fraction(0)
    accepted = inputs.closing is not None and inputs.closing.gaps_accepted
    return ReportStatus(start=inputs.start, end=inputs.end, month_over=over, observed_until=until, coverage=coverage,
                        gaps_accepted=accepted)


def observed_until(inputs: ReportInputs) -> int:
    """The last instant of the month the monitor observed.

    The month's end when no gap runs to the month's end (the monitor saw the last sample
    instant); otherwise the end of its last observed span in the month (``inputs.observed_until``,
    from the ledger's spans), or, without one, the first missed sample instant of the final gap.
    """
    gaps = inputs.results.gaps
    if not gaps or gaps[-1][1] < inputs.end:
        return inputs.end
    first_missed = max(inputs.start, gaps[-1][0])
    if inputs.observed_until is None:
        return first_missed
    return min(max(inputs.observed_until, inputs.start), first_missed)


def last_observed(spans: Sequence[Sequence[int]], start: int, end: int) -> int | None:
    """The end of the last observed span that reaches into ``[start, end)``, capped at ``end``;
    None when no span does."""
    ends = [min(b, end) for a, b in spans if a < end and b >= start]
    return max(ends) if ends else None


def coverage_text(value: Fraction) -> str:
    """Coverage in per cent to 0.001 %; a sliver above 0 shows as ``< 0.001%``, not as 0."""
    text = fmt.fraction_percent(value, 3)
    return "< 0.001%" if value > 0 and text == "0.000%" else text
