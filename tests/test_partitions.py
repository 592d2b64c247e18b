"""Partitioned collectors: one Mosquitto, the simulator's traffic for three streets, two collectors
owning two streets and one, and one collector that sees everything. The partitions' merged report
(ledger and --from-archive) and merged replay equal the whole collector's byte for byte; partitions
that overlap, miss a street or ran with other rules are refused with the reason.

The collectors' data is tests/partition_data.py's, made once per session (the ``collected`` fixture)."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from ptmon.cli import main
from ptmon.config import CollectorConfig
from ptmon.partition import PARTITION_FILE, archive_tag, restrict_registry
from ptmon.registry import load_registry
from ptmon.rules import load_rules

from .conftest import restored_collector
from .partition_data import PARTS, STREETS, write_registry


def _report_csv(capsys, out: Path, *args: str) -> bytes:  # type: ignore[no-untyped-def]
    assert main(["report", "--month", "2026-11", "--format", "csv", "--out", str(out), *args]) == 0, capsys.readouterr().err
    capsys.readouterr()
    return (out / "report-2026-11.csv").read_bytes()


def _replay_csv(capsys, *args: str) -> str:  # type: ignore[no-untyped-def]
    period = [] if "--month" in args else ["--start", "2026-11-01T00:10:00", "--end", "2026-11-01T02:20:00"]
    code = main(["replay", *period, "--csv", "-", *args])  # the CSV, then the table with gaps and counts
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out


def test_partitions_subscribe_load_and_tag_only_their_streets(collected) -> None:
    """Test that a partition collector's archive holds only its streets' heartbeats, and its archive
    and ledger carry its partition tag."""
    tmp, registry = collected["tmp"], collected["registry"]
    rules = load_rules(collected["rules"])
    full = load_registry(registry, rules)
    b = restrict_registry(full, ["wanli"])
    assert len(b) == 12 and {full.ids[i].split("-")[0] for i in range(len(full))} == set(STREETS)
    assert set(b.ids) == {d for d in full.ids if d.startswith("wanli-")} and b.version == full.version
    tag = archive_tag(tmp / "b" / "archive")
    assert tag is not None and tag.streets == ("wanli",) and tag.rules_version == rules.version
    assert archive_tag(tmp / "all" / "archive") is None
    import gzip

    topics = []
    for f in sorted((tmp / "b" / "archive").glob("ptmon-*.jsonl.gz")):
        with gzip.open(f, "rt") as lines:
            topics += [json.loads(line)["topic"] for line in lines]
    heartbeats = [t for t in topics if t.endswith("/hb")]
    assert heartbeats and all(t.split("/")[2] == "wanli" for t in heartbeats)
    with sqlite3.connect(tmp / "a" / "ledger.sqlite") as db:
        doc = json.loads(db.execute("SELECT value FROM meta WHERE key = 'partition'").fetchone()[0])
    assert doc["streets"] == ["changzheng", "taopu"]


def test_merged_report_and_replay_equal_the_whole_collectors(collected, tmp_path, capsys) -> None:
    """Test that the report from two partitions' ledgers, from their archives, and their replay are
    byte-identical to those of the collector that saw every street."""
    tmp, registry = collected["tmp"], str(collected["registry"])
    registry_args = [registry, "--rules", str(collected["rules"])]
    ledgers = {n: str(tmp / n / "ledger.sqlite") for n in PARTS}
    archives = {n: str(tmp / n / "archive") for n in PARTS}
    whole = _report_csv(capsys, tmp_path / "whole", "--registry", *registry_args, "--ledger", ledgers["all"])
    merged = _report_csv(capsys, tmp_path / "merged", "--registry", *registry_args, "--ledger", ledgers["a"], ledgers["b"])
    assert merged == whole
    assert b",wanli,online," in whole and b",district,online," in whole
    rows = [line.split(b",") for line in whole.splitlines()]
    assert all(int(r[9]) > 0 for r in rows[1:] if r[2] == b"online")  # every street's devices were expected
    assert any(r[1] == b"wanli" and r[2] == b"online" and r[8] != r[9] for r in rows)  # the dropped gateway shows

    whole = _report_csv(capsys, tmp_path / "whole-archive", "--registry", *registry_args, "--from-archive", archives["all"])
    merged = _report_csv(capsys, tmp_path / "merged-archive", "--registry", *registry_args,
                         "--from-archive", archives["b"], archives["a"])
    assert merged == whole

    whole_replay = _replay_csv(capsys, archives["all"], "--registry", *registry_args)
    assert _replay_csv(capsys, archives["a"], archives["b"], "--registry", *registry_args) == whole_replay
    assert _replay_csv(capsys, archives["a"], archives["b"], "--registry", *registry_args, "--month", "2026-11") == \
        _replay_csv(capsys, archives["all"], "--registry", *registry_args, "--month", "2026-11")


@pytest.mark.parametrize("case", ["twice", "whole-and-part", "incomplete", "mixed-rules"])
def test_overlapping_incomplete_or_mixed_partitions_are_refused(collected, tmp_path, capsys, case) -> None:
    """Test that the report and the replay refuse, with the reason, partitions given twice, that
    overlap, miss a street, or ran with other rules."""
    tmp, registry = collected["tmp"], str(collected["registry"])
    registry_args = [registry, "--rules", str(collected["rules"])]
    a, b = tmp / "a", tmp / "b"
    if case == "mixed-rules":
        b = tmp_path / "b"
        shutil.copytree(tmp / "b", b)
        doc = json.loads((b / "archive" / PARTITION_FILE).read_text())
        doc["rules_version"] = "0123456789abcdef"
        (b / "archive" / PARTITION_FILE).write_text(json.dumps(doc))
        with sqlite3.connect(b / "ledger.sqlite") as db:
            db.execute("UPDATE meta SET value = ? WHERE key = 'partition'", (json.dumps(doc),))
    sets = {"twice": [a, b, a], "whole-and-part": [tmp / "all", b], "incomplete": [a],
            "mixed-rules": [a, b]}[case]
    reason = {"twice": "is given twice", "whole-and-part": "street wanli is in two partitions",
              "incomplete": "street(s) wanli in no partition", "mixed-rules": "mixed rules versions"}[case]
    for args in (["report", "--month", "2026-11", "--format", "csv", "--out", str(tmp_path / "out"), "--registry",
                  *registry_args, "--ledger", *(str(d / "ledger.sqlite") for d in sets)],
                 ["report", "--month", "2026-11", "--format", "csv", "--out", str(tmp_path / "out"), "--registry",
                  *registry_args, "--from-archive", *(str(d / "archive") for d in sets)],
                 ["replay", "--month", "2026-11", "--registry", *registry_args, "--quiet", *(str(d / "archive") for d in sets)]):
        assert main(args) == 2, args
        err = capsys.readouterr().err
        if case == "whole-and-part" and "--ledger" not in args:  # an archive with no partition tag: told as such
            reason = f"archive directory {tmp / 'all' / 'archive'} has no partition.json"
        assert "cannot merge these partitions" in err and reason in err, (args, err)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_a_data_directory_of_another_partition_is_refused(collected, tmp_path) -> None:
    """Test that a collector started on storage another partition wrote refuses to start."""
    from ptmon.errors import UsageError

    tmp, registry = collected["tmp"], collected["registry"]
    moved = tmp_path / "b"
    shutil.copytree(tmp / "b", moved, ignore=shutil.ignore_patterns("*.lock", "lock*"))
    cfg = CollectorConfig(registry=registry, rules=tmp / "rules", data_dir=moved, metrics_listen="", streets=("changzheng",))
    with pytest.raises(UsageError, match="belongs to partition wanli, not changzheng"):
        restored_collector(cfg)


def test_a_ledger_holding_streets_outside_its_tag_is_refused(collected, tmp_path, capsys) -> None:
    """Test that a ledger whose tag leaves out streets it holds devices of is refused, not merged."""
    tmp = collected["tmp"]
    for name, streets in (("a", ["changzheng"]), ("b", ["wanli", "taopu"])):
        shutil.copy(tmp / name / "ledger.sqlite", tmp_path / f"{name}.sqlite")
        with sqlite3.connect(tmp_path / f"{name}.sqlite") as db:
            doc = json.loads(db.execute("SELECT value FROM meta WHERE key = 'partition'").fetchone()[0])
            db.execute("UPDATE meta SET value = ? WHERE key = 'partition'", (json.dumps({**doc, "streets": streets}),))
    code = main(["report", "--month", "2026-11", "--format", "csv", "--out", str(tmp_path / "out"), "--registry",
                 str(collected["registry"]), "--rules", str(collected["rules"]),
                 "--ledger", str(tmp_path / "a.sqlite"), str(tmp_path / "b.sqlite")])
    assert code == 2
    assert "a.sqlite: holds devices of street taopu, which is not in its partition" in capsys.readouterr().err


def test_spans_intersect_and_results_merge_by_owner() -> None:
    """Test that the merged observed time is what every partition observed (two partitions down at
    different minutes of one hour leave the district both gaps, not the longer one), and that merged
    results take each street's row from its owner and sum the district's."""
    from datetime import date
    from decimal import Decimal

    from ptmon.merge import intersect_spans, merge_results
    from ptmon.partition import Partition
    from ptmon.results import KpiRow, Results
    from ptmon.rules import load_rules
    from ptmon.timebase import DAY_US, US_PER_S, date_to_day, day_start

    assert intersect_spans([[0, 10], [20, 30]], [[5, 25]]) == [[5, 10], [20, 25]]
    assert intersect_spans([[0, 10]], [[11, 20]]) == []

    rules = load_rules()
    start = day_start(date_to_day(date(2026, 11, 1)))
    end = start + 2 * DAY_US
    minute = 60 * US_PER_S

    def results(nums: dict[str, tuple[int, int]], gaps: list[tuple[int, int]]) -> Results:
        observed = (end - start) // US_PER_S - sum(b - a for a, b in gaps) // US_PER_S
        coverage = {c.code: {"observed_seconds": observed, "period_seconds": (end - start) // US_PER_S,
                             "samples": observed // c.sample_interval, "complete_days": 1} for c in rules.contracts}
        rows = [KpiRow(contract="cam", street=s, kpi="online", numerator=n, denominator=d, threshold=Decimal("0.95"),
                       expected_device_samples=d, observed_seconds=observed) for s, (n, d) in nums.items()]
        return Results(start=start, end=end, rows=rows, coverage=coverage, gaps=gaps, rules_version="r",
                       registry_version="g", rejects={"bad_json": 1})

    a = results({"x": (9, 10), "y": (0, 0), "district": (9, 10)}, [(start + 10 * minute, start + 20 * minute)])
    b = results({"x": (0, 0), "y": (3, 4), "district": (3, 4)}, [(start + 30 * minute, start + 45 * minute)])
    merged = merge_results([(Partition(("x",), "r", "g"), a), (Partition(("y",), "r", "g"), b)], rules)
    each_a, each_b, both = (172_800 - 600, 172_800 - 900, 172_800 - 1_500)
    assert [(r.street, r.numerator, r.denominator, r.observed_seconds) for r in merged.rows] == [
        ("x", 9, 10, each_a), ("y", 3, 4, each_b), ("district", 12, 14, both)]  # a street's own; the district's both
    assert merged.gaps == [(start + 10 * minute, start + 20 * minute), (start + 30 * minute, start + 45 * minute)]
    assert merged.coverage["cam"]["observed_seconds"] == both and merged.coverage["cam"]["samples"] == both // 60
    assert merged.coverage["cam"]["complete_days"] == 1  # the second day, whole in both
    assert merged.rejects == {"bad_json": 2}


def test_config_streets_make_a_partition(tmp_path) -> None:
    """Test that `streets` in the config narrows the topics, and bad values fail with the key named."""
    from ptmon.config import load_config
    from ptmon.errors import ConfigError, UsageError
    from ptmon.partition import partitioned_config

    path = tmp_path / "ptmon.toml"
    path.write_text('registry = "r.csv"\nstreets = ["wanli", "taopu"]\n')
    config = partitioned_config(load_config(path))
    assert config.streets == ("wanli", "taopu")
    assert config.mqtt.topics == ("putuo/+/wanli/+/hb", "putuo/+/taopu/+/hb", "putuo/gw/+/status")
    for bad in ('"wanli"', '["wanli", "wanli"]', '[""]'):
        path.write_text(f'registry = "r.csv"\nstreets = {bad}\n')
        with pytest.raises(ConfigError, match="streets"):
            load_config(path)
    registry = load_registry(write_registry(tmp_path / "registry.csv"), load_rules())
    with pytest.raises(UsageError, match="unknown street"):
        restrict_registry(registry, ["atlantis"])


def test_a_partition_writes_sla_and_loss_points_of_its_streets_only() -> None:
    """Test that a partition's live points never overwrite another street's series or the district's."""
    from ptmon.partition import owned_points
    from ptmon.sinks.lineproto import series_prefix

    lines = [f"{series_prefix(m, {'contract': 'cam', 'street': s, 'kpi': 'online'})}value=1.0 1"
             for m in ("sla", "loss") for s in ("wanli", "taopu", "district")]
    lines.append(f"{series_prefix('heartbeat', {'device': 'wanli-cam1', 'street': 'wanli', 'type': 'face_cam'})}seq=1i 1")
    kept = owned_points(lines, ["wanli"])
    assert kept == [lines[0], lines[3], lines[6]]


