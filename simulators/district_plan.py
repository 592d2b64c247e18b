"""The assumed shape of Putuo's device estate, as data: sensors per type, streets and their
小区, cameras per entrance, scenarios per type and the acceptance and retirement dates
(:mod:`ptmon.simulators.district` says which figures come from the budget and which are
assumptions, and generates the registry from them)."""

from __future__ import annotations

from datetime import date
from typing import NamedTuple

# --- sizes -------------------------------------------------------------------------------------

COMMON_TOTAL = 107_630
CUSTOM_TOTAL = 2_695
SENSOR_TOTAL = 110_325

# Active sensors per common type (通用感知设备), assumption; sums to COMMON_TOTAL.
COMMON_COUNTS: dict[str, int] = {
    "smoke": 26_800, "door": 16_000, "ebike": 7_200, "gas": 6_400, "sos": 5_600,
    "infrared": 5_200, "fire_door": 4_800, "elec_fire": 4_200, "extinguisher": 4_000,
    "hydrant": 3_600, "manhole": 3_400, "elevator": 3_200, "parking": 2_600,
    "street_light": 2_500, "garbage": 2_400, "water_pressure": 2_200, "temp_humidity": 1_600,
    "fire_lane": 1_500, "tree_tilt": 1_400, "waterlog": 1_200, "noise": 600, "air": 500,
    "dust": 450, "water_quality": 280,
}
# Active sensors per custom type (定制感知设备), assumption; sums to CUSTOM_TOTAL.
CUSTOM_COUNTS: dict[str, int] = {
    "house_tilt": 620, "wall_crack": 540, "sewer_gas": 420, "scaffold": 300, "billboard": 280,
    "canopy": 260, "river_level": 120, "bridge": 85, "pump": 70,
}
SENSOR_COUNTS: dict[str, int] = COMMON_COUNTS | CUSTOM_COUNTS

if (len(COMMON_COUNTS), sum(COMMON_COUNTS.values())) != (24, COMMON_TOTAL) or (
    len(CUSTOM_COUNTS), sum(CUSTOM_COUNTS.values())
) != (9, CUSTOM_TOTAL) or sum(SENSOR_COUNTS.values()) != SENSOR_TOTAL:
    raise AssertionError("sensor count tables do not match the iot contract (24/107,630, 9/2,695)")

FACE_PER_ENTRANCE = 2
PLATE_PER_ENTRANCE = 1
ENTRANCE_CHOICES = (1, 2, 3)
ENTRANCE_P = (0.50, 0.35, 0.15)
HD_MAX = 3  # HD cameras per older community: uniform 0..HD_MAX
CAMERA_TYPE_CODES = {"face_cam": "132", "plate_cam": "132", "hd_cam": "131"}
PUTUO_ADMIN_CODE = "310107"
RETIRED_SHARE = 0.005


class StreetPlan(NamedTuple):
    """Assumed shape of a street: population weight, number of 小区, share of older 小区."""

    weight: int
    communities: int
    older_share: float


STREETS: dict[str, StreetPlan] = {
    "changshou": StreetPlan(95, 58, 0.6),
    "caoyang": StreetPlan(90, 62, 0.8),  # 曹杨新村: the first workers' village (1950s)
    "changfeng": StreetPlan(120, 64, 0.4),
    "ganquan": StreetPlan(65, 42, 0.7),
    "yichuan": StreetPlan(85, 60, 0.7),
    "shiquan": StreetPlan(90, 62, 0.6),
    "zhenru": StreetPlan(160, 78, 0.4),
    "wanli": StreetPlan(100, 52, 0.2),
    "changzheng": StreetPlan(180, 86, 0.3),
    "taopu": StreetPlan(150, 76, 0.3),
}
DEFAULT_STREET = StreetPlan(100, 60, 0.5)

# Types installed on roads, rivers and building sites rather than inside a 小区.
STREET_LEVEL_TYPES = frozenset({
    "manhole", "street_light", "parking", "tree_tilt", "noise", "air", "dust", "water_quality",
    "waterlog", "river_level", "bridge", "pump", "billboard", "sewer_gas", "scaffold", "canopy",
})

# --- scenarios ---------------------------------------------------------------------------------

