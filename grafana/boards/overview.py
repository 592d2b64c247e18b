"""区级总览 (District overview): is every street of every contract above its thresholds right now,
this month, and what is firing."""

from __future__ import annotations

from typing import Any

from .. import queries as q
from ..names import ALERT_KINDS, Names
from ..panels import Panel, column_unit, dashboard, display_names, row, stat, table, target, thresholds, timeseries, value_names

UID = "ptmon-overview"
STREET_LINK = [{"title": "街镇详情 (street drill-down)", "targetBlank": False,
                "url": "/d/ptmon-street/?var-street=${__field.labels.street}&${__url_time_range}"}]


def build(names: Names) -> dict[str, Any]:
    panels: list[Panel] = [row("全区 (District)"), *district_panels(names)]
    for contract in names.contracts:
        panels += contract_panels(names, contract)
    return dashboard(UID, "区级总览 (District overview)", panels,
                     description="各街镇、各合同的当前在线率与成功率、本月累计值（对照合同阈值）、离线设备数与告警。")


def district_panels(names: Names) -> list[Panel]:
    alert_columns = {"contract": "合同", "street": "街镇", "kpi": "指标", "kind": "告警类型", "value": "当前值",
                     "threshold": "阈值"}
    return [
        stat("离线设备数 (offline devices)", [target(q.offline_now('"street" = \'district\'', '"contract"'),
                                                  alias="$tag_contract")],
             w=6, h=6, unit="none", decimals=0, colours=thresholds(None, above="blue"),
             overrides=display_names(names.contracts),
             description="最近一个采样时刻，全区应在线而未在线的设备数（按合同）。"),
        stat("告警中 (firing alerts)", [target(q.firing_count(), alias="告警中")], w=4, h=6, unit="none",
             decimals=0, colours=thresholds(1, below="green", above="red"),
             description="所选时段内最近一次评估仍处于告警状态的告警数。"),
        table("告警列表 (firing alerts)", [target(q.firing_alerts(), table=True)], columns=alert_columns,
              w=14, h=6, sort_by="street",
              overrides=[value_names("contract", names.contracts),
                         value_names("street", names.streets_and_district),
                         value_names("kpi", names.kpi_names), value_names("kind", ALERT_KINDS),
                         column_unit("value", "percentunit"), column_unit("threshold", "percentunit")],
              description="告警规则见 rules/alerts.yaml；当前值为告警窗口内的比率。"),
    ]


def contract_panels(names: Names, contract: str) -> list[Panel]:
    label = names.contracts[contract]
    where = f"\"contract\" = '{contract}'"
    street_names = display_names(names.streets_and_district)
    online = names.kpi(contract, "online")
    panels: list[Panel] = [
        row(f"{label} · {names.contract_names[contract]}"),
        stat(f"{online.name} · 当前 (online now)", [target(q.online_now(where, '"street"'), alias="$tag_street")],
             colours=thresholds(online.threshold), overrides=street_names, links=STREET_LINK,
             description=f"最近一个采样时刻的在线设备 / 应在线设备；低于合同阈值 {online.threshold:.0%} 显示为红色。"),
    ]
    for kpi in names.kpis_of(contract, contract_only=True):
        kpi_where = f"{where} AND \"kpi\" = '{kpi.code}'"
        panels.append(stat(f"{kpi.name} · 本月累计 (month to date)",
                           [target(q.sla_last("value", kpi_where, '"street"'), alias="$tag_street")],
                           colours=thresholds(kpi.threshold), overrides=street_names, links=STREET_LINK,
                           description=f"本月至今的考核值（与月度验收报告同一算法），合同阈值 {kpi.threshold:.0%}。"))
        if kpi.code != "online":
            panels.append(stat(f"{kpi.name} · 所选时段 (selected range)",
                               [target(q.success_in_range(kpi_where, '"street"'), alias="$tag_street")],
                               colours=thresholds(kpi.threshold), overrides=street_names, links=STREET_LINK,
                               description="所选时段内成功次数之和 / 尝试次数之和。"))
    panels.append(timeseries(f"{online.name}走势 (online rate)",
                             [target(q.online_rate(where, '"street"'), alias="$tag_street")],
                             threshold_line=online.threshold, overrides=street_names,
                             description="每个时间段内的时间加权在线率；红色区域为低于合同阈值。"))
    for kpi in names.kpis_of(contract, contract_only=True):
        if kpi.code == "online":
            continue
        panels.append(timeseries(f"{kpi.name}走势 ({kpi.code})",
                                 [target(q.success_rate(f"{where} AND \"kpi\" = '{kpi.code}'", '"street"'),
                                         alias="$tag_street")],
                                 threshold_line=kpi.threshold, overrides=street_names,
                                 description="每个时间段内的成功次数 / 尝试次数。"))
    return panels

