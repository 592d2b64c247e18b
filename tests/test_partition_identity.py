"""A partition's archive files and checkpoint say whose they are, so that one copied where it does not
belong is refused instead of giving wrong KPIs or having its state overwritten.

The archive: every file a partition collector writes starts with a ``$ptmon/partition`` record. A day
file synced back without its directory's partition.json replayed as the whole district (the other
partition's streets 0 % online); one copied into another partition's directory replayed as that
partition. The checkpoint: a partition given another's ``checkpoint_file`` continued its state and
overwrote it. The collectors' data is tests/partition_data.py's (real collectors on a real Mosquitto)."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from ptmon.archive import PARTITION_TOPIC, ArchiveReader
from ptmon.cli import main
from ptmon.config import CollectorConfig
from ptmon.decode import Decoder
from ptmon.engine import Engine
from ptmon.errors import UsageError
from ptmon.partition import PARTITION_FILE, Partition, archive_tag, file_partition, restrict_registry
from ptmon.registry import load_registry
from ptmon.replay import Feed
from ptmon.rules import load_rules
from ptmon.sinks.archive import ArchiveWriter

from .conftest import restored_collector

MONTH = ["--month", "2026-11"]


def _args(collected) -> list[str]:  # type: ignore[no-untyped-def]
    return ["--registry", str(collected["registry"]), "--rules", str(collected["rules"])]


def _day_file(collected, name: str) -> Path:  # type: ignore[no-untyped-def]
    files = sorted((collected["tmp"] / name / "archive").glob("ptmon-*.jsonl.gz"))
    assert len(files) == 1
    return files[0]


def _lines(path: Path) -> list[dict]:  # type: ignore[type-arg]
    with gzip.open(path, "rt") as f:
        return [json.loads(line) for line in f]


def _replay(capsys, *args: str) -> str:  # type: ignore[no-untyped-def]
    code = main(["replay", *MONTH, "--csv", "-", *args])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out


def _refused(capsys, args: list[str], *expected: str) -> str:  # type: ignore[no-untyped-def]
    assert main(args) == 2, args
    err = capsys.readouterr().err
    assert all(e in err for e in expected), err
    assert len(err.strip().splitlines()) == 1, err  # one line
    return err


def test_a_partitions_files_start_with_its_record_and_the_districts_have_none(collected) -> None:
    """Test that every archive file a partition wrote starts with its streets and versions, and the whole
    collector's files carry no such record."""
    rules = load_rules(collected["rules"])
    for name, streets in (("a", ["changzheng", "taopu"]), ("b", ["wanli"])):
        first = _lines(_day_file(collected, name))[0]
        assert first["topic"] == PARTITION_TOPIC
        assert json.loads(first["payload"]) == {"streets": streets, "rules_version": rules.version,
                                                "registry_version": load_registry(collected["registry"], rules).version}
        assert file_partition(_day_file(collected, name)) == archive_tag(_day_file(collected, name).parent)
    assert file_partition(_day_file(collected, "all")) is None
    assert all(line["topic"] != PARTITION_TOPIC for line in _lines(_day_file(collected, "all")))


def test_a_partitions_day_file_without_its_partition_json_is_refused(collected, tmp_path, capsys) -> None:
    """Test that a partition's day file in a directory without partition.json (synced back from a bucket
    without it) is refused by replay and report, pointing to the fix, and that the fix works."""
    x = tmp_path / "x"
    x.mkdir()
    shutil.copy(_day_file(collected, "b"), x)
    expected = ("is partition wanli's day file", f"{x} has no partition.json")
    _refused(capsys, ["replay", *MONTH, *_args(collected), "--quiet", str(x)], *expected)
    _refused(capsys, ["replay", *MONTH, *_args(collected), "--quiet", str(next(x.iterdir()))], *expected)
    _refused(capsys, ["report", *MONTH, "--format", "csv", "--out", str(tmp_path / "out"), *_args(collected),
                      "--from-archive", str(x)], *expected)
    assert not (tmp_path / "out").exists()
    # the fix the message gives: the partition's tag beside it; then it replays as partition b's own archive
    (x / PARTITION_FILE).write_text((collected["tmp"] / "b" / "archive" / PARTITION_FILE).read_text())
    a, whole = (str(collected["tmp"] / n / "archive") for n in ("a", "all"))
    assert _replay(capsys, *_args(collected), a, str(x)) == _replay(capsys, *_args(collected), whole)


