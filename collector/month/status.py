"""`ptmon month status [YYYY-MM]`: open, closed or restated, and what has changed since.

For a closed contract it lists each input that changed since its latest version (late archive
records, late heartbeats, exemptions, registry and rules), the money each change would move
(step by step, to the fen, per street), the KPI rows that would change, and the total: what a
restatement would seal now. Nothing is written.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from ..ledger.closing import Closing, closings
from ..tally import DISTRICT
from .analysis import Analysis, Step, analyse
from .close import CloseRefused, check_closable
from .context import MonthContext
from .figures import Difference
from .words import when


def state_of(versions: Sequence[Closing]) -> str:
    if not versions:
        return "未结账 open"
    return "已结账 closed" if versions[-1].version == 1 else "已更正 restated"


def status_lines(ctx: MonthContext, contracts: Sequence[str]) -> tuple[list[str], list[Analysis]]:
    """The status of ``contracts`` for the context's month, as lines to print, and the analyses."""
    lines, analyses = [], []
    for code in contracts:
        versions = closings(ctx.ledger, ctx.month, code)
        name = ctx.setup.registry.rules.contract(code).name
        lines.append(f"{ctx.month} {code} {name}: {state_of(versions)}")
        if not versions:
            lines += [f"  {line}" for line in _open_lines(ctx)]
            continue
        lines += [f"  {_version_line(c)}" for c in versions]
        analysis = analyse(ctx, versions[-1])
        analyses.append(analysis)
        lines += [f"  {line}" for line in analysis_lines(ctx, analysis)]
    return lines, analyses


def _open_lines(ctx: MonthContext) -> list[str]:
    try:
        check_closable(ctx)
    except CloseRefused as exc:
        return [f"not closable yet: {exc}"]
    return [f"can be closed now: `ptmon month close {ctx.month} --by NAME{ctx.setup.where}`"]


def _version_line(c: Closing) -> str:
    district = next((m for m in c.doc["money"] if m["street"] == DISTRICT), None)
    money = f", payable {Decimal(district['payable']):,.2f}" if district else ""
    why = f": {c.reason}" if c.reason else ""
    ok = "" if c.sealed_ok() else "  [SEAL BROKEN: the stored closing was altered; run `ptmon month verify`]"
    return (f"{c.label} sealed {when(c.closed_at)} by {c.closed_by}{why}{money}; seal {c.seal[:16]}…{ok}")


def analysis_lines(ctx: MonthContext, a: Analysis) -> list[str]:
    label = a.closing.label
    out = []
    if a.tampered:
        out.append("WARNING: sealed archive files altered or gone (`ptmon month verify`): "
                   + "; ".join(c.describe() for c in a.tampered))
    if not a.changed:
        out.append(f"nothing changed since {label}: archive files of the month, registry, rules, exemptions and late "
                   "heartbeats as sealed")
    else:
        out.append(f"changed since {label} (each step's money on top of the steps above it):")
        for step in a.steps:
            out += [f"  {line}" for line in step_lines(step)]
        assert a.total is not None
        out += total_lines(a.total, label)
        out.append(f"to seal this as a new version: `ptmon month restate {ctx.month} --contract {a.contract} "
                   f"--reason TEXT --by NAME{ctx.setup.where}`")
    out += [f"note: {n}" for n in a.notes]
    recomputed = (f"; recomputed from the archive: {ctx.recomputed_records:,} records in {ctx.recompute_seconds:.1f} s"
                  if ctx.recomputed_records else "")
    out.append(f"(analysed in {a.seconds:.1f} s{recomputed})")
    return out


def step_lines(step: Step) -> list[str]:
    out = [f"[{step.title}]"] + [f"  {d}" for d in step.lines]
    if step.diff is not None:
        out.append(f"  money: {money_text(step.diff)}")
    return out


def money_text(diff: Difference) -> str:
    streets = [m for m in diff.money if m.street != DISTRICT]
    if not streets:
        return "no change (0.00)"
    parts = ", ".join(f"{m.street} {m.payable_delta:+,.2f}" for m in streets)
    return f"payable {diff.payable_delta():+,.2f} ({parts})"


def total_lines(diff: Difference, label: str) -> list[str]:
    out = [f"total against {label}: {money_text(diff)}"]
    district = next((m for m in diff.money if m.street == DISTRICT), None)
    if district is not None and district.before is not None and district.after is not None:
        out.append(f"  district: deduction {district.before.deduction:,.2f} → {district.after.deduction:,.2f}, payable "
                   f"{district.before.payable:,.2f} → {district.after.payable:,.2f}")
    for k in diff.kpis:
        before = f"{k.before.value_text()} ({_mark(k.before.passed)})" if k.before and k.before.denominator else "—"
        after = f"{k.after.value_text()} ({_mark(k.after.passed)})" if k.after and k.after.denominator else "—"
        out.append(f"  {k.street} {k.kpi}: {before} → {after}")
    return out


def _mark(passed: bool | None) -> str:
    return {True: "pass", False: "FAIL", None: "no data"}[passed]
