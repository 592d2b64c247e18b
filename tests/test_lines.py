"""Archive lines read a block at a time (lines.py) give exactly what reading line by line gives."""

from __future__ import annotations

import gzip
import io
import logging
import random
from pathlib import Path

import orjson
import pytest

from ptmon import archive as archive_module
from ptmon import replay as replay_module
from ptmon.archive import ArchiveReader, encode_record, retained_record
from ptmon.archive_damage import ArchiveDamaged
from ptmon.decode import LIMITS_TOPIC
from ptmon.lines import ArchiveLines, scan
from ptmon.payloads import parse_payloads
from ptmon.replay import Replayer, freeze_startup_heap, replay
from ptmon.simulators.synthetic import Scenario, iter_records

from .conftest import T0, make_registry

pytestmark = pytest.mark.usefixtures("scanner")  # each test with the compiled scanner and with numpy

US = 1_000_000
HOUR = 3600
TOPIC = "putuo/iot/taopu/s-1/hb"


def _line(number: str, topic: str = TOPIC, payload: str = '{"seq":1}') -> bytes:
    return b'{"t":' + number.encode() + b',"topic":' + orjson.dumps(topic) + b',"payload":' + orjson.dumps(payload) + b"}\n"


def _numbers(rng: random.Random) -> list[str]:
    numbers = [orjson.dumps(round(T0 + rng.random() * 40 * 86_400, rng.randrange(0, 7))).decode() for _ in range(3000)]
    numbers += [repr(rng.random() * 10 ** rng.randrange(-3, 17)) for _ in range(3000)]
    numbers += [str(rng.randrange(10 ** rng.randrange(1, 18))) for _ in range(1000)]
    numbers += ["0", "0.5", "1.", "01", "-1", "1e3", "1.5E2", ".5", "00.1", "9007199254740992", "9007199254740993",
                "900719925474099.3", "12345678901234567", "123456789012345678", "1.2.3", "1762012800.000001"]
    return numbers


def test_receive_times_are_read_as_orjson_reads_them() -> None:
    """Test that every line taken in bulk has orjson's float for its number, and that the collector's
    own numbers (an orjson float of up to 6 decimals) are taken in bulk."""
    numbers = _numbers(random.Random(7))
    block = scan(b"".join(_line(n) for n in numbers))
    plain = block.plain.tolist()
    assert [float(orjson.loads(_line(n))["t"]) for n, p in zip(numbers, plain) if p] == block.lines.t.tolist()
    assert all(plain[:3000]), "the collector's receive times are plain"
    assert not any(p for n, p in zip(numbers, plain) if n in ("1.", "01", "-1", "1e3", ".5", "00.1", "1.2.3", "9007199254740993"))


@pytest.mark.parametrize("line", [
    b'{"t":1,"topic":"a","payload":"b"} \n', b'{"t":1, "topic":"a","payload":"b"}\n', b'{"topic":"a","t":1,"payload":"b"}\n',
    b'{"t":1,"topic":"a","payload":"b","x":1}\n', b'{"t":1,"topic":"a\\"","payload":"b"}\n',
    b'{"t":1,"topic":"a","payload":"b\\\\"}\n', b'{"t":1,"topic":"a","payload":"b\\n"}\n',
    b'{"t":1,"topic":"\xc3\xa9","payload":"b"}\n', b'{"t":1,"topic":"$ptmon/tick","payload":""}\n',
    b'{"t":1,"topic":"a","payload":"b"}\r\n', b'{"t":1,"topic":"a","payload":"\\u0062"}\n',
    b'{"t":1,"topic":"a","payload":"b\x01"}\n', b'{"t":1,"topic":"a\x7f","payload":"b"}\n',
    b'{"t":253399593600,"topic":"a","payload":"b"}\n',  # after the months ptmon serves
])
def test_unusual_lines_are_left_to_the_line_by_line_path(line: bytes) -> None:
    block = scan(_line("5") + line + _line("6"))
    assert block.plain.tolist() == [True, False, True]


