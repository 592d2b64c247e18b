"""Checkpoints: a restart from one continues exactly as if the collector had never stopped."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from ptmon import durable
from ptmon.checkpoint import (
    LATER_DEVICE_ARRAYS,
    load_checkpoint,
    restore_decoder,
    save_checkpoint,
    try_load_checkpoint,
)
from ptmon.decode import Decoder
from ptmon.engine import NEVER, Engine
from ptmon.errors import CheckpointError
from ptmon.plausibility import ALLOWANCE_CAP_MS
from ptmon.registry import Registry
from ptmon.replay import Feed
from ptmon.rules import Rules, load_rules
from ptmon.tally import Tally

from .conftest import T0, down, hb, make_registry, raw, tick, up

DAY = 86_400
US = 10**6
START, END = T0 * US, (T0 + 2 * DAY) * US
PERIODS = [(START, END), (START + DAY * US, END)]  # two tallies: the whole range and its second day
ROWS = (
    "c1,cam,face_cam,taopu",
    "c2,cam,face_cam,taopu",
    "c3,cam,face_cam,changshou",
    "s1,iot,door,changshou",
    "s2,iot,smoke,taopu,2026-11-02",  # under lease from the second day
)


def iot(t: float, device: str, **payload: object) -> tuple[float, str, str]:
    street = "changshou" if device == "s1" else "taopu"
    return hb(t, device, "iot", street, **payload)


# Every kind of state a restart must carry over; the key test cuts it at every position.
RECORDS = [
    up(T0),
    hb(T0 + 10, "c1", seq=1, boot="A", face_try=100, face_ok=90, plate_try=10, plate_ok=10),
    hb(T0 + 10, "c2", face_try=5, face_ok=5),
    iot(T0 + 30, "s1", seq=1, reads=10, read_ok=9),
    iot(T0 + 30, "s2", reads=1, read_ok=1),  # before its lease: a baseline, counted nowhere
    hb(T0 + 60, "c1", seq=2, boot="A", face_try=110, face_ok=99),  # exactly at a sample instant
    hb(T0 + 60, "c3", "cam", "changshou"),
    raw(T0 + 70, "putuo/gw/gw-taopu/status", "offline"),
    hb(T0 + 75, "c1", seq=2, boot="A", face_try=110, face_ok=99),  # duplicate
    hb(T0 + 80, "c1", seq=1, boot="A", face_try=100, face_ok=90),  # stale
    iot(T0 + 90, "s1", seq=2, reads=20, read_ok=19),
    hb(T0 + 120, "c2", face_try=3, face_ok=3),  # counter went down: a reset
    hb(T0 + 130, "c1", seq=1, boot="B", face_try=4, face_ok=4),  # new boot: a reset
    raw(T0 + 140, "putuo/cam/taopu/nobody/hb", "{}"),
    raw(T0 + 141, "putuo/cam/taopu/c1/hb", "{not json"),
    down(T0 + 250),  # clean shutdown
    up(T0 + 400),
    hb(T0 + 400, "c1", seq=2, boot="B", face_try=8, face_ok=7),
    iot(T0 + 3600, "s1", seq=3, reads=30, read_ok=30),
    up(T0 + 7200),  # up while up: a crash
    hb(T0 + 7200, "c1", seq=3, boot="B", face_try=9, face_ok=9),
    hb(T0 + DAY - 30, "c2", face_try=4, face_ok=4),
    hb(T0 + DAY + 60, "c2", face_try=6, face_ok=5),  # first heartbeat of day 2
    iot(T0 + DAY + 60, "s2", reads=5, read_ok=4),  # under lease now: +4 / +3
    hb(T0 + DAY + 120, "c1", seq=4, boot="B", face_try=20, face_ok=19),
    raw(T0 + DAY + 150, "putuo/gw/gw-taopu/status", "online"),
    hb(T0 + DAY + 3600, "c3", "cam", "changshou"),
    raw(T0 + DAY + 3700, "putuo/gw/gw-changshou/status", "offline"),  # stays offline
    tick(T0 + 2 * DAY),  # at the period's end: stops the feed
]


Edit = tuple[str, Callable[[dict[str, Any]], None]]


def edit_rules(rules_dir: Path, *edits: Edit) -> Rules:
    """Rules loaded from ``rules_dir`` after each (file, change) edited one of its YAML files."""
    for file, change in edits:
        target = rules_dir / file
        doc = yaml.safe_load(target.read_text())
        change(doc)
        target.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False))
    return load_rules(rules_dir)


def daily_cam(doc: dict[str, Any]) -> None:
    doc["cam"]["online_method"] = "daily"


def state(engine: Engine, tallies: list[Tally], decoder: Decoder) -> dict[str, Any]:
    """Everything observable of a run, for comparing two runs."""
    arrays = {name: _plain(value) for name, value in vars(engine).items() if isinstance(value, np.ndarray)}
    return {
        "arrays": arrays,
        "scalars": (engine.clock, engine.up, engine.down_at, engine.next_tick, engine.spans,
                    dict(engine.stats)),
        "csv": [tally.results().csv_text() for tally in tallies],
        "gaps": [tally.gaps() for tally in tallies],
        "coverage": [tally.results().coverage for tally in tallies],
        "decoder": (dict(decoder.rejects), dict(decoder.bad_fields), decoder.unknown_topics,
                    decoder.accepted),
    }


def _plain(array: np.ndarray) -> Any:
    """An array as lists (a record array field by field), comparable with ==."""
    if array.dtype.names:
        return {name: array[name].tolist() for name in array.dtype.names}
    return array.tolist()


def run_parts(registry: Registry, parts: list[list[Any]], path: Path | None) -> dict[str, Any]:
    """Feed the parts in turn; with a path, through a save and a load between parts."""
    engine, decoder = Engine(registry), Decoder(registry)
    tallies = [Tally.attach(engine, start, end) for start, end in PERIODS]
    for i, part in enumerate(parts):
        if i and path is not None:
            save_checkpoint(path, engine=engine, tallies=tallies, decoder=decoder, extra={"part": i})
            loaded = load_checkpoint(path, registry)
            assert loaded.extra == {"part": i} and loaded.notes == []
            engine, tallies, decoder = loaded.engine, loaded.tallies, Decoder(registry)
            restore_decoder(decoder, loaded)
        Feed(engine, decoder, end=END).feed(part)
    if engine.up:
        engine.advance_to(END)
    engine.finish()
    return state(engine, tallies, decoder)


@pytest.fixture
def daily_registry(rules_dir: Path) -> Registry:
    return make_registry(edit_rules(rules_dir, ("contracts.yaml", daily_cam)), *ROWS)


@pytest.mark.parametrize("cut", range(len(RECORDS) + 1))
def test_restart_from_checkpoint_changes_nothing(daily_registry, tmp_path, cut):
    """Test that feeding A then B equals feeding A, saving, loading and feeding B, wherever the cut."""
    parts = [RECORDS[:cut], RECORDS[cut:]]
    assert run_parts(daily_registry, parts, tmp_path / "cp.npz") == run_parts(daily_registry, parts, None)


def test_restart_results_are_the_hand_computed_ones(daily_registry, tmp_path):
    """Test that a run cut into four by checkpoints counts deltas once and reports both gaps."""
    cuts = [0, 9, 16, 20, len(RECORDS)]
    parts = [RECORDS[a:b] for a, b in itertools.pairwise(cuts)]
    got = run_parts(daily_registry, parts, tmp_path / "cp.npz")
    assert got["gaps"][0] == [((T0 + 300) * US, (T0 + 420) * US), ((T0 + 3660) * US, (T0 + 7200) * US)]
    rows = {tuple(line.split(",")[:3]): line.split(",")[-2:] for line in got["csv"][0].splitlines()[1:]}
    c1_ok, c1_try = 9 + 4 + 3 + 2 + 10, 10 + 4 + 4 + 1 + 11  # boot A, reset to boot B, then B
    c2_ok, c2_try = 3 + 1 + 1, 3 + 1 + 2  # reset by a decrease, then increments
    assert rows["cam", "taopu", "face"] == [str(c1_ok + c2_ok), str(c1_try + c2_try)]
    assert rows["iot", "taopu", "sensing"] == ["3", "4"]
    assert rows["cam", "taopu", "online"] == ["2", "2"]  # daily: day 2 only (day 1 had gaps); c1, c2
    scalars = got["scalars"][5]
    assert (scalars["duplicate"], scalars["stale"], scalars["restarts"], scalars["resets"]) == (1, 1, 1, 2)


def test_saved_while_up_restart_is_a_crash_gap(rules, tmp_path):
    """Test that an engine saved while up reports a gap when the restored one comes up later."""
    registry = make_registry(rules, "c1,cam,face_cam,taopu")
    engine, decoder = Engine(registry), Decoder(registry)
    tally = Tally.attach(engine, START, START + 3600 * US)
    Feed(engine, decoder).feed([up(T0), hb(T0 + 10, "c1"), hb(T0 + 100, "c1")])
    save_checkpoint(tmp_path / "cp.npz", engine=engine, tallies=[tally], decoder=decoder, extra={})
    restored = load_checkpoint(tmp_path / "cp.npz", registry)
    assert restored.engine.up and restored.engine.clock == (T0 + 100) * US
    restored.engine.monitor_up((T0 + 600) * US)
    restored.engine.advance_to(START + 3600 * US)
    restored.engine.finish()
    assert restored.tallies[0].gaps() == [((T0 + 120) * US, (T0 + 600) * US)]
    assert restored.engine.stats["restarts"] == 1
    online = restored.tallies[0].results().row("cam", "taopu", "online")
    assert (online.numerator, online.denominator) == (1, 2 + 50)  # T0+120..540 lie in the gap


def test_state_follows_device_and_gateway_ids_across_registry_changes(rules, tmp_path):
    """Test that devices added, removed and reordered in the registry keep (or start) their own state."""
    before = make_registry(rules, "a,cam,face_cam,taopu", "b,cam,face_cam,changshou", "c,iot,door,taopu")
    engine, decoder = Engine(before), Decoder(before)
    tally = Tally.attach(engine, START, START + 600 * US)
    Feed(engine, decoder).feed([
        hb(T0 + 10, "a", seq=5, face_try=10, face_ok=10),
        hb(T0 + 10, "b", "cam", "changshou", seq=7, face_try=20, face_ok=20),
        hb(T0 + 20, "c", "iot", "taopu", reads=3, read_ok=3),
        raw(T0 + 30, "putuo/gw/gw-changshou/status", "offline"),
    ])
    save_checkpoint(tmp_path / "cp.npz", engine=engine, tallies=[tally], decoder=decoder, extra={})
    after = make_registry(rules, "b,cam,face_cam,changshou", "d,cam,face_cam,taopu", "c,iot,door,taopu")
    assert after.gateways != before.gateways
    restored = load_checkpoint(tmp_path / "cp.npz", after)
    new = restored.engine
    for device in ("b", "c"):
        i, j = before.index[device], after.index[device]
        for name in ("last_heartbeat", "online_until", "seq", "counters", "has_baseline", "seen"):
            assert np.array_equal(getattr(new, name)[j], getattr(engine, name)[i]), (device, name)
    d = after.index["d"]
    fresh = (new.last_heartbeat[d], new.online_until[d], new.seen[d], new.seen_day[d])
    assert fresh == (NEVER, NEVER, False, -1)
    assert new.gateway_online.tolist() == [g != "gw-changshou" for g in after.gateways]
    assert new.gateway_since[after.gateways.index("gw-changshou")] == (T0 + 30) * US
    assert restored.notes == [
        f"the registry changed since the checkpoint (version {before.version} → {after.version})",
        "1 device in the checkpoint is no longer in the registry; their state is dropped",
        "1 registry device is new since the checkpoint; they start afresh",
    ]
    decoder = Decoder(after)
    Feed(new, decoder).feed([
        hb(T0 + 70, "b", "cam", "changshou", seq=7, face_try=20, face_ok=20),  # a duplicate
        hb(T0 + 80, "b", "cam", "changshou", seq=8, face_try=25, face_ok=24),  # +5 / +4
        hb(T0 + 80, "d", face_try=50, face_ok=50),  # a new device: baseline only
    ])
    face = restored.tallies[0].results().row("cam", "changshou", "face")
    assert (face.numerator, face.denominator, new.stats["duplicate"]) == (4, 5, 1)
    assert restored.tallies[0].results().row("cam", "taopu", "face").denominator == 0


def drop_street(doc: dict[str, Any]) -> None:
    del doc["wanli"]


def rename_street(doc: dict[str, Any]) -> None:
    doc["wanli_new"] = doc.pop("wanli")


def add_street(doc: dict[str, Any]) -> None:
    doc["new_town"] = {"name": "新镇"}


def street_fees(change: Callable[[dict[str, str]], None]) -> Callable[[dict[str, Any]], None]:
    """The contracts.yaml edit that makes every payment rule's fees follow a street edit."""
    def edit(doc: dict[str, Any]) -> None:
        for contract in doc.values():
            if "payment" in contract:
                change(contract["payment"]["fees"])
    return edit


