"""The daily digest (每日简报): yesterday and the month so far, from the ledger, once a day.

Sent to the district recipients at ``digest.at`` (Shanghai time), and to each street's
contacts for their own street when ``digest.streets`` is true (off by default). Every KPI
figure is the ledger's: yesterday is ``ledger_results`` of ``[yesterday 00:00, today 00:00)``
and the month so far of ``[month start, today 00:00)`` — a reviewer gets the same numbers from
the ledger (the CSV attachment lists them with their numerators and denominators). Beside
them: the open incidents, the provisional money at risk (the payment rule applied to the
month so far, as if the month ended now), the monitor's coverage, the messages lost in
transit per street (yesterday and the month so far: the ledger's hourly ``lost`` net of
``recovered``, and their share of received + lost), and the data-quality counts since the
previous digest (rejected messages by kind, duplicates, stale and late ones).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Any

from ..errors import ConfigError
from ..grafana.names import REJECT_NAMES
from ..ledger.read import ledger_tally
from ..ledger.store import Ledger
from ..payment import PaymentLine, payment_for
from ..registry import Registry
from ..results import Results
from ..tally import DISTRICT, Tally
from ..timebase import US_PER_S, day_start, day_to_date, month_bounds
from .evaluate import DigestRequest
from .fmt import body_line, percent, when
from .message import message_row
from .model import AlertView, Notification
from .rules import AlertRules, MonthRiskRule
from .sections import Names

QUALITY_NAMES = {"engine:duplicate": "重复消息 (duplicate)", "engine:stale": "过期乱序 (stale)",
                 "engine:late": "迟到 (late)"}
LOSS_KINDS = ("lost", "recovered", "heartbeats", "lost_across_gap")
DIGEST_COLUMNS = ("period", "contract", "street", "kpi", "numerator", "denominator", "value", "threshold", "pass")


@dataclass(frozen=True, kw_only=True)
class Digest:
    request: DigestRequest
    yesterday: Results
    month: Results
    payments: tuple[PaymentLine, ...]  # provisional, per contract × street of the digest
    loss: dict[tuple[str, str, str], dict[str, int]]  # (period, contract, street or district) -> lost, recovered, heartbeats

    def streets(self, registry: Registry) -> list[str]:
        codes = registry.rules.street_codes()
        return [self.request.street] if self.request.street else [*codes, DISTRICT]


def build_digest(ledger: Ledger, registry: Registry, request: DigestRequest) -> Digest:
    """The digest's figures, read from the ledger."""
    end = day_start(request.day + 1)
    month_start, _ = month_bounds(day_to_date(request.day).strftime("%Y-%m"))
    tallies = {"yesterday": ledger_tally(ledger, registry, day_start(request.day), end),
               "month": ledger_tally(ledger, registry, month_start, end)}
    yesterday, month = tallies["yesterday"].results(), tallies["month"].results()
    loss = {key: n for period, tally in tallies.items() for key, n in _loss_counts(period, tally, registry).items()}
    payments = []
    streets = [request.street] if request.street else registry.rules.street_codes()
    for contract in registry.rules.contracts:
        for street in streets:
            try:
                payments.append(payment_for(contract, street, month.rows))
            except ConfigError:
                continue  # no payment rule or fee for it: the KPIs are still shown
    return Digest(request=request, yesterday=yesterday, month=month, payments=tuple(payments), loss=loss)


def _loss_counts(period: str, tally: Tally, registry: Registry) -> dict[tuple[str, str, str], dict[str, int]]:
    """The ledger's lost, recovered and heartbeat counts per contract × street and contract total."""
    streets = registry.rules.street_codes()
    n = len(streets)
    out = {}
    for ci, contract in enumerate(registry.rules.contracts):
        for si, street in enumerate([*streets, DISTRICT]):
            pick = slice(ci * n, (ci + 1) * n) if street == DISTRICT else slice(ci * n + si, ci * n + si + 1)
            out[period, contract.code, street] = {kind: int(tally.counts[kind][pick].sum()) if kind in tally.counts else 0
                                                  for kind in LOSS_KINDS}
    return out


def compose_digest(n: Notification, digest: Digest, registry: Registry, alert_rules: AlertRules,
                   sender: str) -> dict[str, Any]:
    names = Names(registry.rules)
    request = digest.request
    date = day_to_date(request.day).isoformat()
    scope = names.street(request.street) if request.street else "全区"
    lines = [f"每日简报 (daily digest)：{scope}，{date}", f"生成时间 (at)：{when(n.at)}", ""]
    judged = _judged_contracts(digest, registry, alert_rules)
    lines += _kpis(digest, names, registry, judged)
    lines += ["", *_money(digest, names, registry, judged, alert_rules)]
    lines += ["", *_loss(digest, names, registry)]
    lines += ["", *_incidents(request, names)]
    lines += ["", *_quality(request)]
    lines += ["", f"规则版本 rules {digest.month.rules_version} · 设备清单版本 registry {digest.month.registry_version}",
              "数字均取自账本 (ledger)，明细（分子/分母）见附件 CSV。时间均为北京时间 (Asia/Shanghai)。",
              "—— ptmon SLA 监测（普陀区城市运行管理中心）"]
    subject = f"【每日简报】{scope} {date}：" + _headline(digest, registry, judged)
    body = "\n".join(body_line(x) for x in lines) + "\n"
    name = f"digest-{date}{'-' + request.street if request.street else ''}.csv"
    row = message_row(n, subject, body, sender, (name, digest_csv(digest, registry)))
    return {**row, "kind": "digest", "contract": "", "street": request.street, "kpi": ""}