THEMES = (
    "消防安全", "防汛防台", "独居老人关爱", "电梯安全", "燃气安全", "环境监测", "市容环卫", "交通停车",
    "充电安全", "房屋安全", "市政设施", "绿化养护", "二次供水", "河道水务", "文明施工", "智能安防",
)
SETTINGS = ("小区", "街面", "商铺", "公共设施")
SCENARIOS: tuple[str, ...] = tuple(f"{t}-{s}" for t in THEMES for s in SETTINGS)
CAMERA_SCENARIO = "智能安防-小区"


def _scn(theme: str, *settings: str) -> tuple[str, ...]:
    return tuple(f"{theme}-{s}" for s in settings)


_ALL = SETTINGS
TYPE_SCENARIOS: dict[str, tuple[str, ...]] = {
    "smoke": _scn("消防安全", "小区", "商铺", "公共设施") + _scn("独居老人关爱", "小区"),
    "door": _scn("独居老人关爱", "小区") + _scn("智能安防", "小区", "商铺", "公共设施"),
    "ebike": _scn("充电安全", *_ALL),
    "gas": _scn("燃气安全", "小区", "商铺", "公共设施") + _scn("独居老人关爱", "小区"),
    "sos": _scn("独居老人关爱", "小区", "公共设施"),
    "infrared": _scn("独居老人关爱", "小区") + _scn("智能安防", "小区", "商铺", "公共设施"),
    "fire_door": _scn("消防安全", "小区", "商铺", "公共设施"),
    "elec_fire": _scn("消防安全", "小区", "商铺", "公共设施") + _scn("充电安全", "小区"),
    "extinguisher": _scn("消防安全", "小区", "商铺", "公共设施"),
    "hydrant": _scn("消防安全", "小区", "街面", "公共设施"),
    "manhole": _scn("市政设施", "街面", "商铺", "公共设施") + _scn("燃气安全", "街面"),
    "elevator": _scn("电梯安全", "小区", "商铺", "公共设施"),
    "parking": _scn("交通停车", "街面", "商铺", "公共设施"),
    "street_light": _scn("市政设施", "街面", "公共设施"),
    "garbage": _scn("市容环卫", *_ALL),
    "water_pressure": _scn("二次供水", "小区", "商铺", "公共设施"),
    "temp_humidity": _scn("独居老人关爱", "小区") + _scn("环境监测", "小区", "公共设施"),
    "fire_lane": _scn("消防安全", "小区", "街面") + _scn("交通停车", "小区"),
    "tree_tilt": _scn("绿化养护", *_ALL) + _scn("防汛防台", "街面"),
    "waterlog": _scn("防汛防台", *_ALL),
    "noise": _scn("环境监测", "街面", "商铺") + _scn("文明施工", "街面"),
    "air": _scn("环境监测", "街面", "公共设施"),
    "dust": _scn("文明施工", *_ALL) + _scn("环境监测", "街面"),
    "water_quality": _scn("河道水务", "街面", "公共设施") + _scn("二次供水", "街面"),
    "house_tilt": _scn("房屋安全", "小区", "商铺", "公共设施"),
    "wall_crack": _scn("房屋安全", "小区", "街面", "商铺"),
    "river_level": _scn("河道水务", "街面") + _scn("防汛防台", "公共设施"),
    "sewer_gas": _scn("市政设施", "小区") + _scn("燃气安全", "街面"),
    "billboard": _scn("市容环卫", "街面", "商铺") + _scn("防汛防台", "商铺"),
    "bridge": _scn("市政设施", "公共设施") + _scn("河道水务", "公共设施"),
    "pump": _scn("河道水务", "公共设施", "小区") + _scn("防汛防台", "公共设施"),
    "canopy": _scn("房屋安全", "商铺") + _scn("防汛防台", "商铺"),
    "scaffold": _scn("文明施工", "小区", "街面", "公共设施"),
}

if set(TYPE_SCENARIOS) != set(SENSOR_COUNTS) or not {
    s for v in TYPE_SCENARIOS.values() for s in v
} <= set(SCENARIOS):
    raise AssertionError("TYPE_SCENARIOS must map every sensor type to scenarios of SCENARIOS")

# --- dates -------------------------------------------------------------------------------------

IOT_ACCEPTED = (date(2025, 1, 2), date(2025, 6, 30))
CAM_ACCEPTED = (date(2024, 7, 1), date(2024, 12, 31))
RETIRED_ON = (date(2026, 1, 1), date(2026, 10, 31))
