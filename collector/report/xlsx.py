"""The report as an XLSX workbook: a sheet per contract (streets, KPIs, money), the device-level
sheet, the worst devices, the exemptions and a sheet on how the numbers were made.

Rates are numbers formatted as per cent (0.000 %), money numbers formatted ``#,##0.00``, so a
reviewer can re-add them; the exact numerators and denominators are in the CSV. A provisional
contract (:mod:`ptmon.report.status`) says so in its sheet's title and gets two more columns at
the end, its coverage and 金额状态 暂定, so the amounts stay plain numbers.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

from . import fmt
from .html import SCOPE_LABELS, SOURCE_LABELS, method_label
from .status import PROVISIONAL, TITLE_MARK
from .view import ContractView, ReportView, StreetLine
from .xlsxml import Cell, Sheet, save


def render_xlsx(view: ReportView, path: Path) -> None:
    sheets = [_contract_sheet(view, c) for c in view.contracts]
    if view.inputs.closing is not None:
        from .versions_xlsx import versions_sheet

        sheets.append(versions_sheet(view))
    sheets += [_device_sheet(view), _worst_sheet(view), _exemption_sheet(view), _about_sheet(view)]
    mark = f"（{TITLE_MARK}）" if view.status.provisional else ""
    mark += f"（{view.inputs.closing.label}）" if view.inputs.closing is not None else ""
    save(sheets, path, title=f"月度租赁服务考核验收报告 {view.inputs.month}{mark}")


def _value(line: StreetLine, kpi: str) -> Fraction | None:
    row = line.rows.get(kpi)
    return row.value if row is not None else None


def _contract_sheet(view: ReportView, c: ContractView) -> Sheet:
    kpis = [*c.terms, *c.informational]
    header = ["街镇代码", "街镇", "在册设备（台）", "平均应在线（台）"]
    for k in kpis:
        suffix = "（参考）" if k.informational else ""
        header += [f"{k.name}{suffix}", f"{k.name} 阈值", f"{k.name} 结论"]
    header += ["全部指标结论", "月租赁费（元）", "扣减比例", "扣减金额（元）", "应付金额（元）",
               "离线事件", "已修复", "修复时长中位数（小时）", "修复时长 P90（小时）", "响应时限内修复率", "月末仍离线"]
    widths = [12, 14, 10, 10] + [11, 8, 8] * len(kpis) + [10, 14, 10, 13, 14, 9, 8, 11, 11, 11, 9]
    if c.provisional:
        header += ["监测覆盖率", "金额状态"]
        widths += [11, 16]
    sheet = Sheet(f"{c.contract.code} 考核与付款", widths=widths, freeze_rows=4)
    mark = f"（{TITLE_MARK} · 金额{PROVISIONAL} provisional）" if c.provisional else ""
    sheet.append([f"{c.contract.name} [{c.contract.code}] — {view.month_label}{mark}"], "title")
    about = (f"考核期间 {fmt.instant(view.inputs.start)} 至 {fmt.instant(view.inputs.end)}；"
             f"在线率口径 {method_label(c.contract)}；监测覆盖 {fmt.fraction_percent(c.coverage, 3)}；"
             f"规则 {view.inputs.rules.version}，设备清单 {view.inputs.registry.version}")
    sheet.append([about], "note")
    sheet.append()
    sheet.append(header, "header")
    for line in [*c.streets, c.district]:
        total = line.code == "district"
        values: list[Cell] = [line.code, line.name, line.devices, line.mean_expected]
        styles = ["total" if total else "text", "total" if total else "text", "total_int" if total else "int",
                  "total_hours" if total else "hours"]
        for k in kpis:
            row = line.rows.get(k.code)
            values += [_value(line, k.code), k.threshold, fmt.PASS_MARK[row.passed if row else None]]
            styles += ["total_percent" if total else "percent"] * 2 + ["total" if total else "text"]
        p, m = line.payment, line.maintenance
        values += ["" if total else fmt.PASS_MARK[line.passed],
                   p.fee if p else None, p.deduction_fraction if p else None, p.deduction if p else None,
                   p.payable if p else None,
                   m.episodes, m.restored, _hours(m.median_restore), _hours(m.p90_restore), m.within_share, m.open_at_end]
        money, pc, n, h = (("total_money", "total_percent4", "total_int", "total_hours") if total
                           else ("money", "percent4", "int", "hours"))
        styles += ["total" if total else "text", money, pc, money, money, n, n, h, h, "total_percent" if total else "percent", n]
        if c.provisional:
            values += [c.coverage, f"{PROVISIONAL} (provisional)" if p else ""]
            styles += ["total_percent" if total else "percent", "total" if total else "text"]
        sheet.append(values, styles)
    sheet.append()
    if c.contract.payment is not None:
        rule = c.contract.payment
        rule_text = (f"扣减比例 = min({rule.cap}, Σ 低于阈值的百分点 × {rule.rate_per_point})；扣减金额四舍五入到分；"
                     "应付 = 租赁费 − 扣减。全区合计行的金额为各街镇之和。")
        sheet.append([rule_text], "note")
    return sheet


def _hours(seconds: float | None) -> float | None:
    return None if seconds is None else fmt.hours(seconds)


def _device_sheet(view: ReportView) -> Sheet:
    table = view.device_table()
    sheet = Sheet("设备明细", widths=[22, 6, 12, 14, 12, 12, 22, 22, 11, 11, 10, 12, 9], freeze_rows=1)
    sheet.append(["设备编号", "合同", "类型代码", "类型", "街镇代码", "街镇", "小区", "网关", "验收日期", "退租日期",
                  "本月在租天数", "本月离线（小时）", "离线次数"], "header")
    sheet.append_columns(
        [table.device, table.contract, table.type, table.type_name, table.street, table.street_name, table.community,
         table.gateway, table.accepted_on, table.retired_on, table.lease_days,
         [round(s / 3600, 2) for s in table.offline_seconds], table.episodes],
        ["default"] * 10 + ["default", "hours", "default"],
    )
    sheet.autofilter(1, 13)
    return sheet


def _worst_sheet(view: ReportView) -> Sheet:
    types = {t.code: t.name for t in view.inputs.rules.types}
    names = {s.code: s.name for s in view.inputs.rules.streets}
    sheet = Sheet("离线最长设备", widths=[6, 14, 5, 22, 14, 20, 20, 12, 8, 12, 8], freeze_rows=1)
    status = view.status
    state = f"截至 {status.as_of()} 状态" if status.cut_short else "月末状态"
    sheet.append(["合同", "街镇", "序号", "设备编号", "类型", "小区", "网关", "本月离线（小时）", "离线次数",
                  "最长一次（小时）", state], "header")
    for c in view.contracts:
        for street, devices in c.worst.items():
            for rank, d in enumerate(devices, 1):
                sheet.append([c.contract.code, names.get(street, street), rank, fmt.clean(d.device), types.get(d.type, d.type),
                              fmt.clean(d.community), fmt.clean(d.gateway), fmt.hours(d.offline_seconds), d.episodes,
                              fmt.hours(d.longest_seconds), "离线" if d.open_at_end else "在线"],
                             ["text", "text", "int", "text", "text", "text", "text", "hours", "int", "hours", "text"])
    sheet.autofilter(1, 11)
    return sheet


def _exemption_sheet(view: ReportView) -> Sheet:
    sheet = Sheet("豁免", widths=[6, 6, 18, 17, 17, 10, 8, 40, 12, 17, 8, 17, 12, 30], freeze_rows=1)
    sheet.append(["编号", "范围", "对象", "开始", "结束", "本月时长（小时）", "涉及设备", "原因", "审批人", "登记时间",
                  "状态", "撤销时间", "撤销人", "撤销原因"], "header")
    for x in view.exemptions:
        e = x.exemption
        sheet.append([e.id, SCOPE_LABELS.get(e.scope, e.scope), fmt.clean(e.target), fmt.instant(e.start), fmt.instant(e.end),
                      fmt.hours(x.seconds_in_month), x.devices, fmt.clean(e.reason), fmt.clean(e.approver),
                      fmt.instant(e.created_at), "有效" if e.active else "已撤销",
                      fmt.instant(e.revoked_at) if e.revoked_at is not None else "", fmt.clean(e.revoked_by or ""),
                      fmt.clean(e.revoke_reason or "")],
                     ["int", "text", "text", "text", "text", "hours", "int", "wrap", "wrap", "text", "text", "text",
                      "wrap", "wrap"])
    return sheet


def _about_sheet(view: ReportView) -> Sheet:
    inputs = view.inputs
    sheet = Sheet("说明", widths=[24, 60, 70])
    sheet.append(["月度租赁服务考核验收报告", view.month_label], "title")
    for key, value in (("考核期间", f"{fmt.instant(inputs.start)} 至 {fmt.instant(inputs.end)}（北京时间，不含终点）"),
                       ("数据来源", SOURCE_LABELS.get(inputs.source, inputs.source)),
                       ("规则版本", f"{inputs.rules.version}（{fmt.clean(inputs.rules.directory)}）"),
                       ("设备清单版本", f"{inputs.registry.version}（{fmt.clean(inputs.registry.path)}）"),
                       ("输入文件 SHA-256", inputs.digest or "—"),
                       *_status_rows(view)):
        sheet.append([key, value], ["total", "text"])
    sheet.append()
    sheet.append(["输入文件", "路径", "SHA-256"], "header")
    for f in inputs.files:
        sheet.append([f.role, fmt.clean(f.path), f.sha256], "text")
    sheet.append()
    sheet.append(["监测缺口开始", "结束", "时长（小时）"], "header")
    for a, b in inputs.results.gaps:
        sheet.append([fmt.instant(a), fmt.instant(b), fmt.hours((b - a) / 1_000_000)], ["text", "text", "hours"])
    sheet.append()
    sheet.append(["审核提示"], "header")
    for w in view.warnings or ["无"]:
        sheet.append([w], "text")
    sheet.append()
    sheet.append(["数据质量（处理 类别）", "报文数", "说明"], "header")
    for q in view.quality():
        sheet.append([f"{q.group} {fmt.clean(q.kind or '—')}", q.count, q.explanation or "（本报告未收录此类别的说明）"],
                     ["text", "int", "wrap"])
    return sheet


def _status_rows(view: ReportView) -> list[tuple[str, str]]:
    """The about sheet's lines on a provisional report; none on a final one."""
    status = view.status
    if not status.provisional:
        return []
    coverage = "；".join(f"{c.contract.code} {c.coverage_line()}" for c in view.contracts)
    return [("报告状态", f"{TITLE_MARK} (provisional report)：" + "；".join(status.reasons())),
            ("数据截至", f"{status.as_of()}（上海时间）"), ("监测覆盖率", coverage), ("金额", status.amounts_note())]
