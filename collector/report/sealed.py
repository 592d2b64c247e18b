"""The report of a closed month, rendered from its sealed closing (never from the live ledger).

`ptmon report --month M` of a month with closings writes one report per contract:
``report-M-CONTRACT-vN.{pdf,html,xlsx,csv}`` from the latest version (or ``--version N``) of each
closed contract, and the live report ``report-M-CONTRACT.*`` of a contract not yet closed. The
sealed document holds every figure, and the registry and rule files as they were, so the same
version renders the same bytes on every run (HTML, CSV and XLSX; the PDF too with WeasyPrint 70,
which writes no creation date). A restated version (第 2 版 …) also writes
``report-M-CONTRACT-vN-changes.csv``: both versions' KPI rows and money side by side.
"""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Callable, Iterable
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

from ..errors import LedgerError, UsageError
from ..ledger.closing import Closing, closings
from ..ledger.store import Ledger
from ..outputs import writing
from ..timebase import format_instant
from .model import ReportInputs
from .render import render, report_stem
from .versions import ChangeLine, ClosingInfo, MoneyFigures, VersionSummary, compare
from .view import build_view

CHANGE_COLUMNS = ("contract", "street", "kpi", "previous_version", "version", "previous_value", "value", "previous_pass",
                  "pass", "previous_numerator", "previous_denominator", "numerator", "denominator", "previous_deduction",
                  "deduction", "deduction_delta", "previous_payable", "payable", "payable_delta")


def closed_contracts(ledger_path: Path, month: str) -> dict[str, int]:
    """Each closed contract of ``month`` and its latest version ({} when none or no ledger)."""
    if not ledger_path.is_file():
        return {}
    try:
        ledger = Ledger(ledger_path, readonly=True)
    except LedgerError:
        return {}  # the live report's reading of the ledger says what is wrong with it
    with ledger:
        return {c.contract: c.version for c in closings(ledger, month)}


def sealed_inputs(ledger: Ledger, month: str, contract: str, version: int | None = None) -> ReportInputs:
    """The report inputs of a version (the latest by default), with its closing information."""
    from ..month.close import accepted_gaps
    from ..month.integrity import chain_problems, document_problems
    from ..month.sealed import load_sealed

    versions = closings(ledger, month, contract)
    if not versions:
        raise UsageError(f"{contract} {month} is not closed")
    chosen = versions[-1] if version is None else next((c for c in versions if c.version == version), None)
    if chosen is None:
        raise UsageError(f"{contract} {month} has no version {version} (versions: "
                         f"{', '.join(str(c.version) for c in versions)})")
    history = [c for c in versions if c.version <= chosen.version]
    accepted = accepted_gaps(chosen)
    problems = chain_problems(history)
    sealed = None if problems else load_sealed(ledger, chosen)
    if sealed is not None:
        problems = document_problems(chosen, sealed)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise UsageError(f"{contract} {month}: not rendered, {problems[0]}{more}; `ptmon month verify {month}` lists "
                         "every difference")
    assert sealed is not None
    previous = history[-2] if len(history) > 1 else None
    info = ClosingInfo(
        contract=contract, version=chosen.version, seal=chosen.seal, closed_at=chosen.closed_at,
        closed_by=chosen.closed_by, reason=chosen.reason, gaps_accepted=accepted is not None,
        gaps_accepted_by=accepted[0] if accepted else "", gaps_accepted_in=accepted[1] if accepted else 0,
        late=late_sentence(chosen), history=tuple(_summary(c) for c in history),
        previous_rows=tuple(load_sealed(ledger, previous).rows) if previous else (),
        previous_money=tuple(_money(previous)) if previous else (),
        changes=tuple(ChangeLine(title=_TITLES.get(x["what"], x["what"]), details=tuple(x["details"]),
                                 payable_delta=Decimal(x["payable_delta"])) for x in chosen.doc.get("changes", [])))
    return replace(sealed.report_inputs(), closing=info)


_TITLES = {"archive": "报文存档", "registry": "设备清单", "rules": "规则文件", "ledger": "台账", "exemptions": "豁免",
           "late": "迟到心跳"}


