"""Scenario files: what goes wrong in a simulated district, declared in YAML.

A scenario resolves against a registry and a simulated window into a :class:`Plan`: the
traffic model's :class:`~simulators.synthetic.Scenario` (silences, success changes, never-
reporting devices), the gateway deaths the live simulator acts out on its MQTT links, and
the injections of bad traffic. Every random choice comes from the seed, so a scenario file
and ``--seed`` always give the same run.

Times are offsets from the simulation start (``90s``, ``15m``, ``6h``, ``1d``) or absolute
ISO 8601 instants (Shanghai time unless an offset is given). See ``simulators/scenarios/``.

    name: 长征镇停电 6 小时
    silent_fraction: 0.003          # devices that never report
    loss: 0.0                       # share of messages lost on the way
    events:
      - street_outage: {street: changzheng, from: 6h, to: 12h}          # contract: optional
      - gateway_death: {gateway: gw-taopu-c003-iot, at: 2h, revive: 5h}  # or {count: 3, street: wanli, at: 1h}
      - churn: {per_hour: 0.002, mean_repair: 3h}                       # contract/street: optional
      - flapping: {count: 20, period: 10m}                              # contract/street: optional
      - success_drop: {contract: iot, type: smoke, factor: 0.8, from: 2h, to: 8h}
      - success_drop: {contract: cam, street: taopu, factor: 0.9}       # whole run when no from/to
      - never_report: {devices: [860415650028821]}                     # or {count: 10}
      - unknown_devices: {per_minute: 5}
      - malformed: {per_minute: 2}
      - duplicates: {fraction: 0.01}
      - reorder: {fraction: 0.005, delay: 5s}
      - blind: {count: 20, contract: cam, from: 2d, spread: 1d, night_only: false}  # attempts: 0 (the share left)
      - degraded: {count: 20, type: face_cam, points: 0.30, from: 2d}              # success 30 points lower
      - stuck: {count: 50, contract: iot, reads_stop: false, from: 2d, to: 3d}    # read_ok stops (reads too)

The device faults (blind, degraded, stuck) keep the heartbeats going: each chosen device's fault
begins at a random instant in ``[from, from + spread)`` (``spread`` 0 by default) and lasts to ``to``
(the end of the run when not given).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ptmon.errors import ConfigError, UsageError
from ptmon.registry import Registry
from ptmon.rules import parse_duration
from ptmon.timebase import US_PER_S, parse_instant

from .faults import DeviceFault
from .synthetic import Flapping, Outage, Scenario, Silence, SuccessWindow

EVENT_KINDS = (
    "street_outage", "gateway_death", "churn", "flapping", "success_drop", "never_report",
    "unknown_devices", "malformed", "duplicates", "reorder", "blind", "degraded", "stuck",
)


@dataclass(frozen=True, kw_only=True)
class GatewayDeath:
    """Gateway ``gateway`` loses power at ``at_us``: its link drops (the Will fires), its devices go silent."""

    gateway: str
    at_us: int
    revive_us: int | None = None


@dataclass(frozen=True, kw_only=True)
class Injections:
    """Bad traffic added on top of the devices' own: counted by the collector, never in a KPI."""

    unknown_per_minute: float = 0.0
    malformed_per_minute: float = 0.0
    duplicate_fraction: float = 0.0
    reorder_fraction: float = 0.0
    reorder_delay_us: int = 5 * US_PER_S


@dataclass(frozen=True, kw_only=True)
class Plan:
    """A scenario resolved for one registry and window."""

    name: str
    traffic: Scenario
    gateway_deaths: tuple[GatewayDeath, ...] = ()
    injections: Injections = field(default_factory=Injections)
    summary: tuple[str, ...] = ()