def add_street_fee(fees: dict[str, str]) -> None:
    fees["new_town"] = "1000.00"


def drop_iot(doc: dict[str, Any]) -> None:
    del doc["iot"]


def drop_iot_types(doc: dict[str, Any]) -> None:
    for code in [code for code, t in doc.items() if t["contract"] == "iot"]:
        del doc[code]


def slower_cam(doc: dict[str, Any]) -> None:
    doc["cam"]["sample_interval"] = 120


def stricter_cam(doc: dict[str, Any]) -> None:
    doc["cam"]["kpis"]["online"]["threshold"] = 0.99


@pytest.mark.parametrize(
    ("edits", "problem"),
    [
        ([("streets.yaml", drop_street), ("contracts.yaml", street_fees(drop_street))],
         "sums for street wanli, which the rules no longer define"),
        ([("streets.yaml", rename_street), ("contracts.yaml", street_fees(rename_street))],
         "sums for street wanli, which the rules no longer define"),
        ([("types.yaml", drop_iot_types), ("contracts.yaml", drop_iot)], "sums for contract iot"),
        ([("contracts.yaml", slower_cam)], r"sample interval changed \(cam: 60 s → 120 s\)"),
    ],
    ids=["street-removed", "street-renamed", "contract-removed", "interval-changed"],
)
def test_rules_that_cannot_hold_the_saved_sums_refuse_to_load(rules, rules_dir, tmp_path, edits, problem):
    """Test that rules without a place for saved sums, or with a new sample grid, raise CheckpointError."""
    path = tmp_path / "cp.npz"
    save_small(path, rules)
    changed = edit_rules(rules_dir, *edits)
    with pytest.raises(CheckpointError, match=problem) as info:
        load_checkpoint(path, make_registry(changed, "c1,cam,face_cam,taopu"))
    assert str(path) in str(info.value) and "move" in str(info.value)


