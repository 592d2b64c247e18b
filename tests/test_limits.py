"""Limits on hostile input: the ``[limits]`` config, the per-device rate limit, payload size,
JSON depth and the bound on unknown-id tracking; each configurable, counted, and applied
alike live and in replay."""

from __future__ import annotations

import dataclasses
import json
import re
import tracemalloc
from pathlib import Path

import numpy as np
import orjson
import pytest

from ptmon.archive import write_archive
from ptmon.checkpoint import load_checkpoint, restore_decoder, save_checkpoint
from ptmon.config import LimitsConfig, load_config
from ptmon.decode import LIMITS_TOPIC, MAX_JSON_DEPTH, Decoder
from ptmon.engine import Engine
from ptmon.errors import ConfigError
from ptmon.registry import Registry
from ptmon.replay import Feed, Replayer, replay
from ptmon.rules import Rules

from .conftest import T0, hb, make_registry, up

SAMPLE = Path(__file__).resolve().parent.parent / "ptmon.sample.toml"
CAM = "putuo/cam/taopu/c1/hb"


@pytest.fixture(scope="module")
def registry(rules: Rules) -> Registry:
    return make_registry(rules, "c1,cam,face_cam,taopu", "c2,cam,face_cam,taopu", "s1,iot,elevator,wanli")


def decode_all(decoder: Decoder, messages: list, batch: int = 16_384) -> list[tuple[int, int]]:
    """(t µs, seq) of every accepted heartbeat, the messages decoded in batches of ``batch``."""
    out = []
    for a in range(0, len(messages), batch):
        decoded = decoder.decode(messages[a:a + batch])
        out += list(zip(decoded.t.tolist(), decoded.seq.tolist()))
    return out


# --- config ------------------------------------------------------------------------------------


def test_sample_documents_and_loads_the_limits() -> None:
    """Test that the sample's [limits] shows every key with a comment and loads to the defaults."""
    text = SAMPLE.read_text(encoding="utf-8")
    table = text[text.index("\n[limits]\n"):]
    table = table[:m.start()] if (m := re.search(r"\n\[(?!limits\])", table[1:])) else table
    shown = re.findall(r"(?m)^(\w+) = .*#", table)
    assert sorted(shown) == sorted(LimitsConfig.file_keys())
    config = load_config(SAMPLE, env={"PTMON_MQTT_PASSWORD": "x", "PTMON_INFLUX_TOKEN": "y"})
    assert config.limits == LimitsConfig()


def test_decoder_defaults_are_the_config_defaults(registry: Registry) -> None:
    """Test that a Decoder made without a config has the limits a config without [limits] gives."""
    assert Decoder(registry).limits == dataclasses.asdict(LimitsConfig())
    limits = LimitsConfig(max_payload=1000, device_rate=7, window=10, unknown_limit=3)
    assert Decoder.from_config(registry, limits).limits == dataclasses.asdict(limits)


GOOD = [  # (id, toml lines, LimitsConfig fields)
    ("sizes", 'max_payload = "1MB"', {"max_payload": 2**20}),
    ("bytes", "max_payload = 64", {"max_payload": 64}),
    ("no-rate-limit", "device_rate = 0", {"device_rate": 0}),
    ("window", 'window = "5m"', {"window": 300}),
    ("no-tracking", "unknown_limit = 0", {"unknown_limit": 0}),
]


@pytest.mark.parametrize(("text", "fields"), [g[1:] for g in GOOD], ids=[g[0] for g in GOOD])
def test_limits_load(tmp_path: Path, text: str, fields: dict) -> None:
    """Test that [limits] values load, a key left out keeping its default."""
    path = tmp_path / "ptmon.toml"
    path.write_text(f"[limits]\n{text}\n", encoding="utf-8")
    assert load_config(path).limits == LimitsConfig(**fields)


