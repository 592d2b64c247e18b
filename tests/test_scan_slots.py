"""Pieces go to a replay's scanning workers, and their blocks come back, through shared memory
(scan_slots.py); a piece or block too large for a slot goes through the pipe. Either way the
blocks are the ones scanned in line, and a slot is not written again before its block is taken."""

from __future__ import annotations

import gzip
import random
from pathlib import Path

import numpy as np
import pytest

from ptmon import archive as archive_module
from ptmon.archive import ArchiveReader, encode_record
from ptmon.lines import ArchiveLines, scan
from ptmon.scan_slots import Packed, Slots
from ptmon.simulators.synthetic import Scenario, iter_records
from ptmon.topics import TopicMap

from .conftest import T0, make_registry
from .test_lines import BAD_LINES, _weird_archive

US = 1_000_000


@pytest.fixture(scope="module")
def registry(rules):
    return make_registry(rules, *[f"s-taopu-{t}-{n},iot,{t},taopu" for t in ("elevator", "noise") for n in range(150)])


def _archive(registry, path: Path, kind: str) -> Path:
    """Heartbeats of the registry's devices with the odd lines of test_lines.py among them; or short
    lines (``{}`` payloads), whose scanned arrays take more bytes than the lines themselves."""
    if kind == "short":
        lines = [encode_record(T0 + i, f"putuo/iot/taopu/s-taopu-noise-{i % 150}/hb", "{}") for i in range(250_000)]
    else:
        records = iter_records(registry, registry.rules, T0 * US, (T0 + 12 * 3600) * US, Scenario(seed=2, jitter=0.2))
        lines = [encode_record(*r) for r in records]
        rng = random.Random(5)
        for odd in _weird_archive(rng)[:3000] + list(BAD_LINES):
            lines.insert(rng.randrange(len(lines)), odd)
    path.write_bytes(gzip.compress(b"".join(lines)))
    return path


def _items(path: Path, registry, *, in_process: bool) -> list:
    topics = TopicMap(registry)
    reader = ArchiveReader([path])
    return list(reader.blocks(lambda lines: lines.prepare(topics), in_process=in_process))


def _assert_same_lines(got: ArchiveLines, expected: ArchiveLines) -> None:
    assert got.buffer == expected.buffer
    for name in ("t", "topic_start", "topic_end", "payload_start", "payload_end", "payload_chars", "device"):
        assert np.array_equal(getattr(got, name), getattr(expected, name)), name
    a, b = got.parsed, expected.parsed
    assert a is not None and b is not None
    assert np.array_equal(a.slow, b.slow) and np.array_equal(a.size, b.size)
    assert [(s.keys, s.rows.tolist(), s.values.tolist()) for s in a.shapes] == \
        [(s.keys, s.rows.tolist(), s.values.tolist()) for s in b.shapes]


@pytest.mark.parametrize("kind, slot_bytes, ways", [("heartbeats", 1 << 24, {"slot"}),
                                                     ("heartbeats", 200_000, {"pipe", "pipe back"}),
                                                     ("short", 1_650_000, {"slot", "pipe back"})],
                         ids=["slots", "pieces_too_large", "blocks_too_large"])
def test_blocks_through_slots_or_the_pipe_are_the_blocks_scanned_in_line(registry, tmp_path: Path, kind: str,
                                                                         slot_bytes: int, ways: set[str],
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Test that a replay's read-ahead blocks (topic rows and payloads parsed by the workers) equal the
    blocks scanned in line, whether pieces and blocks went through the shared slots or, too large for
    a slot, through the pipe; many small blocks, so every slot is written again many times."""
    monkeypatch.setattr(archive_module, "BLOCK_BYTES", 40_000)
    monkeypatch.setattr(archive_module, "SLOT_BYTES", slot_bytes)
    taken: list[str] = []
    put, unpack = Slots.put, Slots.unpack
    monkeypatch.setattr(Slots, "put", lambda self, data: (r := put(self, data), taken.append(
        "pipe" if isinstance(r, bytes) else "slot"))[0])
    monkeypatch.setattr(Slots, "unpack", lambda self, sent: (taken.append(
        "slot" if isinstance(sent, Packed) else "pipe back"), unpack(self, sent))[1])
    path = _archive(registry, tmp_path / "a.jsonl.gz", kind)
    expected = _items(path, registry, in_process=False)
    got = _items(path, registry, in_process=True)
    assert set(taken) == ways, taken
    assert sum(isinstance(item, ArchiveLines) for item in expected) > 10  # more blocks than slots: each used again
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        if isinstance(b, ArchiveLines):
            assert isinstance(a, ArchiveLines)
            _assert_same_lines(a, b)
        else:
            assert a == b


def test_a_block_packed_in_a_slot_comes_back_equal_and_writable() -> None:
    """Test that a scanned block written into a slot and taken back is equal to it, owns its arrays
    (the slot written over afterwards changes nothing), and that one too large for the slot is
    handed back as it is, for the pipe."""
    data = b"".join(encode_record(T0 + i, f"putuo/iot/taopu/d{i}/hb", f'{{"seq":{i},"reads":{i * 3}}}')
                    for i in range(500))
    block = scan(data)
    block.lines.parse_payloads()
    slots = Slots(2, 1 << 20)
    at, length = slots.put(data)  # type: ignore[misc]
    assert slots.take(at, length) == data
    packed = slots.pack(block.without_buffer(), at)
    assert isinstance(packed, Packed) and len(packed.pickled) < 4096
    back = slots.unpack(packed)
    slots.memory[:] = bytes(len(slots.memory))  # the slot written over
    assert np.array_equal(back.starts, block.starts) and np.array_equal(back.lines.t, block.lines.t)
    assert np.array_equal(back.lines.payload_start, block.lines.payload_start)
    back.lines.t[0] = -1.0  # its own, writable memory
    assert Slots(1, 1000).pack(block.without_buffer(), 0) is not None
    small = Slots(1, 1000)
    assert not isinstance(small.pack(block.without_buffer(), 0), Packed)
    assert small.put(data) is data