@pytest.mark.parametrize(
    ("edits", "note"),
    [
        ([("contracts.yaml", stricter_cam)], "the rules changed since the checkpoint"),
        ([("contracts.yaml", daily_cam)], "contract cam's online method changed from time_weighted to daily"),
        ([("streets.yaml", add_street), ("contracts.yaml", street_fees(add_street_fee))],
         "their sums starting at zero: street new_town"),
    ],
    ids=["threshold", "online-method", "street-added"],
)
def test_compatible_rule_changes_load_with_a_note(rules, rules_dir, tmp_path, edits, note):
    """Test that rule changes keeping contracts, streets and intervals load, keeping sums, with a note."""
    path = tmp_path / "cp.npz"
    save_small(path, rules, hb(T0 + 200, "c1", face_try=3, face_ok=2))
    changed = make_registry(edit_rules(rules_dir, *edits), "c1,cam,face_cam,taopu")
    restored = load_checkpoint(path, changed)
    assert any(note in line for line in restored.notes), restored.notes
    face = restored.tallies[0].results().row("cam", "taopu", "face")
    assert (face.numerator, face.denominator, int(restored.tallies[0].samples.sum())) == (1, 2, 2 * 3)


def save_small(path: Path, rules: Rules, *more: tuple[float, str, str]) -> Registry:
    """Save the state of one camera's heartbeat at T0+10 (and ``more``); return its registry."""
    registry = make_registry(rules, "c1,cam,face_cam,taopu")
    engine, decoder = Engine(registry), Decoder(registry)
    tally = Tally.attach(engine, START, END)
    Feed(engine, decoder).feed([hb(T0 + 10, "c1", face_try=1, face_ok=1), *more])
    save_checkpoint(path, engine=engine, tallies=[tally], decoder=decoder, extra={"archive": ["a.gz", 42]})
    return registry


