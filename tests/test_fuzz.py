"""Fuzzing the decoder and engine (hypothesis): hostile input costs nothing and changes nothing.

Streams of messages from devices whose ids carry line-protocol and SQL metacharacters —
well-formed heartbeats mixed with arbitrary bytes and text, JSON nested past the depth limit,
numbers beyond int64 and double, NaN / Infinity / -0.0, strings and booleans where numbers
belong, counters that go negative or backwards, non-UTF-8 payloads, wrong and invented
topics, gateway statuses, floods over a small rate limit — go through
:meth:`Decoder.decode` and :meth:`Engine.apply` in random batches. A slow per-message
reference, written from the decoder's documented rules (``collector/decode.py``) and the
counter rules of ``tests/reference.py``, says what each message should do. Then:

* nothing raises;
* every message is counted once: Σ rejects by kind + accepted heartbeats + gateway
  statuses = messages, and each kind's count equals the reference's;
* the engine's per-device state (last heartbeat, seq, boot, counter baselines), its counter
  deltas and the gateways' states are exactly the reference's;
* an engine fed only the accepted messages ends in the same state: rejects change nothing.

The long run off CI is ``bench/fuzz_decode.py`` (atheris).
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from collections import Counter
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ptmon.batch import REJECT_KINDS
from ptmon.boot_ids import boot_key
from ptmon.decode import MAX_JSON_DEPTH, Decoder
from ptmon.engine import Engine
from ptmon.registry import Registry, parse_registry
from ptmon.rules import COUNTERS, Rules

from . import reference
from .reference import PAIRS as REF_PAIRS
from .reference import Reject, _apply, decode_payload, to_us, type_limits

T0 = 1_793_462_400  # 2026-11-01T00:00:00+08:00
UTC_OFFSET_US = 8 * 3600 * 1_000_000
STREETS = ("taopu", "wanli")
# Registry ids with line-protocol, SQL, HTML and shell metacharacters (CR/LF, / + # and other
# control characters are refused by the registry: tests/test_injection.py).
DEVICES = [
    ("plain", "cam", "face_cam", "taopu"),
    ("d,1", "cam", "plate_cam", "wanli"),
    ("d 2=x", "iot", "elevator", "taopu"),
    ('d"3\'', "iot", "smoke", "wanli"),
    ("d\\4", "cam", "hd_cam", "taopu"),
    ("<script>alert(5)<\\script>", "iot", "elevator", "wanli"),
    ("'; DROP TABLE heartbeat;--", "cam", "face_cam", "wanli"),
    ("普陀\u2028曹\x85杨", "iot", "gas", "taopu"),
]
GATEWAYS = ["gw,1", 'gw "2"', "gw=3\\x", "<b>gw<\\b>"]
PAIRS = {"iot": (("reads", "read_ok"),), "cam": (("face_try", "face_ok"), ("plate_try", "plate_ok"))}
HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example]


@pytest.fixture(scope="module")
def registry(rules: Rules) -> Registry:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_ALL)
    writer.writerow(["device_id", "contract", "type", "street", "scenario", "community", "gateway",
                     "accepted_on", "retired_on"])
    for i, (device_id, contract, type_code, street) in enumerate(DEVICES):
        writer.writerow([device_id, contract, type_code, street, "scn", f"c,{i}", GATEWAYS[i % len(GATEWAYS)],
                         "2026-01-01", ""])
    return parse_registry(out.getvalue(), rules)


# --- the reference: one message at a time, from the documented rules ---------------------------


def _json_depth(text: str) -> int:
    """Deepest nesting of arrays and objects, strings skipped (char by char: slow and plain)."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def _parse_int(text: str) -> int | float:
    """Integers as orjson reads them: int64 and uint64 exactly, beyond that a double (finite)."""
    digits = text.lstrip("-")
    if len(digits) <= 20 and -(2**63) <= int(text) < 2**64:
        return int(text)
    value = float(text)
    if math.isinf(value):
        raise ValueError("a number beyond a double")
    return value


