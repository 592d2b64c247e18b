"""What the live demo does to the district, and why the streets it touches fail.

The window: from 09:00 Shanghai time of the day before the demo runs, so it is daytime
(cameras capture worse at night) and its date is the only input taken from the clock.

The scenario (written as a scenario file beside the demo's archive, its times scaled to the
window), on four streets; the other six are untouched and pass every KPI:

* 长征镇 (changzheng): a power cut from 20 % to 60 % of the window, every device of the
  street silent: its cameras count offline 180 s after their last heartbeat.
* 万里街道 (wanli): a fifth of its community camera gateways die at 30 % of the window and
  stay dead; the broker publishes their Last Will (``offline``) and their cameras fall silent.
* 桃浦镇 (taopu): camera capture success × 0.9 for the whole window.
* 宜川路街道 (yichuan): sensing success × 0.9 for the whole window.
* everywhere: 0.3 % of the devices never report, and bad traffic (unknown devices,
  malformed payloads, duplicates, late messages) that is counted and counts toward no KPI.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ptmon.registry import Registry
from ptmon.results import KpiRow, Results
from ptmon.timebase import US_PER_S, day_of, day_start, format_instant

from .scenario import Plan

WINDOW_HOUR = 9  # the window starts at 09:00 Shanghai time, the day before the run
MIN_MINUTES = 15  # shorter, the outage would not outlast the cameras' 180 s timeout by much
OUTAGE_STREET, OUTAGE_FROM, OUTAGE_TO = "changzheng", 0.2, 0.6
GATEWAY_STREET, GATEWAY_CONTRACT, GATEWAY_SHARE, GATEWAY_AT = "wanli", "cam", 0.2, 0.3
CAPTURE_STREET, SENSING_STREET, SUCCESS_FACTOR = "taopu", "yichuan", 0.9
TOUCHED_STREETS = (OUTAGE_STREET, GATEWAY_STREET, CAPTURE_STREET, SENSING_STREET)
ONLINE_KPIS = ("online",)


def live_window(now_us: int, minutes: int) -> tuple[int, int]:
    """``[start, end)``: ``minutes`` from 09:00 Shanghai time of the day before ``now_us``."""
    start = day_start(day_of(now_us) - 1) + WINDOW_HOUR * 3600 * US_PER_S
    return start, start + minutes * 60 * US_PER_S


def dying_gateways(registry: Registry) -> int:
    """How many of the gateway street's camera gateways die: a fifth, at least one."""
    rules = registry.rules
    devices = ((registry.street == rules.street_codes().index(GATEWAY_STREET))
               & (registry.contract == [c.code for c in rules.contracts].index(GATEWAY_CONTRACT)))
    return max(1, round(GATEWAY_SHARE * len(np.unique(registry.gateway[devices]))))


def scenario_yaml(minutes: int, gateways: int) -> str:
    """The demo's scenario file for a window of ``minutes`` (offsets from its start), ``gateways`` dying."""
    def at(share: float) -> str:
        return f"{round(share * minutes * 60)}s"

    return f"""\
# 演示场景 (the live demo's scenario), written by `ptmon demo` for a {minutes}-minute window.
name: 演示 (demo)
silent_fraction: 0.003                # 0.3 % of the devices never report
events:
  - street_outage: {{street: {OUTAGE_STREET}, from: {at(OUTAGE_FROM)}, to: {at(OUTAGE_TO)}}}   # 停电: every device silent
  - gateway_death: {{count: {gateways}, street: {GATEWAY_STREET}, contract: {GATEWAY_CONTRACT}, \
at: {at(GATEWAY_AT)}}}  # no revival
  - success_drop: {{contract: cam, street: {CAPTURE_STREET}, factor: {SUCCESS_FACTOR}}}
  - success_drop: {{contract: iot, street: {SENSING_STREET}, factor: {SUCCESS_FACTOR}}}
  - unknown_devices: {{per_minute: 5}}
  - malformed: {{per_minute: 2}}
  - duplicates: {{fraction: 0.005}}
  - reorder: {{fraction: 0.002, delay: 5s}}
"""


def write_scenario(path: Path, minutes: int, registry: Registry) -> Path:
    path.write_text(scenario_yaml(minutes, dying_gateways(registry)), encoding="utf-8")
    return path


# --- the scenario's events, by street and contract --------------------------------------------


@dataclass(frozen=True)
class Event:
    """One scenario event as the demo tells it: when, where, what, and which KPIs it can move."""

    at_us: int
    street: str
    contract: str
    kpis: str  # "online" or "success"
    text: str


