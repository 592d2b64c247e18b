"""A slow, independent reference implementation of the KPI spec (rules/README.md).

It is written from the spec alone, never from ``collector/engine.py``, ``decode.py`` or
``tally.py``: plain dicts and lists, brute-force loops, one message at a time, so that a
disagreement with the engine points at a bug in one of the two. Only the rules loader's
dataclasses (contracts, types, streets) are used as input.

Interpretations of points the spec leaves open are the module constants below; each is
named so a test can say which reading it assumes.
"""

from __future__ import annotations

import json
import math
import sys
from datetime import date

US = 1_000_000
UTC_OFFSET_US = 8 * 3600 * US  # Asia/Shanghai has been UTC+8 without DST since 1991
DAY_US = 86_400 * US
EPOCH = date(1970, 1, 1)

MONITOR_TOPIC = "$ptmon/monitor"
TICK_TOPIC = "$ptmon/tick"
RETAINED_TOPIC = "$ptmon/retained"
CONTROL_PREFIX = "$ptmon/"
COUNTERS = ("reads", "read_ok", "face_try", "face_ok", "plate_try", "plate_ok")
PAIRS = (("read_ok", "reads"), ("face_ok", "face_try"), ("plate_ok", "plate_try"))
RATIOS = {
    "sensing": (("read_ok",), ("reads",)),
    "face": (("face_ok",), ("face_try",)),
    "plate": (("plate_ok",), ("plate_try",)),
    "capture": (("face_ok", "plate_ok"), ("face_try", "plate_try")),
}
MAX_PAYLOAD_BYTES = 4096
COUNTER_MAX = 2**40
SEQ_MAX = 2**53
TS_MAX = 2**33
BOOT_MAX_CHARS = 64
BOOT_INT_LIMIT = 2**63  # |boot| < 2**63
SEQ_WINDOW = 64
RESTART_MIN_BEHIND = 2  # a seq at least this far behind and below the distance restarts the sequence
LOSS_GAP_MAX = 65_536  # a larger gap in seq is a seq_jump, not lost messages
ALLOWANCE_MAX_MS = 86_400_000  # the largest burst: a type's burst is its heartbeat period, at most a day
UNMATCHED_MAX = 255
TS_SECONDS_MAX = 2**32 - 2  # ts compares in whole seconds, capped here (2106)
FUTURE_TS_S = 3_600  # a ts more than this after the receive time (whole seconds) is ignored
CLOCK_RESET_S = 30 * 86_400  # a ts this much before the last one's is a clock set back at a reboot

# --- readings of points the spec leaves open -------------------------------------------
# A message without `boot` is taken to be in the same boot as the last one; a `boot` seen
# for the first time (no earlier message carried one) is not a change.
FIRST_BOOT_IS_RESET = False
# After `$ptmon/monitor down`, the next record (an `up`, a `$ptmon/tick` or any message)
# starts observing again, as the first record of the archive does.
RECORD_RESTARTS_OBSERVATION = True


def to_us(t: float) -> int:
    """Receive time (unix seconds) to integer microseconds, rounded to the nearest."""
    return int(round(t * US))  # noqa: RUF046 - a numpy float64 rounds to float64 before numpy 2


def day_of(t_us: int) -> int:
    """Shanghai day number (days since 1970-01-01) of an instant."""
    return (t_us + UTC_OFFSET_US) // DAY_US


def day_start(day: int) -> int:
    return day * DAY_US - UTC_OFFSET_US


def date_day(text: str) -> int:
    return (date.fromisoformat(text) - EPOCH).days


# --- decoding -----------------------------------------------------------------------------


class Reject(Exception):
    """A message that counts toward nothing."""


def _no_constant(name: str) -> float:
    raise ValueError(f"non-finite JSON constant {name}")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text} is not finite as a double")
    return value


