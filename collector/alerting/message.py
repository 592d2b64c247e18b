"""An alert event as an email: Chinese subject and body, UTF-8 MIME, device lists as CSV.

Header values are built from rule-file names, codes and numbers, and anything that came from
a device (ids, gateway and community names) goes through :func:`header_safe`, which drops
every control and line-separator character: a CR/LF in an id cannot start a new header.
The stdlib's ``email.policy.SMTP`` refuses such a header anyway; this keeps the email sendable.
"""

from __future__ import annotations

import csv
import io
import unicodedata
from decimal import ROUND_HALF_UP, Decimal
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid
from fractions import Fraction
from typing import Any

from ..rules import Rules
from ..timebase import SHANGHAI, US_PER_S, format_instant
from .evaluate import AlertEvent
from .rules import AlertRules

EVENT_WORDS = {"firing": "告警", "repeat": "持续告警", "resolved": "恢复"}
RISK_WORDS = {1: "按当前趋势月末将低于阈值", 2: "本月已无法达到阈值"}
_CSV_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def header_safe(text: str, limit: int = 200) -> str:
    """One line of printable text: control, format and line/paragraph separators become spaces."""
    cleaned = "".join(" " if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") else ch for ch in str(text))
    return " ".join(cleaned.split())[:limit]


def percent(value: Fraction | Decimal | None, places: int = 2) -> str:
    if value is None:
        return "—"
    q = Decimal(value.numerator) / Decimal(value.denominator) if isinstance(value, Fraction) else Decimal(value)
    return f"{(q * 100).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)}%"


def duration_text(seconds: float) -> str:
    minutes = int(seconds // 60)
    days, rest = divmod(minutes, 1440)
    hours, minutes = divmod(rest, 60)
    parts = [f"{days} 天" if days else "", f"{hours} 小时" if hours else "", f"{minutes} 分钟"]
    return " ".join(p for p in parts if p)


def compose(event: AlertEvent, rules: Rules, alert_rules: AlertRules, sender: str) -> dict[str, Any]:
    """The outbox row for an event: subject, recipients and the whole MIME message."""
    street = next((s.name for s in rules.streets if s.code == event.street), event.street)
    contract = next((c for c in rules.contracts if c.code == event.contract), None)
    kpi = contract.kpi(event.kpi) if contract is not None else None
    kpi_name = kpi.name if kpi is not None else event.kpi
    recipients = alert_rules.recipients(event.street) if event.street else alert_rules.district
    subject, body, attachment = _content(event, street, contract.name if contract else event.contract, kpi_name,
                                         alert_rules)
    msg = EmailMessage(policy=SMTP)
    msg["Subject"] = header_safe(subject, 250)
    msg["From"] = _address(sender)
    msg["To"] = ", ".join(_address(r) for r in recipients) if recipients else _address(sender)
    msg["Date"] = format_datetime(_aware(event.at))
    msg["Message-ID"] = make_msgid(domain="ptmon.local")
    msg["X-Ptmon-Event"] = header_safe(event.key, 300)
    msg.set_content(body, charset="utf-8")
    if attachment is not None:
        name, rows = attachment
        # The BOM makes spreadsheet programs read the Chinese names as UTF-8.
        msg.add_attachment("\ufeff" + _csv(rows), subtype="csv", charset="utf-8", filename=header_safe(name, 120))
    return {"event_key": event.key, "kind": event.kind, "event": event.event, "contract": event.contract,
            "street": event.street, "kpi": event.kpi, "at": event.at, "subject": msg["Subject"],
            "recipients": list(recipients), "message": bytes(msg)}


def _content(event: AlertEvent, street: str, contract: str, kpi_name: str, alert_rules: AlertRules
             ) -> tuple[str, str, tuple[str, list[dict[str, Any]]] | None]:
    d = event.details
    at = format_instant(event.at)
    lines = [f"街镇 (street)：{street} ({event.street})", f"合同 (contract)：{contract} ({event.contract})"]
    attachment = None
    if event.kind == "breach":
        word = EVENT_WORDS[event.event]
        subject = f"【SLA{word}】{street} {kpi_name} {percent(event.value)}（阈值 {percent(event.threshold)}）"
        lines += [f"指标 (KPI)：{kpi_name} ({event.kpi})",
                  f"近 {d['window'] // 60} 分钟值 (window rate)：{percent(event.value)}",
                  f"阈值 (threshold)：{percent(event.threshold)}",
                  f"本月累计 (month to date)：{percent(d.get('month'))}",
                  f"开始时间 (since)：{format_instant(event.since)}",
                  f"持续时间 (duration)：{duration_text((event.at - event.since) / US_PER_S)}",
                  f"时间 (at)：{at}"]
        if event.event == "resolved":
            lines.insert(0, "该街镇指标已恢复至阈值以上 (back above threshold)。")
        worst = d.get("worst") or []
        if worst:
            lines += ["", f"最差设备（前 {len(worst)}）(worst devices)："]
            for w in worst:
                extra = f"  成功 {w['ok']}/{w['tries']}" if "tries" in w else ""
                lines.append(f"  {header_safe(w['device'], 80)}  {w['type']}  {header_safe(w['community'], 60)}  "
                             f"最后心跳 {w['last_heartbeat'] or '从未'}{extra}")
    elif event.kind == "month_risk":
        level = int(d["level"])
        subject = f"【月度风险】{street} {kpi_name}：{RISK_WORDS[level]}"
        lines += [f"指标 (KPI)：{kpi_name} ({event.kpi})",
                  f"本月累计 (month to date)：{percent(d.get('month'))}",
                  f"即使全部恢复，月末最高可达 (best case)：{percent(d['best'])}",
                  f"按近期水平预计月末 (projected)：{percent(d['projected'])}",
                  f"阈值 (threshold)：{percent(event.threshold)}"]
        if d.get("at_risk") is not None:
            lines.append(f"按合同扣款规则预计扣款 (lease amount at risk)：{d['at_risk']} 元（月租 {d['fee']} 元）")
        lines.append(f"时间 (at)：{at}")
    elif event.kind == "gateway":
        gateway = header_safe(d["gateway"], 80)
        devices = d.get("devices") or []
        if event.event == "firing":
            subject = f"【网关离线】{street} 网关 {gateway}：{len(devices)} 台设备受影响"
            lines += [f"原因 (cause)：网关 {gateway} 离线（遗嘱消息 LWT）",
                      f"受影响设备 (devices)：{len(devices)} 台，清单见附件 CSV",
                      f"离线时间 (since)：{format_instant(event.since)}", f"时间 (at)：{at}"]
            attachment = (f"gateway-{gateway}-devices.csv", devices)
        else:
            subject = f"【网关恢复】{street} 网关 {gateway}"
            lines += [f"网关 {gateway} 已恢复在线 (back online)：{format_instant(d['back_at'])}",
                      f"离线时长 (down for)：{duration_text((d['back_at'] - event.since) / US_PER_S)}"]
    else:  # street_silent
        if event.event == "firing":
            devices = d.get("devices") or []
            subject = f"【整街失联】{street} {contract}：{d['expected']} 台设备全部离线"
            lines += ["原因 (cause)：该街镇本合同全部设备无心跳，疑似街道级停电或网络中断",
                      f"应在线设备 (expected)：{d['expected']} 台，清单见附件 CSV",
                      f"开始时间 (since)：{format_instant(event.since)}", f"时间 (at)：{at}"]
            attachment = (f"{event.street}-{event.contract}-devices.csv", devices)
        else:
            subject = f"【整街恢复】{street} {contract}"
            lines += [f"已有 {d.get('online', 0)} 台设备恢复心跳 (devices back)：{at}"]
    link = alert_rules.dashboard(event.street)
    if link:
        lines += ["", f"仪表盘 (dashboard)：{link}"]
    lines += ["", "—— ptmon SLA 监测（普陀区城市运行管理中心）"]
    return subject, "\n".join(header_safe(x, 400) if x else "" for x in lines) + "\n", attachment


def _csv(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    columns = ["device", "type", "community", "gateway", "last_heartbeat", "online"]
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(c, "")) for c in columns])
    return out.getvalue()


def _cell(value: Any) -> str:
    text = str(value)
    return "'" + text if text.startswith(_CSV_FORMULA) else text  # no formula when opened in a spreadsheet


def _address(text: str) -> str:
    local, _, domain = header_safe(text).partition("@")
    return str(Address(addr_spec=f"{local}@{domain}"))


def _aware(t: int):  # type: ignore[no-untyped-def]
    from datetime import datetime

    return datetime.fromtimestamp(t / US_PER_S, SHANGHAI)
