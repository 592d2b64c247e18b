"""The report's HTML template and style sheet (one document for the browser and the PDF).

Kept as Python strings so they ship inside the package without package-data settings.
Jinja2 autoescapes every ``{{ }}``: ids, names and reasons can never become markup.
"""

from __future__ import annotations

CSS = """
@page {
  size: A4;
  margin: 20mm 14mm 18mm 14mm;
  @top-left { font-size: 8pt; color: #555; }
  @top-right { font-size: 7pt; color: #888; }
  @bottom-center { content: "第 " counter(page) " 页 / 共 " counter(pages) " 页"; font-size: 8.5pt; color: #333; }
}
@page :first { @top-left { content: none; } @top-right { content: none; } }
html { font-family: "Noto Sans CJK SC", "Source Han Sans SC", "Noto Sans SC", "WenQuanYi Zen Hei",
       "Microsoft YaHei", "PingFang SC", sans-serif; font-size: 9.5pt; color: #111; line-height: 1.45; }
body { margin: 0; }
h1 { font-size: 20pt; text-align: center; margin: 10mm 0 2mm; letter-spacing: 0.08em; }
h2 { font-size: 13pt; margin: 0 0 3mm; padding-bottom: 1mm; border-bottom: 1.5pt solid #1f5fa8; break-after: avoid; }
h3 { font-size: 11pt; margin: 5mm 0 2mm; break-after: avoid; }
h4 { font-size: 9.5pt; margin: 3mm 0 1mm; break-after: avoid; }
section.major { break-before: page; }
.org { text-align: center; font-size: 12pt; margin-top: 4mm; }
.subtitle { text-align: center; font-size: 12pt; margin-bottom: 6mm; }
p, ul { margin: 1.5mm 0; }
.note { font-size: 8pt; color: #444; }
table { border-collapse: collapse; width: 100%; margin: 1.5mm 0 3mm; font-size: 8.5pt; }
thead { display: table-header-group; }
tr { break-inside: avoid; }
th, td { border: 0.5pt solid #999; padding: 1mm 1.4mm; vertical-align: top; }
th { background: #e9eef5; font-weight: bold; text-align: center; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.c { text-align: center; white-space: nowrap; }
tbody td:first-child { white-space: nowrap; }
table.exemptions, table.fixed { table-layout: fixed; }
.keep { break-after: avoid; }
.legend { break-after: avoid; }
td.id { font-family: "Noto Sans Mono CJK SC", "DejaVu Sans Mono", monospace; font-size: 7.5pt; word-break: break-all; }
td.text { white-space: pre-line; word-break: break-all; }
tr.total td { font-weight: bold; background: #f4f4f4; border-top: 1pt solid #555; }
.pass { color: #176b2c; font-weight: bold; }
.fail { color: #b3161b; font-weight: bold; }
.none { color: #777; }
.info { color: #555; }
table.meta { width: auto; margin: 0 auto 5mm; font-size: 9pt; }
table.meta th { text-align: left; background: none; border: none; padding: 0.6mm 4mm 0.6mm 0; white-space: nowrap; }
table.meta td { border: none; padding: 0.6mm 0; }
td.hash { font-family: "Noto Sans Mono CJK SC", "DejaVu Sans Mono", monospace; font-size: 7.5pt; word-break: break-all; }
.warnings { border: 1pt solid #d08a00; background: #fff8e6; padding: 2mm 3mm; margin: 3mm 0; }
.warnings li { break-inside: avoid; }
.warnings h3 { margin-top: 0; color: #8a5a00; }
.warnings li { margin: 0.8mm 0; }
.charts { display: flex; flex-wrap: wrap; justify-content: space-between; }
figure.chart { width: 49%; margin: 0 0 2mm; break-inside: avoid; }
figure.chart figcaption { font-size: 8.5pt; font-weight: bold; text-align: center; }
figure.chart figcaption .sub { font-weight: normal; color: #555; }
svg.trend { width: 100%; height: auto; display: block; }
.legend { font-size: 8pt; margin: 0 0 2mm; }
.legend .key { margin-right: 5mm; white-space: nowrap; }
.legend .swatch { display: inline-block; width: 7mm; height: 0; vertical-align: middle; margin-right: 1.5mm; }
.legend .dot { display: inline-block; width: 2mm; height: 2mm; border-radius: 1mm; vertical-align: middle; margin-right: 1.5mm; }
.signature { margin-top: 10mm; break-inside: avoid; }
.signature table { border: none; font-size: 11pt; }
.signature td { border: none; padding: 6mm 2mm 1mm; }
.signature td.line { border-bottom: 0.8pt solid #111; width: 38%; }
.signature td.label { white-space: nowrap; width: 12%; }
@media screen {
  body { max-width: 190mm; margin: 10mm auto; padding: 0 6mm; }
  section.major { margin-top: 12mm; }
}
"""

