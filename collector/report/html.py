"""The report as one HTML document: opened in a browser, and turned into the PDF as it is.

Every value reaches the page through Jinja2 with autoescaping, after :func:`fmt.clean` for
free text, so a device id ``<script>…`` or a reason with CR/LF prints as text. The only markup
passed through unescaped is built here: the SVG charts (whose text is escaped in
:mod:`charts`) and the style sheet (whose two strings are CSS-escaped below).
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from fractions import Fraction

import jinja2
from markupsafe import Markup

from ..payment import PaymentLine
from ..rules import Contract
from . import fmt
from .charts import Series, legend_html, trend_svg
from .status import PROVISIONAL, TITLE_MARK, coverage_text
from .summary import WORST_DEVICES
from .template import CSS, PROVISIONAL_CSS, TEMPLATE
from .versions_html import CSS as CLOSING_CSS
from .versions_html import closing_rows, closing_section
from .view import ContractView, ReportView, StreetLine

NUMERALS = "零一二三四五六七八九十"
SUB_NUMERALS = ("", "（一）", "（二）", "（三）", "（四）", "（五）", "（六）", "（七）", "（八）")
KIND_LABELS = {"blind": "失明", "degraded": "劣化", "stuck": "卡死"}
SOURCE_LABELS = {"ledger": "SLA 台账（ledger）", "archive": "原始报文存档重新计算（archive）"}
ROLE_LABELS = {"ledger": "台账", "archive": "报文存档", "registry": "设备清单", "rules": "规则文件", "snapshot": "月初状态快照",
               "config": "配置文件", "exemptions": "豁免记录", "late": "迟到心跳",
               "following": "次月首日存档（只读到首条记录，SHA-256 为该条记录的）"}
SCOPE_LABELS = {"device": "设备", "street": "街镇", "gateway": "网关"}
UNKNOWN_SHOWN = 20

_ENV = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
_ENV.filters["clean"] = fmt.clean
_TEMPLATE = _ENV.from_string(TEMPLATE)


def render_html(view: ReportView) -> str:
    """The whole report as an HTML page (UTF-8 text)."""
    inputs = view.inputs
    types = {t.code: t.name for t in inputs.rules.types}
    streets = {s.code: s.name for s in inputs.rules.streets}
    results = inputs.results
    unknown = sorted(results.unknown_topics.items(), key=lambda kv: (-kv[1], kv[0]))
    quality = view.quality()
    status = view.status
    closing = inputs.closing
    return _TEMPLATE.render(
        v=view,
        st=status,
        f=fmt,
        cl=closing,
        closing_rows=closing_rows(view),
        closing_section=closing_section(view),
        css=Markup(CSS + (PROVISIONAL_CSS if status.provisional else "") + (CLOSING_CSS if closing else "") + _page_css(view)),
        numerals=NUMERALS,
        sub=SUB_NUMERALS,
        source_label=SOURCE_LABELS.get(inputs.source, inputs.source),
        gaps=results.gaps,
        quality=quality,
        prov=provisional_mark,
        coverage_cell=lambda c: coverage_cell(view, c),
        unknown=unknown[:UNKNOWN_SHOWN],
        unknown_more=max(0, len(unknown) - UNKNOWN_SHOWN),
        worst_n=WORST_DEVICES,
        method_label=method_label,
        mark=mark,
        mean=mean,
        pct=pct,
        shortfall=shortfall,
        chart=lambda c, s: chart(view.days, c, s),
        legend=legend,
        type_name=lambda code: types.get(code, code),
        street_name=lambda code: streets.get(code, code),
        kind_label=lambda kind: KIND_LABELS.get(kind, kind),
        scope_label=lambda scope: SCOPE_LABELS.get(scope, scope),
        role_label=lambda role: ROLE_LABELS.get(role, role),
    )


def _page_css(view: ReportView) -> str:
    """The running header of every page after the first: title, month and the input digest."""
    title = f"月度租赁服务考核验收报告 · {view.month_label}" + (f" · {TITLE_MARK}" if view.status.provisional else "")
    if view.inputs.closing is not None:
        title += f" · {view.inputs.closing.label}"
    digest = f"输入 SHA-256 {view.inputs.digest[:16]}…" if view.inputs.digest else ""
    return (f"\n@page {{ @top-left {{ content: {css_string(title)}; }} @top-right {{ content: {css_string(digest)}; }} }}\n"
            "@page :first { @top-left { content: none; } @top-right { content: none; } }\n")


def css_string(text: str) -> str:
    """A CSS string literal that cannot end the string, the rule or the ``<style>`` element."""
    out = []
    for ch in text:
        if ch in '"\\<>&' or ord(ch) < 32 or ord(ch) == 127:
            out.append(f"\\{ord(ch):x} ")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def provisional_mark(owner: ContractView | ReportView, amount: object) -> Markup:
    """`` 暂定`` after an amount of a provisional contract (or report); nothing otherwise."""
    provisional = owner.provisional if isinstance(owner, ContractView) else owner.status.provisional
    if not provisional or amount is None:
        return Markup("")
    return Markup(' <span class="prov">{}</span>').format(PROVISIONAL)


def coverage_cell(view: ReportView, contract: ContractView) -> Markup:
    """The headline's coverage cell, present only in a provisional report."""
    if not view.status.provisional:
        return Markup("")
    return Markup('<td class="num">{}</td>').format(coverage_text(contract.coverage))


def method_label(contract: Contract) -> str:
    if contract.online_method == "daily":
        return "按日（当日至少一次心跳即在线）"
    return f"时间加权（每 {contract.sample_interval} 秒采样）"


def mark(passed: bool | None) -> Markup:
    cls = {True: "pass", False: "fail", None: "none"}[passed]
    return Markup('<span class="{}">{}</span>').format(cls, fmt.PASS_MARK[passed])


def mean(value: Fraction | None) -> str:
    return "—" if value is None else f"{float(value):,.1f}"


def pct(value: Decimal) -> str:
    return f"{format((value * 100).normalize(), 'f')}%"


def shortfall(payment: PaymentLine, kpi: str) -> str:
    """Points below the threshold (4 decimals, half-up), ``0`` when passing, ``—`` without data."""
    if kpi in payment.undetermined:
        return "—"
    found = next((s for s in payment.shortfalls if s.kpi == kpi), None)
    if found is None:
        return "0"
    return fmt.fraction_percent(found.points / 100, 4).rstrip("%")


def chart(days: list[date], view: ContractView, street: StreetLine) -> Markup:
    """The street's daily trend: each contract KPI against its threshold."""
    series = [Series(name=k.name, threshold=k.threshold, values=view.daily.get((street.code, k.code), [None] * len(days)))
              for k in view.terms]
    return Markup(trend_svg(days, series, label=f"{street.name} 每日趋势"))


def legend(view: ContractView) -> Markup:
    return Markup(legend_html([k.name for k in view.terms]))