class _Reader:
    """Reads one event's keys with errors naming the file, the event and the key."""

    def __init__(self, file: str, where: str, data: Any, start_us: int) -> None:
        if not isinstance(data, dict):
            raise ConfigError(f"{file}: {where} must be a mapping: {data!r}")
        self.file, self.where, self.data, self.start_us = file, where, data, start_us
        self.used: set[str] = set()

    def fail(self, key: str, expected: str) -> ConfigError:
        return ConfigError(f"{self.file}: {self.where}.{key} {expected}: {self.data.get(key)!r}")

    def get(self, key: str, default: Any = ...) -> Any:
        self.used.add(key)
        if key not in self.data:
            if default is ...:
                raise ConfigError(f"{self.file}: {self.where}.{key} is missing")
            return default
        return self.data[key]

    def instant(self, key: str, default: Any = ...) -> int | None:
        value = self.get(key, default)
        if value is None:
            return None
        offset = parse_duration(value)
        if offset is not None:
            return self.start_us + offset * US_PER_S
        try:
            return parse_instant(str(value))
        except UsageError:
            raise self.fail(key, "must be an offset (6h) or an ISO 8601 time") from None

    def duration_us(self, key: str, default: Any = ...) -> int:
        seconds = parse_duration(self.get(key, default))
        if seconds is None or seconds <= 0:
            raise self.fail(key, "must be a positive duration (90s, 15m, 6h)")
        return seconds * US_PER_S

    def number(self, key: str, lo: float, hi: float, default: Any = ...) -> float:
        value = self.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
            raise self.fail(key, f"must be a number in [{lo}, {hi}]")
        return float(value)

    def count(self, key: str, default: Any = ...) -> int:
        value = self.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise self.fail(key, "must be a whole number ≥ 0")
        return value

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise ConfigError(f"{self.file}: {self.where}.{unknown[0]} is not a known key")


class _Builder:
    """Accumulates the parts of a plan while events are read."""

    def __init__(self, file: str, registry: Registry, start_us: int, end_us: int, seed: int) -> None:
        self.file, self.registry, self.start_us, self.end_us = file, registry, start_us, end_us
        self.rng = np.random.default_rng([seed & 0xFFFFFFFF, 0x5CE7])
        self.outages: list[Outage] = []
        self.silences: list[Silence] = []
        self.flapping: list[Flapping] = []
        self.windows: list[SuccessWindow] = []
        self.never: list[int] = []
        self.deaths: list[GatewayDeath] = []
        self.faults: list[DeviceFault] = []
        self.injections: dict[str, Any] = {}
        self.summary: list[str] = []

    def selection(self, r: _Reader) -> np.ndarray:
        """Devices matching the event's optional contract / street / type keys."""
        rules, reg = self.registry.rules, self.registry
        mask = np.ones(len(reg), dtype=bool)
        for key, codes, column in (
            ("contract", [c.code for c in rules.contracts], reg.contract),
            ("street", rules.street_codes(), reg.street),
            ("type", [t.code for t in rules.types], reg.type),
        ):
            value = r.get(key, None)
            if value is not None:
                if value not in codes:
                    raise r.fail(key, f"must be one of {', '.join(codes)}")
                mask &= column == codes.index(value)
        return mask

    def pick(self, mask: np.ndarray, count: int) -> np.ndarray:
        """``count`` devices of ``mask``; never one an earlier device fault chose (one fault per device)."""
        taken = [f.devices for f in self.faults]
        if taken:
            mask = mask.copy()
            mask[np.concatenate(taken)] = False
        candidates = np.flatnonzero(mask)
        return np.sort(self.rng.choice(candidates, size=min(count, len(candidates)), replace=False))


def _street_outage(b: _Builder, r: _Reader) -> None:
    street, contract = r.get("street"), r.get("contract", None)
    start, end = r.instant("from"), r.instant("to")
    assert start is not None and end is not None
    if end <= start:
        raise r.fail("to", "must be after from")
    if street not in b.registry.rules.street_codes():
        raise r.fail("street", "must be a street code of rules/streets.yaml")
    b.outages.append(Outage(street=street, from_us=start, to_us=end, contract=contract))
    b.summary.append(f"street outage {street} {contract or 'all'} {(end - start) // US_PER_S} s")