def digest_csv(digest: Digest, registry: Registry) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(DIGEST_COLUMNS)
    streets = set(digest.streets(registry))
    for period, results in (("yesterday", digest.yesterday), ("month", digest.month)):
        for r in results.rows:
            if r.street in streets:
                passed = r.passed
                writer.writerow([period, r.contract, r.street, r.kpi, r.numerator, r.denominator, r.value_text(),
                                 str(r.threshold), "" if passed is None else str(passed).lower()])
    return out.getvalue()


def _judged_contracts(digest: Digest, registry: Registry, alert_rules: AlertRules) -> set[str]:
    """The contracts whose month so far may be judged: the month-at-risk guard (``min_observed``
    of the month and ``min_elapsed`` observed). Below it a month's verdicts and deductions would
    state an hour's data as the month's, so the digest shows the values but withholds them."""
    setting = alert_rules.month_risk
    start, end = month_bounds(day_to_date(digest.request.day).strftime("%Y-%m"))
    judged = set()
    for contract in registry.rules.contracts:
        observed = int(digest.month.coverage.get(contract.code, {}).get("observed_seconds", 0))
        share = Fraction(observed * US_PER_S, end - start)
        if observed > 0 and observed >= setting.min_elapsed and share >= Fraction(setting.min_observed):
            judged.add(contract.code)
    return judged


def _headline(digest: Digest, registry: Registry, judged: set[str]) -> str:
    failing = [r for r in digest.month.rows if r.street in set(digest.streets(registry)) and r.street != DISTRICT
               and r.contract in judged and r.passed is False and not _informational(registry, r.contract, r.kpi)]
    verdict = f"本月 {len(failing)} 项未达标"
    if len(judged) < len(registry.rules.contracts):
        verdict = ("本月监测不足，暂不判定达标" if not judged else verdict + "（部分合同监测不足，暂不判定）")
    return f"{verdict}，{len(_told(digest.request)[0])} 项告警未恢复"


def _informational(registry: Registry, contract: str, kpi: str) -> bool:
    found = registry.rules.contract(contract).kpi(kpi)
    return bool(found is not None and found.informational)


def _kpis(digest: Digest, names: Names, registry: Registry, judged: set[str]) -> list[str]:
    lines = []
    for contract in registry.rules.contracts:
        cov_y = digest.yesterday.coverage[contract.code]
        cov_m = digest.month.coverage[contract.code]
        lines += [f"{contract.name} ({contract.code})：昨日监测覆盖 {_share(cov_y)}，本月 {_share(cov_m)}",
                  "  街镇 | 指标 | 昨日 (yesterday) | 本月累计 (month) | 阈值 | 本月达标"]
        for street in digest.streets(registry):
            for kpi in contract.kpis:
                y = digest.yesterday.row(contract.code, street, kpi.code)
                m = digest.month.row(contract.code, street, kpi.code)
                mark = {True: "达标", False: "未达标", None: "无数据"}[m.passed] if contract.code in judged else "暂不判定"
                name = "全区合计" if street == DISTRICT else names.street(street)
                lines.append(f"  {name} | {kpi.name} | {_value(y)} | {_value(m)} | {percent(kpi.threshold)} | {mark}")
    for a, b in digest.yesterday.gaps:
        lines.append(f"昨日监测缺口 (monitoring gap)：{when(a)} — {when(b)}")
    return lines


def _money(digest: Digest, names: Names, registry: Registry, judged: set[str], alert_rules: AlertRules) -> list[str]:
    lines = ["暂估扣款 (provisional deduction, 按本月累计值与合同扣款规则，若月末仍如此)："]
    setting = alert_rules.month_risk
    for contract in registry.rules.contracts:
        if contract.code in judged:  # the share of the month the estimate stands on, always said
            lines.append(f"  {names.contract_short(contract.code)}："
                         f"依据本月监测覆盖 {_share(digest.month.coverage[contract.code])} 的数据暂估 "
                         "(estimated from this share of the month)")
        else:
            lines.append(f"  {names.contract_short(contract.code)}：本月监测覆盖 {_share(digest.month.coverage[contract.code])}，"
                         f"{_shortfall(digest, contract.code, setting)}，暂不估算 "
                         "(withheld: too little of the month observed)")
    counted = [p for p in digest.payments if p.contract in judged]
    for p in counted:
        if p.deduction:
            lines.append(f"  {names.street(p.street)} {names.contract_short(p.contract)}：{p.deduction} 元"
                         f"（月租 {p.fee} 元，扣 {p.deduction_percent_text(2)}%）")
    total = sum((p.deduction for p in counted), Decimal(0))
    lines.append(f"  合计 (total)：{total} 元" if judged else "  合计 (total)：暂不估算")
    return lines


