"""The parts of month closing on their own: the ledger's closings table and its upgrade, late
heartbeats' limits and credit computed by hand, file comparison, rule and config options, and
a month recomputed from a month-start snapshot."""

from __future__ import annotations

import gzip
import sqlite3
from pathlib import Path

import pytest

from ptmon.archive import write_archive
from ptmon.decode import Decoder
from ptmon.engine import Engine
from ptmon.errors import ConfigError, LedgerError
from ptmon.ledger.closing import closings, record_closing, seal_of
from ptmon.ledger.read import ledger_results
from ptmon.ledger.rebuild import rebuild_ledger, recompute_month
from ptmon.ledger.records import Exemption
from ptmon.ledger.store import Ledger
from ptmon.month.fingerprint import FileMark, compare_files, mark, registry_changes
from ptmon.month.late import LateHeartbeat, counted, late_credit
from ptmon.month.words import span
from ptmon.replay import Feed, replay
from ptmon.rules import load_rules
from ptmon.snapshots import save_snapshot
from ptmon.timebase import month_bounds

from .conftest import HEADER, T0, hb, make_registry, up

US = 1_000_000
MIN = 60


# --- a month recomputed from its month-start snapshot ----------------------------------------------

def test_a_month_recomputed_from_a_snapshot_knows_devices_online_from_before(rules, tmp_path: Path) -> None:
    """Test that an exemption read from a month recomputed from a month-start snapshot takes out devices that were
    online since before the month as online (as a replay of every file does), not as offline."""
    registry = make_registry(rules, "c1,cam,face_cam,taopu", "c2,cam,face_cam,taopu")
    october = sorted([up(T0 - 3600)] + [hb(T0 - 3600 + MIN * i + 5, d, seq=i) for i in range(60) for d in ("c1", "c2")])
    november = sorted(hb(T0 + MIN * i + 5, d, seq=100 + i) for i in range(180) for d in ("c1", "c2"))
    write_archive(tmp_path / "ptmon-2026-10-31.jsonl.gz", october)
    write_archive(tmp_path / "ptmon-2026-11-01.jsonl.gz", november)
    engine, decoder = Engine(registry), Decoder(registry)
    Feed(engine, decoder).feed(october)
    save_snapshot(tmp_path, T0 * US, engine, decoder)
    exempt = [Exemption(id=1, scope="device", target="c1", start=T0 * US, end=(T0 + 3600) * US, reason="r",
                        approver="a", created_at=0)]
    with Ledger(tmp_path / "recomputed.sqlite") as ledger:
        assert recompute_month([tmp_path], registry, "2026-11", ledger).sources.snapshot is not None
        recomputed = ledger_results(ledger, registry, *month_bounds("2026-11"), exempt)
    replayed = replay([str(p) for p in sorted(tmp_path.glob("*.jsonl.gz"))], registry, *month_bounds("2026-11"),
                      exemptions=exempt)
    assert recomputed.csv_text() == replayed.csv_text()
    row = recomputed.row("cam", "taopu", "online")
    assert (row.numerator, row.denominator) == (300, 300)  # 3 h × 60 samples × 2 cameras − c1's first hour


# --- the closings table --------------------------------------------------------------------------------

def _doc(version: int, previous: str | None = None, contract: str = "iot") -> dict:  # type: ignore[type-arg]
    return {"month": "2026-11", "contract": contract, "version": version, "previous_seal": previous,
            "closed_at": 1, "closed_by": "张三", "reason": "" if version == 1 else "why", "blobs": {"registry": _SHA}}


_SHA = "b5bb9d8014a0f9b1d61e21e796d78dccdf1352f23cd32812f4850b878ae4944c"  # sha256(b"foo\n")


