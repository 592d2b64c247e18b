"""An incident notification as an email: Chinese subject and body, UTF-8 MIME, devices as CSV.

One email is one recipient's view of one incident: every street and alert of that cause in
it, the incident's history (first seen, last change, which email of the incident this is),
per device what happened in the alert's window, and links to the Grafana dashboards with the
street and the time range filled in. Times are Shanghai time to the second.

Header values are built from rule-file names, codes and numbers, and anything that came from
a device (ids, gateway and community names) goes through :func:`header_safe`, which drops
every control and line-separator character: a CR/LF in an id cannot start a new header.
The stdlib's ``email.policy.SMTP`` refuses such a header anyway; this keeps the email sendable.
"""

from __future__ import annotations

import csv
import hashlib
import io
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime
from typing import Any

from ..brokerstats import QUEUE_SETTINGS
from ..rules import Rules
from ..timebase import SHANGHAI, US_PER_S
from .fmt import body_line, duration_text, header_safe, percent, when
from .links import links_for
from .model import AlertKey, AlertView, Cause, Notice, Notification
from .rules import AlertRules
from .sections import KIND_WORDS, RISK_WORDS, Names, loss_rate, section, share

__all__ = ["compose", "csv_text", "duration_text", "header_safe", "message_row", "percent", "when"]

NOTICE_WORDS = {Notice.FIRING: "", Notice.UPDATE: "·更新", Notice.REPEAT: "·持续", Notice.RESOLVED: ""}
CAUSE_TITLES = {Cause.PIPELINE: ("全区失联", "全区恢复"), Cause.STREET_SILENT: ("整街失联", "整街恢复"),
                Cause.GATEWAY: ("网关离线", "网关恢复"), Cause.BREACH: ("SLA告警", "SLA恢复"),
                Cause.MONTH_RISK: ("月度风险", "月度风险解除"), Cause.LOSS: ("传输丢失", "传输丢失恢复"),
                Cause.DEVICE: ("设备失效", "设备恢复"),
                Cause.BROKER_DROPS: ("代理丢弃", "代理丢弃停止"), Cause.MONITOR_GAP: ("监测中断", "监测恢复")}
CSV_COLUMNS = ("street", "contract", "device", "type", "community", "gateway", "last_heartbeat", "offline_since",
               "online", "window_tries", "window_ok", "anomaly", "anomaly_since")
_CSV_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def compose(n: Notification, rules: Rules, alert_rules: AlertRules, sender: str) -> dict[str, Any]:
    """The outbox row of an incident notification: subject, recipient and the whole MIME message."""
    assert n.group is not None
    names = Names(rules)
    subject = _subject(n, names)
    lines = _head(n, names)
    for view in sorted(n.firing, key=lambda v: not v.key.street):  # streets, then the district
        lines += ["", *section(view, names, n.at)]
    if n.resolved:
        lines += ["", "已恢复 (resolved since the last email)："]
        lines += [f"  {names.alert(v.key)}（{when(v.since)} 起，持续 {duration_text((n.at - v.since) / US_PER_S)}"
                  f"{_now(v)}）" for v in n.resolved]
    keys = [v.key for v in (*n.firing, *n.resolved)]
    links = links_for(alert_rules, keys, n.first_seen, n.at)
    if links:
        lines += ["", "仪表盘 (dashboards)："] + [f"  {label}：{url}" for label, url in links]
    lines += ["", "时间均为北京时间 (Asia/Shanghai)。", "—— ptmon SLA 监测（普陀区城市运行管理中心）"]
    table = [row for v in n.firing for row in v.details.get("table") or []]
    attachment = (f"{n.group.cause.value}-devices.csv", csv_text(table)) if table else None
    row = message_row(n, subject, "\n".join(body_line(x) for x in lines) + "\n", sender,
                      attachment)
    first = keys[0] if keys else AlertKey(cause=n.group.cause)
    return {**row, "kind": n.group.cause.value, "contract": n.group.contract or first.contract,
            "street": first.street if len({k.street for k in keys}) == 1 else "", "kpi": first.kpi if len(keys) == 1 else ""}


