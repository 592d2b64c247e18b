"""What the dashboards take from ``rules/``: Chinese names of streets, types, contracts and KPIs,
and each contract KPI's threshold, so a changed rule file changes the dashboards with it."""

from __future__ import annotations

from dataclasses import dataclass

from ptmon.rules import Rules

DISTRICT = "district"  # the sla measurement's street tag for the district total
CONTRACT_LABELS = {"iot": "物联感知", "cam": "智能安防"}  # short names; the full names are long
ALERT_KINDS = {"breach": "低于阈值", "month_risk": "本月达标风险", "gateway": "网关离线",
               "street_silent": "街镇无信号"}
SUCCESS_KPIS = ("sensing", "face", "plate", "capture")
REJECT_NAMES = {  # collector/decode.py REJECT_KINDS
    "retained": "代理保留副本", "bad_topic": "主题格式错误", "unknown_device": "未登记设备", "contract_mismatch": "合同不符",
    "street_mismatch": "街镇不符", "rate_limited": "发送过频", "oversize": "消息过长", "bad_json": "JSON 错误",
    "not_object": "不是 JSON 对象", "bad_value": "字段值错误", "counter_mismatch": "计数不一致",
    "unknown_gateway": "未登记网关", "bad_gateway_status": "网关状态错误",
}


@dataclass(frozen=True)
class KpiInfo:
    contract: str
    code: str
    name: str  # 物联感知终端上线率 ...
    threshold: float
    informational: bool


@dataclass(frozen=True)
class Names:
    streets: dict[str, str]  # code -> name, the ten streets in rule-file order
    types: dict[str, str]
    contracts: dict[str, str]  # code -> short label
    contract_names: dict[str, str]  # code -> the contract's full name
    kpis: tuple[KpiInfo, ...]

    @classmethod
    def from_rules(cls, rules: Rules) -> Names:
        return cls(
            streets={s.code: s.name for s in rules.streets},
            types={t.code: t.name for t in rules.types},
            contracts={c.code: CONTRACT_LABELS.get(c.code, c.code) for c in rules.contracts},
            contract_names={c.code: c.name for c in rules.contracts},
            kpis=tuple(KpiInfo(c.code, k.code, k.name, float(k.threshold), k.informational)
                       for c in rules.contracts for k in c.kpis),
        )

    @property
    def streets_and_district(self) -> dict[str, str]:
        return {**self.streets, DISTRICT: "全区"}

    def kpis_of(self, contract: str, *, contract_only: bool = False) -> list[KpiInfo]:
        """The contract's KPIs; ``contract_only`` leaves out the informational ones (face, plate)."""
        return [k for k in self.kpis if k.contract == contract and not (contract_only and k.informational)]

    def kpi(self, contract: str, code: str) -> KpiInfo:
        return next(k for k in self.kpis if k.contract == contract and k.code == code)

    @property
    def kpi_names(self) -> dict[str, str]:
        """KPI code -> name; ``online`` is named generically (each contract names it its own way)."""
        names = {k.code: k.name for k in self.kpis if k.code != "online"}
        return {"online": "在线率", **names}