def _has_surrogate(value: object) -> bool:
    """Whether any string in ``value`` holds a lone surrogate; iterative, as JSON may nest 1,024 deep."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if any(0xD800 <= ord(ch) <= 0xDFFF for ch in item):
                return True
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
    return False


def _loads(payload: str) -> object:
    """``json.loads`` with room for the 1,024 levels the decoder accepts (json's parser recurses per level)."""
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 5_000))
    try:
        return json.loads(payload, parse_constant=_no_constant, parse_float=_finite_float)
    finally:
        sys.setrecursionlimit(limit)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)) and math.isfinite(value)


def decode_payload(payload: str) -> dict:
    """The heartbeat fields of a payload (nulls dropped), or raise Reject."""
    try:
        raw = payload.encode("utf-8")
    except UnicodeEncodeError:
        raise Reject("bad_json") from None
    if len(raw) > MAX_PAYLOAD_BYTES:
        raise Reject("oversize")
    try:
        doc = _loads(payload)
    except (ValueError, RecursionError):
        raise Reject("bad_json") from None
    if _has_surrogate(doc):  # an escaped lone surrogate is not valid Unicode text
        raise Reject("bad_json")
    if not isinstance(doc, dict):
        raise Reject("not_object")
    msg = {k: v for k, v in doc.items() if v is not None}
    for c in COUNTERS:
        if c in msg and not (_is_int(msg[c]) and 0 <= msg[c] <= COUNTER_MAX):
            raise Reject("bad_value")
    if "seq" in msg and not (_is_int(msg["seq"]) and 0 <= msg["seq"] <= SEQ_MAX):
        raise Reject("bad_value")
    if "bat" in msg and not (_is_number(msg["bat"]) and 0 <= msg["bat"] <= 100):
        raise Reject("bad_value")
    if "rssi" in msg and not (_is_number(msg["rssi"]) and -200 <= msg["rssi"] <= 50):
        raise Reject("bad_value")
    if "ts" in msg and not (_is_number(msg["ts"]) and 0 <= msg["ts"] <= TS_MAX):
        raise Reject("bad_value")
    if "boot" in msg:
        boot = msg["boot"]
        ok = (isinstance(boot, str) and len(boot) <= BOOT_MAX_CHARS) or (_is_int(boot) and abs(boot) < BOOT_INT_LIMIT)
        if not ok:
            raise Reject("bad_value")
    for ok_key, try_key in PAIRS:
        if ok_key in msg and try_key in msg and msg[ok_key] > msg[try_key]:
            raise Reject("counter_mismatch")
    return msg


def route(topic: str, devices: dict[str, dict]) -> str:
    """The device id a heartbeat topic names, or raise Reject."""
    parts = topic.split("/")
    if len(parts) != 5 or parts[0] != "putuo" or parts[4] != "hb":
        raise Reject("bad_topic")
    contract, street, device_id = parts[1], parts[2], parts[3]
    row = devices.get(device_id)
    if row is None:
        raise Reject("unknown_device")
    if row["contract"] != contract:
        raise Reject("contract_mismatch")
    if row["street"] != street:
        raise Reject("street_mismatch")
    return device_id


# --- the reference --------------------------------------------------------------------------


class _DeviceState:
    def __init__(self) -> None:
        self.boot: object = None  # last known boot, None when none seen yet
        self.seq: int | None = None  # last accepted seq in the current boot
        self.base: dict[str, int] = {}  # counter -> baseline (absent: not known yet)
        self.last_t: int = 0  # receive time of the last accepted heartbeat (µs)
        self.day: int | None = None  # Shanghai day of the last accepted heartbeat
        self.resets_today = 0  # resets received on that day
        self.unmatched = dict.fromkeys(PAIRS, 0)  # attempts not yet matched by successes, per pair
        self.allowance_ms = 0  # attempt allowance saved up
        self.lost: set[int] = set()  # seqs of the current sequence counted lost and not recovered
        self.gap: set[int] = set()  # seqs skipped by the gap (≤ 64) the last seq opened, not arrived yet
        self.jump = False  # the last seq opened a gap of ≤ 64 and no message continued from it
        self.ts: int | None = None  # ⌊ts⌋ of the last accepted heartbeat, None when it had none