def _gateway_death(b: _Builder, r: _Reader) -> None:
    at, revive = r.instant("at"), r.instant("revive", None)
    assert at is not None
    gateways = b.registry.gateways
    if "gateway" in r.data:
        name = r.get("gateway")
        if name not in gateways:
            raise r.fail("gateway", "is not a gateway of the registry")
        chosen = [gateways.index(name)]
    else:
        mask = b.selection(r)
        used = np.unique(b.registry.gateway[mask])
        chosen = sorted(b.rng.choice(used, size=min(r.count("count", 1), len(used)), replace=False).tolist())
    for g in chosen:
        devices = np.flatnonzero(b.registry.gateway == g)
        b.silences.append(Silence(devices=devices, from_us=at, to_us=revive if revive is not None else 2**62))
        b.deaths.append(GatewayDeath(gateway=gateways[g], at_us=at, revive_us=revive))
    b.summary.append(f"gateway death ×{len(chosen)} ({sum(int((b.registry.gateway == g).sum()) for g in chosen)} devices)")


def _churn(b: _Builder, r: _Reader) -> None:
    per_hour, repair = r.number("per_hour", 0.0, 1.0), r.duration_us("mean_repair")
    mask = b.selection(r)
    hours = (b.end_us - b.start_us) / (3600 * US_PER_S)
    events = int(b.rng.poisson(per_hour * hours * int(mask.sum())))
    devices = b.rng.choice(np.flatnonzero(mask), size=events) if events else np.zeros(0, np.int64)
    starts = b.start_us + (b.rng.random(events) * (b.end_us - b.start_us)).astype(np.int64)
    ends = starts + b.rng.exponential(repair, events).astype(np.int64)
    for d, s, e in zip(devices.tolist(), starts.tolist(), ends.tolist()):
        b.silences.append(Silence(devices=np.array([d]), from_us=s, to_us=e))
    b.summary.append(f"churn: {events} device failures, mean repair {repair // US_PER_S} s")


def _flapping(b: _Builder, r: _Reader) -> None:
    devices = b.pick(b.selection(r), r.count("count"))
    b.flapping.append(Flapping(devices=devices, period_us=r.duration_us("period")))
    b.summary.append(f"flapping ×{len(devices)}")


def _success_drop(b: _Builder, r: _Reader) -> None:
    factor = r.number("factor", 0.0, 1.0)
    start = r.instant("from", None)
    end = r.instant("to", None)
    mask = b.selection(r)
    b.windows.append(SuccessWindow(devices=np.flatnonzero(mask), factor=factor,
                                   from_us=start if start is not None else -(2**62), to_us=end if end is not None else 2**62))
    b.summary.append(f"success ×{factor} for {int(mask.sum())} devices")


def _never_report(b: _Builder, r: _Reader) -> None:
    if "devices" in r.data:
        ids = r.get("devices")
        if not isinstance(ids, list):
            raise r.fail("devices", "must be a list of device ids")
        for device_id in ids:
            if str(device_id) not in b.registry.index:
                raise ConfigError(f"{r.file}: {r.where}.devices: {device_id!r} is not in the registry")
            b.never.append(b.registry.index[str(device_id)])
    else:
        b.never.extend(b.pick(b.selection(r), r.count("count")).tolist())
    b.summary.append(f"never report: {len(b.never)} devices")