def npz(path: Path, **arrays: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def meta(doc: object) -> np.ndarray:
    return np.frombuffer(json.dumps(doc).encode(), dtype=np.uint8)


def resaved(path: Path, **changes: np.ndarray) -> None:
    with np.load(path) as loaded:
        arrays = {name: loaded[name] for name in loaded.files}
    npz(path, **{**arrays, **changes})


def flip_in_meta(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[data.index(b'"format"') + 2] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("spoil", "problem"),
    [
        (lambda p: p.write_bytes(b""), "not a readable ptmon checkpoint"),
        (lambda p: p.write_text("device_id,contract\nc1,cam\n"), "not a readable ptmon checkpoint"),
        (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), "corrupt or truncated"),
        (lambda p: p.write_bytes(p.read_bytes()[:-10]), "corrupt or truncated"),
        (flip_in_meta, "corrupt or truncated"),
        (lambda p: np.save(p.open("wb"), np.arange(3)), "one numpy array"),
        (lambda p: npz(p, x=np.arange(3)), "no meta document"),
        (lambda p: npz(p, meta=np.array([{"a": 1}], dtype=object)), "corrupt or truncated"),
        (lambda p: npz(p, meta=np.frombuffer(b"\xff{", dtype=np.uint8)), "is not JSON"),
        (lambda p: npz(p, meta=meta({"format": "other"})), "format 'other'"),
        (lambda p: npz(p, meta=meta([1, 2])), "not a ptmon checkpoint"),
        (lambda p: resaved(p, meta=meta({"format": "ptmon-checkpoint", "version": 99})),
         "format version 99"),
        (lambda p: resaved(p, last_heartbeat=np.zeros(5, dtype=np.int64)),
         r"array last_heartbeat is int64 \(5,\)"),
        (lambda p: resaved(p, seen=np.zeros(1, dtype=np.int8)), "array seen is int8"),
        (lambda p: resaved(p, device_ids=np.zeros(3, dtype=np.int64)), "malformed"),
    ],
    ids=["empty", "csv", "half", "tail-cut", "bit-flip", "npy", "no-meta", "pickle", "meta-bytes",
         "foreign", "meta-list", "future", "short-array", "wrong-dtype", "ids-dtype"],
)
def test_unreadable_checkpoints_raise_checkpoint_error_naming_the_file(rules, tmp_path, spoil, problem):
    """Test that corrupt, truncated and foreign files raise CheckpointError naming path and problem."""
    path = tmp_path / "cp.npz"
    registry = save_small(path, rules)
    spoil(path)
    with pytest.raises(CheckpointError, match=problem) as info:
        load_checkpoint(path, registry)
    assert str(path) in str(info.value)