def test_an_emptied_partition_json_is_refused_with_the_tag_to_restore(collected, tmp_path, capsys) -> None:
    """Test that a partition.json left empty (a power cut while it was written) is refused in one line
    that gives the tag its day files carry, and that writing that tag back replays as before."""
    x = tmp_path / "x"
    shutil.copytree(collected["tmp"] / "b" / "archive", x)
    tag = (x / PARTITION_FILE).read_text()
    (x / PARTITION_FILE).write_bytes(b"\0" * len(tag))
    err = _refused(capsys, ["replay", *MONTH, *_args(collected), "--quiet", str(x)],
                   f"{x / PARTITION_FILE}: not a partition tag", "says it is partition wanli's")
    fix = err.split("write ", 1)[1].split(f" to {x / PARTITION_FILE}")[0]
    assert Partition.from_json(fix, "the hint") == Partition.from_json(tag, "the tag")
    (x / PARTITION_FILE).write_text(fix)
    a = str(collected["tmp"] / "a" / "archive")
    assert _replay(capsys, *_args(collected), a, str(x)) == _replay(capsys, *_args(collected), a,
                                                                   str(collected["tmp"] / "b" / "archive"))


def test_another_partitions_day_file_in_a_partitions_archive_is_refused(collected, tmp_path, capsys) -> None:
    """Test that a day file copied into another partition's archive directory is refused by replay, report and
    the ledger's verify, and that a collector does not start on that directory."""
    b = tmp_path / "b"
    shutil.copytree(collected["tmp"] / "b", b, ignore=shutil.ignore_patterns("*.lock", "lock*"))
    stray = b / "archive" / "ptmon-2026-11-02.jsonl.gz"
    shutil.copy(_day_file(collected, "a"), stray)
    expected = (f"{stray} is partition changzheng+taopu's day file", "is partition wanli's (partition.json)")
    a = str(collected["tmp"] / "a" / "archive")
    _refused(capsys, ["replay", *MONTH, *_args(collected), "--quiet", a, str(b / "archive")], *expected)
    _refused(capsys, ["report", *MONTH, "--format", "csv", "--out", str(tmp_path / "out"), *_args(collected),
                      "--from-archive", a, str(b / "archive")], *expected)
    _refused(capsys, ["ledger", "verify", *MONTH, *_args(collected), "--ledger", str(b / "ledger.sqlite"),
                      "--archive", str(b / "archive")], *expected)
    cfg = CollectorConfig(registry=collected["registry"], rules=Path(collected["rules"]), data_dir=b, metrics_listen="",
                          streets=("wanli",))
    with pytest.raises(UsageError, match="is partition changzheng\\+taopu's day file"):
        restored_collector(cfg)


def test_the_record_changes_no_kpi_and_archives_without_it_read_as_before(collected, tmp_path, capsys) -> None:
    """Test that a partition's archive replays byte-identically with and without its $ptmon/partition records
    (an archive written before they existed), and that replay counts the record as a control record."""
    b = tmp_path / "b"
    b.mkdir()
    shutil.copy(collected["tmp"] / "b" / "archive" / PARTITION_FILE, b)
    source = _day_file(collected, "b")
    records = _lines(source)
    with gzip.open(b / source.name, "wb") as out:
        out.writelines(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in records[1:])
    assert file_partition(b / source.name) is None
    a = str(collected["tmp"] / "a" / "archive")
    with_record = _replay(capsys, *_args(collected), a, str(source.parent))
    assert _replay(capsys, *_args(collected), a, str(b)) == with_record
    assert "wanli,online" in with_record

    rules = load_rules(collected["rules"])
    registry = restrict_registry(load_registry(collected["registry"], rules), ["wanli"])
    feed = Feed(Engine(registry), Decoder(registry))
    feed.feed(ArchiveReader([source]))
    assert feed.control["partition"] == 1 and feed.control["unknown"] == 0