BAD = [  # (id, toml line, message after "ptmon.toml: ")
    ("payload-small", "max_payload = 10", "limits.max_payload must be a size from 64 bytes to 1MB: 10"),
    ("payload-large", 'max_payload = "2MB"', "limits.max_payload must be a size from 64 bytes to 1MB: '2MB'"),
    ("payload-word", 'max_payload = "big"', "limits.max_payload must be a positive size (bytes, or like '64MB', '10GB'): 'big'"),
    ("rate-negative", "device_rate = -1", "limits.device_rate must be an integer at least 0: -1"),
    ("rate-bool", "device_rate = true", "limits.device_rate must be an integer at least 0: True"),
    ("rate-float", "device_rate = 1.5", "limits.device_rate must be an integer at least 0: 1.5"),
    ("window-zero", 'window = "0s"',
     "limits.window must be a positive duration (seconds, or '90s', '15m', '6h', '1d'), at most 86400 s: '0s'"),
    ("window-fraction", "window = 0.5",
     "limits.window must be a positive duration (seconds, or '90s', '15m', '6h', '1d'), at most 86400 s: 0.5"),
    ("window-long", 'window = "2d"',
     "limits.window must be a positive duration (seconds, or '90s', '15m', '6h', '1d'), at most 86400 s: '2d'"),
    ("window-not-dividing", "window = 7", "limits.window must be a divisor of a day (e.g. '10s', '60s', '5m', '1h'): 7"),
    ("unknown-huge", "unknown_limit = 100000000", "limits.unknown_limit must be an integer from 0 to 10000000: 100000000"),
    ("typo", "device_rates = 5",
     "limits.device_rates is not a known key; known: device_rate, max_payload, unknown_limit, window"),
]