def test_malformed_meta_values_raise_checkpoint_error(rules, tmp_path):
    """Test that a well-formed file with wrong values inside (a float clock, a bad tally) is refused."""
    path = tmp_path / "cp.npz"
    registry = save_small(path, rules)
    with np.load(path) as loaded:
        doc = json.loads(loaded["meta"].tobytes())
    spoils = (("engine.clock", 1.5), ("engine.up", 1), ("tallies.0.online", {"cam": {"taopu": [1]}}),
              ("tallies.0.samples", {"cam": 2**70}), ("decoder.accepted", "7"))
    for where, value in spoils:
        spoiled = json.loads(json.dumps(doc))
        *parents, key = where.split(".")
        node = spoiled
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        node[key] = value
        resaved(path, meta=meta(spoiled))
        with pytest.raises(CheckpointError, match="malformed checkpoint"):
            load_checkpoint(path, registry)


def test_missing_checkpoint(rules, tmp_path):
    """Test that a missing file is None for try_load_checkpoint, a CheckpointError for load_checkpoint."""
    registry = make_registry(rules, "c1,cam,face_cam,taopu")
    assert try_load_checkpoint(tmp_path / "none.npz", registry) is None
    with pytest.raises(CheckpointError, match="no checkpoint file"):
        load_checkpoint(tmp_path / "none.npz", registry)