def reference_payload(payload: bytes | str, max_payload: int) -> dict[str, Any]:
    """The heartbeat fields of a payload, or raise Reject(kind)."""
    if isinstance(payload, bytes):
        size = len(payload)
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            text = None
    else:
        size, text = len(payload.encode("utf-8", "surrogatepass")), payload
    if size > max_payload:
        raise Reject("oversize")
    if text is None or _json_depth(text) > MAX_JSON_DEPTH:
        raise Reject("bad_json")
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 4 * MAX_JSON_DEPTH))  # json's C parser counts nesting as recursion
    try:
        json.loads(text, parse_int=_parse_int)  # numbers orjson refuses (beyond a double)
    except (ValueError, RecursionError):
        raise Reject("bad_json") from None
    finally:
        sys.setrecursionlimit(limit)
    limit, reference.MAX_PAYLOAD_BYTES = reference.MAX_PAYLOAD_BYTES, max_payload  # its own check is 4,096 bytes
    try:
        msg = decode_payload(text)
    finally:
        reference.MAX_PAYLOAD_BYTES = limit
    if "boot" in msg:
        msg["boot"] = str(msg["boot"])  # the decoder keys boots by their text: 7 and "7" are one boot
    return msg


class Reference:
    """What the decoder and engine should do with each message, in order."""

    def __init__(self, registry: Registry, device_rate: int, window: int, max_payload: int = 4096) -> None:
        rules = registry.rules
        self.contracts = [c.code for c in rules.contracts]
        self.devices = {
            device_id: {"contract": self.contracts[int(registry.contract[i])],
                        "street": rules.streets[int(registry.street[i])].code,
                        **type_limits(rules.types[int(registry.type[i])])}
            for i, device_id in enumerate(registry.ids)
        }
        self.topics = {f"putuo/{d['contract']}/{d['street']}/{device_id}/hb": device_id
                       for device_id, d in self.devices.items()}
        self.gateways = {g for g in registry.gateways if g}
        self.device_rate, self.window_us, self.max_payload = device_rate, window * 1_000_000, max_payload
        self.rate_clock: int | None = None
        self.windows: dict[tuple[str, str], tuple[int, int]] = {}
        self.rejects: Counter[str] = Counter()
        self.accepted: list[tuple[int, str, dict[str, Any]]] = []  # (engine time µs, device id, fields)
        self.gateway_events: list[tuple[int, str, bool]] = []
        self.engine_clock: int | None = None

    def route(self, topic: str) -> tuple[str, str | None]:
        """("hb", device id), ("gw", gateway) or (reject kind, None)."""
        if topic in self.topics:
            return "hb", self.topics[topic]
        if topic == "$ptmon/retained":  # the collector's record of a retained message: never a heartbeat
            return "retained", None
        parts = topic.split("/")
        if len(parts) == 4 and parts[0] == "putuo" and parts[1] == "gw" and parts[3] == "status":
            return ("gw", parts[2]) if parts[2] in self.gateways else ("unknown_gateway", None)
        if len(parts) != 5 or parts[0] != "putuo" or parts[4] != "hb" or parts[1] not in self.contracts:
            return "bad_topic", None
        device = self.devices.get(parts[3])
        if device is None:
            return "unknown_device", None
        return ("contract_mismatch" if device["contract"] != parts[1] else "street_mismatch"), None

    def over_rate(self, key: tuple[str, str], t_us: int) -> bool:
        if not self.device_rate:
            return False
        window = (t_us + UTC_OFFSET_US) // self.window_us  # windows start at Shanghai midnight
        last, count = self.windows.get(key, (-1, 0))
        count = count + 1 if last == window else 1
        self.windows[key] = (window, count)
        return count > self.device_rate

    def message(self, t: float, topic: str, payload: bytes | str) -> bool:
        """Take one message; True when accepted (a heartbeat for the engine, or a gateway status)."""
        t_us = to_us(t)
        self.rate_clock = t_us if self.rate_clock is None else max(self.rate_clock, t_us)
        kind, key = self.route(topic)
        if kind not in ("hb", "gw"):
            self.rejects[kind] += 1
            return False
        assert key is not None
        if self.over_rate((kind, key), self.rate_clock):
            self.rejects["rate_limited"] += 1
            return False
        if kind == "gw":
            return self.gateway(t_us, key, payload)
        try:
            fields = reference_payload(payload, self.max_payload)
        except Reject as reject:
            self.rejects[str(reject)] += 1
            return False
        self.engine_clock = t_us if self.engine_clock is None else max(self.engine_clock, t_us)
        self.accepted.append((self.engine_clock, key, fields))
        return True

    def gateway(self, t_us: int, gateway: str, payload: bytes | str) -> bool:
        size = len(payload) if isinstance(payload, bytes) else len(payload.encode("utf-8", "surrogatepass"))
        if size > self.max_payload:
            self.rejects["oversize"] += 1
            return False
        state = (payload.decode("utf-8", "replace") if isinstance(payload, bytes) else payload).strip()
        if state not in ("online", "offline"):
            self.rejects["bad_gateway_status"] += 1
            return False
        self.gateway_events.append((t_us, gateway, state == "online"))
        return True