def test_a_partitions_archive_file_given_alone_is_a_partition_not_the_district(collected, tmp_path, capsys) -> None:
    """Test that a day file of a partition's archive carries its directory's tag: given alone it is refused as an
    incomplete set of partitions (not replayed as the district with four streets silent), and one file of each
    partition replays as the whole collector's archive does."""
    tmp, registry = collected["tmp"], str(collected["registry"])
    registry_args = [registry, "--rules", str(collected["rules"])]
    files = {n: sorted((tmp / n / "archive").glob("ptmon-*.jsonl.gz")) for n in PARTS}
    assert len(files["b"]) == 1 and len(files["a"]) == 1
    for args in (["report", "--month", "2026-11", "--format", "csv", "--out", str(tmp_path / "out"), "--registry",
                  *registry_args, "--from-archive", str(files["b"][0])],
                 ["replay", "--month", "2026-11", "--registry", *registry_args, "--quiet", str(files["b"][0])]):
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert "cannot merge these partitions" in err and "street(s) changzheng, taopu in no partition" in err
    whole = _replay_csv(capsys, str(files["all"][0]), "--registry", *registry_args)
    assert _replay_csv(capsys, str(files["a"][0]), str(files["b"][0]), "--registry", *registry_args) == whole


def test_whole_district_and_partition_storage_are_not_taken_over(collected, tmp_path) -> None:
    """Test that a partition refuses an untagged data directory holding the district's data, and a whole-district
    collector refuses a partition's, each saying what to do."""
    from ptmon.errors import UsageError

    tmp, registry = collected["tmp"], collected["registry"]
    for name in ("all", "b"):
        shutil.copytree(tmp / name, tmp_path / name, ignore=shutil.ignore_patterns("*.lock", "lock*"))
    cfg = CollectorConfig(registry=registry, rules=tmp / "rules", data_dir=tmp_path / "all", metrics_listen="",
                          streets=("wanli",))
    with pytest.raises(UsageError, match=r"hold a whole-district collector's data .* own data directory"):
        restored_collector(cfg)
    assert archive_tag(tmp_path / "all" / "archive") is None
    cfg = CollectorConfig(registry=registry, rules=tmp / "rules", data_dir=tmp_path / "b", metrics_listen="")
    with pytest.raises(UsageError, match=r"belongs to partition wanli: a whole-district collector \(streets = \[\]\)"):
        restored_collector(cfg)