@pytest.mark.parametrize(("text", "message"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_limits_name_file_key_and_value(tmp_path: Path, text: str, message: str) -> None:
    """Test that a bad [limits] value fails naming the file, the key and the value."""
    path = tmp_path / "ptmon.toml"
    path.write_text(f"[limits]\n{text}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == f"{path}: {message}"


def test_limits_must_be_a_table(tmp_path: Path) -> None:
    """Test that limits given as a plain value is refused."""
    path = tmp_path / "ptmon.toml"
    path.write_text("limits = 5\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"limits must be a table: 5"):
        load_config(path)


# --- the per-device rate limit -------------------------------------------------------------------


def test_flooding_device_is_limited_per_window(registry: Registry) -> None:
    """Test that past device_rate in a window a device's messages are counted rate_limited, until the next window."""
    decoder = Decoder(registry, device_rate=5, window=60)
    flood = [hb(T0 + i, "c1", seq=i) for i in range(12)] + [hb(T0 + 60 + i, "c1", seq=100 + i) for i in range(7)]
    accepted = decode_all(decoder, flood)
    assert [seq for _, seq in accepted] == [0, 1, 2, 3, 4, 100, 101, 102, 103, 104]
    assert dict(decoder.rejects) == {"rate_limited": 7 + 2}


@pytest.mark.parametrize("batch", [1, 3, 16_384], ids=["one-by-one", "threes", "whole"])
def test_the_limit_does_not_depend_on_batches(registry: Registry, batch: int) -> None:
    """Test that the same messages in any batches give the same accepted rows (live and replay batch differently)."""
    flood = [hb(T0 + i * 7.5, "c1", seq=i) for i in range(40)] + [hb(T0 + i * 20, "c2", seq=i) for i in range(10)]
    flood.sort(key=lambda m: m[0])
    accepted = decode_all(Decoder(registry, device_rate=4, window=60), flood, batch)
    assert accepted == decode_all(Decoder(registry, device_rate=4, window=60), flood)
    assert len(accepted) == 4 * 5 + 10


def test_other_devices_are_not_limited_by_a_flood(registry: Registry) -> None:
    """Test that one device's flood leaves the others' messages alone."""
    decoder = Decoder(registry, device_rate=3, window=60)
    messages = [hb(T0 + i / 10, "c1", seq=i) for i in range(100)]
    messages += [hb(T0 + 5, "c2", seq=1), hb(T0 + 6, "s1", "iot", "wanli", seq=1)]
    decoder.decode(messages)
    assert (decoder.accepted, decoder.rejects["rate_limited"]) == (3 + 2, 97)


def test_windows_start_at_shanghai_midnight(registry: Registry) -> None:
    """Test that windows are aligned to Shanghai midnight, so each day (and day file of the archive) starts afresh."""
    decoder = Decoder(registry, device_rate=2, window=8 * 3600)  # 8 h: UTC-aligned windows would cross midnight
    decoder.decode([hb(T0 - 2, "c1", seq=1), hb(T0 - 1, "c1", seq=2), hb(T0, "c1", seq=3), hb(T0 + 1, "c1", seq=4),
                    hb(T0 + 2, "c1", seq=5)])
    assert decoder.rejects["rate_limited"] == 1


def test_a_window_must_divide_a_day(registry: Registry) -> None:
    """Test that a window not dividing a day is refused by the decoder and in a limits record."""
    with pytest.raises(ValueError, match="dividing a day: 7"):
        Decoder(registry, window=7)
    assert not Decoder(registry).apply_limits_record('{"window": 7}')


def test_a_late_message_counts_in_the_current_window(registry: Registry) -> None:
    """Test that a message stamped before the clock (a clock step) counts in the window the clock is in."""
    decoder = Decoder(registry, device_rate=2, window=60)
    decoder.decode([hb(T0 + 61, "c1", seq=1), hb(T0 + 62, "c1", seq=2)])
    decoder.decode([hb(T0 + 10, "c1", seq=3)])  # window [T0, T0+60) is over; it counts in [T0+60, T0+120)
    assert decoder.rejects["rate_limited"] == 1


def test_rate_limit_comes_before_parsing(registry: Registry) -> None:
    """Test that a flood of garbage beyond the limit costs no JSON parsing: counted rate_limited, not bad_json."""
    decoder = Decoder(registry, device_rate=2, window=60)
    decoder.decode([(T0 + i, CAM, "{not json" * 100) for i in range(10)])
    assert dict(decoder.rejects) == {"bad_json": 2, "rate_limited": 8}


def test_legitimate_traffic_is_never_limited_by_default(registry: Registry) -> None:
    """Test that the fastest heartbeat (cameras, 60 s) with every message redelivered (QoS 1), drained from a
    broker backlog at 300x real time, stays within the default limit."""
    decoder, engine = Decoder(registry), Engine(registry)
    backlog = [hb(T0 + 3600 + k * 0.2, "c1", seq=k) for k in range(1440)]  # a day of messages over 288 s
    redelivered = sorted(backlog + backlog, key=lambda m: m[0])
    engine.apply(decoder.decode(redelivered))
    assert not decoder.rejects
    assert (decoder.accepted, engine.stats["duplicate"]) == (2880, 1440)


def test_gateway_status_flood_is_limited(registry: Registry) -> None:
    """Test that a gateway flapping faster than the limit has its extra statuses counted rate_limited."""
    decoder = Decoder(registry, device_rate=2, window=60)
    batch = decoder.decode([(T0 + i, "putuo/gw/gw-taopu/status", "offline" if i % 2 else "online") for i in range(6)])
    assert [online for _, _, online in batch.gateway_events] == [True, False]
    assert dict(decoder.rejects) == {"rate_limited": 4}


def test_zero_rate_means_no_limit(registry: Registry) -> None:
    """Test that device_rate 0 turns the rate limit off."""
    decoder = Decoder(registry, device_rate=0)
    decoder.decode([hb(T0, "c1", seq=i) for i in range(5_000)])
    assert (decoder.accepted, dict(decoder.rejects)) == (5_000, {})


def test_changing_the_rate_keeps_the_window_count(registry: Registry) -> None:
    """Test that a new rate applies to the counts so far while the window is kept, and a new window starts afresh."""
    decoder = Decoder(registry, device_rate=5, window=60)
    decoder.decode([hb(T0 + i, "c1", seq=i) for i in range(4)])
    decoder.set_limits(**{**decoder.limits, "device_rate": 3})
    decoder.decode([hb(T0 + 10, "c1", seq=10)])
    assert decoder.rejects["rate_limited"] == 1
    decoder.set_limits(**{**decoder.limits, "window": 30})
    decoder.decode([hb(T0 + 11, "c1", seq=11)])
    assert decoder.rejects["rate_limited"] == 1


def test_a_restart_continues_the_window_counts(rules: Rules, registry: Registry, tmp_path: Path) -> None:
    """Test that the rate windows survive a checkpoint by device id, so a restart mid-flood
    rejects what a replay of the whole archive does (also with the registry reordered)."""
    decoder = Decoder(registry, device_rate=5, window=60)
    engine = Engine(registry)
    Feed(engine, decoder).feed([up(T0), *[hb(T0 + i, "c1", seq=i) for i in range(4)],
                                raw_gateway(T0 + 1), raw_gateway(T0 + 2)])
    path = tmp_path / "cp.npz"
    save_checkpoint(path, engine=engine, tallies=[], decoder=decoder, extra={})
    reordered = make_registry(rules, "s1,iot,elevator,wanli", "c9,cam,face_cam,taopu", "c1,cam,face_cam,taopu")
    restored = Decoder(reordered, device_rate=5, window=60)
    restore_decoder(restored, load_checkpoint(path, reordered))
    batch = restored.decode([hb(T0 + 10 + i, "c1", seq=10 + i) for i in range(3)] + [hb(T0 + 10, "c9", seq=1)]
                            + [raw_gateway(T0 + 20 + i) for i in range(4)])
    assert (len(batch), len(batch.gateway_events), restored.rejects["rate_limited"]) == (1 + 1, 3, 2 + 1)
    saved = restored.rate_state()  # a checkpoint's arrays: int64 windows from the epoch, as older checkpoints hold
    assert saved is not None and saved.device_window.dtype == saved.device_count.dtype == np.int64
    c1, s1 = reordered.index.get("c1"), reordered.index.get("s1")
    assert (saved.device_window[c1], saved.device_count[c1]) == ((int(T0) + 8 * 3600) // 60, 4 + 3)
    assert (saved.device_window[s1], saved.device_count[s1]) == (-1, 0)  # never sent
    other_window = Decoder(reordered, device_rate=5, window=30)
    restore_decoder(other_window, load_checkpoint(path, reordered))
    batch = other_window.decode([hb(T0 + 10 + i, "c1", seq=10 + i) for i in range(3)])
    assert (len(batch), other_window.rejects["rate_limited"]) == (3, 0)


def raw_gateway(t: float) -> tuple[float, str, str]:
    return (t, "putuo/gw/gw-taopu/status", "online")


# --- live and replay alike ---------------------------------------------------------------------


def test_limits_record_round_trips(registry: Registry) -> None:
    """Test that a $ptmon/limits record gives a fresh decoder the limits it was written from."""
    source = Decoder(registry, max_payload=1000, device_rate=7, window=10, unknown_limit=3)
    t, topic, payload = source.limits_record(T0)
    assert (t, topic) == (T0, LIMITS_TOPIC)
    fresh = Decoder(registry)
    assert fresh.apply_limits_record(payload) and fresh.limits == source.limits


@pytest.mark.parametrize("payload", ["", "nope", "[]", '{"device_rate": -1}', '{"window": 0}', '{"window": 7}',
                                     '{"device_rate": true}', '{"device_rate": 1.5}', '{"speed": 5}'])
def test_malformed_limits_record_is_ignored(registry: Registry, payload: str, caplog: pytest.LogCaptureFixture) -> None:
    """Test that a malformed $ptmon/limits record changes nothing and is logged."""
    decoder = Decoder(registry)
    assert not decoder.apply_limits_record(payload)
    assert decoder.limits == dataclasses.asdict(LimitsConfig())
    assert "malformed $ptmon/limits record" in caplog.text


def test_replay_rejects_what_the_live_collector_rejected(registry: Registry, tmp_path: Path) -> None:
    """Test that replaying an archive with the collector's limits record gives its KPIs and rejects exactly."""
    live_decoder = Decoder(registry, device_rate=3, window=60)
    records = [live_decoder.limits_record(T0 - 1), up(T0 - 1)]
    for k in range(600):  # c1 floods at 2 msg/s with growing counters; c2 and s1 behave
        records.append(hb(T0 + k / 2, "c1", seq=k, face_try=2 * k, face_ok=k))
        if k % 120 == 0:
            records.append(hb(T0 + k / 2, "c2", seq=k, face_try=k, face_ok=k))
            records.append(hb(T0 + k / 2, "s1", "iot", "wanli", seq=k, reads=k, read_ok=k))
    start, end = T0 * 1_000_000, (T0 + 3600) * 1_000_000

    live = Replayer(registry, start, end)  # the live collector's Feed, fed in its own small batches
    live.decoder = live_decoder
    for a in range(0, len(records), 37):
        live.feed(records[a:a + 37])
    live_results = live.results()

    path = tmp_path / "ptmon-2026-11-01.jsonl.gz"
    write_archive(path, records)
    replayed = replay([str(path)], registry, start, end)
    assert replayed.csv_text() == live_results.csv_text()
    assert replayed.rejects == live_results.rejects
    assert replayed.rejects["rate_limited"] == 600 - 3 * 5

    bare = tmp_path / "bare.jsonl.gz"
    write_archive(bare, records[1:])
    assert "rate_limited" not in replay([str(bare)], registry, start, end).rejects  # the defaults admit 2 msg/s


def test_feed_counts_limits_records(registry: Registry) -> None:
    """Test that the Feed applies and counts $ptmon/limits records in the stream's order (the message
    before the record already used the window's one message)."""
    decoder = Decoder(registry)
    feed = Feed(Engine(registry), decoder)
    feed.feed([hb(T0, "c1", seq=1), (T0 + 1, LIMITS_TOPIC, '{"device_rate": 1}'), hb(T0 + 2, "c1", seq=2),
               hb(T0 + 3, "c1", seq=3)])
    assert (feed.control["limits"], decoder.device_rate, decoder.rejects["rate_limited"]) == (1, 1, 2)


# --- sizes and depth ---------------------------------------------------------------------------


def test_oversize_is_configurable_and_in_bytes(registry: Registry) -> None:
    """Test that max_payload counts UTF-8 bytes, for heartbeats and gateway statuses alike."""
    decoder = Decoder(registry, max_payload=100)
    body = '{"seq":1,"pad":"' + "中" * 27 + '"}'  # 99 bytes, 45 characters
    assert len(body.encode()) == 99
    decoder.decode([(T0, CAM, body), (T0 + 1, CAM, body.replace('"}', 'xx"}')),
                    (T0 + 2, "putuo/gw/gw-taopu/status", "online" + " " * 200)])
    assert (decoder.accepted, dict(decoder.rejects)) == (1, {"oversize": 2})


@pytest.mark.parametrize(("depth", "accepted"), [(MAX_JSON_DEPTH, True), (MAX_JSON_DEPTH + 1, False), (200_000, False)])
@pytest.mark.parametrize("kind", ["array", "object"])
def test_deep_json_is_bad_json_not_a_crash(registry: Registry, depth: int, accepted: bool, kind: str) -> None:
    """Test that JSON nested past MAX_JSON_DEPTH (orjson's own limit since 3.9.15, which fixed its crash on deep
    nesting) is counted bad_json, however deep, and that the installed orjson still has that limit."""
    opener, closer = ("[", "]") if kind == "array" else ('{"":', "}")
    payload = '{"x":' + opener * (depth - 1) + "1" + closer * (depth - 1) + "}"
    decoder = Decoder(registry, max_payload=2**20)
    decoder.decode([(T0, CAM, payload[:2**20]), (T0 + 1, CAM, payload[:2**20].encode())])
    assert (decoder.accepted, dict(decoder.rejects)) == ((2, {}) if accepted else (0, {"bad_json": 2}))
    if not accepted:
        with pytest.raises(orjson.JSONDecodeError, match="depth limit exceeded"):
            orjson.loads(payload[:2**20])


def test_a_gateway_status_is_never_json(registry: Registry) -> None:
    """Test that a gateway status payload is checked for size only, then online/offline (deep JSON there is no bad_json)."""
    decoder = Decoder(registry)
    decoder.decode([(T0, "putuo/gw/gw-taopu/status", "[" * 2000), (T0 + 1, "putuo/gw/gw-taopu/status", "[" * 5000)])
    assert dict(decoder.rejects) == {"bad_gateway_status": 1, "oversize": 1}


def test_brackets_inside_strings_are_not_nesting(registry: Registry) -> None:
    """Test that brackets in string values, escaped quotes included, do not count as depth."""
    decoder = Decoder(registry)
    text = '[\\"{' * 600
    decoder.decode([(T0, CAM, json.dumps({"seq": 1, "note": text}))])
    assert (decoder.accepted, dict(decoder.rejects)) == (1, {})


# --- unknown ids ---------------------------------------------------------------------------------


def test_unknown_tracking_is_bounded(registry: Registry) -> None:
    """Test that 100,000 invented ids keep unknown_limit topics (a few MB at most) and count the rest."""
    decoder = Decoder(registry, unknown_limit=1_000)
    tracemalloc.start()
    for a in range(0, 100_000, 10_000):
        decoder.decode([(T0, f"putuo/iot/taopu/evil-{i:08d}/hb", "{}") for i in range(a, a + 10_000)])
    retained, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert (len(decoder.unknown_topics), decoder.unknown_overflow, decoder.rejects["unknown_device"]) == (
        1_000, 99_000, 100_000)
    assert retained < 2_000_000


def test_unknown_topics_are_kept_short_and_printable(registry: Registry) -> None:
    """Test that a tracked unknown topic is cut short with control characters escaped (no terminal escapes in reports)."""
    decoder = Decoder(registry)
    decoder.decode([(T0, "putuo/iot/taopu/\x1b[2J\x1b]0;pwned\x07\u2028/hb", "{}"),
                    (T0, "putuo/iot/taopu/" + "x" * 5000 + "/hb", "{}")])
    assert list(decoder.unknown_topics) == [
        "putuo/iot/taopu/\\x1b[2J\\x1b]0;pwned\\x07\\u2028/hb", "putuo/iot/taopu/" + "x" * 112 + "…"]


@pytest.mark.parametrize("year_start", [1_796_140_800 - 50 * 365 * 86_400 - 12 * 86_400,  # 1976-12
                                        3_802_003_200])  # 2090-06, past the int32 one-second windows
def test_one_second_windows_limit_alike_in_any_year(registry: Registry, year_start: int) -> None:
    """Test that one-second windows limit the same way in any year the clock shows, those past
    the compact table's range included (it widens), through a save and restore as well."""
    def flood(decoder: Decoder, t0: float) -> int:
        decoder.decode([hb(t0 + i / 4, "c1", seq=i) for i in range(8)])  # 4 a second, 2 seconds
        return decoder.rejects["rate_limited"]

    assert flood(Decoder(registry, device_rate=3, window=1), year_start) == 1 + 1
    decoder = Decoder(registry, device_rate=3, window=1)
    decoder.decode([hb(year_start + 0.1, "c1", seq=0), hb(year_start + 0.2, "c1", seq=1)])
    saved = decoder.rate_state()
    assert saved is not None
    again = Decoder(registry, device_rate=3, window=1)
    assert again.restore_rate_state(saved)
    again.decode([hb(year_start + 0.3 + i / 10, "c1", seq=2 + i) for i in range(3)])  # 2 before + 3 in the same second
    assert again.rejects["rate_limited"] == 2