def type_limits(device_type) -> dict:
    """A type's plausibility limits as the spec states them (rules/README.md "Plausible counters")."""
    rate = device_type.max_attempt_rate
    return {"cost_ms": max(1, math.floor(1000 / rate)), "max_resets": device_type.max_resets_per_day,
            "burst_ms": min(ALLOWANCE_MAX_MS, device_type.heartbeat_period * 1000)}


def reference_kpis(rules, registry_rows, records, start_us, end_us, *, rejected_records_observed=True, counts=None):
    """{(contract, street, kpi): (numerator, denominator, expected_device_samples, observed_seconds)}.

    ``counts``, when a dict, receives the messages counted by kind in ``[start_us, end_us)``
    for the kinds this reference follows (see :data:`COUNTED_KINDS`).

    ``rules`` is a loaded :class:`ptmon.rules.Rules`; ``registry_rows`` dicts with the
    registry columns; ``records`` ``(t seconds, topic, payload)`` in non-decreasing ``t``.

    ``rejected_records_observed``: the spec says observation starts at the first archive
    record and ends at the last one, so a rejected message (bad topic, unknown device, bad
    payload...) still shows the monitor was running at its time (True, the default). False
    reads "rejected messages count toward nothing" as including observation: a rejected
    message neither starts, extends nor restarts it (only a record at or after the period's
    end still stops the replay there).

    The period's end: the first record at or after it that tells decides whether the monitor
    observed up to the end — a message, a tick or a ``down`` says it did; a restart's ``up`` says
    it had stopped, so observation ends at its last record before; other control records (limits,
    partition, unknown) tell nothing and are passed by.
    """
    timeout_us = {t.code: t.online_timeout * US for t in rules.types}
    limits = {t.code: type_limits(t) for t in rules.types}
    devices: dict[str, dict] = {}
    for row in registry_rows:
        devices[row["device_id"]] = {
            "contract": row["contract"],
            "street": row["street"],
            "timeout": timeout_us[row["type"]],
            "accepted": date_day(row["accepted_on"]),
            "retired": date_day(row["retired_on"]) if row.get("retired_on") else None,
            **limits[row["type"]],
        }
    counts = counts if counts is not None else {}

    def leased(device_id: str, day: int) -> bool:
        d = devices[device_id]
        return d["accepted"] <= day and (d["retired"] is None or day < d["retired"])

    # 1. Apply the records: observation spans, accepted heartbeats, counter deltas.
    spans: list[tuple[int, int]] = []  # inclusive [a, b] in µs
    up = False
    span_start = 0
    last_t: int | None = None
    observed_to_end = False
    heartbeats: dict[str, list[int]] = {d: [] for d in devices}
    states: dict[str, _DeviceState] = {}
    deltas: dict[tuple[str, str, str], int] = {}

    for t, topic, payload in records:
        t_us = to_us(t)
        if t_us >= end_us:
            word = payload.strip().strip('"')
            if topic.startswith(CONTROL_PREFIX) and topic != RETAINED_TOPIC and topic != TICK_TOPIC and not (
                    topic == MONITOR_TOPIC and word in ("up", "down")):
                continue  # tells nothing
            observed_to_end = not (topic == MONITOR_TOPIC and word == "up")
            break
        if topic == RETAINED_TOPIC:  # a retained message: never a heartbeat, but the monitor received it
            if start_us <= t_us:
                counts["retained"] = counts.get("retained", 0) + 1
            if not up and (last_t is None or RECORD_RESTARTS_OBSERVATION):
                up, span_start = True, t_us
            last_t = t_us
            continue
        if topic.startswith(CONTROL_PREFIX):
            word = payload.strip().strip('"')
            if topic == MONITOR_TOPIC and word == "up":
                if up:  # crash: the samples after the last record before it are a gap
                    spans.append((span_start, last_t))
                up, span_start = True, t_us
                last_t = t_us
            elif topic == MONITOR_TOPIC and word == "down":
                if up:
                    spans.append((span_start, t_us))
                elif last_t is None:  # the first record of any kind shows the monitor observing
                    spans.append((t_us, t_us))
                up = False
                last_t = t_us
            elif topic == TICK_TOPIC:  # the monitor's clock reached t: a record like any other
                if not up and (last_t is None or RECORD_RESTARTS_OBSERVATION):
                    up, span_start = True, t_us
                last_t = t_us
            # any other control record is unknown and ignored
            continue
        try:
            device_id = route(topic, devices)
            msg = decode_payload(payload)
        except Reject:
            device_id = msg = None
            if not rejected_records_observed:
                continue
        if not up and (last_t is None or RECORD_RESTARTS_OBSERVATION):
            up, span_start = True, t_us
        last_t = t_us
        if device_id is None:
            continue
        _apply(device_id, msg, t_us, states, heartbeats, deltas, devices, leased, start_us, end_us, counts)

    if up:
        spans.append((span_start, end_us - 1 if observed_to_end else last_t))

    # an instant is observed or not: one where a span ends and the next begins counts once
    def observed(t_us: int) -> bool:
        return any(a <= t_us <= b for a, b in spans)

    # 2. Sample every contract on its own grid, brute force.
    street_codes = [s.code for s in rules.streets]
    out = {}
    for contract in rules.contracts:
        step = contract.sample_interval * US
        first = start_us + (-(start_us + UTC_OFFSET_US)) % step  # first grid instant >= start
        instants = list(range(first, end_us, step))
        seen = [t for t in instants if observed(t)]
        observed_seconds = len(seen) * contract.sample_interval
        mine = [d for d in devices if devices[d]["contract"] == contract.code]
        online = dict.fromkeys(street_codes, 0)
        expected = dict.fromkeys(street_codes, 0)
        if contract.online_method == "time_weighted":
            for t_k in seen:
                for d in mine:
                    if not leased(d, day_of(t_k)):
                        continue
                    expected[devices[d]["street"]] += 1
                    last = None
                    for h in heartbeats[d]:
                        if h <= t_k:
                            last = h
                    if last is not None and t_k - devices[d]["timeout"] < last:
                        online[devices[d]["street"]] += 1
        else:
            day = day_of(start_us)
            while day_start(day) < end_us:
                a, b = day_start(day), day_start(day + 1)
                whole = start_us <= a and b <= end_us
                if whole and all(observed(t) for t in range(a, b, step)):
                    for d in mine:
                        if not leased(d, day):
                            continue
                        expected[devices[d]["street"]] += 1
                        if any(day_of(h) == day for h in heartbeats[d]):
                            online[devices[d]["street"]] += 1
                day += 1
        for street in [*street_codes, "district"]:
            group = street_codes if street == "district" else [street]
            exp = sum(expected[s] for s in group)
            for kpi in contract.kpis:
                if kpi.code == "online":
                    num, den = sum(online[s] for s in group), exp
                else:
                    oks, tries = RATIOS[kpi.code]
                    num = sum(deltas.get((contract.code, s, c), 0) for s in group for c in oks)
                    den = sum(deltas.get((contract.code, s, c), 0) for s in group for c in tries)
                out[(contract.code, street, kpi.code)] = (num, den, exp, observed_seconds)
    return out