def _fault(kind: str):  # type: ignore[no-untyped-def]
    def read(b: _Builder, r: _Reader) -> None:
        devices = b.pick(b.selection(r), r.count("count"))
        start, end = r.instant("from", "0s"), r.instant("to", None)
        assert start is not None
        spread = r.duration_us("spread") if "spread" in r.data else 0
        if end is not None and end <= start + spread:
            raise r.fail("to", "must be after from + spread")
        settings: dict[str, Any] = {}
        if kind == "blind":
            settings = {"attempts": r.number("attempts", 0.0, 1.0, 0.0), "night_only": _flag(r, "night_only")}
        elif kind == "degraded":
            settings = {"points": r.number("points", 0.0, 1.0, 0.30)}
        else:
            settings = {"reads_stop": _flag(r, "reads_stop")}
        if end is None:  # until the run's end: a run shorter than from + spread starts fewer faults
            end = b.end_us
            if start >= end:
                b.summary.append(f"{kind} ×{len(devices)}: begins after the run's end, not injected")
                return
            spread = min(spread, end - start - 1)
        offsets = (b.rng.random(len(devices)) * spread).astype(np.int64) if spread else np.zeros(len(devices), np.int64)
        for d, offset in zip(devices.tolist(), offsets.tolist()):
            b.faults.append(DeviceFault(kind=kind, devices=np.array([d]), from_us=start + offset, to_us=end, **settings))
        b.summary.append(f"{kind} ×{len(devices)}")
    return read


def _flag(r: _Reader, key: str) -> bool:
    value = r.get(key, False)
    if not isinstance(value, bool):
        raise r.fail(key, "must be true or false")
    return value


def _injection(key: str, field_name: str, lo: float, hi: float):  # type: ignore[no-untyped-def]
    def read(b: _Builder, r: _Reader) -> None:
        b.injections[field_name] = r.number(key, lo, hi)
        if "delay" in r.data:
            b.injections["reorder_delay_us"] = r.duration_us("delay")
        b.summary.append(f"{r.where.rsplit('.', 1)[-1]}: {key} {b.injections[field_name]}")
    return read


_HANDLERS = {
    "street_outage": _street_outage,
    "gateway_death": _gateway_death,
    "churn": _churn,
    "flapping": _flapping,
    "success_drop": _success_drop,
    "never_report": _never_report,
    "unknown_devices": _injection("per_minute", "unknown_per_minute", 0, 1e6),
    "malformed": _injection("per_minute", "malformed_per_minute", 0, 1e6),
    "duplicates": _injection("fraction", "duplicate_fraction", 0, 1),
    "reorder": _injection("fraction", "reorder_fraction", 0, 1),
    "blind": _fault("blind"),
    "degraded": _fault("degraded"),
    "stuck": _fault("stuck"),
}


def load_scenario(path: str | Path | None, registry: Registry, start_us: int, end_us: int, seed: int) -> Plan:
    """Read a scenario file (None: normal operation) and resolve it for a registry and window."""
    if path is None:
        return Plan(name="normal operation", traffic=Scenario(seed=seed))
    file = str(path)
    try:
        doc = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read scenario: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file}: not valid YAML: {exc}") from exc
    top = _Reader(file, "scenario", doc, start_us)
    b = _Builder(file, registry, start_us, end_us, seed)
    events = top.get("events", [])
    if not isinstance(events, list):
        raise top.fail("events", "must be a list")
    for n, event in enumerate(events):
        if not isinstance(event, dict) or len(event) != 1 or next(iter(event)) not in _HANDLERS:
            raise ConfigError(f"{file}: events[{n}] must be one of {', '.join(EVENT_KINDS)} with its settings: {event!r}")
        kind, settings = next(iter(event.items()))
        reader = _Reader(file, f"events[{n}].{kind}", settings or {}, start_us)
        _HANDLERS[kind](b, reader)
        reader.done()
    traffic = Scenario(
        seed=seed,
        outages=tuple(b.outages),
        silent_fraction=top.number("silent_fraction", 0.0, 0.999, 0.0),
        loss=top.number("loss", 0.0, 0.999, 0.0),
        silences=tuple(b.silences),
        flapping=tuple(b.flapping),
        success_windows=tuple(b.windows),
        never_report=tuple(sorted(set(b.never))),
        faults=tuple(b.faults),
    )
    name = str(top.get("name", Path(path).stem))
    top.done()
    return Plan(name=name, traffic=traffic, gateway_deaths=tuple(b.deaths),
                injections=Injections(**b.injections), summary=tuple(b.summary))