def test_a_partitions_ledger_verifies_and_rebuilds_with_its_own_streets(collected, tmp_path, capsys) -> None:
    """Test that `ledger verify` of a partition's ledger and archive compares its own streets (OK, not DIFFERENT),
    that `ledger rebuild` writes no other street into it, and that `month close` refuses a partition's ledger
    pointing to the docs."""
    tmp, registry = collected["tmp"], str(collected["registry"])
    shutil.copytree(tmp / "b", tmp_path / "b", ignore=shutil.ignore_patterns("*.lock", "lock*"))
    where = ["--registry", registry, "--rules", str(collected["rules"]), "--ledger", str(tmp_path / "b" / "ledger.sqlite"),
             "--archive", str(tmp_path / "b" / "archive")]
    assert main(["ledger", "verify", "--month", "2026-11", *where]) == 0, capsys.readouterr()
    assert "OK: the ledger's month equals the archive's" in capsys.readouterr().out
    def hours() -> list[tuple]:  # type: ignore[type-arg]
        with sqlite3.connect(tmp_path / "b" / "ledger.sqlite") as db:
            rows = db.execute("SELECT * FROM hours ORDER BY hour, contract, street").fetchall()
        return [r[:-1] for r in rows]  # the last column is when the row was written

    before = hours()
    assert main(["ledger", "rebuild", "--month", "2026-11", *where]) == 0
    assert hours() == before  # the partition's rows as its collector wrote them: no other street's devices
    capsys.readouterr()
    assert main(["month", "close", "2026-11", "--by", "A", "--now", "2026-12-05", *where]) == 2
    assert "is partition wanli's ledger" in capsys.readouterr().err
    missing = tmp_path / "no-archive"  # the ledger alone: its archive not given, and no such default directory
    assert main(["month", "status", "2026-11", *where[:-1], str(missing)]) == 2
    err = capsys.readouterr().err
    assert "is partition wanli's ledger" in err and "whole district)" not in err