def test_versions_chain_and_never_change(tmp_path: Path) -> None:
    """Test that versions follow one another naming the previous seal, that a sealed closing cannot be updated or
    deleted, and that a blob must hash to its name."""
    with Ledger(tmp_path / "ledger.sqlite") as ledger:
        first = record_closing(ledger, _doc(1), {_SHA: b"foo\n"})
        assert first.seal == seal_of(_doc(1)) and first.sealed_ok() and first.label == "第 1 版"
        with pytest.raises(LedgerError, match="version 3 does not follow the last one"):
            record_closing(ledger, _doc(3, first.seal))
        with pytest.raises(LedgerError, match="must name the seal of version 1"):
            record_closing(ledger, _doc(2, "0" * 64))
        with pytest.raises(LedgerError, match="does not hash to its name"):
            record_closing(ledger, _doc(2, first.seal), {_SHA: b"bar\n"})
        second = record_closing(ledger, _doc(2, first.seal))
        assert [c.version for c in closings(ledger, "2026-11", "iot")] == [1, 2] and second.reason == "why"
        for sql in ("UPDATE closings SET closed_by = 'x'", "DELETE FROM closings WHERE version = 1",
                    "UPDATE closing_blobs SET data = x''"):
            with pytest.raises(sqlite3.DatabaseError, match="never"):
                ledger.db.execute(sql)


def test_a_schema_2_ledger_is_read_and_upgraded(tmp_path: Path) -> None:
    """Test that a schema-2 ledger (no closings) is read as having none, and opened for writing becomes schema 3."""
    path = tmp_path / "ledger.sqlite"
    with Ledger(path) as ledger:
        for statement in ("DROP TRIGGER closings_never_updated", "DROP TRIGGER closings_never_deleted",
                          "DROP TRIGGER closing_blobs_never_updated", "DROP TABLE closings", "DROP TABLE closing_blobs",
                          "UPDATE meta SET value = '2' WHERE key = 'schema_version'"):
            ledger.db.execute(statement)
    with Ledger(path, readonly=True) as ledger:
        assert closings(ledger) == []
    with Ledger(path) as ledger:
        assert ledger.db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == "3"
        record_closing(ledger, _doc(1), {_SHA: b"foo\n"})
        assert len(closings(ledger)) == 1


# --- late heartbeats -------------------------------------------------------------------------------

def _late(rules, **late: object):  # type: ignore[no-untyped-def]
    """A registry under rules whose cam contract counts late heartbeats with ``late``."""
    import dataclasses

    cam = rules.contract("cam")
    changed = dataclasses.replace(cam, late_heartbeats=dataclasses.replace(cam.late_heartbeats, count=True, **late))
    new_rules = dataclasses.replace(rules, contracts=tuple(changed if c.code == "cam" else c for c in rules.contracts))
    return make_registry(new_rules, "c1,cam,face_cam,taopu", "c2,cam,face_cam,taopu", "s1,iot,smoke,taopu")


END = month_bounds("2026-11")[1]


@pytest.mark.parametrize(("device", "received_after", "delay", "expected"), [
    ("c1", 60, 3600, True),
    ("c1", 60, 86_400, True),  # exactly max_delay
    ("c1", 60, 86_401, False),  # one second more
    ("c1", 3 * 86_400 - 1, 4 * 86_400 - 2, True),  # received just within received_within (max_delay raised below)
    ("c1", 3 * 86_400, 4 * 86_400, False),  # received at received_within: too late
    ("s1", 60, 3600, False),  # another contract's device (iot does not count them)
    ("ghost", 60, 3600, False),  # not in the registry
], ids=["hour-late", "max-delay", "over-max-delay", "within", "not-within", "other-contract", "unknown"])
def test_which_late_heartbeats_count(rules, device: str, received_after: int, delay: int, expected: bool) -> None:
    """Test that a late heartbeat counts only for a device of the contract, within max_delay of its ts and
    received_within of the month's end."""
    registry = _late(rules, max_delay=86_400 if received_after < 86_400 else 5 * 86_400)
    received = END + received_after * US
    h = LateHeartbeat(received=received, device=device, stamped=received - delay * US)
    assert (counted([h], registry, registry.rules.contract("cam"), "2026-11") == [h]) is expected
    off = make_registry(rules, "c1,cam,face_cam,taopu")
    assert counted([h], off, off.rules.contract("cam"), "2026-11") == []  # the default: never


