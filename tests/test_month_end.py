"""The month's end: a recomputation and a replay observe up to it exactly when the collector did.

The live collector fires a month's last samples when its clock passes them, on the first record
after them, which often lies in the next month's first file. So whether the month was observed to
its end is told by the first record after the end: a message, a tick or a ``down`` (the monitor
was up), or a restart's ``up`` (it had stopped before: the time to the end is a gap). Here the
live collector is the ledger of a feed of every file with no end; the recomputation from the
archive directory (``report --from-archive``, ``ledger verify``) and ``ptmon replay`` of every file
must give its observed time and KPIs.
"""

from __future__ import annotations

import gzip
import json
import zlib
from pathlib import Path

import orjson
import pytest

from ptmon.archive import MONITOR_TOPIC, encode_record
from ptmon.decode import LIMITS_TOPIC
from ptmon.ledger.read import ledger_results
from ptmon.ledger.rebuild import rebuild_ledger, recompute_month
from ptmon.ledger.store import Ledger
from ptmon.replay import replay
from ptmon.results import Results
from ptmon.sinks.archive import archive_files
from ptmon.timebase import US_PER_S, month_bounds

from .conftest import make_registry

MONTH = "2026-11"
START, END = month_bounds(MONTH)
E = END // US_PER_S  # the month's end, unix seconds
DEVICES = (("s-1", "iot", "taopu"), ("c-1", "cam", "taopu"))


@pytest.fixture(scope="module")
def registry(rules):
    return make_registry(rules, "s-1,iot,elevator,taopu", "c-1,cam,face_cam,taopu")


def heartbeats(first: float, last: float, seq: dict[str, int]) -> list[tuple[float, str, str]]:
    out = []
    t = first
    while t <= last:
        for device, contract, street in DEVICES:
            seq[device] = seq.get(device, 0) + 1
            out.append((t, f"putuo/{contract}/{street}/{device}/hb", json.dumps({"seq": seq[device], "boot": 1})))
        t += 30
    return out


def write_days(directory: Path, records: list[tuple[float, str, str]]) -> list[Path]:
    """The records as the collector's day files (Shanghai days), in order."""
    directory.mkdir()
    days = {"2026-11-30": [r for r in records if r[0] < E], "2026-12-01": [r for r in records if r[0] >= E]}
    for day, part in days.items():
        (directory / f"ptmon-{day}.jsonl.gz").write_bytes(gzip.compress(b"".join(encode_record(*r) for r in part)))
    return archive_files(directory)


def up(t: float) -> tuple[float, str, str]:
    return (t, MONITOR_TOPIC, "up")


def restart(t: float) -> list[tuple[float, str, str]]:
    """What a starting collector writes first: its limits, then its up."""
    return [(t, LIMITS_TOPIC, orjson.dumps({"device_rate": 600, "window": 60}).decode()), up(t + 0.5)]


def observed(results: Results) -> dict[tuple[str, str, str], int]:
    return {(r.contract, r.street, r.kpi): r.observed_seconds for r in results.rows}


def kpis(results: Results) -> list[tuple]:
    return [(r.contract, r.street, r.kpi, r.numerator, r.denominator, r.observed_seconds) for r in results.rows]


def live(paths: list[Path], registry, tmp_path: Path) -> Results:
    """The month as the live collector wrote its ledger: every record, no end."""
    with Ledger(tmp_path / "live.sqlite") as ledger:
        rebuild_ledger(paths, registry, ledger)
        return ledger_results(ledger, registry, START, END)


def recomputed(directory: Path, registry, tmp_path: Path) -> Results:
    with Ledger(tmp_path / "recomputed.sqlite") as ledger:
        recompute_month([directory], registry, MONTH, ledger)
        return ledger_results(ledger, registry, START, END)


