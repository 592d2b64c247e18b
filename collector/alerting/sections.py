"""One alert's part of an email body, per cause, in Chinese (English labels in brackets)."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction
from typing import Any

from ..brokerstats import QUEUE_SETTINGS
from ..rules import Rules
from ..timebase import US_PER_S
from .fmt import duration_text, header_safe, percent, when
from .model import AlertKey, AlertView, Cause
from .transit import RESOLVE_FACTOR, LossReading

SHOWN = 20  # devices listed in the body; all of them are in the CSV attachment
CONTRACT_SHORT = {"iot": "物联感知", "cam": "智能安防"}
RISK_WORDS = {1: "按当前趋势月末将低于阈值", 2: "本月已无法达到阈值"}
KIND_WORDS = {"blind": "失明 (blind)", "degraded": "抓拍劣化 (degraded)", "stuck": "感知卡死 (stuck)"}
KIND_EXPLAINED = {
    "blind": "心跳正常但抓拍尝试远低于其自身基线（镜头遮挡、转向、视频流中断或夜间补光失效）",
    "degraded": "抓拍尝试正常但成功率远低于其自身基线（失焦、镜头脏污、夜间红外故障）",
    "stuck": "心跳正常但感知成功数（read_ok）不再增加",
}


class Names:
    """Chinese names of streets, contracts and KPIs from the rule files."""

    def __init__(self, rules: Rules) -> None:
        self.rules = rules
        self.streets = {s.code: s.name for s in rules.streets}
        self.contracts = {c.code: c for c in rules.contracts}

    def street(self, code: str) -> str:
        return self.streets.get(code, code)

    def contract_name(self, code: str) -> str:
        c = self.contracts.get(code)
        return f"{c.name} ({code})" if c is not None else code

    def contract_short(self, code: str) -> str:
        return CONTRACT_SHORT.get(code, code)

    def kpi(self, contract: str, code: str) -> str:
        c = self.contracts.get(contract)
        kpi = c.kpi(code) if c is not None else None
        return kpi.name if kpi is not None else code

    def alert(self, key: AlertKey) -> str:
        """A short name of an alert: 桃浦镇 监控点位在线率, 网关 gw-1, 全区 …"""
        if key.cause is Cause.PIPELINE:
            return "全区设备心跳中断 (district silent)"
        if key.cause is Cause.BROKER_DROPS:
            return "MQTT 代理丢弃消息 (broker drops)"
        if key.cause is Cause.MONITOR_GAP:
            return "采集器监测中断 (monitoring gap)"
        if key.cause is Cause.LOSS and not key.street:
            return "全区 传输丢失 (loss in transit, whole broker)"
        where = f"{self.street(key.street)} {self.contract_short(key.contract)}"
        if key.cause is Cause.LOSS:
            return f"{where} 传输丢失 (loss in transit)"
        if key.cause is Cause.STREET_SILENT:
            return f"{where} 整街无心跳 (street silent)"
        if key.cause is Cause.GATEWAY:
            return f"{where} 网关 {header_safe(key.gateway, 80)} 离线 (gateway down)"
        if key.cause is Cause.DEVICE:
            return f"{where} 设备 {header_safe(key.device, 80)} {KIND_WORDS.get(key.kpi, key.kpi)}"
        suffix = f" {key.month} 月度风险 (month at risk)" if key.cause is Cause.MONTH_RISK else " 低于阈值 (breach)"
        return f"{self.street(key.street)} {self.kpi(key.contract, key.kpi)}{suffix}"


def section(v: AlertView, names: Names, at: int) -> list[str]:
    k, d = v.key, v.details
    lines = [f"■ {names.alert(k)}"]
    if k.street:
        lines.append(f"  街镇 (street)：{names.street(k.street)} ({k.street})；"
                     f"合同 (contract)：{names.contract_name(k.contract)}")
    lines.append(f"  开始 (since)：{when(v.since)}，已持续 (for) {duration_text((at - v.since) / US_PER_S)}")
    if d.get("inhibited_by") is not None:
        lines.append(f"  由「{names.alert(d['inhibited_by'])}」引起 (explained by it)")
    lines += _BY_CAUSE[k.cause](v, names, at)
    explained = d.get("explains") or []
    if explained:
        lines.append(f"  由此引起、不再单独发送的告警 (explained, not sent separately)：{len(explained)} 项")
        lines += [f"    {names.alert(x)}" for x in explained[:SHOWN]]
    return lines


def _pipeline(v: AlertView, names: Names, at: int) -> list[str]:
    d = v.details
    return [(f"  全区 {d.get('devices', 0)} 台应在线设备均无心跳，其间应收到约 {d.get('due', 0):.0f} 条 "
             f"(no heartbeat from any of {d.get('devices', 0)} devices; about {d.get('due', 0):.0f} were due)"),
            f"  最后收到心跳 (last heartbeat)：{when(d.get('last_heard'))}",
            "  判断 (cause)：全区同时中断，疑似采集链路故障（上行网络、MQTT 代理或采集器订阅），而非设备本身。",
            "  请检查代理与网络；期间各街镇的失联、网关离线与指标告警均由此引起。"]


def _monitor_gap(v: AlertView, names: Names, at: int) -> list[str]:
    gap = v.details.get("gap")
    if not gap:
        return ["  采集器曾中断监测 (the monitor could not see for a while)"]
    if gap[1] is None:
        span = f"{when(gap[0])} 起，尚未恢复 (still down; {duration_text((at - gap[0]) / US_PER_S)} so far)"
    else:
        span = f"{when(gap[0])} — {when(gap[1])}，共 {duration_text((gap[1] - gap[0]) / US_PER_S)}"
    return [f"  监测中断 (monitoring gap)：{span}",
            "  原因 (cause)：采集器停止运行或与 MQTT 代理断开（代理不可达、网络中断）；期间收不到任何设备消息。",
            "  期间的在线率与成功率不计入监测时长（监测缺口），不据此产生街镇或设备告警；其间发出而未收到的报文",
            "  不计为传输丢失（若代理为采集器排队时丢弃，见代理丢弃告警）。请检查采集器日志与代理。"]


def _street_silent(v: AlertView, names: Names, at: int) -> list[str]:
    d = v.details
    return [f"  该街镇本合同 {d.get('devices', 0)} 台设备（网关在线者）均无心跳，其间应收到约 {d.get('due', 0):.0f} 条",
            f"  最后收到心跳 (last heartbeat)：{when(d.get('last_heard'))}",
            "  判断 (cause)：疑似街道级停电或网络中断；清单见附件 CSV。", *_devices(d.get("table") or [], online=True)]


def _gateway(v: AlertView, names: Names, at: int) -> list[str]:
    d = v.details
    table = d.get("table") or []
    return [f"  网关遗嘱消息 (Last Will)：离线；受影响设备 (devices) {len(table)} 台，清单见附件 CSV",
            *_devices(table, online=True)]


def _breach(v: AlertView, names: Names, at: int) -> list[str]:
    d = v.details
    rate = d.get("rate")
    window = int(d.get("window", 0)) // 60
    if rate is not None:
        value = f"{percent(rate.value)}（{rate.numerator}/{rate.denominator}）"
    else:
        value = "暂无足够观测 (not enough observed)"
    lines = [f"  近 {window} 分钟 (window rate)：{value}；阈值 (threshold)：{percent(d.get('threshold'))}",
             f"  本月累计 (month to date)：{percent(d.get('month'))}"]
    table = d.get("table") or []
    if v.key.kpi == "online":
        lines.append(f"  离线设备 (offline devices)：{len(table)} 台（不含网关离线者，见网关告警）")
        lines += _devices(table, online=True)
    else:
        lines.append(f"  成功率最低的设备，{when(d.get('window_from'))} 起的窗口内 (worst devices in the window)：")
        lines += _devices(table, online=False)
    return lines


def _month_risk(v: AlertView, names: Names, at: int) -> list[str]:
    risk = v.details.get("risk")
    if risk is None:
        return [f"  {RISK_WORDS.get(v.level, '')}（详细数字见下一次评估 (figures at the next evaluation)）"]
    online = risk.kpi == "online"
    unit = "设备·采样 (device-samples)" if online else "次 (attempts)"
    future = f"{float(risk.future):.0f}"
    lines = [f"  结论 (verdict)：{RISK_WORDS.get(risk.level, '无风险 (no risk)')}",
             (f"  账本本月至 {when(risk.as_of)} (ledger, month so far)：{risk.numerator}/{risk.denominator} = "
              f"{percent(risk.month_value)}；已观测 (observed) {risk.observed_seconds / 3600:.1f} 小时，"
              f"占本月 {percent(risk.observed_share, 1)}"),
             f"  剩余 (left)：{float(risk.days_left):.2f} 天，"
             + (f"{risk.remaining} 个采样时刻 × 当前应在线 {risk.expected_now} 台 = {future} {unit}" if online
                else f"按本月观测到的频率预计还有 {future} {unit}"),
             f"  即使全部恢复，月末最高可达 (best case)：{percent(risk.best)}",
             (f"  按账本 {when(risk.as_of - risk.recent_window * US_PER_S)} 起近 {risk.recent_window // 3600} 小时水平 "
              f"(ledger, last {risk.recent_window // 3600} h) {percent(risk.recent)} "
              f"预计月末 (projected)：{percent(risk.projected)}")
             if risk.recent is not None else
             f"  按本月累计水平 (month so far) {percent(risk.month_value)} 预计月末 (projected)：{percent(risk.projected)}",
             f"  阈值 (threshold)：{percent(risk.threshold)}"]
    if risk.at_risk is not None:
        lines.append(f"  按合同扣款规则预计扣款 (lease amount at risk)：{risk.at_risk} 元——本街镇本合同的，"
                     f"含其各项指标，非本指标单独 (the street's whole contract)（月租 {risk.fee} 元；"
                     f"若按目前数字结算 {risk.deduction_now} 元）")
    return lines


def _devices(table: list[dict[str, Any]], *, online: bool) -> list[str]:
    lines = []
    for row in table[:SHOWN]:
        where = f"{row['type']}  小区 {header_safe(row['community'], 60)}  网关 {header_safe(row['gateway'], 60)}"
        if online:
            state = (f"离线起 {when(row['offline_since'])}" if row.get("offline_since") else
                     "从未上报 (never heard)" if row.get("last_heartbeat") is None else "在线 (online)")
            lines.append(f"    {header_safe(row['device'], 80)}  {where}  {state}  最后心跳 {when(row.get('last_heartbeat'))}")
        else:
            lines.append(f"    {header_safe(row['device'], 80)}  {where}  尝试 {row['tries']}  成功 {row['ok']}  "
                         f"成功率 {percent(row['rate'])}")
    if len(table) > SHOWN:
        lines.append(f"    …… 另有 {len(table) - SHOWN} 台，见附件 CSV (the rest in the CSV attachment)")
    return lines


def _device(v: AlertView, names: Names, at: int) -> list[str]:
    table = v.details.get("table") or []
    lines = [f"  判断 (what)：{KIND_EXPLAINED.get(v.key.kpi, v.key.kpi)}"]
    if not table:
        return lines
    row = table[0]
    lines.append(f"  设备 (device)：{header_safe(row['device'], 80)}  {row['type']}  小区 {header_safe(row['community'], 60)}  "
                 f"网关 {header_safe(row['gateway'], 60)}  最后心跳 {when(row.get('last_heartbeat'))}")
    if "detected" in row:
        unit = "次读数 (reads)" if v.key.kpi == "stuck" else "次抓拍尝试 (attempts)"
        lines.append(f"  自 {when(row['anomaly_since'])} 起（{when(row['detected'])} 判定）本月：{row['attempts']:.0f} {unit}，"
                     f"成功 {row['successes']:.0f}；按其基线应为约 {row['expected_attempts']:.0f} 次、成功约 "
                     f"{row['expected_successes']:.0f} 次")
    return lines


def _loss(v: AlertView, names: Names, at: int) -> list[str]:
    r: LossReading | None = v.details.get("loss")
    if r is None:
        return ["  暂无读数 (no reading yet)"]
    lines = [(f"  近 {window_text(r.window)} (window)：丢失率 (loss rate) {loss_rate(r)} = 净丢失 {max(r.lost, 0)} / "
              f"(收到 {r.received} + 净丢失 {max(r.lost, 0)}) 条 (lost − recovered, of received + lost)"),
             f"  告警线 (level)：{share(r.level)}，降至 {share(r.level * RESOLVE_FACTOR)} 及以下恢复 (resolves at or below)"]
    month = v.details.get("month")
    if month:
        lines.append(f"  本月累计 (month to date)：丢失 {month['lost']} 条，迟到补回 (recovered) {month['recovered']} 条，"
                     f"收到 {month['heartbeats']} 条")
    if r.left_out:
        lines.append("  不含近期失联的街镇 (left out, their silence explains their loss)："
                     + "、".join(names.alert(k) for k in r.left_out[:SHOWN]))
    lines += ["  判断 (cause)：设备在发送，消息在传输中丢失（网关、网络或 MQTT 代理队列），而非设备停发。",
              "  丢失的心跳对合同仍计为未上报 (a heartbeat lost in transit is still a missed heartbeat for the contract)。"]
    return lines


def _broker_drops(v: AlertView, names: Names, at: int) -> list[str]:
    drops = v.details.get("drops") or {}
    broker = drops.get("broker") or {}
    lines = [(f"  MQTT 代理报告丢弃 (broker dropped)：本事件共 {drops.get('dropped', 0)} 条"
              f"（$SYS/broker/publish/messages/dropped），最近一次增长 (last growth) {when(drops.get('last'))}"),
             "  原因 (cause)：某个客户端（通常是采集器）的消息队列已满，代理丢弃了发给它的消息 (a client's queue was full)。",
             (f"  处理 (what to do)：在 mosquitto.conf 中调大 {QUEUE_SETTINGS}（max_queued_messages 0 取消条数上限，"
              "再用 max_queued_bytes 限制内存），并检查采集器是否跟得上 (raise them; check the collector keeps up)。")]
    if broker:
        lines.append(f"  代理当前 (broker now)：累计丢弃 {broker.get('dropped_messages', '—')} 条，存储消息 "
                     f"{broker.get('stored_messages', '—')} 条 / {broker.get('stored_bytes', '—')} 字节，"
                     f"连接客户端 {broker.get('connected_clients', '—')} 个")
    r: LossReading | None = v.details.get("loss")
    if r is not None and r.messages:
        lines.append(f"  采集器按序号推算 (the collector's own count)：近 {window_text(r.window)} 全区 {max(r.lost, 0)}/"
                     f"{r.messages} 条未到达 = {loss_rate(r)}；期间的传输丢失告警由此引起，不再单独发送")
    return lines


def loss_rate(r: LossReading) -> str:
    return percent(Fraction(max(r.lost, 0), r.messages)) if r.messages else "—"


def share(level: float) -> str:
    return percent(Decimal(repr(level)))


def window_text(seconds: int) -> str:
    if seconds % 3600 == 0:
        return f"{seconds // 3600} 小时"
    return f"{seconds // 60} 分钟" if seconds % 60 == 0 else f"{seconds} 秒"


_BY_CAUSE = {Cause.MONITOR_GAP: _monitor_gap, Cause.PIPELINE: _pipeline, Cause.STREET_SILENT: _street_silent,
             Cause.GATEWAY: _gateway, Cause.BREACH: _breach, Cause.MONTH_RISK: _month_risk, Cause.LOSS: _loss,
             Cause.BROKER_DROPS: _broker_drops, Cause.DEVICE: _device}