def test_a_line_is_plain_only_with_printable_ascii_every_byte_tried() -> None:
    """Test that a line holding any byte below 0x20 (the newline ending it aside) or from 0x7F, in its
    topic or its payload, is left to the per-line path, and one holding any byte from 0x20 to 0x7E
    (quote and backslash aside) is plain."""
    for byte in set(range(256)) - {ord('"'), ord("\\"), ord("\n")}:
        char = bytes([byte])
        block = scan(_line("5") + b'{"t":1,"topic":"a' + char + b'","payload":"b' + char + b'"}\n' + _line("6"))
        assert block.plain.tolist() == [True, 0x20 <= byte < 0x7F, True], byte


@pytest.mark.parametrize("end", [b"\n", b""])
def test_a_line_whose_quotes_end_before_the_payload_key_would_ends_a_block_safely(end: bytes) -> None:
    """Test that a block's last line with its ten quotes but too short for the payload key after
    the topic is left to the per-line path (it once read past the block's end and raised)."""
    block = scan(_line("5") + b'{"t":1,"topic":"abcdefghijklmnopqrstu",""""}' + end)
    assert block.plain.tolist() == [True, False]


def test_a_block_cut_just_after_a_backslash_is_scanned_not_raised() -> None:
    """Test that a block ending right after a backslash (a file cut by a crash, or read while the collector
    writes it, just after the escape of a quote in a payload) leaves that last line to the per-line path:
    the scan once looked for the quote after it past the block's end and raised IndexError."""
    block = scan(_line("5") + b'{"t":6,"topic":"putuo/iot/taopu/s-1/hb","payload":"{\\')
    assert block.plain.tolist() == [True, False]


def test_escaped_quotes_in_a_payload_are_taken_and_unescaped() -> None:
    payload = '{"seq":5,"boot":"ab"}'
    block = scan(_line("1762012800.5", payload=payload))
    assert block.plain.tolist() == [True]
    assert block.lines.records() == [(1762012800.5, TOPIC, payload)]
    assert block.lines.payload_chars.tolist() == [len(payload)]


def _loads(payload: str) -> object:
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None


def test_payloads_parsed_where_they_lie_equal_orjson() -> None:
    """Test that payloads parsed in the block, between the other fields' digits and dashes, give
    orjson's values, and the ones left to orjson are those that are no flat integer object."""
    rng = random.Random(11)
    payloads = []
    for i in range(3000):
        doc = {k: rng.randrange(-10**rng.randrange(1, 19), 10**rng.randrange(1, 19))
               for k in rng.sample(["ts", "seq", "boot", "reads", "read_ok"], 3)}
        payloads.append(orjson.dumps(doc).decode() if i % 7
                        else rng.choice(['{"a":1.5}', '{"a":"-12"}', "7", '{"a": 01}', "{}", "-"]))
    data = b"".join(_line(f"{T0 + i}.25", f"putuo/iot/taopu/{i}-{i}9/hb", p) for i, p in enumerate(payloads))
    lines = scan(data).lines
    assert len(lines) == len(payloads)
    for rows in ((0, len(lines)), (5, 2000)):
        part = lines.rows(*rows)
        parsed = part.parse_payloads()
        taken = {row: dict(zip(s.keys, s.values[i].tolist())) for s in parsed.shapes for i, row in enumerate(s.rows.tolist())}
        docs = [_loads(p) for p in payloads[rows[0] : rows[1]]]
        assert taken == {i: d for i, d in enumerate(docs) if i not in set(parsed.slow.tolist())}
        joined = parse_payloads(payloads[rows[0] : rows[1]])  # as the decoder parses a batch of records
        assert joined is not None and parsed.slow.tolist() == joined.slow.tolist() and len(taken) > 500
        assert parsed.size.tolist() == [len(p) for p in payloads[rows[0] : rows[1]]]