def test_every_file_a_partition_writes_starts_with_its_record(tmp_path) -> None:
    """Test that the archive writer puts the record first in each day's file and in a restart's new part, and
    after a failed first write it is still first when the batch is written again."""
    header = (PARTITION_TOPIC, Partition(("wanli",), "r", "g").to_json())
    day1, day2 = 1_793_376_000.5, 1_793_462_400.5  # 2026-10-31 00:00:00.5 Shanghai, and a day later
    writer = ArchiveWriter(tmp_path, file_header=header)
    writer.append([(day1, "putuo/cam/wanli/x/hb", "{}"), (day1 + 1, "putuo/cam/wanli/x/hb", "{}"),
                   (day2, "putuo/cam/wanli/x/hb", "{}")])
    writer.finish()
    restarted = ArchiveWriter(tmp_path, file_header=header)
    restarted.append([(day2 + 5, "putuo/cam/wanli/x/hb", "{}")])
    assert restarted.position == {"file": "ptmon-2026-11-01.1.jsonl.gz", "records": 2}  # the tail replay skips it too
    restarted.finish()
    files = sorted(tmp_path.glob("ptmon-*.jsonl.gz"))
    assert [f.name for f in files] == ["ptmon-2026-10-31.jsonl.gz", "ptmon-2026-11-01.1.jsonl.gz", "ptmon-2026-11-01.jsonl.gz"]
    for f, n, t in ((files[0], 3, day1), (files[2], 2, day2), (files[1], 2, day2 + 5)):
        lines = _lines(f)
        assert len(lines) == n and (lines[0]["t"], lines[0]["topic"], lines[0]["payload"]) == (t, *header)
        assert all(line["topic"] != PARTITION_TOPIC for line in lines[1:])
    plain = ArchiveWriter(tmp_path / "district")
    plain.append([(day1, "putuo/cam/wanli/x/hb", "{}")])
    plain.finish()
    assert [line["topic"] for line in _lines(next((tmp_path / "district").iterdir()))] == ["putuo/cam/wanli/x/hb"]


def test_failed_first_write_keeps_the_record_for_the_retry(tmp_path, monkeypatch) -> None:
    """Test that when a file's first write fails (a full disk), the record is written with the batch's retry."""
    from ptmon.sinks import archive as sink

    header = (PARTITION_TOPIC, Partition(("wanli",), "r", "g").to_json())
    writer = ArchiveWriter(tmp_path, file_header=header)
    real_write, calls = sink._Member.write, []

    def full_once(self, data):  # type: ignore[no-untyped-def]
        calls.append(data)
        if len(calls) == 1:
            raise OSError(28, "No space left on device")
        return real_write(self, data)

    monkeypatch.setattr(sink._Member, "write", full_once)
    batch = [(1_793_462_400.5, "putuo/cam/wanli/x/hb", "{}")]
    with pytest.raises(OSError):
        writer.append(batch)
    writer.append(batch)
    writer.finish()
    assert writer.path is not None and len(calls) == 2
    assert [line["topic"] for line in _lines(writer.path)] == [PARTITION_TOPIC, "putuo/cam/wanli/x/hb"]


# --- checkpoints ----------------------------------------------------------------------------------

def _config(collected, data_dir: Path, streets: tuple[str, ...], checkpoint: Path) -> CollectorConfig:  # type: ignore[no-untyped-def]
    return CollectorConfig(registry=collected["registry"], rules=Path(collected["rules"]), data_dir=data_dir,
                           metrics_listen="", streets=streets, checkpoint_file=checkpoint)