class DeltaSums:
    """An engine listener summing counter deltas per group (contract × street)."""

    def __init__(self, engine: Engine) -> None:
        self.sums = np.zeros((engine.n_groups, len(COUNTERS)), dtype=np.int64)
        engine.listeners.append(self)

    def on_sample(self, contract: int, t: int, online: np.ndarray, expected: np.ndarray) -> None:
        pass

    def on_deltas(self, slot_start: int, sums: np.ndarray) -> None:
        self.sums += sums

    def on_first_seen(self, day: int, counts: np.ndarray) -> None:
        pass


def run_engine(registry: Registry, batches: list[list], **limits: int) -> tuple[Decoder, Engine, DeltaSums, int]:
    decoder, engine = Decoder(registry, **limits), Engine(registry)
    sums = DeltaSums(engine)
    gateway_events = 0
    for batch in batches:
        decoded = decoder.decode(batch)
        engine.apply(decoded)
        gateway_events += len(decoded.gateway_events)
    return decoder, engine, sums, gateway_events


def assert_engine_matches(registry: Registry, engine: Engine, sums: DeltaSums, ref: Reference) -> None:
    """The engine's per-device state and delta sums equal the reference's."""
    states: dict[str, Any] = {}
    heartbeats: dict[str, list[int]] = {d: [] for d in registry.ids}
    deltas: dict[tuple[str, str, str], int] = {}
    for t_us, device_id, fields in ref.accepted:
        _apply(device_id, fields, t_us, states, heartbeats, deltas, ref.devices, lambda d, day: True, 0, 2**62)
    for i, device_id in enumerate(registry.ids):
        st_ = states.get(device_id)
        assert bool(engine.seen[i]) == (st_ is not None), device_id
        if st_ is None:
            continue
        assert int(engine.last_heartbeat[i]) == st_.last_t, device_id  # the last heartbeat whose counters counted
        assert int(engine.online_until[i]) == heartbeats[device_id][-1] + int(engine.timeout[i]), device_id
        assert bool(engine.jump[i]) == st_.jump, device_id
        seq = int(engine.seq[i]) if engine.has_seq[i] else None
        assert seq == st_.seq, device_id
        boot = int(engine.boot[i]) if engine.has_boot[i] else None
        assert boot == (None if st_.boot is None else boot_key(st_.boot)), device_id
        baselines = {c: int(engine.counters[i, j]) for j, c in enumerate(COUNTERS) if engine.has_baseline[i, j]}
        assert baselines == st_.base, device_id
        assert int(engine.allowance[i]) == st_.allowance_ms, device_id
        assert int(engine.last_ts[i]) == (0 if st_.ts is None else st_.ts + 1), device_id
        assert {pair: int(engine.unmatched[i, k]) for k, pair in enumerate(REF_PAIRS)} == st_.unmatched, device_id
        missing = {seq - 1 - j for j in range(64) if int(engine.missing[i]) >> j & 1} if seq is not None else set()
        assert missing == {lost for lost in st_.lost if seq is not None and seq - 64 <= lost < seq}, device_id
    streets = [s.code for s in registry.rules.streets]
    got = {(ref.contracts[g // len(streets)], streets[g % len(streets)], c): int(sums.sums[g, j])
           for g in range(sums.sums.shape[0]) for j, c in enumerate(COUNTERS) if sums.sums[g, j]}
    assert got == {k: v for k, v in deltas.items() if v}
    gateways = {g: i for i, g in enumerate(registry.gateways)}
    last: dict[str, tuple[int, bool]] = {}  # since its status last changed (a repeated status is no change)
    for t, g, online in ref.gateway_events:
        if g not in last or last[g][1] != online:
            last[g] = (t, online)
    for g, i in gateways.items():
        t, online = last.get(g, (None, True))
        assert bool(engine.gateway_online[i]) == online, g
        if t is not None:
            assert int(engine.gateway_since[i]) == t, g


# --- strategies ------------------------------------------------------------------------------

NUMBER_TEXTS = [
    "0", "1", "7", "-1", "-0", "-0.0", "0.5", "1.0", "1e2", "100", "100.5", "-200", "50", "-80.25",
    "true", "false", "null", '"5"', '""', "[]", "{}", "[1]", '{"a":1}', "NaN", "Infinity", "-Infinity",
    "1e400", "-1e400", "1e-400", "8589934592", "8589934593", "1099511627776", "1099511627777",
    "9007199254740992", "9007199254740993", "9223372036854775807", "9223372036854775808",
    "-9223372036854775808", "-9223372036854775809", "18446744073709551615", "18446744073709551616",
    "1" * 30, "1" * 400, "-" + "9" * 400, '"\\ud800"', '"<script>"', '"a\\"b"', "1793462400.5",
]
KEYS = ["seq", "boot", "bat", "rssi", "ts", *COUNTERS]
BOOTS = ['"A"', '"B"', "7", "0", '"' + "x" * 64 + '"', '"' + "x" * 65 + '"', '"中"']


class _Sim:
    def __init__(self, seq: int) -> None:
        self.seq, self.boot, self.clock = seq, '"A"', T0
        self.counters = dict.fromkeys(COUNTERS, 0)


@st.composite
def heartbeat_payload(draw: Any, sim: _Sim, contract: str) -> str:
    """A plausible heartbeat (seq steps, counters up, down or reset), sometimes one value hostile."""
    fields: dict[str, str] = {}
    if draw(st.integers(0, 5)):
        step = draw(st.sampled_from([1, 1, 1, 0, -1, -3, -64, -65, 5, 200, "restart"]))
        sim.seq = draw(st.integers(0, 2)) if step == "restart" else max(0, sim.seq + step)  # restart: no boot id
        fields["seq"] = str(sim.seq)
    if draw(st.integers(0, 9)) == 0:
        sim.boot = draw(st.sampled_from(BOOTS[:4]))
    if draw(st.integers(0, 3)):
        fields["boot"] = sim.boot
    for tries, oks in PAIRS[contract]:
        op = draw(st.sampled_from(["up", "up", "up", "down", "zero", "absent", "same", "burst", "ok_only"]))
        c = sim.counters
        if op == "burst":  # more attempts than any allowance
            c[tries] += draw(st.sampled_from([100, 10**6, 2**39]))
        elif op == "ok_only":  # successes without attempts, often after a new boot
            c[oks] = draw(st.sampled_from([c[oks], c[tries], 1000]))
            fields[oks] = str(c[oks])
            continue
        if op == "up":
            step = draw(st.integers(0, 9))
            c[tries] += step
            c[oks] = min(c[tries], c[oks] + draw(st.integers(0, step)))
        elif op == "down":
            c[tries] = max(0, c[tries] - draw(st.integers(1, 5)))
            c[oks] = min(c[oks], c[tries])
        elif op == "zero":
            c[tries] = c[oks] = 0
        if op != "absent":
            fields[tries], fields[oks] = str(c[tries]), str(c[oks])
    if draw(st.integers(0, 2)) == 0:
        sim.clock += draw(st.sampled_from([0, 0.5, 1, 60]))
        fields["bat"], fields["rssi"], fields["ts"] = "97.5", "-80", str(sim.clock)
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2]))):  # hostile values where numbers belong
        fields[draw(st.sampled_from(KEYS))] = draw(st.one_of(
            st.sampled_from(NUMBER_TEXTS), st.sampled_from(BOOTS),
            st.integers(-(2**70), 2**70).map(str),
            st.floats(allow_nan=True, allow_infinity=True).map(json.dumps)))
    if draw(st.integers(0, 6)) == 0:  # an unknown key: new key sets, sometimes past MAX_SHAPES
        fields[draw(st.text(max_size=8))] = draw(st.sampled_from(NUMBER_TEXTS))
    return "{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in fields.items()) + "}"