def _weird_archive(rng: random.Random) -> list[bytes]:
    lines = []
    for i in range(30_000):
        t = rng.choice([T0 + rng.random() * 86_400, round(T0 + rng.random() * 86_400, 6), float(rng.randrange(1, 2**34))])
        topic = rng.choice([f"putuo/iot/taopu/d{i}/hb", "$ptmon/tick", "$ptmon/retained", "putuo/é/x", "a\\b", 'q"x'])
        payload = rng.choice([f'{{"seq":{i},"ts":1}}', '{"a":"x\\y"}', "online", '"q"', "é", "\n", '{"k":"\\"'])
        lines.append(encode_record(t, topic, payload))
    for bad in BAD_LINES:
        lines.insert(rng.randrange(len(lines)), bad)
    return lines


BAD_LINES = (b"\n", b"   \n", b"garbage\n", b'{"t":1.,"topic":"a","payload":"b"}\n', b'{"t":"1","topic":"a","payload":"b"}\n',
             b'{"t":0,"topic":"a","payload":"\xff"}\n', b'{"t":0,"topic":"a"}\n')


def _read_both(paths: list[Path], caplog: pytest.LogCaptureFixture) -> None:
    caplog.clear()
    one_by_one = ArchiveReader(paths)
    expected = list(one_by_one)
    logged = [r.getMessage() for r in caplog.records]
    caplog.clear()
    in_blocks = ArchiveReader(paths)
    got = [r for item in in_blocks.blocks() for r in (item.records() if isinstance(item, ArchiveLines) else [item])]
    assert got == expected
    assert [type(r[0]) for r in got] == [float] * len(got)
    assert ((in_blocks.records, in_blocks.bad_lines, in_blocks.truncated)
            == (one_by_one.records, one_by_one.bad_lines, one_by_one.truncated))
    assert [r.getMessage() for r in caplog.records] == logged
    caplog.clear()
    ahead = ArchiveReader(paths)  # read ahead in a forked process
    assert [r for item in ahead.blocks(lambda lines: lines.parse_payloads(), in_process=True)
            for r in (item.records() if isinstance(item, ArchiveLines) else [item])] == expected
    assert (ahead.records, ahead.bad_lines, ahead.truncated) == (one_by_one.records, one_by_one.bad_lines, one_by_one.truncated)
    assert [r.getMessage() for r in caplog.records] == logged