@pytest.mark.parametrize("case", ["other-partition", "district-for-partition", "partition-for-district"])
def test_another_collectors_checkpoint_is_refused_and_left_as_it_is(collected, tmp_path, case) -> None:
    """Test that a collector given another collector's checkpoint_file refuses to start, in one line, and leaves
    the checkpoint as it was (not continued, not moved aside, not overwritten)."""
    owner, streets, reason = {
        "other-partition": ("b", ("changzheng", "taopu"), "is partition wanli's checkpoint, not partition changzheng+taopu's"),
        "district-for-partition": ("all", ("wanli",), "is the whole-district collector's checkpoint, not partition wanli's"),
        "partition-for-district": ("b", (), "is partition wanli's checkpoint, not the whole-district collector's"),
    }[case]
    shutil.copytree(collected["tmp"] / owner, tmp_path / owner, ignore=shutil.ignore_patterns("*.lock", "lock*"))
    checkpoint = tmp_path / owner / "checkpoint.npz"
    before = checkpoint.read_bytes()
    with pytest.raises(UsageError) as refused:
        restored_collector(_config(collected, tmp_path / "other", streets, checkpoint))
    assert reason in str(refused.value) and "\n" not in str(refused.value)
    assert checkpoint.read_bytes() == before and [p.name for p in checkpoint.parent.glob("checkpoint*")] == ["checkpoint.npz"]
    # its owner still continues from it
    with np.load(checkpoint) as loaded:
        saved_clock = json.loads(loaded["meta"].tobytes())["engine"]["clock"]
    collector = restored_collector(_config(collected, tmp_path / owner, PARTS_OF[owner], checkpoint))
    try:
        assert collector.engine.clock == saved_clock  # the checkpoint's state, continued
    finally:
        collector.ledger.close()
        collector.lock.release()


PARTS_OF = {"all": (), "a": ("changzheng", "taopu"), "b": ("wanli",)}


def _meta(path: Path) -> dict:  # type: ignore[type-arg]
    with np.load(path) as loaded:
        return json.loads(loaded["meta"].tobytes())


def _without_record(source: Path, target: Path) -> dict:  # type: ignore[type-arg]
    """``source`` as a checkpoint written before checkpoints named their partition; its meta document."""
    with np.load(source) as loaded:
        arrays = {name: loaded[name] for name in loaded.files}
    doc = _meta(source)
    del doc["partition"]
    arrays["meta"] = np.frombuffer(json.dumps(doc).encode(), dtype=np.uint8)
    with open(target, "wb") as f:
        np.savez(f, **arrays)  # type: ignore[arg-type]
    return doc


def test_a_checkpoint_records_its_partition_and_one_without_the_record_loads_as_before(collected, tmp_path) -> None:
    """Test that the checkpoint names its partition (null for the whole district), and that a checkpoint written
    before it did loads as it always did for its own collector."""
    rules = load_rules(collected["rules"])
    assert _meta(collected["tmp"] / "b" / "checkpoint.npz")["partition"] == {
        "streets": ["wanli"], "rules_version": rules.version,
        "registry_version": load_registry(collected["registry"], rules).version}
    assert _meta(collected["tmp"] / "all" / "checkpoint.npz")["partition"] is None
    shutil.copytree(collected["tmp"] / "b", tmp_path / "b", ignore=shutil.ignore_patterns("*.lock", "lock*"))
    checkpoint = tmp_path / "b" / "checkpoint.npz"
    doc = _without_record(checkpoint, checkpoint)
    collector = restored_collector(_config(collected, tmp_path / "b", ("wanli",), checkpoint))
    try:
        assert collector.engine.clock == doc["engine"]["clock"]  # the checkpoint's state, continued
    finally:
        collector.ledger.close()
        collector.lock.release()


@pytest.mark.parametrize("owner, streets", [("b", ("changzheng", "taopu")), ("all", ("wanli",))])
def test_an_old_checkpoint_of_other_streets_is_refused_by_a_partition(collected, tmp_path, owner, streets) -> None:
    """Test that a partition refuses a checkpoint without the record whose tallies expected devices of streets it
    does not own (another partition's, or the whole district's), leaving it as it is."""
    checkpoint = tmp_path / "old.npz"
    _without_record(collected["tmp"] / owner / "checkpoint.npz", checkpoint)
    before = checkpoint.read_bytes()
    with pytest.raises(UsageError, match=r"counted devices of street.*which partition .* does not own"):
        restored_collector(_config(collected, tmp_path / "p", streets, checkpoint))
    assert checkpoint.read_bytes() == before and sorted(p.name for p in tmp_path.glob("old*")) == ["old.npz"]