COUNTED_KINDS = ("duplicate", "stale", "resets", "too_many_resets", "unmatched_success", "too_many_attempts",
                 "lost", "recovered", "seq_jump", "retained", "future_ts", "seq_suspect")


def _count(counts, kind: str, t_us: int, start_us: int, end_us: int, n: int = 1) -> None:
    if counts is not None and start_us <= t_us < end_us and n:
        counts[kind] = counts.get(kind, 0) + n


def _whole_seconds(ts) -> int | None:
    return None if ts is None else min(math.floor(ts), TS_SECONDS_MAX)


def _believed_ts(ts, t_us: int):
    """The message's ts, or None when it is more than FUTURE_TS_S whole seconds after the receive time."""
    if ts is None or _whole_seconds(ts) <= t_us // 1_000_000 + FUTURE_TS_S:
        return ts
    return None


def _sequence(st: _DeviceState, seq, ts, boot_changed: bool, older_in_boot: bool = False) -> str:
    """What a message's seq says: "duplicate", "stale", "late" (a skipped seq arriving), "met" (a
    provisional jump reached by the device's own sequence), "next" (continues) or "new"."""
    if boot_changed or seq is None or st.seq is None:
        return "new"
    behind = st.seq - seq
    if behind < 0:
        return "next"
    by_clock = ts is not None and st.ts is not None
    if by_clock:
        whole = _whole_seconds(ts)
        clock_restarted = (whole > st.ts or st.ts - whole > CLOCK_RESET_S  # its clock: later, or set back at a boot
                           or (behind >= RESTART_MIN_BEHIND and seq <= 1 and whole < 10**9))  # seq and a boot clock at the start
    if behind > SEQ_WINDOW:  # further behind: a restart, unless the same named boot's counters say it is older
        return "stale" if older_in_boot and not (by_clock and clock_restarted) else "new"
    if behind > 0 and seq in st.lost:
        return "late"
    if behind == 0 and st.jump and not st.gap:
        return "met"
    # 0–64 behind: a copy, a late message, or a device that rebooted without a boot id
    # by clock, or a device that started again near 0
    restarted = clock_restarted if by_clock else behind >= RESTART_MIN_BEHIND and seq < behind
    if restarted:
        return "new"
    return "duplicate" if behind == 0 else "stale"