def late_sentence(c: Closing) -> str:
    late = c.doc["inputs"]["late"]
    found, counted, credit = late.get("of_contract", 0), late.get("counted", 0), sum(late.get("credit", {}).values())
    until = f"（查至 {format_instant(late['until'])[:16].replace('T', ' ')}）"
    if not late["rule"]["count"]:
        return (f"本合同共 {found} 条{until}；按合同规则不计入（以接收时间为准，contracts.yaml "
                f"late_heartbeats.count 为 false）。")
    return (f"本合同共 {found} 条{until}；按合同规则（迟到不超过 {late['rule']['max_delay'] // 3600} 小时、月末后 "
            f"{late['rule']['received_within'] // 3600} 小时内收到）计入 {counted} 条，增加在线采样 {credit} 次。")


def _summary(c: Closing) -> VersionSummary:
    district = next((m for m in c.doc["money"] if m["street"] == "district"), None)
    return VersionSummary(version=c.version, closed_at=c.closed_at, closed_by=c.closed_by, reason=c.reason, seal=c.seal,
                          payable=Decimal(district["payable"]) if district else None)


def _money(c: Closing) -> list[MoneyFigures]:
    return [MoneyFigures(street=m["street"], fee=Decimal(m["fee"]), deduction=Decimal(m["deduction"]),
                         payable=Decimal(m["payable"])) for m in c.doc["money"]]


def render_sealed(inputs: ReportInputs, month: str, contract: str, out_dir: Path, formats: Iterable[str], *,
                  progress: Callable[[str], None] | None = None) -> list[Path]:
    """Write the report of a closed contract's month (its checked :func:`sealed_inputs`):
    ``report-M-CONTRACT-vN.*``."""
    assert inputs.closing is not None
    chosen = tuple(formats)
    stem = f"{report_stem(month, contract)}-v{inputs.closing.version}"
    written = render(inputs, out_dir, chosen, contract=contract, progress=progress, stem=stem)
    if "csv" in chosen and inputs.closing.restated:
        path = out_dir / f"{stem}-changes.csv"
        with writing(path, "w", encoding="utf-8", newline="") as f:
            f.write(changes_csv(inputs))
        written.append(path)
    return written


def changes_csv(inputs: ReportInputs) -> str:
    """Both versions' KPI rows and money side by side, one line per street × KPI."""
    from .versions_html import money_figures

    info = inputs.closing
    assert info is not None
    view = build_view(inputs, info.contract)
    kpis, money = compare(info, inputs.results.rows, money_figures(view))
    by_street = {m.street: m for m in money}
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CHANGE_COLUMNS)
    for p in kpis:
        m = by_street.get(p.street)
        writer.writerow((
            info.contract, p.street, p.kpi, info.version - 1, info.version,
            p.before.value_text() if p.before else "", p.after.value_text() if p.after else "",
            _passed(p.before), _passed(p.after),
            p.before.numerator if p.before else "", p.before.denominator if p.before else "",
            p.after.numerator if p.after else "", p.after.denominator if p.after else "",
            *(_money_cells(m) if m else ("",) * 6)))
    return out.getvalue()


def _passed(row) -> str:
    return "" if row is None or row.passed is None else str(row.passed).lower()


def _money_cells(m) -> tuple[str, ...]:
    return (str(m.before.deduction) if m.before else "", str(m.after.deduction) if m.after else "", str(m.deduction_delta),
            str(m.before.payable) if m.before else "", str(m.after.payable) if m.after else "", str(m.payable_delta))


def render_closed_month(ledger_path: Path, month: str, contract: str | None, contracts: list[str], out_dir: Path,
                        formats: Iterable[str], version: int | None) -> list[str | None]:
    """`ptmon report` of a month: the sealed reports of its closed contracts (printing their paths),
    and the contracts still to render from the live ledger (``[contract]`` when none is closed)."""
    closed = closed_contracts(ledger_path, month)
    wanted = [contract] if contract else contracts
    if version is not None and not any(c in closed for c in wanted):
        raise UsageError(f"--version: {month} has no closed contract{' ' + contract if contract else ''} "
                         "(`ptmon month status` lists the closings)")
    if not closed or not any(c in closed for c in wanted):
        return [contract]
    # Every seal is checked before any file is written: one forged contract leaves no report of another behind.
    with Ledger(ledger_path, readonly=True) as ledger:
        sealed = {code: sealed_inputs(ledger, month, code, version) for code in wanted if code in closed}
    live: list[str | None] = []
    for code in wanted:
        if code in sealed:
            for path in render_sealed(sealed[code], month, code, out_dir, formats):
                print(path)
        else:
            print(f"ptmon report: {code} {month} is not closed: its report comes from the live ledger", file=sys.stderr)
            live.append(code)
    return live