def nested(depth: int, inner: str = "1", kind: str = "[") -> str:
    opener, closer = ('{"a":', "}") if kind == "{" else ("[", "]")
    return opener * depth + inner + closer * depth


HOSTILE_PAYLOADS = st.one_of(
    st.binary(max_size=64),
    st.text(max_size=64),
    st.sampled_from([
        "", "{", "}", "null", "[]", '"str"', "42", "{}", '{"seq":1,}', "{'seq': 1}", '\ufeff{"seq":1}',
        b'\xef\xbb\xbf{"seq":1}', b'{"seq":1,"boot":"\xff"}', b'{"seq":\xc0\xaf1}', b"\xed\xa0\x80",
        '{"seq": 1} x', '{"seq": NaN}', '{"bat": Infinity}', '{"boot": "\\ud800"}', '{"boot": "\ud800"}',
        '{"reads": 1, "read_ok": 2}', '{"seq": 1, "seq": -1}', '{"seq": -1, "seq": 1}', "{\"seq\":1}\x00",
        '{"x": "[[[[[[[[[[[[[[[[[[[["}' + " " * 1100,
    ]),
    st.builds(lambda d, k: '{"x":' + nested(d, kind=k) + "}",
              st.sampled_from([1, 50, MAX_JSON_DEPTH - 1, MAX_JSON_DEPTH, MAX_JSON_DEPTH + 1, 1500]),
              st.sampled_from(["[", "{"])),
    st.builds(lambda d: nested(d), st.sampled_from([MAX_JSON_DEPTH, MAX_JSON_DEPTH + 1, 2000])),
    st.builds(lambda n, ch: '{"seq":1,"pad":"' + ch * n + '"}',
              st.sampled_from([1000, 1300, 2000, 4079, 4080, 4081]), st.sampled_from(["x", "é", "中"])),
)