def _apply(device_id, msg, t_us, states, heartbeats, deltas, devices, leased, start_us, end_us, counts=None):
    """One decoded heartbeat of a registered device, per the spec's counter rules."""
    present = {c: msg[c] for c in COUNTERS if c in msg}
    boot, seq = msg.get("boot"), msg.get("seq")
    ts = _believed_ts(msg.get("ts"), t_us)
    if ts is None and msg.get("ts") is not None:
        _count(counts, "future_ts", t_us, start_us, end_us)
    dev = devices[device_id]
    st = states.get(device_id)
    if st is None:  # the first message ever seen: baseline only
        st = states[device_id] = _DeviceState()
        st.boot, st.seq, st.base, st.ts = boot, seq, dict(present), _whole_seconds(ts)
        st.last_t, st.day = t_us, day_of(t_us)
        st.allowance_ms = dev["burst_ms"]  # one burst to start with: the first message counts nothing
        heartbeats[device_id].append(t_us)
        return
    # boots compare as JSON values: the integer 7 and the string "7" are different boots
    if boot is not None and (st.boot is not None or FIRST_BOOT_IS_RESET):
        boot_changed = st.boot is None or boot != st.boot or type(boot) is not type(st.boot)
    else:
        boot_changed = False
    older_in_boot = boot is not None and st.boot is not None and not boot_changed \
        and any(c in st.base and v < st.base[c] for c, v in present.items())
    where = _sequence(st, seq, ts, boot_changed, older_in_boot)
    if where in ("duplicate", "stale"):  # ignored entirely: no heartbeat, no counts
        _count(counts, where, t_us, start_us, end_us)
        return
    if where in ("late", "met"):  # a heartbeat received; its counters and seq change nothing
        if where == "met":
            st.jump = False
            _count(counts, "seq_suspect", t_us, start_us, end_us)
        else:
            st.lost.discard(seq)
            st.gap.discard(seq)
            _count(counts, "recovered", t_us, start_us, end_us)
        day = day_of(t_us)
        if st.day != day:
            st.resets_today = 0
        st.day = day
        heartbeats[device_id].append(t_us)
        return
    _seq_loss(st, seq, where, boot_changed, t_us, start_us, end_us, counts)
    reset = boot_changed or any(c in st.base and v < st.base[c] for c, v in present.items())
    counted: dict[str, int] = {}
    if reset:
        _count(counts, "resets", t_us, start_us, end_us)
        for c in COUNTERS:
            if c in present:
                counted[c] = present[c]
                st.base[c] = present[c]
            else:
                st.base[c] = 0
    else:
        for c, v in present.items():
            if c in st.base:
                counted[c] = v - st.base[c]
            st.base[c] = v
    day = day_of(t_us)
    implausible = _implausible(st, dev, counted, reset, day, t_us)
    if implausible is not None:  # the heartbeat counts, its deltas do not
        counted = {}
        _count(counts, implausible, t_us, start_us, end_us)
    st.last_t, st.day, st.ts = t_us, day, _whole_seconds(ts)
    if boot is not None:
        st.boot = boot
    if boot_changed or seq is not None:
        st.seq = seq
    heartbeats[device_id].append(t_us)
    if start_us <= t_us < end_us and leased(device_id, day):
        for c, v in counted.items():
            key = (dev["contract"], dev["street"], c)
            deltas[key] = deltas.get(key, 0) + v


