"""街镇详情 (Street drill-down): one street's KPIs, which devices are offline since when, by device
type, and how long repairs take. The alert emails link here (collector/alerting/links.py)."""

from __future__ import annotations

from typing import Any

from .. import queries as q
from ..names import SUCCESS_KPIS, Names
from ..panels import (
    Panel,
    choice_variable,
    column_unit,
    dashboard,
    display_names,
    row,
    series_thresholds,
    stat,
    table,
    target,
    thresholds,
    timeseries,
    value_names,
)
from . import cameras

UID = "ptmon-street"  # alert emails link .../d/ptmon-street?var-street={street}&from=…&to=…
WHERE = "\"street\" = '$street'"


def build(names: Names) -> dict[str, Any]:
    panels: list[Panel] = [
        row("本月考核 (month to date)"), *month_panels(names),
        row("当前状态 (now)"), *now_panels(names),
        row("按设备类型 (by device type)"), *type_panels(names),
        row("离线设备 (offline devices)"), offline_table(names),
        row("在线但失效 (online but not working)"), cameras.anomaly_table(names, WHERE),
    ]
    street = choice_variable("street", "街镇", names.streets)
    return dashboard(UID, "街镇详情 (Street drill-down)", panels, variables=[street],
                     description="单个街镇：各合同考核值、按设备类型的离线与恢复情况、当前离线设备清单。")


def month_panels(names: Names) -> list[Panel]:
    panels = []
    for contract, label in names.contracts.items():
        kpis = names.kpis_of(contract)
        panels.append(stat(
            f"{label} · 本月累计 (month to date)",
            [target(q.sla_last("value", f"{WHERE} AND \"contract\" = '{contract}'", '"kpi"'), alias="$tag_kpi")],
            w=12, h=5, overrides=[*display_names({k.code: k.name for k in kpis}),
                                  *(series_thresholds(k.code, k.threshold) for k in kpis)],
            description="本月至今的考核值，各指标对照其合同阈值着色（人脸、车辆抓拍率为参考指标）。"))
    return panels


def now_panels(names: Names) -> list[Panel]:
    online = {c: names.kpi(c, "online").threshold for c in names.contracts}
    success = "|".join(SUCCESS_KPIS)
    return [
        stat("在线率 · 当前 (online now)", [target(q.online_now(WHERE, '"contract"'), alias="$tag_contract")],
             w=6, h=7, overrides=[*display_names(names.contracts),
                                  *(series_thresholds(c, t) for c, t in online.items())],
             description="最近一个采样时刻的在线设备 / 应在线设备。"),
        stat("离线设备数 · 当前 (offline now)", [target(q.offline_now(WHERE, '"contract"'), alias="$tag_contract")],
             w=6, h=7, unit="none", decimals=0, colours=thresholds(None, above="blue"),
             overrides=display_names(names.contracts)),
        timeseries("在线率走势 (online rate)", [target(q.online_rate(WHERE, '"contract"'), alias="$tag_contract")],
                   w=12, h=7, overrides=[*display_names(names.contracts),
                                         *(series_thresholds(c, t, line=True) for c, t in online.items())],
                   description="每个时间段内的时间加权在线率，各合同对照其阈值。"),
        timeseries("成功率走势 (success rates)",
                   [target(q.success_rate(f"{WHERE} AND \"kpi\" =~ /^({success})$/", '"kpi"'), alias="$tag_kpi")],
                   w=24, h=7, overrides=[*display_names(names.kpi_names),
                                         *(series_thresholds(k.code, k.threshold, line=True)
                                           for k in names.kpis if k.code in SUCCESS_KPIS)],
                   description="每个时间段内的感知成功率、人脸 / 车辆 / 合计抓拍成功率。"),
    ]


def type_panels(names: Names) -> list[Panel]:
    types = [value_names("type", names.types), value_names("contract", names.contracts)]
    seconds = [column_unit(c, "s") for c in ("mean", "p90", "longest")]
    rates = [column_unit(c, "percentunit") for c in ("online", "sensing", "capture")]
    return [
        table("考核指标（按类型）(KPIs by type)",
              [target(q.rollup_rates("sla_type", WHERE, '"contract", "type"'), table=True)],
              columns={"contract": "合同", "type": "设备类型", "online": "在线率", "sensing": "感知成功率",
                       "capture": "抓拍成功率", "blind": "失明", "degraded": "成功率下降", "stuck": "读数停滞",
                       "learning": "学习中"}, w=24, h=9, sort_by="online", overrides=[*types, *rates],
              description="所选时段内每种设备的时间加权在线率与成功率（Σ / Σ，来自 sla_type 汇总，不查单台设备），"
                          "以及时段末失效与学习中的设备数。"),
        table("当前离线设备数（按类型）(offline now by type)",
              [target(q.offline_by(WHERE, '"contract", "type"'), table=True)],
              columns={"contract": "合同", "type": "设备类型", "offline": "离线设备数"}, w=8, h=10,
              sort_by="offline", descending=True, overrides=types,
              description="每台设备最近一次离线事件仍未恢复的，按类型计数。"),
        table("恢复时长（按类型）(time to restore by type)",
              [target(q.restore_times(WHERE, '"contract", "type"'), table=True)],
              columns={"contract": "合同", "type": "设备类型", "episodes": "恢复次数", "mean": "平均时长",
                       "p90": "90% 在此时长内", "longest": "最长"},
              w=16, h=10, sort_by="mean", descending=True, overrides=[*types, *seconds],
              description="所选时段内结束的离线事件：从心跳超时到恢复心跳（或退出考核）的时长。"),
        timeseries("离线事件数（按类型）(devices going offline)",
                   [target(q.episodes_opened(WHERE, '"type"'), alias="$tag_type")],
                   unit="none", decimals=0, bars=True, overrides=display_names(names.types),
                   description="每个时间段内新开始的离线事件数。"),
        timeseries("平均恢复时长 (mean time to restore)",
                   [target(q.restore_time_trend(WHERE, '"contract"'), alias="$tag_contract")],
                   unit="s", overrides=display_names(names.contracts),
                   description="每个时间段内结束的离线事件的平均时长。"),
    ]


def offline_table(names: Names) -> Panel:
    return table(
        "离线设备清单 (offline devices)", [target(q.offline_devices(WHERE), table=True)],
        columns={"device": "设备编号", "type": "设备类型", "contract": "合同", "community": "小区",
                 "since": "离线开始", "offline_for": "已离线"},
        hidden=("street",), h=12, sort_by="since",
        overrides=[value_names("type", names.types), value_names("contract", names.contracts),
                   column_unit("since", "dateTimeAsLocal"), column_unit("offline_for", "dateTimeFromNow")],
        description="当前离线的设备（最近一次离线事件尚未恢复），离线最久的在前。",
    )