def test_merged_ledgers_report_the_time_every_partition_observed(collected, tmp_path, capsys) -> None:
    """Test that when one partition stopped a sample earlier, the merged ledgers' report gives each street the observed
    time of its own partition (the time its samples were taken over) and the district the observed time of the
    partition that saw least (the intersection), as the merged replay does, not the observed time of whichever
    street's row was read last."""
    tmp, registry = collected["tmp"], str(collected["registry"])
    registry_args = ["--registry", registry, "--rules", str(collected["rules"])]
    shutil.copy(tmp / "a" / "ledger.sqlite", tmp_path / "a.sqlite")
    with sqlite3.connect(tmp_path / "a.sqlite") as db:  # partition a's last hour: one sample fewer
        last = db.execute("SELECT max(hour) FROM hours").fetchone()[0]
        db.execute("UPDATE hours SET samples = samples - 1 WHERE hour = ?", (last,))
    whole = _report_csv(capsys, tmp_path / "whole", *registry_args, "--ledger", str(tmp / "all" / "ledger.sqlite"))
    merged = _report_csv(capsys, tmp_path / "merged", *registry_args, "--ledger", str(tmp / "b" / "ledger.sqlite"),
                         str(tmp_path / "a.sqlite"))
    import csv
    import io

    def observed(text: bytes) -> dict[tuple[str, str], set[int]]:
        rows = list(csv.DictReader(io.StringIO(text.decode())))
        found: dict[tuple[str, str], set[int]] = {}
        for r in rows:
            found.setdefault((r["contract"], r["street"]), set()).add(int(r["observed_seconds"]))
        return found

    before, after = observed(whole), observed(merged)
    assert set(before) == set(after) and {s for _, s in after} == {*STREETS, "district"}
    for (contract, street), values in after.items():
        assert len(values) == 1 and len(before[contract, street]) == 1  # one observed time per street (all its KPIs)
        interval = load_rules(collected["rules"]).contract(contract).sample_interval
        missed = interval if street in PARTS["a"] or street == "district" else 0  # the one sample a missed
        assert next(iter(before[contract, street])) - next(iter(values)) == missed, (contract, street)