# Only in a provisional report (a final one keeps its exact bytes).
PROVISIONAL_CSS = """
.provisional { border: 1.5pt solid #b3161b; background: #fdecec; padding: 2mm 3mm; margin: 2mm 0 4mm; }
.provisional .headline { font-size: 12pt; font-weight: bold; color: #b3161b; margin: 0 0 1mm; }
.provisional li { margin: 0.8mm 0; }
caption.coverage { caption-side: top; text-align: left; font-size: 8.5pt; color: #b3161b; padding-bottom: 0.8mm; }
.prov { color: #b3161b; font-size: 7.5pt; font-weight: bold; }
"""

TEMPLATE = r"""<!DOCTYPE html>
<html lang="zh-CN">
<head>
<meta charset="utf-8">
<title>月度租赁服务考核验收报告 {{ v.inputs.month }}{% if cl %}（{{ cl.label }}）{% endif %}{% if st.provisional %}（临时报告 Provisional）{% endif %}</title>
<style>{{ css }}</style>
</head>
<body>
<header>
<div class="org">上海市普陀区城市运行管理中心</div>
<h1>月度租赁服务考核验收报告{% if cl %}（{{ cl.label }}）{% endif %}{% if st.provisional %}（临时报告）{% endif %}</h1>
<div class="subtitle">{{ v.month_label }} · {% for c in v.contracts %}{{ c.contract.name }}{% if not loop.last %}、{% endif %}{% endfor %}</div>
{% if st.provisional %}
<div class="provisional">
<p class="headline">临时报告（Provisional report）{% if st.cut_short %} · 截至 {{ st.as_of() }}（上海时间）{% endif %}</p>
<ul>
{% for r in st.reasons() %}<li>{{ r }}</li>
{% endfor %}
{% for c in v.contracts %}<li>{{ c.contract.name }}：{{ c.coverage_line() }}{% if c.provisional %}，金额暂定 (provisional){% endif %}</li>
{% endfor %}
<li>{{ st.amounts_note() }}</li>
</ul>
</div>
{% endif %}
<table class="meta">
<tr><th>考核期间</th><td>{{ f.instant(v.inputs.start) }} 至 {{ f.instant(v.inputs.end) }}（北京时间，不含终点）</td></tr>
<tr><th>数据来源</th><td>{{ source_label }}</td></tr>
<tr><th>规则版本 / 设备清单版本</th><td>{{ v.inputs.rules.version }} / {{ v.inputs.registry.version }}</td></tr>
<tr><th>输入文件 SHA-256</th><td class="hash">{{ v.inputs.digest or "—" }}</td></tr>
{% if cl %}{{ closing_rows }}{% endif %}
</table>
</header>

<section>
<h2>一、考核结论（Summary）</h2>
<table>
<thead><tr><th>合同</th><th>考核街镇</th><th>全部指标达标</th>{% if st.provisional %}<th>监测覆盖率</th>{% endif %}<th>月租赁费（元）</th><th>扣减金额（元）</th><th>应付金额（元）</th></tr></thead>
<tbody>
{% for c in v.contracts %}{% set p = c.district.payment %}
<tr><td>{{ c.contract.name }} [{{ c.contract.code }}]</td><td class="num">{{ c.streets|length }}</td>
<td class="num">{{ c.street_passes() }} / {{ c.streets|length }}</td>{{ coverage_cell(c) }}
<td class="num">{{ f.money(p.fee if p else none) }}</td><td class="num">{{ f.money(p.deduction if p else none) }}{{ prov(c, p) }}</td>
<td class="num">{{ f.money(p.payable if p else none) }}{{ prov(c, p) }}</td></tr>
{% endfor %}
{% set t = v.money_total() %}{% if t and v.contracts|length > 1 %}
<tr class="total"><td colspan="{{ 4 if st.provisional else 3 }}">合计</td><td class="num">{{ f.money(t.fee) }}</td><td class="num">{{ f.money(t.deduction) }}{{ prov(v, t) }}</td><td class="num">{{ f.money(t.payable) }}{{ prov(v, t) }}</td></tr>
{% endif %}
</tbody>
</table>
<p class="note">各合同按街镇考核：每项合同绩效指标不低于阈值为达标；扣减比例 = min(上限, Σ 低于阈值的百分点 × 每百分点扣减比例)，
扣减金额 = 月租赁费 × 扣减比例（四舍五入到分），应付金额 = 月租赁费 − 扣减金额。详见各合同“租赁费与扣减”及“计算方法”。</p>
{% if v.warnings %}
<div class="warnings"><h3>审核提示（请在签字前阅读）</h3><ul>
{% for w in v.warnings %}<li>{{ w }}</li>{% endfor %}
</ul></div>
{% endif %}
</section>
{% if cl %}{{ closing_section }}{% endif %}

{% for c in v.contracts %}{% set n = loop.index %}
<section class="major contract" id="contract-{{ c.contract.code }}">
<h2>{{ numerals[n + 1] }}、{{ c.contract.name }} [{{ c.contract.code }}]</h2>
<p>绩效指标：{% for k in c.terms %}{{ k.name }} {{ f.threshold(k.threshold) }}{% if not loop.last %}；{% endif %}{% endfor %}{% if c.informational %}（另列参考：{% for k in c.informational %}{{ k.name }}{% if not loop.last %}、{% endif %}{% endfor %}，不计入考核）{% endif %}。
在线率口径：{{ method_label(c.contract) }}。监测覆盖 {{ f.fraction_percent(c.coverage, 3) }}（{{ f.duration(c.observed_seconds) }} / {{ f.duration(c.period_seconds) }}）。</p>

<h3>{{ sub[1] }}分街镇考核结果</h3>
<table>
{% if c.provisional %}
<caption class="coverage">{{ c.coverage_line() }} · 以下指标只反映已观测的时段，暂定 (provisional)</caption>
{% endif %}
<thead><tr><th>街镇</th><th>在册设备（台）</th><th>平均应在线（台）</th>
{% for k in c.terms %}<th>{{ k.name }}<br>{{ f.threshold(k.threshold) }}</th>{% endfor %}
{% for k in c.informational %}<th class="info">{{ k.name }}<br>（参考）</th>{% endfor %}
<th>结论</th></tr></thead>
<tbody>
{% for s in c.streets + [c.district] %}
<tr{% if s.code == "district" %} class="total"{% endif %}><td>{{ s.name }}</td><td class="num">{{ f.count(s.devices) }}</td>
<td class="num">{{ mean(s.mean_expected) }}</td>
{% for k in c.terms %}{% set r = s.rows.get(k.code) %}<td class="num">{{ f.percent(r) }} {{ mark(r.passed if r else none) }}</td>{% endfor %}
{% for k in c.informational %}<td class="num info">{{ f.percent(s.rows.get(k.code)) }}</td>{% endfor %}
<td class="c">{% if s.code == "district" %}—{% else %}{{ mark(s.passed) }}{% endif %}</td></tr>
{% endfor %}
</tbody>
</table>
<p class="note">在册设备：本月任一日在租赁期内的登记设备；平均应在线：每个观测采样时刻应在线设备数的平均（已扣除豁免）。百分比四舍五入到 0.001%，达标与否按精确值判定。全区合计行为全区指标，仅供参考，金额按街镇计算后相加。</p>

<h3>{{ sub[2] }}租赁费与扣减</h3>
{% if c.district.payment %}
<table>
{% if c.provisional %}
<caption class="coverage">{{ c.coverage_line() }} · 扣减与应付金额暂定 (provisional)</caption>
{% endif %}
<thead><tr><th>街镇</th><th>月租赁费（元）</th>
{% for k in c.terms %}<th>{{ k.name }}<br>低于阈值（百分点）</th>{% endfor %}
<th>扣减比例</th><th>扣减金额（元）</th><th>应付金额（元）</th></tr></thead>
<tbody>
{% for s in c.streets %}{% set p = s.payment %}
<tr><td>{{ s.name }}</td><td class="num">{{ f.money(p.fee) }}</td>
{% for k in c.terms %}<td class="num">{{ shortfall(p, k.code) }}</td>{% endfor %}
<td class="num">{{ p.deduction_percent_text() }}%{% if p.capped %}（封顶）{% endif %}</td>
<td class="num">{{ f.money(p.deduction) }}{{ prov(c, p) }}</td><td class="num">{{ f.money(p.payable) }}{{ prov(c, p) }}</td></tr>
{% endfor %}
{% set p = c.district.payment %}
<tr class="total"><td>{{ c.district.name }}</td><td class="num">{{ f.money(p.fee) }}</td>
{% for k in c.terms %}<td></td>{% endfor %}
<td class="num">{{ p.deduction_percent_text() }}%</td><td class="num">{{ f.money(p.deduction) }}{{ prov(c, p) }}</td><td class="num">{{ f.money(p.payable) }}{{ prov(c, p) }}</td></tr>
</tbody>
</table>
<p class="note">扣减比例 = min({{ pct(c.contract.payment.cap) }}, Σ 低于阈值的百分点 × {{ pct(c.contract.payment.rate_per_point) }})，按精确值计算，显示四舍五入到 0.0001%；
扣减金额四舍五入到分，应付金额 = 月租赁费 − 扣减金额。“—”：该指标无数据，未据此扣款，需人工核定。</p>
{% else %}
<p>合同文件未配置付款规则（contracts.yaml 中无 payment），本报告不计算金额。</p>
{% endif %}

<div class="keep"><h3>{{ sub[3] }}每日趋势（按日指标与阈值）</h3>
{{ legend(c) }}</div>
<div class="charts">
{% for s in c.streets %}
<figure class="chart"><figcaption>{{ s.name }}</figcaption>{{ chart(c, s) }}</figure>
{% endfor %}
</div>

<h3>{{ sub[4] }}运维及维修记录</h3>
<table>
<thead><tr><th>街镇</th><th>离线事件</th><th>已修复</th><th>修复时长<br>中位数</th><th>修复时长<br>P90</th>
<th>{{ f.response(c.contract.response_time) }}内修复<br>（响应时限）</th><th>{% if st.cut_short %}截至<br>{{ st.as_of() }}<br>仍离线{% else %}月末仍离线{% endif %}</th><th>退出考核<br>（退租/豁免）</th></tr></thead>
<tbody>
{% for s in c.streets + [c.district] %}{% set m = s.maintenance %}
<tr{% if s.code == "district" %} class="total"{% endif %}><td>{{ s.name }}</td><td class="num">{{ f.count(m.episodes) }}</td>
<td class="num">{{ f.count(m.restored) }}</td><td class="num">{{ f.duration(m.median_restore) }}</td><td class="num">{{ f.duration(m.p90_restore) }}</td>
<td class="num">{{ m.within_response }} / {{ m.due }}（{{ f.fraction_percent(m.within_share, 1) }}）</td>
<td class="num">{{ f.count(m.open_at_end) }}</td><td class="num">{{ f.count(m.left) }}</td></tr>
{% endfor %}
</tbody>
</table>
<p class="note">离线事件：设备最后一次心跳超时起至心跳恢复止（与本月有重叠的事件）。修复时长为整个事件的长度；中位数、P90 取最近秩。
响应时限内修复 = 时限内恢复的事件 / 应已处理的事件（本月已恢复的，加上月末仍离线且已超过时限的）。{% if st.cut_short %}
本月监测只到 {{ st.as_of() }}（上海时间）：“月末”均指该最后观测时刻，其后的恢复情况尚无数据。{% endif %}</p>

<h3>{{ sub[5] }}本月离线时长最长的设备（每街镇前 {{ worst_n }} 台）</h3>
{% if st.cut_short %}
<p class="note">离线时长只计到最后观测时刻 {{ st.as_of() }}（上海时间），不计入其后尚无数据的时段；末列为“是”的设备{{ st.open_label() }}。</p>
{% endif %}
{% set quiet = [] %}
{% for s in c.streets %}{% set rows = c.worst[s.code] %}
{% if rows %}
<h4>{{ s.name }}</h4>
<table class="fixed">
<colgroup><col style="width: 5%"><col style="width: 18%"><col style="width: 12%"><col style="width: 15%"><col style="width: 13%">
<col style="width: 11%"><col style="width: 6%"><col style="width: 12%"><col style="width: 8%"></colgroup>
<thead><tr><th>序号</th><th>设备编号</th><th>类型</th><th>小区</th><th>网关</th><th>本月离线</th><th>次数</th><th>最长一次</th><th>{% if st.cut_short %}截至<br>{{ st.as_of()[5:] }}<br>仍离线{% else %}月末<br>仍离线{% endif %}</th></tr></thead>
<tbody>
{% for d in rows %}
<tr><td class="num">{{ loop.index }}</td><td class="id">{{ d.device|clean }}</td><td>{{ type_name(d.type) }}</td>
<td class="text">{{ d.community|clean }}</td><td class="id">{{ d.gateway|clean }}</td>
<td class="num">{{ f.duration(d.offline_seconds) }}</td><td class="num">{{ d.episodes }}</td><td class="num">{{ f.duration(d.longest_seconds) }}</td>
<td class="c">{% if d.open_at_end %}<span class="fail">是</span>{% endif %}</td></tr>
{% endfor %}
</tbody>
</table>
{% else %}{% set _ = quiet.append(s.name) %}{% endif %}
{% endfor %}
{% if quiet %}<p class="note">本月无离线记录的街镇：{{ quiet|join("、") }}。</p>{% endif %}
{% if c.health %}
<h3>{{ sub[6] }}设备健康：在线但失效（Online but not doing their job）</h3>
<p class="note">设备心跳正常（计为在线）但不再完成本职工作：失明（抓拍尝试远低于其自身基线）、劣化（成功率远低于其自身基线）、卡死（感知成功数不再增加）。
“按基线”一列为假设这些设备按各自基线工作时本街镇的{{ c.health_kpi_name }}：(Σ成功 + 少成功数) / (Σ尝试 + 少尝试数)，供审核参考，不据此计费。</p>
<table>
<thead><tr><th>街镇</th><th>失明</th><th>劣化</th><th>卡死</th><th>少尝试（次）</th><th>少成功（次）</th><th>本月{{ c.health_kpi_name }}<br>（实测）</th><th>按基线</th></tr></thead>
<tbody>
{% for h in c.health %}<tr><td>{{ street_name(h.code) }}</td><td class="num">{{ h.count("blind") }}</td><td class="num">{{ h.count("degraded") }}</td>
<td class="num">{{ h.count("stuck") }}</td><td class="num">{{ f.count(h.missing_attempts|round|int) }}</td><td class="num">{{ f.count(h.missing_successes|round|int) }}</td>
<td class="num">{{ f.fraction_percent(h.measured, 3) }}</td><td class="num">{{ f.fraction_percent(h.at_baseline, 3) }}</td></tr>
{% endfor %}
</tbody>
</table>
<table class="fixed">
<colgroup><col style="width: 10%"><col style="width: 17%"><col style="width: 10%"><col style="width: 13%"><col style="width: 8%"><col style="width: 14%"><col style="width: 14%"><col style="width: 7%"><col style="width: 7%"></colgroup>
<thead><tr><th>街镇</th><th>设备编号</th><th>类型</th><th>小区</th><th>异常</th><th>开始（判定）</th><th>结束</th><th>实际<br>尝试/成功</th><th>基线<br>尝试/成功</th></tr></thead>
<tbody>
{% for h in c.health %}{% for a in h.anomalies %}
<tr><td>{{ street_name(h.code) }}</td><td class="id">{{ a.device|clean }}</td><td>{{ type_name(a.type) }}</td><td class="text">{{ a.community|clean }}</td>
<td>{{ kind_label(a.kind) }}</td><td>{{ f.instant(a.start) }}<br>（{{ f.instant(a.detected) }}）</td>
<td>{% if a.end is not none %}{{ f.instant(a.end) }}{% else %}<span class="fail">{{ st.open_label() if st.cut_short else "月末仍存在" }}</span>{% endif %}</td>
<td class="num">{{ a.attempts|round|int }} / {{ a.successes|round|int }}</td><td class="num">{{ a.expected_attempts|round|int }} / {{ a.expected_successes|round|int }}</td></tr>
{% endfor %}{% endfor %}
</tbody>
</table>
<p class="note">每行为该异常在本月内的部分：实际为其间计入的尝试（传感器为读数）与成功次数，基线为按设备自身近期基线对同一时段的预期。检测规则见 rules/anomaly.yaml。</p>
{% endif %}
</section>
{% endfor %}

<section class="major">
<h2>{{ numerals[v.contracts|length + 2] }}、豁免、监测覆盖与数据质量</h2>
<h3>豁免（经批准不计入应在线的设备与时段）</h3>
{% if v.exemptions %}
<table class="exemptions">
<colgroup><col style="width: 5%"><col style="width: 6%"><col style="width: 12%"><col style="width: 15%"><col style="width: 8%"><col style="width: 6%"><col style="width: 22%"><col style="width: 10%"><col style="width: 16%"></colgroup>
<thead><tr><th>编号</th><th>范围</th><th>对象</th><th>起止</th><th>本月时长</th><th>设备</th><th>原因</th><th>审批人</th><th>状态</th></tr></thead>
<tbody>
{% for x in v.exemptions %}{% set e = x.exemption %}
<tr><td class="num">{{ e.id }}</td><td>{{ scope_label(e.scope) }}</td><td class="id">{{ e.target|clean }}</td>
<td>{{ f.instant(e.start) }}<br>至 {{ f.instant(e.end) }}</td><td class="num">{{ f.duration(x.seconds_in_month) }}</td>
<td class="num">{{ f.count(x.devices) }}</td><td class="text">{{ e.reason|clean }}</td><td class="text">{{ e.approver|clean }}</td>
<td class="text">{% if e.active %}有效{% else %}已撤销（{{ f.instant(e.revoked_at) }}，{{ (e.revoked_by or "")|clean }}：{{ (e.revoke_reason or "")|clean }}）{% endif %}{% if x.late %}
登记于 {{ f.instant(e.created_at) }}（窗口开始后补登）{% endif %}</td></tr>
{% endfor %}
</tbody>
</table>
<p class="note">已撤销的豁免不计入；设备：本报告合同中该豁免覆盖的登记设备数。</p>
{% else %}
<p>本月无豁免。</p>
{% endif %}

<h3>监测覆盖与缺口</h3>
<p>{% for c in v.contracts %}{{ c.contract.name }}：观测 {{ f.duration(c.observed_seconds) }} / 全月 {{ f.duration(c.period_seconds) }}，覆盖 {{ f.fraction_percent(c.coverage, 3) }}。{% endfor %}</p>
{% if gaps %}
<table>
<thead><tr><th>序号</th><th>监测缺口开始</th><th>结束</th><th>时长</th></tr></thead>
<tbody>{% for a, b in gaps %}<tr><td class="num">{{ loop.index }}</td><td>{{ f.instant(a) }}</td><td>{{ f.instant(b) }}{% if not st.month_over and loop.last and b == v.inputs.end %}（月末，尚未到来）{% endif %}</td><td class="num">{{ f.duration((b - a) / 1000000) }}</td></tr>{% endfor %}</tbody>
</table>
<p class="note">监测缺口为监测系统本身未运行的时段：其间的采样缺失，既不计为设备离线，也不计为在线。</p>
{% else %}
<p>本月无监测缺口。</p>
{% endif %}

<h3>数据质量</h3>
<table class="fixed">
<colgroup><col style="width: 10%"><col style="width: 18%"><col style="width: 12%"><col style="width: 60%"></colgroup>
<thead><tr><th>处理</th><th>类别</th><th>报文数</th><th>说明</th></tr></thead>
<tbody>
{% for q in quality %}<tr><td>{{ q.group }}</td><td class="id">{{ (q.kind or "—")|clean }}</td><td class="num">{{ f.count(q.count) }}</td><td>{{ q.explanation or "（本报告未收录此类别的说明）" }}</td></tr>
{% endfor %}
</tbody>
</table>
<p class="note">拒收：报文整体不被采用，不计入任何指标。另行处理：报文已接收，按说明计入或不计入。</p>
<ul>
<li>未登记设备的报文（不计入）：{% if unknown %}{% for t, n in unknown %}<span class="id">{{ t|clean }}</span> ×{{ f.count(n) }}{% if not loop.last %}，{% endif %}{% endfor %}{% if unknown_more %} 等 {{ f.count(unknown_more) }} 个主题{% endif %}{% else %}无{% endif %}</li>
</ul>
</section>

<section class="major">
<h2>{{ numerals[v.contracts|length + 3] }}、计算方法与数据来源</h2>
<ul>
<li><strong>应在线设备</strong>：合同与街镇的登记设备中，验收日期 ≤ 当日 &lt; 退租日期者，减去该时刻有有效豁免的设备。从未上报的设备仍计为应在线（离线）。</li>
<li><strong>在线率</strong>：{% for c in v.contracts %}{{ c.contract.name }}按{{ method_label(c.contract) }}；{% endfor %}时间加权口径下，每个采样时刻 t 若设备最后一次心跳的接收时间 h 满足 t − 超时 &lt; h ≤ t 则为在线，在线率 = Σ在线 / Σ应在线；按日口径下，设备当日至少上报一次心跳即当日在线。以接收时间为准，不采用设备时钟。</li>
<li><strong>成功率</strong>（感知、人脸、车辆、抓拍）：本月各街镇计数器增量之和的比值（Σ成功 / Σ尝试），不是各设备比率的平均。</li>
<li><strong>监测覆盖</strong>：只统计监测系统运行期间的采样时刻；缺口期间不计在线也不计离线。</li>
<li><strong>达标</strong>：以精确分数与阈值比较；表中百分比四舍五入到 0.001%。</li>
<li><strong>正式报告与临时报告</strong>：报告生成时考核月已结束，且本报告各合同的监测覆盖率（已观测秒数 / 全月秒数）均为 100% 时为正式报告。考核月尚未结束（报告生成时刻早于月末，且监测尚未观测到月末），或有合同的监测覆盖率低于 100% 时为临时报告 (provisional)：标题与结论注明“临时报告”，考核结论、各考核结果表与扣减表旁列出监测覆盖率，扣减金额与应付金额标注“暂定”。离线时长一律只计到最后观测时刻（监测系统在本月最后一段观测的结束时刻），其时仍未恢复的设备记为“截至该时刻仍离线”。</li>
<li><strong>付款</strong>：扣减比例 = min(上限, Σ 各合同指标 max(0, 阈值 − 实际值) × 100 × 每百分点扣减比例)；扣减金额 = 月租赁费 × 扣减比例，四舍五入到 0.01 元；应付金额 = 月租赁费 − 扣减金额，故扣减 + 应付 = 租赁费。无数据的指标不扣款，列入审核提示。</li>
<li><strong>运维记录</strong>：离线事件来自{{ source_label }}；修复响应时限 {% for c in v.contracts %}{{ c.contract.code }} {{ f.response(c.contract.response_time) }}{% if not loop.last %}，{% endif %}{% endfor %}。</li>
</ul>
<h3>输入文件（可据此复核全部数字）</h3>
<table>
<thead><tr><th>类别</th><th>路径</th><th>SHA-256</th></tr></thead>
<tbody>
{% for x in v.inputs.files %}<tr><td>{{ role_label(x.role) }}</td><td class="text">{{ x.path|clean }}</td><td class="hash">{{ x.sha256 }}</td></tr>{% endfor %}
<tr class="total"><td colspan="2">全部输入的 SHA-256（按上列顺序）</td><td class="hash">{{ v.inputs.digest or "—" }}</td></tr>
</tbody>
</table>
<p class="note">规则版本 {{ v.inputs.rules.version }}（{{ v.inputs.rules.directory|string|clean }}），设备清单版本 {{ v.inputs.registry.version }}（{{ v.inputs.registry.path|clean }}）。
复核：<span class="id">ptmon report --month {{ v.inputs.month }} --from-archive …</span> 由原始报文存档重新计算，数字应与本报告一致。</p>

<div class="signature">
<table>
<tr><td class="label">审核人（签字）：</td><td class="line"></td><td class="label">日期：</td><td class="line"></td></tr>
<tr><td class="label">审核人（签字）：</td><td class="line"></td><td class="label">日期：</td><td class="line"></td></tr>
</table>
</div>
</section>
</body>
</html>
"""