def test_blocks_hold_the_records_of_reading_line_by_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    """Test that blocks (small here: many per file, lines cut across them) give the records, counts,
    warnings and line numbers of the per-line reader: gzip, plain, cut short, a collector's day files."""
    monkeypatch.setattr(archive_module, "BLOCK_BYTES", 50_000)
    caplog.set_level(logging.WARNING)
    lines = _weird_archive(random.Random(3))
    whole = tmp_path / "whole.jsonl.gz"
    whole.write_bytes(gzip.compress(b"".join(lines) + b'{"t":5,"topic":"last","payload":"no newline"}'))
    _read_both([whole], caplog)
    cut = tmp_path / "cut.jsonl.gz"  # a crash's cut: whole records, then part of one
    data = gzip.compress(b"".join(line for line in lines[:8000] if line not in BAD_LINES[2:]))
    cut.write_bytes(data[: len(data) * 2 // 3])
    _read_both([cut], caplog)
    garbled = tmp_path / "garbled.jsonl.gz"  # cut, with lines that are no records before its end: damage
    data = gzip.compress(b"".join(lines[:8000]))
    garbled.write_bytes(data[: len(data) * 2 // 3])
    refusals = []
    for blocks in (False, True):
        with pytest.raises(ArchiveDamaged) as refused:
            reader = ArchiveReader([garbled])
            list(reader.blocks() if blocks else reader)
        refusals.append(str(refused.value))
    assert refusals[0] == refusals[1] and "its first line that is no archive record is line" in refusals[0]
    flat = tmp_path / "flat.jsonl"
    flat.write_bytes(b"".join(lines[:5000]))
    _read_both([flat], caplog)
    days = tmp_path / "collector"
    days.mkdir()
    for name, part in (("ptmon-2026-11-01.jsonl.gz", lines[:9000]), ("ptmon-2026-11-01.1.jsonl.gz", lines[9000:20_000]),
                       ("ptmon-2026-11-02.jsonl.gz", lines[20_000:])):
        (days / name).write_bytes(gzip.compress(b"".join(part)))
    _read_both(sorted(days.iterdir()), caplog)


@pytest.fixture(scope="module")
def registry(rules):
    rows = [f"s-{street}-{t}-{n},iot,{t},{street}"
            for street in ("changzheng", "taopu") for t in ("elevator", "noise") for n in range(3)]
    rows += [f"c-{street}-{t},cam,{t},{street}" for street in ("changzheng", "taopu") for t in ("face_cam", "plate_cam")]
    return make_registry(rules, *rows)


@pytest.mark.parametrize("t", ["17934660116051", "1e20", "253399593600", "-28801"])
def test_a_receive_time_outside_the_served_months_is_a_bad_line_not_a_crash(registry, tmp_path: Path, t: str,
                                                                             caplog: pytest.LogCaptureFixture) -> None:
    """Test that a line whose receive time the calendar cannot hold (a damaged archive: year 570,000, 1e20 s, the
    end of 9999-11, before 1970-01 in Shanghai) is skipped and counted as a bad line, read in blocks or line by
    line: a replay crashed on it with OverflowError."""
    path = tmp_path / "a.jsonl.gz"
    path.write_bytes(gzip.compress(_line(f"{T0 + 11.5}") + _line(t) + _line(f"{T0 + 12.5}")))
    for in_blocks in (False, True):
        reader = ArchiveReader([path])
        got = [r for item in reader.blocks() for r in (item.records() if isinstance(item, ArchiveLines) else [item])
               ] if in_blocks else list(reader)
        assert [r[0] for r in got] == [T0 + 11.5, T0 + 12.5] and reader.bad_lines == 1
    assert "its receive time is outside the months ptmon serves (1970-01 to 9999-11)" in caplog.text
    results = replay([path], registry, T0 * US, (T0 + 86_400) * US)
    assert results.rejects["bad_archive_line"] == 1


def _traffic(registry) -> list[tuple[float, str, str]]:
    """Across a month's start: control records, a retained message, bad and unknown messages, a
    flood over the rate limit, a clock stepped back."""
    records = list(iter_records(registry, registry.rules, (T0 - 3 * HOUR) * US, (T0 + 4 * HOUR) * US,
                                Scenario(seed=4, jitter=0.3)))
    rng = random.Random(9)
    inserts = [
        (T0 - 3 * HOUR, "$ptmon/monitor", "up"),
        (T0 - 2 * HOUR, LIMITS_TOPIC, orjson.dumps({"device_rate": 3, "window": 60}).decode()),
        retained_record(T0 + 40, "putuo/iot/taopu/s-taopu-noise-0/hb", '{"seq":1}'),
        (T0 + 10, "putuo/iot/taopu/nobody/hb", '{"seq":1}'),
        (T0 + 20, "putuo/iot/taopu/s-taopu-noise-1/hb", "{not json"),
        (T0 + 30, "$ptmon/tick", ""),
        (T0 + HOUR, "putuo/iot/taopu/s-taopu-noise-1/hb", '{"seq":"x"}'),
    ]
    records += [(T0 + 2 * HOUR + k * 0.01, "putuo/iot/taopu/s-taopu-noise-2/hb", f'{{"seq":{k}}}') for k in range(10)]
    records.sort(key=lambda r: r[0])
    for record in inserts:
        records.insert(next(i for i, r in enumerate(records) if r[0] >= record[0]), record)
    step = next(i for i, r in enumerate(records) if r[0] >= T0 + 3 * HOUR)
    records[step:step] = [(T0 + 2.5 * HOUR + rng.random(), "putuo/iot/taopu/s-taopu-noise-0/hb", '{"seq":999}')]
    return records


def _csv(results) -> str:
    out = io.StringIO()
    results.write_csv(out)
    return out.getvalue()


@pytest.mark.parametrize("end_hours", [4, 3.5])
def test_replay_in_blocks_equals_replay_record_by_record(registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         end_hours: float) -> None:
    """Test that a replay fed blocks of lines (small blocks and batches, so batches span blocks and
    months) gives the results and counts of one fed the same records one by one."""
    monkeypatch.setattr(archive_module, "BLOCK_BYTES", 20_000)
    monkeypatch.setattr(replay_module, "BATCH_SIZE", 300)
    path = tmp_path / "traffic.jsonl.gz"
    path.write_bytes(gzip.compress(b"".join(encode_record(*r) for r in _traffic(registry))))
    start, end = T0 * US, int((T0 + end_hours * HOUR) * US)
    in_blocks = replay([str(path)], registry, start, end)
    one_by_one = Replayer(registry, start, end)
    freeze_startup_heap()
    one_by_one.feed(list(ArchiveReader([path])))
    expected = one_by_one.results()
    assert _csv(in_blocks) == _csv(expected)
    assert in_blocks.rejects == expected.rejects and in_blocks.rejects["rate_limited"] and in_blocks.rejects["retained"]
    assert in_blocks.engine_stats == expected.engine_stats


def test_a_replay_hands_freed_memory_back_every_few_blocks(registry, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Test that replay() gives the kernel back the heap's free pages every TRIM_EVERY_BLOCKS blocks
    of lines (what keeps a long replay's RSS near the memory in use; bench/replay_month.py prints
    it), with the same results, and that records fed one by one (the live collector's) do not."""
    monkeypatch.setattr(archive_module, "BLOCK_BYTES", 20_000)
    monkeypatch.setattr(replay_module, "TRIM_EVERY_BLOCKS", 2)
    path = tmp_path / "traffic.jsonl.gz"
    path.write_bytes(gzip.compress(b"".join(encode_record(*r) for r in _traffic(registry))))
    start, end = T0 * US, (T0 + 4 * HOUR) * US
    untrimmed = _csv(replay([str(path)], registry, start, end))
    trims: list[int] = []
    monkeypatch.setattr(replay_module, "hand_back_freed_memory", lambda: trims.append(1))
    assert _csv(replay([str(path)], registry, start, end)) == untrimmed
    blocks = sum(isinstance(item, ArchiveLines) for item in ArchiveReader([path]).blocks())
    assert blocks >= 4 and blocks // 2 - 1 <= len(trims) <= blocks // 2
    trims.clear()
    fed = Replayer(registry, start, end)
    fed.feed(list(ArchiveReader([path])))
    assert not trims


def test_batches_are_cut_by_payload_characters_at_the_same_records_either_way(registry, tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Test that a batch is also cut once its payloads reach BATCH_CHARS (what bounds a replay's
    memory when an archive holds a flood of huge payloads), at the same records whether fed blocks
    of lines or records one by one, with the same results."""
    monkeypatch.setattr(archive_module, "BLOCK_BYTES", 20_000)
    monkeypatch.setattr(replay_module, "BATCH_CHARS", 4_000)
    records = _traffic(registry)
    path = tmp_path / "traffic.jsonl.gz"
    path.write_bytes(gzip.compress(b"".join(encode_record(*r) for r in records)))
    start, end = T0 * US, (T0 + 4 * HOUR) * US
    in_blocks, one_by_one = Replayer(registry, start, end), Replayer(registry, start, end)
    in_blocks.read_ahead = True
    freeze_startup_heap()
    in_blocks.feed(ArchiveReader([path]))
    one_by_one.feed(list(ArchiveReader([path])))
    chars = sum(len(r[2]) for r in records if not r[1].startswith("$ptmon/"))
    assert in_blocks._batches == one_by_one._batches > chars // 4_000 // 2 > len(records) // replay_module.BATCH_SIZE
    assert _csv(in_blocks.results()) == _csv(one_by_one.results())