def test_district_observed_time_is_every_partitions(tmp_path) -> None:
    """Test that two partitions down at different minutes of the same hour leave the district both
    gaps, the same from their ledgers (report, month close), from their archives recomputed and
    from a replay: the district observed only the instants both partitions observed."""
    import gzip

    from ptmon.archive import MONITOR_TOPIC, encode_record
    from ptmon.ledger.read import ledger_results
    from ptmon.ledger.store import Ledger
    from ptmon.merge import recompute_partitions, replay_partitions
    from ptmon.partition import PARTITION_FILE, partition_of, restrict_registry
    from ptmon.registry import load_registry
    from ptmon.replay import replay
    from ptmon.rules import load_rules
    from ptmon.timebase import US_PER_S, month_bounds

    from .partition_data import PARTS, START, street_of, traffic, write_registry, write_rules

    rules = load_rules(write_rules(tmp_path / "rules"))
    registry = load_registry(write_registry(tmp_path / "registry.csv"), rules)
    records = traffic(tmp_path / "registry.csv")
    downs = {"a": (START + 3300, START + 3900), "b": (START + 4500, START + 5100)}  # 01:05–01:15, 01:25–01:35
    archives = []
    for name in ("a", "b"):
        directory = tmp_path / name
        directory.mkdir()
        part = partition_of(registry, PARTS[name])
        (directory / PARTITION_FILE).write_text(part.to_json() + "\n", encoding="utf-8")
        down, up = downs[name]
        own = [r for r in records if r[1].startswith("putuo/gw/") or street_of(r[1]) in PARTS[name]]
        own = [r for r in own if not down <= r[0] < up]  # nothing arrives while it is down
        own += [(START - 1.0, MONITOR_TOPIC, "up"), (down, MONITOR_TOPIC, "down"), (up, MONITOR_TOPIC, "up")]
        with gzip.open(directory / "ptmon-2026-11-01.jsonl.gz", "wb") as out:
            out.writelines(encode_record(*r) for r in sorted(own, key=lambda r: r[0]))
        archives.append((directory, part))

    start, end = month_bounds("2026-11")
    whole_month = (end - start) // US_PER_S
    alone = {name: replay([tmp_path / name / "ptmon-2026-11-01.jsonl.gz"], restrict_registry(registry, PARTS[name]),
                          start, end).coverage["cam"]["observed_seconds"] for name in ("a", "b")}
    assert alone["a"] == alone["b"] < whole_month  # each lost the 9 instants between its down and up
    both = alone["a"] - 9 * 60  # and the district the other's 9 too (the least of the two would lose 9 in all)

    replayed = replay_partitions(archives, registry, start, end, month="2026-11")
    with Ledger(tmp_path / "recomputed.sqlite") as recomputed:  # their ledgers merged, as report and month close read them
        recompute_partitions(archives, registry, "2026-11", recomputed)
        from_archives = ledger_results(recomputed, registry, start, end)
    for results in (replayed, from_archives):
        district = [r.observed_seconds for r in results.rows if r.street == "district"]
        assert set(district) == {both}, district
        assert results.coverage["cam"]["observed_seconds"] == results.coverage["iot"]["observed_seconds"] == both
    assert replayed.gaps == from_archives.gaps and len(replayed.gaps) == 4  # before, the two downs, after