def _shortfall(digest: Digest, contract: str, setting: MonthRiskRule) -> str:
    """Which part of the month-at-risk guard the month so far misses."""
    start, end = month_bounds(day_to_date(digest.request.day).strftime("%Y-%m"))
    observed = int(digest.month.coverage.get(contract, {}).get("observed_seconds", 0))
    missing = []
    if Fraction(observed * US_PER_S, end - start) < Fraction(setting.min_observed):
        missing.append(f"未达本月的 {percent(setting.min_observed, 0)}")
    if observed < setting.min_elapsed:
        missing.append(f"已观测 {observed / 3600:.1f} 小时，未满 {setting.min_elapsed / 3600:g} 小时")
    return "，".join(missing) or "尚无监测数据"


LISTED = 30  # open alerts listed in the digest


def _told(request: DigestRequest) -> tuple[list[AlertView], list[AlertView]]:
    """The open alerts the reader was told about, and those a wider cause holds back."""
    held = [v for v in request.open if v.details.get("inhibited_by")]
    return [v for v in request.open if not v.details.get("inhibited_by")], held


def _incidents(request: DigestRequest, names: Names) -> list[str]:
    if not request.open:
        return ["未恢复的告警 (open alerts)：无"]
    told, held = _told(request)
    lines = [f"未恢复的告警 (open alerts)：{len(told)} 项"
             + (f"；另有 {len(held)} 项由上级原因引起、未单独发送 (held back by their cause)" if held else "")]
    listed = told + held
    for v in listed[:LISTED]:
        cause = v.details.get("inhibited_by")
        lines.append(f"  {names.alert(v.key)}，{when(v.since)} 起" + (f"（由「{names.alert(cause)}」引起）" if cause else ""))
    if len(listed) > LISTED:
        lines.append(f"  …… 另有 {len(listed) - LISTED} 项 (and {len(listed) - LISTED} more)")
    return lines


def _quality(request: DigestRequest) -> list[str]:
    since = f"自 {when(request.since)} 起" if request.since is not None else "自采集器启动起"
    q = request.quality
    rejects = {k[7:]: v for k, v in q.items() if k.startswith("reject:") and v}
    lines = [f"数据质量 (data quality，{since})："]
    lines.append("  拒收 (rejected)：" + ("，".join(f"{REJECT_NAMES.get(k, k)} {v}" for k, v in sorted(rejects.items()))
                                       if rejects else "0"))
    for key in ("engine:duplicate", "engine:stale", "engine:late"):
        lines.append(f"  {QUALITY_NAMES[key]}：{q.get(key, 0)}")
    return lines


def _loss(digest: Digest, names: Names, registry: Registry) -> list[str]:
    lines = ["传输丢失 (lost in transit)：净丢失 = 丢失 − 迟到补回 (lost − recovered)，丢失率 = 净丢失 / (收到 + 净丢失)",
             "  丢失的心跳对合同仍计为未上报 (a heartbeat lost in transit is still a missed heartbeat for the contract)"]
    for contract in registry.rules.contracts:
        lines += [f"  {contract.name} ({contract.code})", "  街镇 | 昨日净丢失 (yesterday) | 本月净丢失 (month)"]
        for street in digest.streets(registry):
            name = "全区合计" if street == DISTRICT else names.street(street)
            cells = [_lost(digest.loss[period, contract.code, street]) for period in ("yesterday", "month")]
            lines.append(f"  {name} | {cells[0]} | {cells[1]}")
    return lines


def _lost(counts: dict[str, int]) -> str:
    """Net lost in transit; seq gaps spanning a monitoring gap are not the pipe's and shown apart."""
    across = counts.get("lost_across_gap", 0)
    net = counts["lost"] - across - counts["recovered"]
    messages = counts["heartbeats"] + max(net, 0)
    if not messages and not net and not across:
        return "—"  # nothing heard, nothing lost
    rate = percent(Decimal(max(net, 0)) / Decimal(messages)) if messages else "—"
    return f"{net} 条 ({rate})" + (f"，另监测缺口期间未收到 {across} 条" if across else "")


def _value(row: Any) -> str:
    return f"{row.percent_text(2)}%" if row.denominator else "—"


def _share(coverage: dict[str, int]) -> str:
    period = coverage.get("period_seconds") or 0
    return percent(Decimal(coverage["observed_seconds"]) / Decimal(period), 1) if period else "—"