def test_save_is_atomic(rules, tmp_path, monkeypatch):
    """Test that a leftover .tmp is harmless and a save failing before the rename keeps the old file."""
    path = tmp_path / "cp.npz"
    registry = save_small(path, rules)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cp.npz"]
    (tmp_path / ".cp.npz.tmp").write_bytes(b"half a checkpoint from a crash")
    assert load_checkpoint(path, registry).extra == {"archive": ["a.gz", 42]}

    restored = load_checkpoint(path, registry)
    Feed(restored.engine, Decoder(registry)).feed([hb(T0 + 500, "c1")])

    def crash(*args: object) -> None:
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(durable.os, "replace", crash)
    with pytest.raises(CheckpointError) as refused:
        save_checkpoint(path, engine=restored.engine, tallies=restored.tallies,
                        decoder=Decoder(registry), extra={})
    assert str(refused.value) == f"{path}: cannot write the checkpoint: No space left on device"  # the path said once
    monkeypatch.undo()
    assert load_checkpoint(path, registry).engine.clock == (T0 + 10) * US
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cp.npz"]
    save_checkpoint(path, engine=restored.engine, tallies=restored.tallies, decoder=Decoder(registry),
                    extra={})
    assert load_checkpoint(path, registry).engine.clock == (T0 + 500) * US


def test_restored_decoder_keeps_its_unknown_topic_bound(rules, tmp_path):
    """Test that unknown topics beyond a smaller limit on restore are counted as overflow."""
    registry = make_registry(rules, "c1,cam,face_cam,taopu")
    engine, decoder = Engine(registry), Decoder(registry)
    Feed(engine, decoder).feed([raw(T0 + k, f"putuo/cam/taopu/x{k}/hb", "{}") for k in range(3)])
    save_checkpoint(tmp_path / "cp.npz", engine=engine, tallies=[], decoder=decoder, extra={})
    small = Decoder(registry, unknown_limit=2)
    restore_decoder(small, load_checkpoint(tmp_path / "cp.npz", registry))
    assert (len(small.unknown_topics), small.unknown_overflow, small.rejects["unknown_device"]) == (2, 1, 3)


