"""The workbook sheet of a closed month: version, seal, history and both versions side by side."""

from __future__ import annotations

from . import fmt
from .versions import compare, signed_money, signed_points
from .versions_html import money_figures
from .view import ReportView
from .xlsxml import Sheet


def versions_sheet(view: ReportView) -> Sheet:
    c = view.inputs.closing
    assert c is not None
    sheet = Sheet("版本与更正", widths=[16, 22, 16, 16, 16, 16, 16, 16])
    sheet.append([f"{c.contract} {view.inputs.month} {c.label}" + ("（更正）" if c.restated else "（结账）")], "title")
    for key, value in (("封存", f"{fmt.instant(c.closed_at)} 由 {fmt.clean(c.closed_by)}"), ("封存校验值 SHA-256", c.seal),
                       ("更正原因", fmt.clean(c.reason) if c.restated else "—"),
                       ("监测缺口", fmt.clean(c.gaps_note) if c.gaps_accepted else "—"), ("迟到心跳", c.late)):
        sheet.append([key, value], ["total", "text"])
    sheet.append()
    sheet.append(["版本", "封存时间", "封存人", "原因", "应付金额（元）", "封存校验值"], "header")
    for h in c.history:
        sheet.append([f"第 {h.version} 版", fmt.instant(h.closed_at), fmt.clean(h.closed_by), fmt.clean(h.reason or "结账"),
                      h.payable, h.seal], ["text", "text", "text", "wrap", "money", "text"])
    if not c.restated:
        return sheet
    sheet.append()
    sheet.append(["变化项", "说明", "应付金额变化（元）"], "header")
    for ch in c.changes:
        sheet.append([ch.title, "；".join(fmt.clean(d) for d in ch.details), signed_money(ch.payable_delta)],
                     ["text", "wrap", "text"])
    kpis, money = compare(c, view.inputs.results.rows, money_figures(view))
    sheet.append()
    sheet.append(["街镇", "指标", c.previous_label, c.label, "变化（百分点）", f"{c.previous_label}结论", f"{c.label}结论"],
                 "header")
    for p in kpis:
        sheet.append([p.street, p.kpi, p.before.value if p.before else None, p.after.value if p.after else None,
                      signed_points(p.points), fmt.PASS_MARK[p.before.passed if p.before else None],
                      fmt.PASS_MARK[p.after.passed if p.after else None]],
                     ["text", "text", "percent", "percent", "text", "text", "text"])
    if money:
        sheet.append()
        sheet.append(["街镇", "月租赁费", f"扣减 {c.previous_label}", f"扣减 {c.label}", "扣减变化",
                      f"应付 {c.previous_label}", f"应付 {c.label}", "应付变化"], "header")
        for m in money:
            sheet.append([m.street, m.after.fee if m.after else None, m.before.deduction if m.before else None,
                          m.after.deduction if m.after else None, m.deduction_delta, m.before.payable if m.before else None,
                          m.after.payable if m.after else None, m.payable_delta], ["text"] + ["money"] * 7)
    return sheet