def test_a_gateway_status_is_taken_and_counted_by_the_partition_of_its_devices(collected, tmp_path) -> None:
    """Test that every partition receives every gateway's status but only the gateway's own partition
    takes it: the other changes no gateway state and counts it as other_partition_gateway (not data
    quality), an unknown gateway counts once (in the partition of the rules' first street), and the
    merged ledgers' rejects equal the whole collector's instead of doubling."""
    from ptmon.ledger.read import ledger_results
    from ptmon.ledger.store import Ledger
    from ptmon.merge import merged_ledger_file
    from ptmon.report.quality import quality_lines
    from ptmon.timebase import month_bounds

    tmp, rules = collected["tmp"], load_rules(collected["rules"])
    full = load_registry(collected["registry"], rules)
    start, end = month_bounds("2026-11")

    def results(path: Path, registry):  # type: ignore[no-untyped-def]
        with Ledger(path, readonly=True) as ledger:
            return ledger_results(ledger, registry, start, end)

    whole = results(tmp / "all" / "ledger.sqlite", full)
    assert whole.rejects["unknown_gateway"] == 1 and whole.rejects["bad_gateway_status"] == 1
    a = results(tmp / "a" / "ledger.sqlite", restrict_registry(full, PARTS["a"]))
    b = results(tmp / "b" / "ledger.sqlite", restrict_registry(full, PARTS["b"]))
    # a (changzheng, taopu): its gateway's malformed status; gw-wanli-cam's drop and the unknown gateway are b's
    assert (a.rejects.get("bad_gateway_status"), a.rejects.get("unknown_gateway")) == (1, None)
    assert a.engine_stats["other_partition_gateway"] == 3
    # b (wanli, the rules' first street): the unknown gateway; gw-changzheng-iot's status is a's
    assert (b.rejects.get("bad_gateway_status"), b.rejects.get("unknown_gateway")) == (None, 1)
    assert b.engine_stats["other_partition_gateway"] == 1
    merged = merged_ledger_file([tmp / "a" / "ledger.sqlite", tmp / "b" / "ledger.sqlite"], rules, tmp_path / "m.sqlite")
    assert results(merged, full).rejects == whole.rejects
    assert not any(line.kind == "other_partition_gateway" for line in quality_lines(results(merged, full)))
