"""The report as every format shows it: per contract and street, KPIs, payment and summaries.

Built once from :class:`~ptmon.report.model.ReportInputs` by :func:`build_view`; the PDF,
HTML, XLSX and CSV renderers only read it, so they cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from fractions import Fraction

import numpy as np

from ..errors import UsageError
from ..payment import PaymentLine, payment_for, total
from ..results import KpiRow
from ..rules import Contract, Kpi
from ..tally import DISTRICT
from ..timebase import day_of, day_to_date
from . import fmt
from .health import StreetHealth, street_health, success_kpi
from .model import ReportInputs
from .quality import QualityLine, quality_lines
from .status import ReportStatus, coverage_text, report_status
from .summary import (
    DeviceOutage,
    DeviceTable,
    ExemptionLine,
    MaintenanceStats,
    device_table,
    exemption_lines,
    maintenance,
    worst_devices,
)

DISTRICT_NAME = "全区合计"


@dataclass(frozen=True, kw_only=True)
class StreetLine:
    """One street (or the district total) of one contract."""

    code: str
    name: str
    supervisor: str
    devices: int  # registry devices under lease on some day of the month
    mean_expected: Fraction | None  # expected devices per observed sample (per complete day: daily)
    rows: dict[str, KpiRow]  # by KPI code
    terms: tuple[str, ...]  # the contract KPIs (not informational ones)
    payment: PaymentLine | None
    maintenance: MaintenanceStats

    @property
    def passed(self) -> bool | None:
        """All contract KPIs pass; False when one fails; None when none fails but one has no data."""
        marks = [self.rows[k].passed if k in self.rows else None for k in self.terms]
        return False if False in marks else None if None in marks else True


@dataclass(frozen=True, kw_only=True)
class ContractView:
    contract: Contract
    streets: list[StreetLine]
    district: StreetLine
    observed_seconds: int
    period_seconds: int
    worst: dict[str, list[DeviceOutage]]
    daily: dict[tuple[str, str], list[Fraction | None]]  # (street, kpi) -> value per day of the month
    provisional: bool = False  # month not over, or observed less than the whole month: amounts 暂定
    health: list[StreetHealth] = field(default_factory=list)  # streets with devices online but not doing their job

    @property
    def terms(self) -> list[Kpi]:
        """The contract's KPIs (绩效指标), without the informational ones."""
        return [k for k in self.contract.kpis if not k.informational]

    @property
    def informational(self) -> list[Kpi]:
        return [k for k in self.contract.kpis if k.informational]

    @property
    def coverage(self) -> Fraction:
        return Fraction(self.observed_seconds, self.period_seconds) if self.period_seconds else Fraction(0)

    @property
    def health_kpi_name(self) -> str:
        """The KPI the anomalies' counts belong to (人脸车卡抓拍成功率, 感知成功率)."""
        code = success_kpi(self.contract)
        kpi = self.contract.kpi(code) if code else None
        return kpi.name if kpi is not None else "成功率"

    def street_passes(self) -> int:
        return sum(1 for s in self.streets if s.passed)

    def coverage_line(self) -> str:
        """监测覆盖率 0.018%（观测 8 分 / 全月 30 天）."""
        return (f"监测覆盖率 {coverage_text(self.coverage)}（观测 {fmt.duration(self.observed_seconds)} / "
                f"全月 {fmt.duration(self.period_seconds)}）")


@dataclass(frozen=True, kw_only=True)
class ReportView:
    inputs: ReportInputs
    contracts: list[ContractView]
    exemptions: list[ExemptionLine]
    days: list[date]
    status: ReportStatus
    warnings: list[str] = field(default_factory=list)

    @property
    def month_label(self) -> str:
        year, month = self.inputs.month.split("-")
        return f"{year} 年 {int(month)} 月"

    @property
    def contract_codes(self) -> list[str]:
        return [c.contract.code for c in self.contracts]

    def money_total(self) -> PaymentLine | None:
        """Fees, deductions and payables of every contract in the report added up."""
        lines = [c.district.payment for c in self.contracts if c.district.payment is not None]
        return total(lines, contract="all") if lines else None

    def device_table(self) -> DeviceTable:
        return device_table(self.inputs, self.contract_codes)

    def quality(self) -> list[QualityLine]:
        return quality_lines(self.inputs.results)


def build_view(inputs: ReportInputs, contract: str | None = None) -> ReportView:
    """The report of every contract in the rules, or of ``contract`` only."""
    rules = inputs.rules
    codes = [c.code for c in rules.contracts]
    if contract is not None and contract not in codes:
        raise UsageError(f"unknown contract {contract!r} (known: {', '.join(codes)})")
    chosen = [c for c in rules.contracts if contract is None or c.code == contract]
    first, end = day_of(inputs.start), day_of(inputs.end)
    days = [day_to_date(d) for d in range(first, end)]
    status = report_status(inputs, [c.code for c in chosen])
    views = [_contract_view(inputs, c, days, status.contract_provisional(c.code)) for c in chosen]
    return ReportView(inputs=inputs, contracts=views, exemptions=exemption_lines(inputs, [c.code for c in chosen]),
                      days=days, status=status,
                      warnings=[*map(fmt.clean, inputs.warnings), *_warnings(inputs, views, status)])