@st.composite
def stream(draw: Any) -> tuple[list[tuple[float, str, Any]], int, int, list[int]]:
    """(messages, device_rate, window, batch sizes)."""
    device_rate = draw(st.sampled_from([0, 1, 3, 600]))
    window = draw(st.sampled_from([1, 60, 900]))
    sims = [_Sim(draw(st.integers(0, 100))) for _ in DEVICES]
    t = T0 + draw(st.integers(0, 3600))
    messages = []
    for _ in range(draw(st.integers(1, 60))):
        t += draw(st.sampled_from([0, 0, 0.001, 0.5, 1, 30, 60, 61, -0.5, -30]))
        i = draw(st.integers(0, len(DEVICES) - 1))
        device_id, contract, _, street = DEVICES[i]
        topic = f"putuo/{contract}/{street}/{device_id}/hb"
        kind = draw(st.sampled_from(["hb"] * 8 + ["hostile", "hostile", "topic", "gateway", "raw", "retained"]))
        if kind == "hb":
            payload: Any = draw(heartbeat_payload(sims[i], contract))
        elif kind == "retained":  # as the collector archives a retained message; sometimes a mangled record
            inner = json.dumps({"topic": topic, "payload": draw(heartbeat_payload(sims[i], contract))})
            topic, payload = "$ptmon/retained", draw(st.sampled_from([inner, inner, "{}", "[]", "not json", b"\xff"]))
        elif kind == "hostile":
            payload = draw(HOSTILE_PAYLOADS)
        elif kind == "topic":
            other = STREETS[1 - STREETS.index(street)]
            topic = draw(st.sampled_from([
                f"putuo/{contract}/{other}/{device_id}/hb",
                f"putuo/{'iot' if contract == 'cam' else 'cam'}/{street}/{device_id}/hb",
                f"putuo/xyz/{street}/{device_id}/hb", f"putuo/{contract}/{street}/{device_id}x/hb",
                f"putuo/{contract}/{street}/{device_id}/hb/", f"putuo/{contract}/{street}/{device_id}", "putuo/iot/taopu/+/hb",
                "putuo/iot/taopu/#", "", "/", "putuo//taopu/d/hb", "putuo/iot/taopu/\x00/hb", "putuo/iot/taopu/\ud800/hb",
                "putuo/iot/taopu/\x1b[2J\x1b[31m/hb", "putuo/gw/gw,1/status/x", "$ptmon/monitor",
            ]) | st.text(max_size=40))
            payload = draw(heartbeat_payload(sims[i], contract))
        elif kind == "gateway":
            gateway = draw(st.sampled_from([*GATEWAYS, "gw-unknown", ""]))
            topic = f"putuo/gw/{gateway}/status"
            payload = draw(st.sampled_from(["online", "offline", " online\n", b"offline", "ONLINE", "on line",
                                            b"\xffonline", "online" + " " * 5000, "", "\u3000offline"]) | HOSTILE_PAYLOADS)
        else:
            topic, payload = draw(st.text(max_size=30)), draw(st.binary(max_size=30) | st.text(max_size=30))
        messages.append((t, topic, payload))
    cuts = sorted(draw(st.lists(st.integers(0, len(messages)), max_size=4)))
    sizes = [b - a for a, b in zip([0, *cuts], [*cuts, len(messages)])]
    return messages, device_rate, window, sizes


def split(messages: list, sizes: list[int]) -> list[list]:
    out, at = [], 0
    for size in sizes:
        out.append(messages[at:at + size])
        at += size
    return out


# --- the properties ----------------------------------------------------------------------------