def test_late_credit_counts_offline_expected_observed_samples_only(rules, tmp_path: Path) -> None:
    """Test the credit by hand: a late heartbeat stamped s makes its device online at the observed sample instants
    in [s, s + 180 s) where it was offline by receive time, under lease and not exempted."""
    registry = _late(rules)
    last = END // US - 3600  # the month's last hour: c1 heard until 23:10, c2 all along; a gap 23:40–23:50
    records = [up(last - 600)]
    records += [hb(last + m * MIN + 1, "c1", seq=m) for m in range(11)]
    records += [hb(last - 600 + m * MIN + 2, "c2", seq=m) for m in range(70) if not 50 <= m < 60]  # none in the gap
    records += [(last + 40 * MIN, "$ptmon/monitor", "down"), (last + 50 * MIN, "$ptmon/monitor", "up")]
    records.sort(key=lambda r: r[0])
    with Ledger(tmp_path / "ledger.sqlite") as ledger:
        rebuild_ledger([_archive(tmp_path, records)], registry, ledger)
        cam = registry.rules.contract("cam")

        def credit(*stamps: int, exemptions: list = ()) -> int:  # type: ignore[type-arg, assignment]
            late = [LateHeartbeat(received=END + 60 * US, device=d, stamped=(last + s) * US) for d, s in stamps]  # type: ignore[misc]
            return late_credit(ledger, registry, "2026-11", cam, late, list(exemptions)).total

        # c1 timed out at 23:13:01 (last heard 23:10:01): samples from 23:14 on are offline
        assert credit(("c1", 20 * MIN)) == 3  # 23:20, 23:21, 23:22
        assert credit(("c1", 20 * MIN + 1)) == 3  # 23:21, 23:22, 23:23 (s ≤ t < s + 180 s)
        assert credit(("c1", 12 * MIN)) == 1  # 23:12 and 23:13 still online by receive time; 23:14 credited
        assert credit(("c1", 39 * MIN)) == 2  # 23:39 and 23:40 (observed at the down record's own instant); 23:41 not
        assert credit(("c1", 44 * MIN)) == 0  # inside the gap: not observed, neither online nor offline
        assert credit(("c1", 49 * MIN)) == 2  # 23:50 (the up record's instant) and 23:51
        assert credit(("c2", 20 * MIN)) == 0  # c2 was online anyway
        assert credit(("c1", 20 * MIN), ("c1", 21 * MIN)) == 4  # overlapping windows count once
        window = Exemption(id=1, scope="device", target="c1", start=(last + 21 * MIN) * US, end=(last + 22 * MIN) * US,
                           reason="r", approver="a", created_at=0)
        assert credit(("c1", 20 * MIN), exemptions=[window]) == 2  # 23:21 exempted: out of the denominator
        assert credit(("c1", 59 * MIN)) == 1  # 23:59 only: the month ends


def _archive(tmp_path: Path, records: list) -> Path:  # type: ignore[type-arg]
    path = tmp_path / "archive.jsonl.gz"
    write_archive(path, records)
    return path


# --- files, registry rows, words ----------------------------------------------------------------------

def test_archive_files_unchanged_appended_modified_missing_added(tmp_path: Path) -> None:
    """Test that a sealed file is told apart as appended (its sealed bytes still its prefix), modified, missing,
    and a new file as added."""
    files = {name: tmp_path / name for name in ("a", "b", "c", "d")}
    for name, path in files.items():
        path.write_bytes(gzip.compress(name.encode() * 100))
    sealed = [mark(files[n]) for n in ("a", "b", "c", "d")]
    with files["b"].open("ab") as f:
        f.write(gzip.compress(b"more"))
    files["c"].write_bytes(gzip.compress(b"x" * 100))
    files["d"].unlink()
    (tmp_path / "e").write_bytes(b"new")
    now = {p.name: p for p in tmp_path.iterdir()}
    assert [(c.name, c.kind, c.tampered) for c in compare_files(sealed, now)] == [
        ("b", "appended", False), ("c", "modified", True), ("d", "missing", True), ("e", "added", False)]
    assert compare_files([FileMark(name="a", size=sealed[0].size, sha256=sealed[0].sha256)], {"a": files["a"]}) == []