def _seq_loss(st: _DeviceState, seq, where: str, boot_changed: bool, t_us: int, start_us: int, end_us: int, counts) -> None:
    """Messages lost in transit: the seqs skipped between the last accepted seq and this one."""
    if where == "next":
        gap = seq - st.seq - 1
        st.gap, st.jump = set(), False
        if gap > LOSS_GAP_MAX:
            _count(counts, "seq_jump", t_us, start_us, end_us)
            st.lost = set()
        elif gap > 0:
            _count(counts, "lost", t_us, start_us, end_us, gap)
            st.lost.update(range(st.seq + 1, seq))
            if gap <= SEQ_WINDOW:
                st.gap, st.jump = set(range(st.seq + 1, seq)), True
    elif seq is not None or boot_changed:  # a new sequence: nothing before it is known lost
        st.lost, st.gap, st.jump = set(), set(), False


def _implausible(st: _DeviceState, dev: dict, counted: dict[str, int], reset: bool, day: int, t_us: int) -> str | None:
    """Why a heartbeat's counter deltas are not believed, or None when they are. Updates the
    device's resets of the day, unmatched attempts and attempt allowance."""
    if st.day != day:
        st.resets_today = 0
    if reset:
        st.resets_today += 1
        st.unmatched = dict.fromkeys(PAIRS, 0)
    elapsed_ms = (t_us - st.last_t) // 1000  # whole milliseconds since the last accepted heartbeat
    # what it saved up (at most a burst) and the time since it was last heard: never a day in one message
    st.allowance_ms = min(dev["burst_ms"], st.allowance_ms) + elapsed_ms
    attempts = sum(counted.get(tries, 0) for _, tries in PAIRS)
    reason = None
    if reset and st.resets_today > dev["max_resets"]:
        reason = "too_many_resets"
    elif any(counted.get(ok, 0) > st.unmatched[(ok, tries)] + counted.get(tries, 0) for ok, tries in PAIRS):
        reason = "unmatched_success"
    elif attempts * dev["cost_ms"] > st.allowance_ms:
        reason = "too_many_attempts"
    if reason is None:
        st.allowance_ms -= attempts * dev["cost_ms"]
        for ok, tries in PAIRS:
            left = st.unmatched[(ok, tries)] + counted.get(tries, 0) - counted.get(ok, 0)
            st.unmatched[(ok, tries)] = min(UNMATCHED_MAX, left)
    st.allowance_ms = min(dev["burst_ms"], st.allowance_ms)
    return reason