def message_row(n: Notification, subject: str, body: str, sender: str,
                attachment: tuple[str, str] | None) -> dict[str, Any]:
    """The MIME message and its outbox columns; the Message-ID is fixed by the event key, so a
    resend after a crash mid-send carries the same id (mail clients show it once)."""
    msg = EmailMessage(policy=SMTP)
    msg["Subject"] = header_safe(subject, 250)
    msg["From"] = _address(sender)
    msg["To"] = _address(n.recipient)
    msg["Date"] = format_datetime(datetime.fromtimestamp(n.at / US_PER_S, SHANGHAI))
    msg["Message-ID"] = _message_id(n.event_key)
    if n.thread_key is not None:  # the incident's emails thread under its first one
        msg["In-Reply-To"] = msg["References"] = _message_id(n.thread_key)
    msg["X-Ptmon-Event"] = header_safe(n.event_key, 300)
    msg.set_content(body, charset="utf-8")
    if attachment is not None:
        name, text = attachment
        # The BOM makes spreadsheet programs read the Chinese names as UTF-8.
        msg.add_attachment("\ufeff" + text, subtype="csv", charset="utf-8", filename=header_safe(name, 120))
    return {"event_key": n.event_key, "event": n.notice.value, "at": n.at, "subject": msg["Subject"],
            "recipients": [n.recipient], "message": bytes(msg)}


def _message_id(event_key: str) -> str:
    return f"<{hashlib.sha256(event_key.encode()).hexdigest()[:32]}@ptmon.local>"


def _subject(n: Notification, names: Names) -> str:
    assert n.group is not None
    cause = n.group.cause
    title = CAUSE_TITLES[cause][1 if n.notice is Notice.RESOLVED else 0] + NOTICE_WORDS[n.notice]
    views = n.resolved if n.notice is Notice.RESOLVED else n.firing
    if cause is Cause.PIPELINE:
        return f"【{title}】全区设备心跳{'已恢复' if n.notice is Notice.RESOLVED else '同时中断：疑似采集链路故障'}"
    if cause is Cause.MONITOR_GAP:
        if n.notice is Notice.RESOLVED:
            return f"【{title}】采集器已恢复监测并持续稳定"
        gap = next((v.details.get("gap") for v in views if v.details.get("gap")), None)
        if gap is not None and gap[1] is None:
            return f"【{title}】采集器监测中断已 {duration_text((n.at - gap[0]) / US_PER_S)}：代理连接中断，期间的设备状态未知"
        lasted = f" {duration_text((gap[1] - gap[0]) / US_PER_S)}" if gap else ""
        return f"【{title}】采集器监测中断{lasted}：期间的设备状态未知，不产生告警"
    if cause is Cause.BROKER_DROPS:
        if n.notice is Notice.RESOLVED:
            return f"【{title}】MQTT 代理已不再丢弃消息"
        dropped = next((v.details.get("drops", {}).get("dropped") for v in views), None)
        return f"【{title}】MQTT 代理丢弃了 {dropped if dropped is not None else '若干'} 条消息：请调大 {QUEUE_SETTINGS}"
    items = [_subject_item(v, names) for v in sorted(views, key=lambda v: not v.key.street)]  # streets, then 全区
    shown = "、".join(items[:3]) + (f" 等 {len(items)} 项" if len(items) > 3 else "")
    return f"【{title}】{shown}"