def test_registry_changes_name_each_row_and_field() -> None:
    """Test that the registry's changed rows of a contract are listed device by device, field by field."""
    before = (f"{HEADER}\nc1,cam,face_cam,taopu,s,c,g,2026-01-01,\nc2,cam,face_cam,taopu,s,c,g,2026-01-01,\n"
              "s1,iot,smoke,taopu,s,c,g,2026-01-01,\n").encode()
    after = (f"{HEADER}\nc1,cam,face_cam,taopu,s,c,g,2026-11-15,2026-11-28\nc3,cam,face_cam,taopu,s,c,g,2026-01-01,\n"
             "s1,iot,smoke,taopu,s,c,g,2026-02-01,\n").encode()
    assert registry_changes(before, after, "cam") == [
        "c1：accepted_on 2026-01-01 → 2026-11-15，retired_on — → 2026-11-28", "c2：从设备清单中删除 (removed)",
        "c3：新增 (added)，accepted_on 2026-01-01，retired_on —"]
    assert registry_changes(before, after, "iot") == ["s1：accepted_on 2026-01-01 → 2026-02-01"]


@pytest.mark.parametrize(("us", "text"), [(3 * 86_400 * US, "3d"), (6 * 3600 * US, "6h"), (90 * 60 * US, "90m"),
                                          (45 * US, "45s"), (0, "0s")])
def test_span(us: int, text: str) -> None:
    """Test that durations print as the config writes them."""
    assert span(us) == text


# --- options ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("section", "message"), [
    ("  late_heartbeats: {count: true}\n  online_method: daily\n",
     "late_heartbeats.count can be true only with online_method time_weighted"),
    ("  late_heartbeats: {count: yes please}\n", "late_heartbeats.count must be true or false"),
    ("  late_heartbeats: {max_delay: soon}\n", "late_heartbeats.max_delay must be a positive duration"),
    ("  late_heartbeats: {within: 3d}\n", "late_heartbeats.within is not a known key"),
], ids=["daily", "count", "max-delay", "unknown-key"])
def test_late_heartbeats_option_is_validated(rules_dir: Path, section: str, message: str) -> None:
    """Test that a bad late_heartbeats section stops loading the rules, naming file, key and value."""
    contracts = rules_dir / "contracts.yaml"
    text = contracts.read_text()
    head = "iot:\n  name: “智联普陀”物联感知设施租赁服务项目\n"
    body = text.replace(head, head + section)
    if "online_method: daily" in section:
        body = body.replace("  online_method: time_weighted\n", "", 1)
    contracts.write_text(body)
    with pytest.raises(ConfigError, match=message):
        load_rules(rules_dir)


def test_late_heartbeats_default_is_off_and_loads(rules_dir: Path) -> None:
    """Test that the shipped rules count no late heartbeat and that a valid section loads as written."""
    assert all(not c.late_heartbeats.count for c in load_rules().contracts)
    contracts = rules_dir / "contracts.yaml"
    head = "cam:\n  name: 普陀区智能安防建设项目\n"
    contracts.write_text(contracts.read_text().replace(
        head, head + "  late_heartbeats: {count: true, max_delay: 48h, received_within: 2d}\n"))
    late = load_rules(rules_dir).contract("cam").late_heartbeats
    assert (late.count, late.max_delay, late.received_within) == (True, 172_800, 172_800)


@pytest.mark.parametrize(("text", "expected"), [
    ("", (259_200.0, 259_200.0)), ("[month]\nclose_grace = 0\nlate_horizon = '2d'\n", (0.0, 172_800.0)),
], ids=["defaults", "set"])
def test_month_config(tmp_path: Path, text: str, expected: tuple[float, float]) -> None:
    """Test the [month] keys' defaults and values."""
    from ptmon.config import load_config

    path = tmp_path / "ptmon.toml"
    path.write_text(text)
    month = load_config(path).month
    assert (month.close_grace, month.late_horizon) == expected


def test_month_config_errors(tmp_path: Path) -> None:
    """Test that a bad [month] value fails naming the key."""
    from ptmon.config import load_config

    path = tmp_path / "ptmon.toml"
    path.write_text("[month]\nclose_grace = 'soon'\n")
    with pytest.raises(ConfigError, match=r"month\.close_grace"):
        load_config(path)
