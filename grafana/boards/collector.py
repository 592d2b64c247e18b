"""采集器健康 (Collector health): is the collector keeping up, what does it reject, is InfluxDB
taking the points. Reads the ``collector`` measurement (collector/health.py), so it works
without Prometheus; Prometheus scrapes the same numbers from /metrics."""

from __future__ import annotations

from typing import Any

from ptmon.batch import REJECT_KINDS

from .. import queries as q
from ..names import REJECT_NAMES, Names
from ..panels import Panel, column_unit, dashboard, display_names, row, stat, target, thresholds, timeseries

UID = "ptmon-collector"
CONNECTED = [{"type": "value", "options": {"0": {"text": "已断开", "color": "red", "index": 0},
                                            "1": {"text": "已连接", "color": "green", "index": 1}}}]


def build(names: Names) -> dict[str, Any]:
    panels: list[Panel] = [
        row("状态 (status)"), *status_panels(),
        row("消息 (messages)"), *message_panels(),
        row("InfluxDB"), *influx_panels(),
        row("传输丢失 (loss in transit)"), *loss_panels(names),
    ]
    return dashboard(UID, "采集器健康 (Collector health)", panels, time_from="now-6h",
                     description="采集器自身的运行指标：消息速率、拒收、未知设备、处理延迟、InfluxDB 写入延迟与缓冲。")


def status_panels() -> list[Panel]:
    return [
        stat("MQTT 连接 (broker)", [target(q.collector_last("mqtt_connected"), alias="MQTT")], w=4, h=4,
             unit="none", decimals=0, colours=thresholds(1), mappings=CONNECTED),
        stat("处理延迟 (engine lag)", [target(q.collector_last("engine_lag_seconds"), alias="延迟")], w=5, h=4,
             unit="s", colours=thresholds(30, below="green", above="red"),
             description="当前时间减去最近处理的消息的接收时间；持续增大说明采集器跟不上。"),
        stat("未知设备 (unknown devices)", [target(q.collector_last("unknown_devices"), alias="未知设备")],
             w=5, h=4, unit="none", decimals=0, colours=thresholds(1, below="green", above="orange"),
             description="发来消息但不在台账中的设备数（不计入考核），见采集器日志与月报。"),
        stat("InfluxDB 待写点数 (buffered)", [target(q.collector_last("influx_buffered_points"), alias="待写")],
             w=5, h=4, unit="none", decimals=0, colours=thresholds(100_000, below="green", above="orange")),
        stat("已落盘 (spilled to disk)", [target(q.collector_last("influx_spilled_bytes"), alias="落盘")],
             w=5, h=4, unit="bytes", colours=thresholds(1, below="green", above="orange"),
             description="InfluxDB 不可用时溢出到磁盘的数据；恢复后自动补写。"),
    ]


def message_panels() -> list[Panel]:
    rejects = {f"non_negative_derivative_rejects_{k}": REJECT_NAMES.get(k, k) for k in REJECT_KINDS}
    by_reason = timeseries("拒收（按原因）(rejects by reason)", [target(q.collector_rates_matching("rejects"),
                                                                      alias="$col")],
                           unit="short", overrides=display_names(rejects),
                           description="每秒拒收的消息数，按原因；拒收的消息不计入任何考核指标。")
    return [
        timeseries("消息速率 (messages/s)",
                   [target(q.collector_rates("messages", "messages_heartbeat", "messages_rejected"), alias="$col")],
                   unit="short", overrides=display_names({"messages": "全部", "messages_heartbeat": "心跳",
                                                          "messages_rejected": "拒收"})),
        by_reason,
        timeseries("未知设备数 (unknown devices)",
                   [target(q.collector_gauges("max", "unknown_devices"), alias="未知设备")], unit="none", decimals=0),
        timeseries("处理延迟与批大小 (lag and batch size)",
                   [target(q.collector_gauges("max", "engine_lag_seconds"), alias="处理延迟"),
                    target(q.collector_ratio("batch_messages", "batches"), alias="平均批大小")],
                   unit="s", overrides=[column_unit("平均批大小", "none"), _right_axis("平均批大小")]),
    ]