LATER = {"s-1": 1000, "c-1": 1000}  # the devices' seq after the end
SCENARIOS = {
    # up all along: the last November record 70 s before the end, the next one 20 s after it
    "up through the end": [up(E - 7200), *heartbeats(E - 7200, E - 70, {}), *heartbeats(E + 20, E + 600, dict(LATER))],
    # crashed an hour before the end, restarted an hour after it
    "crash, restart after the end": [up(E - 7200), *heartbeats(E - 7200, E - 3670, {}), *restart(E + 3600),
                                     *heartbeats(E + 3601, E + 4200, dict(LATER))],
    # a clean stop before the end, a start after it
    "stop, start after the end": [up(E - 7200), *heartbeats(E - 7200, E - 3670, {}), (E - 3660, MONITOR_TOPIC, "down"),
                                  *restart(E + 3600), *heartbeats(E + 3601, E + 4200, dict(LATER))],
    # up all along, the first record after the end a tick of its clock
    "a tick after the end": [up(E - 7200), *heartbeats(E - 7200, E - 70, {}), (E + 5, "$ptmon/tick", ""),
                             *heartbeats(E + 20, E + 600, dict(LATER))],
}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_the_months_end_is_observed_as_the_collector_observed_it(registry, tmp_path: Path, scenario: str) -> None:
    records = SCENARIOS[scenario]
    paths = write_days(tmp_path / "archive", records)
    truth = live(paths, registry, tmp_path)
    up_to_end = scenario in ("up through the end", "a tick after the end")
    last_november = max(r[0] for r in records if r[0] < E)
    expected_seconds = (E - (E - 7200)) if up_to_end else (int(last_november) // 60 * 60 + 60 - (E - 7200))
    assert set(observed(truth).values()) == {expected_seconds}  # what the live collector counted
    assert kpis(recomputed(tmp_path / "archive", registry, tmp_path)) == kpis(truth)
    assert kpis(replay(paths, registry, START, END)) == kpis(truth)


def test_a_recomputation_lists_the_next_days_file_it_read(registry, tmp_path: Path) -> None:
    from ptmon.snapshots import month_sources

    write_days(tmp_path / "archive", SCENARIOS["up through the end"])
    sources = month_sources([tmp_path / "archive"], MONTH)
    assert [p.name for p in sources.files] == ["ptmon-2026-11-30.jsonl.gz"]
    assert [(role, p.name) for role, p in sources.roles()] == [("archive", "ptmon-2026-11-30.jsonl.gz"),
                                                              ("following", "ptmon-2026-12-01.jsonl.gz")]
    assert "the head of 1 file(s) after it" in sources.describe()
    (tmp_path / "archive" / "ptmon-2026-11-30.1.jsonl.gz").write_bytes(gzip.compress(b""))  # a restart's second part
    (tmp_path / "archive" / "ptmon-2026-11-30.10.jsonl.gz").write_bytes(gzip.compress(b""))
    assert [p.name for p in month_sources([tmp_path / "archive"], MONTH).files] == [
        "ptmon-2026-11-30.jsonl.gz", "ptmon-2026-11-30.1.jsonl.gz", "ptmon-2026-11-30.10.jsonl.gz"]  # as written


def synced_gzip(records: list[tuple[float, str, str]], batch: int = 50) -> bytes:
    """A day file as the collector writes it: one gzip member, each batch ended by a sync flush."""
    z = zlib.compressobj(3, zlib.DEFLATED, -zlib.MAX_WBITS)
    out = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    for i in range(0, len(records), batch):
        out += z.compress(b"".join(encode_record(*r) for r in records[i : i + batch])) + z.flush(zlib.Z_SYNC_FLUSH)
    return out


def test_a_damage_in_the_next_days_file_after_its_first_record_does_not_stop_the_month(registry, tmp_path: Path) -> None:
    """Only the next day's first record is needed: a damage further in that file (found when December is
    read) neither refuses November's recomputation nor its replay, which give the live ledger's figures."""
    records = SCENARIOS["up through the end"]
    truth = live(write_days(tmp_path / "whole", records), registry, tmp_path)
    paths = write_days(tmp_path / "archive", records)
    december = synced_gzip(heartbeats(E + 20, E + 20_000, dict(LATER)))
    middle = len(december) // 2
    paths[1].write_bytes(december[:middle] + bytes(range(64)) + december[middle + 64 :])  # invalid deflate data
    assert kpis(recomputed(tmp_path / "archive", registry, tmp_path)) == kpis(truth)
    assert kpis(replay(paths, registry, START, END)) == kpis(truth)


def test_a_bad_line_in_the_next_month_is_not_the_months(registry, tmp_path: Path) -> None:
    """A line that is no record, in the next day's file after its first record, is no reject of the month."""
    paths = write_days(tmp_path / "archive", SCENARIOS["up through the end"])
    december = heartbeats(E + 20, E + 600, dict(LATER))
    paths[1].write_bytes(gzip.compress(b"".join(encode_record(*r) for r in december[:4]) + b'{"t": broken\n'
                                       + b"".join(encode_record(*r) for r in december[4:])))
    assert "bad_archive_line" not in replay(paths, registry, START, END).rejects


def test_the_first_record_after_the_end_may_lie_days_later(registry, tmp_path: Path) -> None:
    """No file of December 1 (the collector's clock jumped a day ahead, or that file is gone): the first
    record after the end is in a later day's file, and it tells, as it told the live collector."""
    records = [up(E - 7200), *heartbeats(E - 7200, E - 70, {}), *heartbeats(E + 86_400 + 20, E + 86_400 + 600, dict(LATER))]
    directory = tmp_path / "archive"
    directory.mkdir()
    for day, part in (("2026-11-30", [r for r in records if r[0] < E]), ("2026-12-02", [r for r in records if r[0] >= E])):
        (directory / f"ptmon-{day}.jsonl.gz").write_bytes(gzip.compress(b"".join(encode_record(*r) for r in part)))
    paths = archive_files(directory)
    truth = live(paths, registry, tmp_path)
    assert set(observed(truth).values()) == {7200}
    assert kpis(recomputed(directory, registry, tmp_path)) == kpis(truth)
    assert kpis(replay(paths, registry, START, END)) == kpis(truth)


def test_an_unknown_control_record_after_the_end_tells_nothing(registry, tmp_path: Path) -> None:
    """A control record the engine does not know (a newer collector's, a monitor record that is neither
    up nor down) is passed by live; the record after it tells, here a restart's up: a gap to the end."""
    records = [up(E - 7200), *heartbeats(E - 7200, E - 3670, {}), (E + 5, "$ptmon/future", "{}"),
               (E + 6, MONITOR_TOPIC, "paused"), *restart(E + 3600), *heartbeats(E + 3601, E + 4200, dict(LATER))]
    paths = write_days(tmp_path / "archive", records)
    truth = live(paths, registry, tmp_path)
    assert max(observed(truth).values()) < 7200
    assert kpis(recomputed(tmp_path / "archive", registry, tmp_path)) == kpis(truth)
    assert kpis(replay(paths, registry, START, END)) == kpis(truth)


def test_a_recomputation_lists_only_the_later_files_it_read(registry, tmp_path: Path) -> None:
    """The first record of December 1's first file tells; a later part of that day (the collector restarted
    in the afternoon) is never opened, so the report's inputs do not list it as read (次月首日存档（只读到首条记录）)
    with a SHA-256 that changes while December is written."""
    from ptmon.report.build import _recompute

    paths = write_days(tmp_path / "archive", SCENARIOS["up through the end"])
    part = tmp_path / "archive" / "ptmon-2026-12-01.1.jsonl.gz"
    part.write_bytes(gzip.compress(b"".join(encode_record(*r) for r in [*restart(E + 43_200),
                                                                        *heartbeats(E + 43_201, E + 43_300, dict(LATER))])))
    with Ledger(tmp_path / "report.sqlite") as ledger:
        inputs = _recompute(MONTH, registry, ledger, [str(tmp_path / "archive")], lambda _: None, None)
        assert kpis(ledger_results(ledger, registry, START, END)) == kpis(live(paths, registry, tmp_path))
    assert [(i.role, Path(i.path).name) for i in inputs] == [("archive", "ptmon-2026-11-30.jsonl.gz"),
                                                            ("following", "ptmon-2026-12-01.jsonl.gz")]


def test_the_later_file_is_fingerprinted_by_the_record_that_told_while_it_grows(registry, tmp_path: Path) -> None:
    """December 1's file grows while its collector writes it: a report recomputed from the archive fingerprints
    it by the one record it read of it, so two reviewers recomputing November get the same inputs' SHA-256."""
    import hashlib

    from ptmon.report.build import _recompute

    records = SCENARIOS["up through the end"]
    write_days(tmp_path / "archive", records)
    december = tmp_path / "archive" / "ptmon-2026-12-01.jsonl.gz"
    fingerprints = []
    for later in (600, 3600):  # December's file then, and an hour of records on
        december.write_bytes(gzip.compress(b"".join(encode_record(*r) for r in heartbeats(E + 20, E + later, dict(LATER)))))
        with Ledger(tmp_path / f"report-{later}.sqlite") as ledger:
            inputs = _recompute(MONTH, registry, ledger, [str(tmp_path / "archive")], lambda _: None, None)
        fingerprints.append([(i.role, Path(i.path).name, i.sha256) for i in inputs])
    assert fingerprints[0] == fingerprints[1]
    t, topic, payload = heartbeats(E + 20, E + 20, dict(LATER))[0]  # December's first record, as read (t a float)
    assert fingerprints[0][-1] == ("following", december.name,
                                   hashlib.sha256(encode_record(float(t), topic, payload)).hexdigest())
