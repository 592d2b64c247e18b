"""The report's data quality (数据质量): messages refused or set apart, by kind, explained.

Two sources in :class:`~ptmon.results.Results`, filled alike by replay and by the ledger:
``rejects`` (the decoder refused the message: it counts toward nothing) and ``engine_stats``
(the engine took the message apart: duplicates, reordered, late, ...). Kinds are rendered
generically: a kind named below gets its Chinese explanation; a new one shows by its code, so
a kind added to the collector reaches the report before its explanation does.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..results import Results

REJECTED = "拒收"
SET_APART = "另行处理"
NO_REJECTS = "无拒收报文"

# Decoder reject kinds (collector/decode.py): refused whole, counted toward no KPI.
REJECT_KINDS: dict[str, str] = {
    "bad_topic": "主题格式不符（不是设备心跳或网关状态主题）",
    "unknown_device": "设备编号不在设备清单中（主题见下文“未登记设备的报文”）",
    "contract_mismatch": "主题中的合同与设备清单登记的不符",
    "street_mismatch": "主题中的街镇与设备清单登记的不符",
    "unknown_gateway": "发送网关状态的网关不在设备清单中",
    "rate_limited": "超过单台设备（或网关）在时间窗内的报文数上限",
    "oversize": "报文长度超过上限",
    "bad_json": "不是合法的 JSON（或数值越界、嵌套过深）",
    "not_object": "是 JSON 但不是对象",
    "bad_value": "已知字段的类型错误或取值越界",
    "counter_mismatch": "成功次数大于尝试次数",
    "bad_gateway_status": "网关状态既不是 online 也不是 offline",
    "bad_archive_line": "报文存档中无法解析的行",
    "implausible": "计数器增量或复位对该设备类型不合理",
    "retained": "代理服务器保存的旧心跳（订阅时重发），不是新心跳",
}

# Engine kinds (collector/engine.py): messages not counted, or counted in a particular way.
ENGINE_KINDS: dict[str, str] = {
    "duplicate": "重复报文：同一设备、同一序号 (seq) 的报文再次到达（如 QoS 1 重发），只计一次",
    "stale": "乱序报文：序号落后于已收到的报文，视为过时，不计入",
    "late": "迟到报文：接收时间早于已处理的报文（时钟跳变、合并存档），按已处理到的时刻计入",
    "outside_lease": "租期外报文：设备在接收当日不在租赁期内，计数增量不计入",
    "retained": "代理服务器保存的旧心跳（订阅时重发），不是心跳，不计入",
    "lost": "传输中丢失的报文：由序号 (seq) 跳跃推算；计数器为累计值，丢失报文不丢计数；对合同而言仍是缺失的心跳",
    "recovered": "曾计为丢失、后又迟到的报文（已从丢失数中扣除）",
    "lost_across_gap": "其中跨越监测缺口的丢失：设备在采集器或其代理连接中断期间发出、未能收到的报文"
                       "（若代理丢弃，见代理丢弃计数）",
    "seq_jump": "序号 (seq) 跳跃过大（超过 65,536），不计为丢失",
    "seq_suspect": "可疑的序号 (seq) 跳跃：设备此后的报文仍沿原序号继续，跳跃被否定，其间报文照常计为心跳",
    "future_ts": "设备时间 (ts) 比接收时间超前 1 小时以上，忽略该 ts（心跳仍计）",
    "too_many_resets": "当日计数器复位次数超过该设备类型的上限，本条计数增量不计入（心跳仍计）",
    "unmatched_success": "成功次数超过此前未匹配的尝试次数，本条计数增量不计入（心跳仍计）",
    "too_many_attempts": "尝试次数超过该设备类型按时间允许的上限，本条计数增量不计入（心跳仍计）",
    "implausible": "计数器增量或复位对该设备类型不合理，不计入",
}

# Always listed, with 0 when none were seen: a reviewer should see that they were looked for.
ALWAYS_SHOWN = ("duplicate", "stale", "late", "outside_lease")

# Engine counters of ordinary traffic, not of data quality (a partition's count of statuses of
# other partitions' gateways: their owners count them).
NOT_QUALITY = frozenset({"samples", "heartbeats", "resets", "restarts", "gateway_status", "other_partition_gateway"})


@dataclass(frozen=True, kw_only=True)
class QualityLine:
    group: str  # REJECTED or SET_APART
    kind: str  # the code, as the collector counts it ('' on the line saying there were no rejects)
    count: int
    explanation: str  # '' for a kind this report does not know


def quality_lines(results: Results) -> list[QualityLine]:
    """Rejects by kind (those seen, or one line saying there were none), then the engine's kinds
    (ALWAYS_SHOWN, and others seen)."""
    out = [QualityLine(group=REJECTED, kind=kind, count=n, explanation=REJECT_KINDS.get(kind, ""))
           for kind, n in sorted(results.rejects.items()) if n]
    if not out:
        out.append(QualityLine(group=REJECTED, kind="", count=0, explanation=NO_REJECTS))
    stats = results.engine_stats
    seen = sorted(k for k, n in stats.items() if n and k not in NOT_QUALITY and k not in ALWAYS_SHOWN)
    for kind in [*ALWAYS_SHOWN, *seen]:
        out.append(QualityLine(group=SET_APART, kind=kind, count=int(stats.get(kind, 0)),
                               explanation=ENGINE_KINDS.get(kind, "")))
    return out