def test_checkpoint_from_before_the_plausibility_state_loads(daily_registry, tmp_path):
    """Test that a checkpoint written before the plausibility and loss state existed still loads: the rest
    restored, a note saying so, and every device as at a first message (a day's allowance, nothing
    unmatched or missing)."""
    engine, decoder = Engine(daily_registry), Decoder(daily_registry)
    Feed(engine, decoder, end=END).feed(RECORDS[:8])
    path = tmp_path / "cp.npz"
    save_checkpoint(path, engine=engine, tallies=[], decoder=decoder, extra={})
    with np.load(path, allow_pickle=False) as saved:
        older = {name: saved[name] for name in saved.files if name not in LATER_DEVICE_ARRAYS}
    with open(path, "wb") as out:
        np.savez(out, **older)
    loaded = load_checkpoint(path, daily_registry)
    assert any("predates the counter plausibility" in note for note in loaded.notes)
    assert (loaded.engine.allowance == ALLOWANCE_CAP_MS).all() and not loaded.engine.missing.any()
    assert not loaded.engine.unmatched.any() and not loaded.engine.last_ts.any()
    assert np.array_equal(loaded.engine.counters, engine.counters) and np.array_equal(loaded.engine.seq, engine.seq)


def test_checkpoint_from_before_provisional_jumps_restores_exactly(rules, tmp_path):
    """Test that a checkpoint without the per-device jump (written before it existed) restores every other
    array exactly, with no note and no jump pending: its gaps were all counted lost already, which is
    what no jump means; and that a saved jump is restored."""
    registry = make_registry(rules, "v1,iot,elevator,wanli")
    engine, decoder = Engine(registry), Decoder(registry)
    records = [up(T0)] + [hb(T0 + 300 * k, "v1", "iot", "wanli", seq=k) for k in range(1, 5)]
    records.append(hb(T0 + 1300, "v1", "iot", "wanli", seq=10))  # a jump of 6: 5 seqs skipped
    Feed(engine, decoder, end=END).feed(records)
    assert int(engine.jump[0]) == 6
    path = tmp_path / "cp.npz"
    save_checkpoint(path, engine=engine, tallies=[], decoder=decoder, extra={})
    kept = load_checkpoint(path, registry)
    assert int(kept.engine.jump[0]) == 6 and not kept.notes
    with np.load(path, allow_pickle=False) as saved:
        older = {name: saved[name] for name in saved.files if name != "jump"}
    with open(path, "wb") as out:
        np.savez(out, **older)
    loaded = load_checkpoint(path, registry)
    assert not loaded.notes and not loaded.engine.jump.any()
    for name in ("missing", "allowance", "seq", "last_ts", "counters"):
        assert np.array_equal(getattr(loaded.engine, name), getattr(engine, name)), name


def test_a_checkpoint_ptmon_may_not_read_is_refused_not_moved_aside(rules, tmp_path):
    """Test that a checkpoint unreadable for its permissions (mode 000, read by a process the
    permissions hold for) is an error saying so, not taken for a damaged file, which would be
    moved aside and rebuilt from the archive."""
    import subprocess
    import sys

    from . import readonly

    readonly.require("permissions")
    registry = make_registry(rules, "c1,cam,face_cam,taopu")
    path = tmp_path / "checkpoint.npz"
    save_checkpoint(path, engine=Engine(registry), tallies=[], decoder=Decoder(registry), extra={})
    read = ("import sys\nfrom ptmon.checkpoint import _read\nfrom ptmon.errors import CheckpointError, UsageError\n"
            "try:\n    _read(sys.argv[1])\nexcept (CheckpointError, UsageError) as exc:\n"
            "    print(type(exc).__name__, exc)\n")
    path.chmod(0)
    try:
        done = subprocess.run(readonly.unprivileged([sys.executable, "-c", read, str(path)]), capture_output=True,
                              text=True, timeout=60)
    finally:
        path.chmod(0o644)
    assert done.stdout.strip() == f"UsageError {path}: cannot read the checkpoint: Permission denied; " \
                                  "give ptmon read access to it", done.stderr