def influx_panels() -> list[Panel]:
    return [
        timeseries("写入延迟（平均）(write latency)",
                   [target(q.collector_ratio("influx_write_seconds", "influx_writes"), alias="平均写入延迟")],
                   w=8, unit="s", description="每个时间段内 InfluxDB 写请求的平均耗时。"),
        timeseries("待写与落盘 (buffer)",
                   [target(q.collector_gauges("max", "influx_buffered_points", "influx_spilled_bytes"), alias="$col")],
                   w=8, unit="none", overrides=[*display_names({"influx_buffered_points": "内存待写点数",
                                                                "influx_spilled_bytes": "落盘字节"}),
                                                column_unit("influx_spilled_bytes", "bytes"),
                                                _right_axis("influx_spilled_bytes")]),
        timeseries("写入点数 (points/s)",
                   [target(q.collector_rates("influx_points_written", "influx_points_dead_letter",
                                             "influx_points_dropped"), alias="$col")],
                   w=8, unit="short", overrides=display_names({"influx_points_written": "已写入",
                                                               "influx_points_dead_letter": "死信",
                                                               "influx_points_dropped": "丢弃"}),
                   description="死信：InfluxDB 拒绝的数据（见 spool/dead-letter）；丢弃：落盘超过上限时最旧的数据。"),
    ]


def loss_panels(names: Names) -> list[Panel]:
    """Heartbeats lost between device and collector (from seq gaps) and what the broker dropped: a lossy
    pipe, apart from silent devices (which lose nothing, they send nothing)."""
    streets = {f"{c} {code}": f"{label} {name}" for c, label in names.contracts.items() for code, name in names.streets.items()}
    return [
        stat("传输丢失率 · 当前 (loss now)", [target(q.loss_now("\"street\" = 'district'", '"contract"'), alias="$tag_contract")],
             w=6, h=8, unit="percentunit", colours=thresholds(0.02, below="green", above="red"),
             overrides=display_names(names.contracts),
             description="最近窗口（[loss] window，默认 1 小时）内未到达的消息 / (收到 + 未到达)；按设备 seq 的缺口计算。"),
        timeseries("传输丢失率（按街镇）(loss rate by street)",
                   [target(q.loss_rate("\"street\" != 'district'", '"contract", "street"'), alias="$tag_contract $tag_street")],
                   w=10, h=8, overrides=display_names(streets),
                   description="各合同 × 街镇的传输丢失率（窗口内）。丢失的心跳仍按合同计为未上报；"
                               "此图区分“设备不发”（无丢失）与“链路丢消息”（有丢失）。"),
        timeseries("丢失与补到 (lost / recovered per interval)",
                   [target(q.lost_per_interval("\"street\" = 'district'", '"contract"'), alias="$tag_contract $col")],
                   w=8, h=8, unit="none", decimals=0, bars=True,
                   description="每个时间段新计为丢失的消息，以及迟到后补回的消息（按设备 seq）。"),
        timeseries("采集器丢弃 (collector drops)", [target(q.collector_rates("mqtt_dropped"), alias="采集器丢弃/秒")],
                   w=12, h=7, unit="short",
                   description="采集器自身积压满（200 万条或 512 MiB 负载）时丢弃的 QoS 0 消息。丢弃期间记为监测中断，"
                               "不计设备离线；持续出现说明采集器跟不上（磁盘慢、异常大消息洪泛），请查日志。"),
        timeseries("MQTT 代理丢弃 (broker drops)", [target(q.broker_drops(), alias="$col")],
                   w=12, h=7, unit="short", overrides=[*display_names({"dropped": "代理丢弃/秒", "stored": "代理存储消息数"}),
                                                       _right_axis("stored"), column_unit("stored", "none")],
                   description="代理（Mosquitto）报告的丢弃消息：某客户端的队列满了。请调大 mosquitto.conf 的 "
                               "max_queued_messages / max_queued_bytes（0 为不限条数），并确认采集器跟得上。"),
    ]


def _right_axis(name: str) -> dict[str, Any]:
    return {"matcher": {"id": "byName", "options": name},
            "properties": [{"id": "custom.axisPlacement", "value": "right"}]}