def _contract_view(inputs: ReportInputs, contract: Contract, days: list[date], provisional: bool) -> ContractView:
    rules, results = inputs.rules, inputs.results
    cov = results.coverage.get(contract.code, {"observed_seconds": 0, "period_seconds": 0, "samples": 0, "complete_days": 0})
    per = cov["samples"] if contract.online_method == "time_weighted" else cov["complete_days"]
    stats = maintenance(inputs, contract.code)
    terms = tuple(k.code for k in contract.kpis if not k.informational)
    devices = _leased_devices(inputs, contract)
    rows_by_street: dict[str, dict[str, KpiRow]] = {}
    for r in results.rows:
        if r.contract == contract.code:
            rows_by_street.setdefault(r.street, {})[r.kpi] = r

    def line(code: str, name: str, supervisor: str, payment: PaymentLine | None) -> StreetLine:
        rows = rows_by_street.get(code, {})
        online = rows.get("online")
        mean = Fraction(online.expected_device_samples, per) if online is not None and per else None
        return StreetLine(code=code, name=name, supervisor=supervisor, devices=devices.get(code, 0), mean_expected=mean,
                          rows=rows, terms=terms, payment=payment, maintenance=stats[code])

    streets = []
    for s in rules.streets:
        payment = payment_for(contract, s.code, results.rows) if contract.payment is not None else None
        streets.append(line(s.code, s.name, s.supervisor, payment))
    paid = [s.payment for s in streets if s.payment is not None]
    district = line(DISTRICT, DISTRICT_NAME, "", total(paid, contract=contract.code) if paid else None)
    return ContractView(contract=contract, streets=streets, district=district, observed_seconds=cov["observed_seconds"],
                        period_seconds=cov["period_seconds"], worst=worst_devices(inputs, contract.code),
                        daily=_daily(inputs, contract, days), provisional=provisional,
                        health=street_health(inputs.anomalies, results, contract, rules.street_codes()))


def _leased_devices(inputs: ReportInputs, contract: Contract) -> dict[str, int]:
    """Registry devices of the contract under lease on some day of the month, per street."""
    registry = inputs.registry
    first, end = day_of(inputs.start), day_of(inputs.end)
    sl = registry.contract_slices[contract.code]
    leased = (registry.accepted_day[sl] < end) & (registry.retired_day[sl] > first)
    counts = np.bincount(registry.street[sl][leased], minlength=len(inputs.rules.streets))
    out = {s.code: int(counts[i]) for i, s in enumerate(inputs.rules.streets)}
    out[DISTRICT] = int(counts.sum())
    return out


def _daily(inputs: ReportInputs, contract: Contract, days: list[date]) -> dict[tuple[str, str], list[Fraction | None]]:
    index = {d: i for i, d in enumerate(days)}
    out: dict[tuple[str, str], list[Fraction | None]] = {}
    for d in inputs.daily:
        if d.contract != contract.code or d.day not in index:
            continue
        values = out.setdefault((d.street, d.kpi), [None] * len(days))
        values[index[d.day]] = Fraction(d.numerator, d.denominator) if d.denominator else None
    return out


def _warnings(inputs: ReportInputs, views: list[ContractView], status: ReportStatus) -> list[str]:
    """What the numbers alone do not say and a reviewer must know before signing."""
    out = []  # (other rules or registry than the ledger month's are refused before: report.computed_with)
    for view in views:
        c = view.contract
        if not status.month_over:
            out.append(f"[{c.code}] 本月尚未结束，{view.coverage_line()}，数据截至 {status.as_of()}：指标与金额均为暂定 "
                       "(month not yet over: figures and amounts are provisional)")
        elif view.observed_seconds < view.period_seconds:
            gap = view.period_seconds - view.observed_seconds
            out.append(f"[{c.code}] 监测覆盖 {fmt.fraction_percent(view.coverage, 3)}：监测缺口共 {fmt.duration(gap)}，"
                       "缺口期间既不计在线也不计离线 (monitoring gaps are not counted as offline)")
        if c.payment is None:
            out.append(f"[{c.code}] 合同文件未配置付款规则 (no payment rule in contracts.yaml)：本报告不含金额")
        undetermined: dict[tuple[str, ...], list[str]] = {}
        for s in view.streets:
            if s.payment is not None and s.payment.undetermined:
                undetermined.setdefault(s.payment.undetermined, []).append(s.name)
        for kpis, streets in undetermined.items():
            names = "、".join(_kpi_name(c, k) for k in kpis)
            out.append(f"[{c.code}] {names} 无数据，未据此扣款，需人工核定 (no data: no deduction; to be decided)："
                       + "、".join(streets))
    return out


def _kpi_name(contract: Contract, code: str) -> str:
    kpi = contract.kpi(code)
    return kpi.name if kpi is not None else code


def day_ticks(days: list[date]) -> list[int]:
    """Indices of the days labelled on a chart's axis: the 1st, every 5th, the last."""
    return sorted({0, len(days) - 1, *[i for i, d in enumerate(days) if d.day % 5 == 0]}) if days else []