@pytest.mark.slow
@settings(max_examples=400, deadline=None, suppress_health_check=HEALTH)
@given(case=stream())
def test_hostile_streams_match_the_reference(registry: Registry, case) -> None:
    """Test that every message is counted once by kind and the engine changes exactly as the reference says."""
    messages, device_rate, window, sizes = case
    decoder, engine, sums, gateway_events = run_engine(registry, split(messages, sizes), device_rate=device_rate,
                                                       window=window)
    ref = Reference(registry, device_rate, window)
    kept = [message for message in messages if ref.message(*message)]

    assert set(decoder.rejects) <= set(REJECT_KINDS)
    assert sum(decoder.rejects.values()) + decoder.accepted + gateway_events == len(messages)
    assert dict(decoder.rejects) == dict(+ref.rejects)
    assert (decoder.accepted, gateway_events) == (len(ref.accepted), len(ref.gateway_events))
    assert_engine_matches(registry, engine, sums, ref)

    # an engine fed only what was accepted ends in the same state: rejects changed nothing
    _, clean, clean_sums, _ = run_engine(registry, [kept], device_rate=0)
    for name in ("last_heartbeat", "seen", "seq", "has_seq", "boot", "has_boot", "counters", "has_baseline",
                 "gateway_online", "gateway_since", "allowance", "unmatched", "resets_today", "missing", "last_ts"):
        assert np.array_equal(getattr(engine, name), getattr(clean, name)), name
    assert np.array_equal(sums.sums, clean_sums.sums)


ARBITRARY_TOPIC = st.one_of(
    st.text(max_size=60),
    st.lists(st.sampled_from(["putuo", "iot", "cam", "gw", "taopu", "wanli", "hb", "status", "+", "#", "",
                              "plain", "d,1", "gw,1", "\x00", "\ud800", "..", "$ptmon"]), max_size=6).map("/".join),
)


@settings(max_examples=300, deadline=None, suppress_health_check=HEALTH)
@given(messages=st.lists(st.tuples(st.floats(T0, T0 + 86_400), ARBITRARY_TOPIC,
                                   st.binary(max_size=200) | st.text(max_size=200) | HOSTILE_PAYLOADS), max_size=40))
def test_arbitrary_bytes_never_raise(registry: Registry, messages: list) -> None:
    """Test that arbitrary topics and payloads never raise and are each counted exactly once."""
    decoder, engine = Decoder(registry, device_rate=2, window=60), Engine(registry)
    batch = decoder.decode(messages)
    engine.apply(batch)
    assert sum(decoder.rejects.values()) + decoder.accepted + len(batch.gateway_events) == len(messages)
    assert len(decoder.unknown_topics) <= decoder.unknown_limit
    assert all(key.isprintable() and len(key) <= 129 for key in decoder.unknown_topics)


@pytest.mark.slow
@settings(max_examples=200, deadline=None, suppress_health_check=HEALTH)
@given(case=stream(), data=st.data())
def test_batch_boundaries_change_nothing(registry: Registry, case, data: st.DataObject) -> None:
    """Test that any split of a stream into batches gives the same counts and engine state (live = replay)."""
    messages, device_rate, window, sizes = case
    one = run_engine(registry, [messages], device_rate=device_rate, window=window)
    each = run_engine(registry, [[m] for m in messages], device_rate=device_rate, window=window)
    other = run_engine(registry, split(messages, sizes), device_rate=device_rate, window=window)
    for decoder, engine, sums, events in (each, other):
        assert (dict(decoder.rejects), decoder.accepted, events) == (dict(one[0].rejects), one[0].accepted, one[3])
        assert decoder.unknown_topics == one[0].unknown_topics
        for name in ("last_heartbeat", "seq", "boot", "counters", "has_baseline", "gateway_online", "gateway_since"):
            assert np.array_equal(getattr(engine, name), getattr(one[1], name)), name
        assert np.array_equal(sums.sums, one[2].sums)


@pytest.mark.parametrize("value", [True, False], ids=["true", "false"])
@pytest.mark.parametrize("key", ["seq", "reads", "bat", "ts", "boot"])
def test_booleans_are_not_numbers(registry: Registry, key: str, value: bool) -> None:
    """Test that JSON true/false is a bad value wherever a number (or boot id) belongs, though bool is an int in Python."""
    decoder = Decoder(registry)
    batch = decoder.decode([(T0, "putuo/iot/taopu/d 2=x/hb", json.dumps({key: value}))])
    assert len(batch) == 0
    assert (dict(decoder.rejects), dict(decoder.bad_fields)) == ({"bad_value": 1}, {key: 1})