def _subject_item(v: AlertView, names: Names) -> str:
    k, d = v.key, v.details
    street = names.street(k.street)
    if k.cause is Cause.STREET_SILENT:
        return f"{street} {names.contract_short(k.contract)}" + (f"：{d['devices']} 台设备全部无心跳" if "devices" in d else "")
    if k.cause is Cause.GATEWAY:
        return f"{street} 网关 {header_safe(k.gateway, 80)}" + (f"：{len(d['table'])} 台设备受影响" if d.get("table") else "")
    if k.cause is Cause.DEVICE:
        return f"{street} {header_safe(k.device, 80)} {KIND_WORDS.get(k.kpi, k.kpi)}"
    if k.cause is Cause.LOSS:
        r = d.get("loss")
        where = f"{street} {names.contract_short(k.contract)}" if k.street else "全区"
        if r is None or v.phase is None:
            return where
        below = r.rate is not None and r.rate <= r.level  # still firing until it falls to the resolve level
        return where + (f"：丢失率 {loss_rate(r)}（{'已低于告警线 ' if below else '告警线 '}{share(r.level)}"
                        f"{'，待恢复' if below else ''}）")
    if k.cause is Cause.BREACH:
        rate = d.get("rate")
        value = f" {percent(rate.value)}（阈值 {percent(d['threshold'])}）" if rate is not None else ""
        return f"{street} {names.kpi(k.contract, k.kpi)}{value}"
    level = v.level or (d["risk"].level if d.get("risk") is not None else 0)
    words = f"：{RISK_WORDS[level]}" if level in RISK_WORDS and v.phase is not None else ""
    return f"{street} {names.kpi(k.contract, k.kpi)}{words}"


def _head(n: Notification, names: Names) -> list[str]:
    assert n.group is not None
    status = {Notice.FIRING: "告警 (firing)", Notice.UPDATE: "有变化 (changed)", Notice.REPEAT: "持续告警 (still firing)",
              Notice.RESOLVED: "已全部恢复 (resolved)"}[n.notice]
    streets = sorted({v.key.street for v in (*n.firing, *n.resolved) if v.key.street})
    district = any(not v.key.street for v in (*n.firing, *n.resolved)) and n.group.cause is Cause.LOSS
    places = [names.street(s) for s in streets] + (["全区"] if district else [])
    scope = (names.contract_name(n.group.contract) if n.group.contract else
             "全区 (district)" if n.group.cause.district_only or not places else "、".join(places))
    lines = [f"事件 (incident)：{CAUSE_TITLES[n.group.cause][0]} · {scope}",
             f"状态 (status)：{status}",
             f"首次发现 (first seen)：{when(n.first_seen)}",
             f"最近变化 (last change)：{when(n.last_change)}",
             f"本事件第 {n.seq} 封邮件 (email {n.seq} of this incident)，发送时间 (at)：{when(n.at)}"]
    if n.notice is Notice.RESOLVED:
        lines.insert(2, f"持续 (lasted)：{duration_text((n.at - n.first_seen) / US_PER_S)}")
    elif n.firing:
        count = len({v.key.street for v in n.firing if v.key.street})
        lines.insert(2, f"涉及 (alerts)：{len(n.firing)} 项" + (f"，{count} 个街镇" if count else "（全区）"))
    return lines


def _now(v: AlertView) -> str:
    """What a resolved alert's window holds now, where it has a number (loss in transit)."""
    r = v.details.get("loss")
    return f"，现丢失率 {loss_rate(r)}" if v.key.cause is Cause.LOSS and r is not None else ""


def csv_text(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        values = {**row, "last_heartbeat": when(row.get("last_heartbeat")) if row.get("last_heartbeat") else "",
                  "anomaly_since": when(row.get("anomaly_since")) if row.get("anomaly_since") else "",
                  "offline_since": when(row.get("offline_since")) if row.get("offline_since") else "",
                  "window_tries": row.get("tries", ""), "window_ok": row.get("ok", "")}
        writer.writerow([_cell(values.get(c, "")) for c in CSV_COLUMNS])
    return out.getvalue()


def _cell(value: Any) -> str:
    text = str(value)
    return "'" + text if text.startswith(_CSV_FORMULA) else text  # no formula when opened in a spreadsheet


def _address(text: str) -> str:
    local, _, domain = header_safe(text).partition("@")
    return str(Address(addr_spec=f"{local}@{domain}"))
