"""摄像头抓拍 (Cameras): face and plate capture success by street, its hourly pattern, the cameras
offline now with their community (小区), the cameras online but blind or degraded, and each
community's online and capture rates (from the ``sla_community`` rollup)."""

from __future__ import annotations

from typing import Any

from .. import queries as q
from ..names import Names
from ..panels import (
    Panel,
    bar_gauge,
    choice_variable,
    column_unit,
    dashboard,
    display_names,
    row,
    series_thresholds,
    table,
    target,
    thresholds,
    timeseries,
    value_names,
)

UID = "ptmon-cameras"
CONTRACT = "cam"
WHERE = "\"contract\" = 'cam' AND \"street\" =~ /^$street$/"
CAPTURE_KPIS = ("face", "plate", "capture")


def build(names: Names) -> dict[str, Any]:
    street_names = display_names(names.streets)
    panels: list[Panel] = [row("本月累计（按街镇）(month to date by street)")]
    for code in CAPTURE_KPIS:
        kpi = names.kpi(CONTRACT, code)
        panels.append(bar_gauge(f"{kpi.name} · 本月累计",
                                [target(q.sla_last("value", f"{WHERE} AND \"kpi\" = '{code}'", '"street"'),
                                        alias="$tag_street")],
                                w=6, colours=thresholds(kpi.threshold), overrides=street_names,
                                description=f"本月至今，合同阈值 {kpi.threshold:.0%}。"))
    online = names.kpi(CONTRACT, "online")
    panels.append(bar_gauge(f"{online.name} · 当前", [target(q.online_now(WHERE, '"street"'), alias="$tag_street")],
                            w=6, colours=thresholds(online.threshold), overrides=street_names,
                            description="最近一个采样时刻在线的摄像头 / 应在线的摄像头。"))
    panels.append(row("走势（按街镇）(by street over time)"))
    for code in ("face", "plate"):
        kpi = names.kpi(CONTRACT, code)
        panels.append(timeseries(f"{kpi.name}走势",
                                 [target(q.success_rate(f"{WHERE} AND \"kpi\" = '{code}'", '"street"'),
                                         alias="$tag_street")],
                                 threshold_line=kpi.threshold, overrides=street_names,
                                 description="每个时间段内成功抓拍 / 抓拍尝试。"))
    panels += hourly_panels(names)
    panels += [row("离线摄像头（按小区）(offline cameras by community)"), offline_cameras(names)]
    panels += [row("在线但失效（按小区）(online but blind, by community)"), anomaly_table(names, WHERE),
               *community_panels(names)]
    street = choice_variable("street", "街镇", names.streets, multi=True)
    return dashboard(UID, "摄像头抓拍 (Cameras)", panels, variables=[street], time_from="now-7d",
                     description="人脸、车辆抓拍成功率（按街镇）、每小时规律，以及当前离线的摄像头所在小区。")


def hourly_panels(names: Names) -> list[Panel]:
    pair = f"{WHERE} AND \"kpi\" =~ /^(face|plate)$/"
    kpi_names = {code: names.kpi(CONTRACT, code).name for code in ("face", "plate")}
    threshold = min(names.kpi(CONTRACT, code).threshold for code in kpi_names)
    return [
        row("小时规律 (hourly pattern)"),
        timeseries("每小时抓拍量 (captures per hour)", [target(q.hourly_attempts(pair), alias="$tag_kpi")],
                   unit="none", decimals=0, bars=True, overrides=display_names(kpi_names),
                   description="所选街镇每小时的抓拍尝试次数（白天高、夜间低）。"),
        timeseries("每小时抓拍成功率 (success per hour)", [target(q.hourly_success(pair), alias="$tag_kpi")],
                   threshold_line=threshold,
                   overrides=[*display_names(kpi_names),
                              *(series_thresholds(c, names.kpi(CONTRACT, c).threshold, line=True) for c in kpi_names)],
                   description="所选街镇每小时的成功抓拍 / 抓拍尝试；夜间光照差时通常偏低。"),
    ]


def offline_cameras(names: Names) -> Panel:
    return table(
        "离线摄像头 (offline cameras)", [target(q.offline_devices(WHERE), table=True)],
        columns={"street": "街镇", "community": "小区", "device": "设备编号", "type": "设备类型",
                 "since": "离线开始", "offline_for": "已离线"},
        hidden=("contract",), h=12, sort_by="community",
        overrides=[value_names("street", names.streets), value_names("type", names.types),
                   column_unit("since", "dateTimeAsLocal"), column_unit("offline_for", "dateTimeFromNow")],
        description="当前离线的摄像头及其小区（最近一次离线事件尚未恢复）。",
    )


ANOMALY_KINDS = {"blind": "失明 (blind)", "degraded": "成功率下降 (degraded)", "stuck": "读数停滞 (stuck)"}


def anomaly_table(names: Names, where: str, *, h: int = 10) -> Panel:
    """Devices online but not doing their job, by street and community, since when."""
    return table(
        "在线但失效的设备 (online but blind / degraded / stuck)", [target(q.open_anomalies(where), table=True)],
        columns={"street": "街镇", "community": "小区", "device": "设备编号", "type": "设备类型", "kind": "判断",
                 "since": "开始", "detected": "判定", "attempts": "本月尝试/读数", "expected": "按基线应为"},
        hidden=("contract",), h=h, sort_by="since",
        overrides=[value_names("street", names.streets), value_names("type", names.types),
                   value_names("kind", ANOMALY_KINDS), column_unit("since", "dateTimeAsLocal"),
                   column_unit("detected", "dateTimeAsLocal")],
        description="仍在心跳、但不再抓拍（失明）、成功率远低于自身基线（下降）或读数不再变化（停滞）的设备；"
                    "按各设备自身最近 4 周的历史判断，新设备学习期内不判断。",
    )


def community_panels(names: Names) -> list[Panel]:
    where = WHERE
    return [
        table("小区摄像头考核（按小区）(cameras by community)",
              [target(q.rollup_rates("sla_community", where, '"street", "community"'), table=True)],
              columns={"street": "街镇", "community": "小区", "online": "在线率", "capture": "抓拍成功率",
                       "blind": "失明", "degraded": "成功率下降", "learning": "学习中"},
              hidden=("sensing", "stuck"), w=12, h=10, sort_by="capture",
              overrides=[value_names("street", names.streets), column_unit("online", "percentunit"),
                         column_unit("capture", "percentunit")],
              description="所选时段内各小区摄像头的时间加权在线率与抓拍成功率（Σ / Σ，来自 sla_community 汇总），"
                          "以及时段末失效设备数。"),
        timeseries("抓拍成功率（按小区）(capture by community)",
                   [target(q.rollup_trend("sla_community", where, '"community"'), alias="$tag_community")],
                   description="每个时间段内各小区摄像头的成功抓拍 / 抓拍尝试。"),
    ]
