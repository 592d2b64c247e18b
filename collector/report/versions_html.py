"""The closing's parts of the HTML report (and so of the PDF): the version in the header, and a
section with the version history and, for a restatement, both versions side by side.

Rendered only for a report of a sealed closing; a report from the live ledger keeps its bytes.
"""

from __future__ import annotations

import jinja2
from markupsafe import Markup

from . import fmt
from .versions import compare, signed_money, signed_points
from .view import ReportView

CSS = """
tr.changed td { background: #fff4d6; }
td.delta { font-weight: bold; }
.closing-note { border: 1pt solid #1f5fa8; background: #eef4fb; padding: 2mm 3mm; margin: 2mm 0 3mm; }
"""

ROWS = """\
<tr><th>版本</th><td>{{ c.label }}{% if c.restated %}（更正，取代{{ c.previous_label }}）{% else %}（结账）{% endif %}</td></tr>
<tr><th>封存</th><td>{{ f.instant(c.closed_at) }}（北京时间）由 {{ c.closed_by|clean }} 封存</td></tr>
<tr><th>封存校验值 SHA-256</th><td class="hash">{{ c.seal }}</td></tr>
"""

SECTION = """\
<section class="closing">
<h2>结账与更正记录（Closing and restatements）</h2>
<div class="closing-note"><p>本报告为 {{ v.month_label }}{{ names }}的封存结账{{ c.label }}：数字来自结账时封存的台账与输入文件，
任何时候重新生成均与本报告逐字节一致。结账后到达的数据（迟到报文、补登或撤销的豁免、设备清单与规则的更正）
只通过更正（新版本）生效，旧版本原样保留。</p>
{% if c.gaps_accepted %}<p>本月监测覆盖率不足 100%：{{ c.gaps_note|clean }}，金额据此确定，不再标注暂定。</p>{% endif %}
<p>迟到心跳（月末之后收到、设备时钟在本月内）：{{ c.late }}</p></div>
<h3>版本记录</h3>
<table>
<thead><tr><th>版本</th><th>封存时间</th><th>封存人</th><th>原因</th><th>应付金额（元）</th><th>封存校验值 SHA-256</th></tr></thead>
<tbody>
{% for h in c.history %}<tr><td>第 {{ h.version }} 版</td><td>{{ f.instant(h.closed_at) }}</td><td class="text">{{ h.closed_by|clean }}</td>
<td class="text">{{ (h.reason or "结账")|clean }}</td><td class="num">{{ f.money(h.payable) }}</td><td class="hash">{{ h.seal }}</td></tr>
{% endfor %}
</tbody>
</table>
{% if c.restated %}
<h3>{{ c.label }}与{{ c.previous_label }}对照（What changed, and why）</h3>
<p>更正原因：{{ c.reason|clean }}</p>
<ul>
{% for ch in c.changes %}<li><strong>{{ ch.title }}</strong>（应付金额 {{ signed_money(ch.payable_delta) }} 元）：{% for d in ch.details %}{{ d|clean }}{% if not loop.last %}；{% endif %}{% endfor %}</li>
{% endfor %}
</ul>
<p class="note">各项变化按上列顺序逐项计算，每项在前几项的基础上计算，合计即两版之差。</p>
<h4>考核指标对照</h4>
<table>
<thead><tr><th>街镇</th><th>指标</th><th>{{ c.previous_label }}</th><th>{{ c.label }}</th><th>变化（百分点）</th><th>{{ c.previous_label }}结论</th><th>{{ c.label }}结论</th></tr></thead>
<tbody>
{% for p in kpis %}<tr{% if p.changed %} class="changed"{% endif %}><td>{{ street(p.street) }}</td><td>{{ kpi(p.kpi) }}</td>
<td class="num">{{ f.percent(p.before) }}</td><td class="num">{{ f.percent(p.after) }}</td><td class="num{% if p.changed %} delta{% endif %}">{{ signed_points(p.points) }}</td>
<td class="c">{{ f.PASS_MARK[p.before.passed if p.before else none] }}</td><td class="c">{{ f.PASS_MARK[p.after.passed if p.after else none] }}</td></tr>
{% endfor %}
</tbody>
</table>
{% if money %}
<h4>金额对照（元，精确到分）</h4>
<table>
<thead><tr><th>街镇</th><th>月租赁费</th><th>扣减 {{ c.previous_label }}</th><th>扣减 {{ c.label }}</th><th>扣减变化</th><th>应付 {{ c.previous_label }}</th><th>应付 {{ c.label }}</th><th>应付变化</th></tr></thead>
<tbody>
{% for m in money %}<tr class="{% if m.street == 'district' %}total{% elif m.changed %}changed{% endif %}"><td>{{ street(m.street) }}</td>
<td class="num">{{ f.money(m.after.fee if m.after else none) }}</td>
<td class="num">{{ f.money(m.before.deduction if m.before else none) }}</td><td class="num">{{ f.money(m.after.deduction if m.after else none) }}</td>
<td class="num delta">{{ signed_money(m.deduction_delta) }}</td>
<td class="num">{{ f.money(m.before.payable if m.before else none) }}</td><td class="num">{{ f.money(m.after.payable if m.after else none) }}</td>
<td class="num delta">{{ signed_money(m.payable_delta) }}</td></tr>
{% endfor %}
</tbody>
</table>
{% endif %}
{% endif %}
</section>
"""

_ENV = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
_ENV.filters["clean"] = fmt.clean
_ROWS = _ENV.from_string(ROWS)
_SECTION = _ENV.from_string(SECTION)


def closing_rows(view: ReportView) -> Markup:
    """The header rows naming the version, who sealed it and the seal ('' for a live report)."""
    c = view.inputs.closing
    return Markup("") if c is None else Markup(_ROWS.render(c=c, f=fmt))


def closing_section(view: ReportView) -> Markup:
    """The closing and restatement section ('' for a live report)."""
    c = view.inputs.closing
    if c is None:
        return Markup("")
    contract = next(x for x in view.contracts if x.contract.code == c.contract)
    kpis, money = compare(c, view.inputs.results.rows, money_figures(view))
    streets = {s.code: s.name for s in [*contract.streets, contract.district]}
    names = {k.code: k.name for k in contract.contract.kpis}
    return Markup(_SECTION.render(
        c=c, v=view, f=fmt, kpis=kpis, money=money if contract.district.payment else [],
        names=f"「{contract.contract.name}」", street=lambda code: streets.get(code, code),
        kpi=lambda code: names.get(code, code), signed_money=signed_money, signed_points=signed_points))


def money_figures(view: ReportView) -> list:
    """This version's money lines (streets, then the district) as the comparison reads them."""
    from .versions import MoneyFigures

    out = []
    for c in view.contracts:
        for line in [*c.streets, c.district]:
            if line.payment is not None:
                out.append(MoneyFigures(street=line.code, fee=line.payment.fee, deduction=line.payment.deduction,
                                        payable=line.payment.payable))
    return out