def _clock(t_us: int) -> str:
    return format_instant(t_us)[11:16]


def _groups(registry: Registry, devices: np.ndarray) -> list[tuple[str, str, int]]:
    """(contract, street, device count) of ``devices``."""
    rules = registry.rules
    contracts, streets = [c.code for c in rules.contracts], rules.street_codes()
    pairs = defaultdict(int)
    for c, s in zip(registry.contract[devices].tolist(), registry.street[devices].tolist()):
        pairs[contracts[c], streets[s]] += 1
    return [(c, s, n) for (c, s), n in sorted(pairs.items())]


def scenario_events(plan: Plan, registry: Registry, start: int, end: int) -> list[Event]:
    """The plan's outages, gateway deaths and success changes, per contract × street, in time order."""
    rules = registry.rules
    events: list[Event] = []
    for o in plan.traffic.outages:
        for contract in [o.contract] if o.contract else [c.code for c in rules.contracts]:
            events.append(Event(o.from_us, o.street, contract, "online",
                                f"power cut {_clock(o.from_us)}–{_clock(o.to_us)}: every device of the street silent"))
    deaths: dict[tuple[str, str, int], list[int]] = defaultdict(list)
    for d in plan.gateway_deaths:
        devices = np.flatnonzero(registry.gateway == registry.gateways.index(d.gateway))
        for contract, street, n in _groups(registry, devices):
            deaths[contract, street, d.at_us].append(n)
    for (contract, street, at), counts in sorted(deaths.items()):
        events.append(Event(at, street, contract, "online",
                            f"{len(counts)} gateways died at {_clock(at)} (Last Will 'offline'), "
                            f"{sum(counts)} devices behind them silent"))
    for w in plan.traffic.success_windows:
        span = ("for the whole window" if w.from_us <= start and w.to_us >= end
                else f"{_clock(max(w.from_us, start))}–{_clock(min(w.to_us, end))}")
        for contract, street, _n in _groups(registry, np.asarray(w.devices, dtype=np.int64)):
            events.append(Event(max(w.from_us, start), street, contract, "success",
                                f"success × {w.factor:g} {span}"))
    return sorted(events, key=lambda e: (e.at_us, e.street, e.contract))


# --- why the failing streets fail ----------------------------------------------------------------


def _percent(threshold: object) -> str:
    return f"{float(str(threshold)) * 100:g}%"


def explain_failures(results: Results, events: list[Event], registry: Registry, never_reporting: int) -> list[str]:
    """A line per failing contract × street: which KPIs, value against threshold, and the event behind it."""
    rules = registry.rules
    streets = {s.code: s.name for s in rules.streets} | {"district": "全区合计"}
    kpi_names = {(c.code, k.code): k.name for c in rules.contracts for k in c.kpis}
    failing: dict[tuple[str, str], list[KpiRow]] = defaultdict(list)
    for row in results.rows:
        if row.passed is False:
            failing[row.contract, row.street].append(row)
    lines = []
    for (contract, street), rows in failing.items():
        figures = ", ".join(f"{kpi_names[contract, r.kpi]} [{r.kpi}] {r.percent_text()}% < {_percent(r.threshold)}"
                            for r in rows)
        lines.append(f"{streets[street]} [{contract}]: {figures}")
        lines += [f"    ← {cause}" for cause in _causes(contract, street, rows, events, failing, streets, never_reporting)]
    return lines


def _causes(contract: str, street: str, rows: list[KpiRow], events: list[Event],
            failing: dict[tuple[str, str], list[KpiRow]], streets: dict[str, str], never_reporting: int) -> list[str]:
    if street == "district":
        others = sorted({streets[s] for (c, s) in failing if c == contract and s != "district"})
        return [f"the district total carries the failing streets: {', '.join(others)}" if others
                else "no street fails alone: the district total is below the threshold by the sum of small shortfalls"]
    kinds = {"online" if r.kpi in ONLINE_KPIS else "success" for r in rows}
    causes = [e.text for e in events if e.street == street and e.contract == contract and e.kpis in kinds]
    if causes:
        return causes
    if "online" in kinds and never_reporting:
        return [f"no scenario event on this street: {never_reporting:,} devices of the district never report, "
                "and messages the broker delivered late count as late heartbeats"]
    return ["no scenario event on this street: the transport fell behind (messages delivered late); see the broker log"]
