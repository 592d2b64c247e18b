"""The archive's inflater (zlib-ng) reads every gzip file exactly as the standard library's zlib does:
the same bytes, and the same cut (where and why), on whole, multi-member, cut and damaged files."""

from __future__ import annotations

import gzip
import io
import random
import zlib
from pathlib import Path

import pytest

from ptmon import archive as archive_module
from ptmon.archive import ArchiveReader, _Decompressed, _GzipUntilCut, encode_record

T0 = 1_793_441_600.0


def _archive_bytes(rng: random.Random, members: int) -> bytes:
    """A collector-like file: several gzip members (one per start), each of sync-flushed batches."""
    out = b""
    for m in range(members):
        z = zlib.compressobj(3, zlib.DEFLATED, 31)
        for batch in range(rng.randrange(1, 6)):
            lines = b"".join(encode_record(T0 + rng.random() * 86_400, f"putuo/iot/taopu/d{m}-{batch}-{i}/hb",
                                           f'{{"seq":{i},"boot":{rng.randrange(10**9)}}}') for i in range(rng.randrange(1, 900)))
            out += z.compress(lines) + z.flush(zlib.Z_SYNC_FLUSH)
        out += z.flush()
    return out


def _damaged(rng: random.Random) -> list[bytes]:
    """Whole files, files cut anywhere, bytes flipped (header, data, trailer), garbage after a member."""
    files = []
    for _ in range(40):
        data = _archive_bytes(rng, rng.randrange(1, 4))
        files.append(data)
        files.append(data[: rng.randrange(1, len(data))])
        flipped = bytearray(data)
        for _ in range(rng.randrange(1, 4)):
            at = rng.choice([rng.randrange(len(data)), rng.randrange(10), len(data) - 1 - rng.randrange(8)])  # data, head, tail
            flipped[at] ^= 1 << rng.randrange(8)
        files.append(bytes(flipped))
        files.append(data + rng.choice([b"\0" * rng.randrange(1, 30), b"garbage", b"\x1f\x8b", data[:20]]))
    return files


def _read(data: bytes) -> tuple[bytes, str | None]:
    stream = _GzipUntilCut(io.BytesIO(data))
    read = io.BufferedReader(stream, buffer_size=1 << 12).read()
    return read, None if stream.cut is None else f"{type(stream.cut).__name__.rsplit('.')[-1]}: {stream.cut}"


def test_zlib_ng_reads_every_file_as_zlib_does(monkeypatch: pytest.MonkeyPatch) -> None:
    """Test that zlib-ng and the standard library's zlib give the same bytes and the same cut (type
    and message) for whole, cut and damaged gzip files, and that the test's damage does cut some."""
    files = _damaged(random.Random(21))
    with_ng = [_read(data) for data in files]
    monkeypatch.setattr(archive_module, "_INFLATE", zlib)
    with_zlib = [_read(data) for data in files]
    assert with_ng == with_zlib
    kinds = {cut for _, cut in with_zlib}
    assert None in kinds and len(kinds) >= 4, kinds  # whole files and several kinds of damage


def test_blocks_and_reader_are_the_same_with_either_inflater(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    """Test that the replay's blocks and the line-by-line reader give the same records, counts and
    warnings with zlib-ng as with zlib, on a file damaged mid-way."""
    monkeypatch.setattr(archive_module, "BLOCK_BYTES", 30_000)
    rng = random.Random(5)
    data = bytearray(_archive_bytes(rng, 3))
    data[len(data) // 2] ^= 0x55
    path = tmp_path / "damaged.jsonl.gz"
    path.write_bytes(bytes(data))

    def read_all() -> tuple[list[bytes], list[object], tuple[int, int, list[str], list[str]], list[str]]:
        caplog.clear()
        chunks = _Decompressed(path)
        blocks = list(chunks.read())
        reader = ArchiveReader([path], on_damage="log")
        records = list(reader)
        return blocks, [str(chunks.cut), records], (reader.records, reader.bad_lines, reader.truncated, reader.damaged), \
            [r.getMessage() for r in caplog.records]

    with_ng = read_all()
    monkeypatch.setattr(archive_module, "_INFLATE", zlib)
    assert read_all() == with_ng
    assert with_ng[2][3] == [str(path)] and with_ng[2][2] == [] and with_ng[2][0] > 100  # damaged, not cut


def test_a_plain_gzip_file_reads_whole() -> None:
    """Test that a file written by the gzip module reads whole, with no cut."""
    text = b"".join(encode_record(T0 + i, "putuo/iot/taopu/x/hb", "{}") for i in range(5000))
    assert _read(gzip.compress(text)) == (text, None)
