"""Notifications → outbox rows (the ledger's ``alerts`` table), the digest read from the ledger.

A notification that cannot be composed (a defect, never bad input: names and ids are made
safe) still leaves a short email saying so, with its incident's key, instead of being lost or
stopping the collector.
"""

from __future__ import annotations

import logging
from typing import Any

from ..ledger.store import Ledger
from ..registry import Registry
from .digest import Digest, build_digest, compose_digest
from .message import compose, message_row
from .model import Notice, Notification
from .rules import AlertRules

log = logging.getLogger(__name__)


def outbox_rows(notifications: list[Notification], *, ledger: Ledger, registry: Registry, alert_rules: AlertRules,
                sender: str) -> list[dict[str, Any]]:
    digests: dict[tuple[int, str], Digest] = {}
    rows = []
    for n in notifications:
        try:
            if n.notice is Notice.DIGEST:
                request = n.digest
                digest = digests.get((request.day, request.street))
                if digest is None:
                    digest = digests[request.day, request.street] = build_digest(ledger, registry, request)
                rows.append(compose_digest(n, digest, registry, alert_rules, sender))
            else:
                rows.append(compose(n, registry.rules, alert_rules, sender))
        except Exception as exc:
            log.exception("alert email %s could not be composed; a short one is queued instead", n.event_key)
            rows.append(_fallback(n, sender, exc))
    return rows


def _fallback(n: Notification, sender: str, exc: Exception) -> dict[str, Any]:
    body = (f"告警邮件生成失败 (this alert email could not be composed)：{type(exc).__name__}\n"
            f"事件 (event)：{n.event_key}\n请查看采集器日志与 Grafana 仪表盘。\n")
    row = message_row(n, f"【告警】{n.notice.value} {n.group.cause.value if n.group else 'digest'}", body, sender, None)
    return {**row, "kind": n.group.cause.value if n.group else "digest", "contract": "", "street": "", "kpi": ""}
