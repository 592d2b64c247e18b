"""A damaged archive file (bytes altered: a failed CRC, invalid deflate data, a bad gzip member in the
middle) is told apart from a file a crash cut short (it simply ends early): the cut is a warning and
reads up to the cut, as it always did; damage stops the reader, the replay, the report from the archive
and the month close with an error naming the file and byte. The files are real: written by the
collector's archive writer (or the real collectors of tests/partition_data.py), then damaged on disk."""

from __future__ import annotations

import gzip
import logging
import shutil
import zlib
from pathlib import Path

import pytest

from ptmon import archive as archive_module
from ptmon.archive import ArchiveReader, encode_record
from ptmon.archive_damage import ArchiveDamaged, damage_offset
from ptmon.cli import main
from ptmon.ledger.closing import closings
from ptmon.ledger.store import Ledger
from ptmon.sinks.archive import ArchiveWriter, archive_files

from . import month_data as md
from .test_month_close import CLOSE, _copy

T0 = 1_793_441_600.0  # 2026-11-01 00:00 Shanghai


def _written(directory: Path, n: int = 20_000, *, finish: bool = True) -> Path:
    """A day file as the collector writes it (sync-flushed batches, then the trailer at close; no trailer
    without ``finish``: a file still being written, or a crash's)."""
    writer = ArchiveWriter(directory)
    for start in range(0, n, 500):
        writer.append([(T0 + 60 + i, f"putuo/iot/taopu/taopu-lift{i % 97}/hb", f'{{"seq":{i},"reads":{i * 7}}}')
                       for i in range(start, start + 500)])
    if finish:
        writer.finish()
    (path,) = archive_files(directory)
    return path


def _flip(path: Path, at: int, n: int = 50) -> None:
    data = bytearray(path.read_bytes())
    for i in range(at, at + n):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def _read_all(path: Path, *, blocks: bool) -> ArchiveReader:
    reader = ArchiveReader([path])
    for _ in (reader.blocks() if blocks else reader):
        pass
    return reader


@pytest.mark.parametrize("blocks", [False, True], ids=["lines", "blocks"])
def test_a_file_cut_short_reads_up_to_the_cut_with_a_warning(tmp_path: Path, blocks: bool,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    """Test that a day file that simply ends early (a crash mid-write) reads up to the cut with a
    warning, as before: no error."""
    path = _written(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 3 // 5])
    reader = _read_all(path, blocks=blocks)
    assert reader.truncated == [str(path)] and reader.damaged == []
    assert 5_000 < reader.records < 20_000
    assert any("archive is cut short" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


@pytest.mark.parametrize("where", ["mid_batch", "after_trailer"])
@pytest.mark.parametrize("blocks", [False, True], ids=["lines", "blocks"])
def test_a_file_ending_in_zero_bytes_reads_as_cut_short(tmp_path: Path, blocks: bool, where: str,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    """Test that a day file whose last blocks a power cut left as zero bytes (in the middle of a batch,
    or after a whole file) reads up to the zeros with a warning naming them, not as damage; zeros with
    gzip data after them stay damage."""
    path = _written(tmp_path)
    data = path.read_bytes()
    kept = (len(data) * 3 // 5) // 4096 * 4096 if where == "mid_batch" else len(data)
    path.write_bytes(data[:kept] + bytes(8192))
    reader = _read_all(path, blocks=blocks)
    assert reader.truncated == [str(path)] and reader.damaged == []
    assert (5_000 < reader.records < 20_000) if where == "mid_batch" else reader.records == 20_000
    # mid-batch, the data's own last zero bytes read as the power cut's too; a whole file's trailer keeps its own
    zeros_from = kept if where == "after_trailer" else len(data[:kept].rstrip(b"\0"))
    assert any(f"it ends in {kept + 8192 - zeros_from:,} zero bytes from byte {zeros_from:,}" in r.getMessage()
               and r.levelno == logging.WARNING for r in caplog.records)
    # the zeros inflated would add copies of earlier lines and garbage; only the line the cut split is no record
    assert sum("not an archive record" in r.getMessage() for r in caplog.records) <= 1
    if where == "mid_batch":
        path.write_bytes(data[:kept] + bytes(8192) + data[kept:])
        with pytest.raises(ArchiveDamaged):
            _read_all(path, blocks=blocks)


@pytest.mark.parametrize("case", ["8_after_trailer", "16_after_cut", "trailer_zeroed", "all_zeros"])
@pytest.mark.parametrize("blocks", [False, True], ids=["lines", "blocks"])
def test_a_few_zero_bytes_where_a_power_cut_stopped_the_writes_are_a_cut(tmp_path: Path, blocks: bool, case: str,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    """Test that fewer zero bytes than the reader cuts off unread (a whole file's end plus 8, a crash's cut
    plus 16, the 10 bytes written at close zeroed) and a file that is all zeros (its blocks never written) read as
    cut short where the zeros begin, with the warning naming them, not as damage."""
    path = _written(tmp_path)
    data = path.read_bytes()
    cut = data[: len(data) * 3 // 5]
    path.write_bytes({"8_after_trailer": data + bytes(8), "16_after_cut": cut + bytes(16),
                      "trailer_zeroed": data[:-10] + bytes(10), "all_zeros": bytes(len(data))}[case])
    reader = _read_all(path, blocks=blocks)
    assert reader.truncated == [str(path)] and reader.damaged == []
    assert reader.records == {"8_after_trailer": 20_000, "trailer_zeroed": 20_000, "all_zeros": 0}.get(case, reader.records)
    assert any("zero bytes from byte" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


def _damage(path: Path, kind: str) -> tuple[int, int]:
    """Damage the file; the range of bytes where the reader must say it found the damage."""
    data = path.read_bytes()
    if kind == "flipped":  # 50 bytes in the middle: deflate data that decodes to garbage until a check fails
        _flip(path, len(data) // 2)
        return len(data) // 2, len(data)
    if kind == "crc":  # the CRC in the trailer
        _flip(path, len(data) - 8, 1)
        return len(data) - 8, len(data)
    # a bad gzip member in the middle: a whole member, bytes that are none, then another member
    second = gzip.compress(encode_record(T0 + 90_000, "putuo/iot/taopu/x/hb", "{}") * 100)
    path.write_bytes(data + b"\x00\x01junk" + second)
    return len(data), len(data) + 2


@pytest.mark.parametrize("kind", ["flipped", "crc", "bad_member"])
@pytest.mark.parametrize("blocks", [False, True], ids=["lines", "blocks"])
def test_a_damaged_file_is_an_error_naming_the_file_and_byte(tmp_path: Path, kind: str, blocks: bool,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Test that a day file with altered bytes stops the reader (by lines and by blocks) with an error
    naming the file and the byte where the damage was found (the same with zlib as with zlib-ng), not the
    warning of a cut-short file."""
    path = _written(tmp_path)
    low, high = _damage(path, kind)
    with pytest.raises(ArchiveDamaged) as raised:
        _read_all(path, blocks=blocks)
    assert raised.value.found is not None and low <= raised.value.found[1] < high, (raised.value.found, low, high)
    message = str(raised.value)
    assert message.startswith(f"{path}: archive is damaged at byte {raised.value.found[1]:,} of ")
    assert "not the cut-short end a crash while writing leaves" in message and "restore it from a copy" in message
    monkeypatch.setattr(archive_module, "_INFLATE", zlib)
    with pytest.raises(ArchiveDamaged) as with_zlib:
        _read_all(path, blocks=blocks)
    assert str(with_zlib.value) == message


def test_a_collector_starting_on_a_damaged_file_logs_it_and_goes_on(tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    """Test that the reader a collector restores its state with (on_damage="log") reads up to the damage
    and logs it as an error instead of stopping the collector."""
    path = _written(tmp_path)
    _damage(path, "bad_member")
    reader = ArchiveReader([path], on_damage="log")
    assert sum(1 for _ in reader) == 20_000
    assert reader.damaged == [str(path)] and reader.truncated == []
    assert any("archive is damaged" in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)


def _day_file(archive: Path) -> Path:
    (path,) = sorted(archive.glob("ptmon-*.jsonl.gz"))
    return path


def test_replay_and_report_from_a_damaged_archive_fail_and_a_cut_one_warns(collected, tmp_path: Path, capsys,  # type: ignore[no-untyped-def]
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    """Test that `ptmon replay` and `ptmon report --from-archive` of real collectors' archives (two
    partitions) exit non-zero, naming the damaged file and byte, when 50 bytes in the middle of a day file
    are flipped, and write no report; a day file cut short instead replays with the cut-short warning."""
    tmp = collected["tmp"]
    where = ["--registry", str(collected["registry"]), "--rules", str(collected["rules"])]
    for name in ("a", "b"):
        shutil.copytree(tmp / name / "archive", tmp_path / name)
    damaged = _day_file(tmp_path / "b")
    size = damaged.stat().st_size
    _flip(damaged, size // 2)
    # the collectors' bytes differ from run to run; flipped, about 1 in 70 of them still inflate to the end
    # (no check fails) and are found by the lines they garble instead: then there is no byte to name
    found = damage_offset(damaged, archive_module._INFLATE, archive_module.INFLATE_ERRORS)
    said = (f"{damaged}: archive is damaged at byte {found[1]:,} of {size:,}" if found is not None else
            f"{damaged}: archive is damaged ({size:,} bytes) (no gzip trailer, and lines that are no archive records")
    archives = [str(tmp_path / "a"), str(tmp_path / "b")]
    assert main(["replay", "--month", "2026-11", "--quiet", *where, *archives]) == 2
    err = capsys.readouterr().err
    assert said in err and "cut short" not in err
    out = tmp_path / "report"
    assert main(["report", "--month", "2026-11", "--format", "csv", "--out", str(out), *where,
                 "--from-archive", *archives]) == 2
    assert said in capsys.readouterr().err
    assert not out.exists() or not list(out.iterdir())

    shutil.copy(tmp / "b" / "archive" / damaged.name, damaged)
    damaged.write_bytes(damaged.read_bytes()[: size * 3 // 5])
    caplog.clear()
    assert main(["replay", "--month", "2026-11", "--quiet", *where, *archives]) == 0
    logged = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "ptmon.archive"]
    assert any(level == logging.WARNING and f"{damaged}: archive is cut short after line" in message
               for level, message in logged)
    assert not any("damaged" in message for _, message in logged)


def test_month_close_refuses_a_damaged_archive_file_even_accepting_gaps(pristine: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    """Test that `ptmon month close --accept-gaps` refuses a month one of whose day files is damaged, naming
    the file and byte (not a monitoring gap to accept, nor a ledger that differs), and seals nothing."""
    m = _copy(pristine, tmp_path / "m")
    day = m.archive / "ptmon-2026-11-10.jsonl.gz"
    _flip(day, day.stat().st_size // 2)
    assert main(m.month("close", md.MONTH, "--contract", "iot", "--by", "张三", "--accept-gaps", now=CLOSE)) == 2
    err = capsys.readouterr().err
    assert f"{day}: archive is damaged at byte " in err and "differs from its recomputation" not in err
    with Ledger(m.ledger, readonly=True) as ledger:
        assert closings(ledger) == []


@pytest.mark.parametrize("blocks", [False, True], ids=["lines", "blocks"])
def test_a_gzip_file_whose_first_byte_is_flipped_is_damage_not_text(tmp_path: Path, blocks: bool) -> None:
    """Test that a day file whose first byte (gzip's magic) is altered is damage at its start, not a plain
    text file whose every line is skipped (which read its hours as a monitoring gap, exit 0); an empty
    day file (a collector killed right after creating it) still reads as nothing."""
    path = _written(tmp_path / "a")
    data = bytearray(path.read_bytes())
    data[0] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ArchiveDamaged, match=r"archive is damaged at byte [01] of .*not a gzip file: it starts with 1e 8b"):
        _read_all(path, blocks=blocks)
    empty = tmp_path / "b" / "ptmon-2026-11-02.jsonl.gz"
    empty.parent.mkdir()
    empty.write_bytes(b"")
    assert _read_all(empty, blocks=blocks).records == 0


def test_a_day_file_decompressed_in_place_is_refused_not_skipped(collected, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    """Test that an archive directory holding a day file gunzipped in place (``ptmon-….jsonl``), which the
    readers skip, is refused in one line naming the file by replay and report --from-archive, instead of
    reading the directory without it (its hours a monitoring gap, exit 0)."""
    where = ["--registry", str(collected["registry"]), "--rules", str(collected["rules"])]
    archive = tmp_path / "all"
    shutil.copytree(collected["tmp"] / "all" / "archive", archive)
    day = _day_file(archive)
    plain = day.with_suffix("")
    plain.write_bytes(gzip.decompress(day.read_bytes()))
    day.unlink()
    assert main(["replay", "--month", "2026-11", "--quiet", *where, str(archive)]) == 2
    assert f"{plain}: a day file that is not gzip-compressed" in capsys.readouterr().err
    assert main(["report", "--month", "2026-11", "--format", "csv", "--out", str(tmp_path / "out"), *where,
                 "--from-archive", str(archive)]) == 2
    assert f"{plain}: a day file that is not gzip-compressed" in capsys.readouterr().err


@pytest.mark.parametrize("blocks", [False, True], ids=["lines", "blocks"])
def test_bytes_overwritten_mid_file_that_inflate_as_other_data_are_damage(tmp_path: Path, blocks: bool) -> None:
    """Test that 64 bytes overwritten in the middle of a day file without its trailer (the collector still
    writing, or killed) — which the inflater takes as other valid deflate data, reading garbled lines to
    the file's end — are damage, not the cut a crash leaves: a cut leaves whole records and the start of one."""
    records = [(T0 + 20 * i, f"putuo/{'iot' if i % 2 else 'cam'}/taopu/d{i % 2}/hb", f'{{"seq":{i},"boot":1}}')
               for i in range(2000)]
    z = zlib.compressobj(3, zlib.DEFLATED, -zlib.MAX_WBITS)
    data = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + b"".join(  # one member, sync-flushed batches, no trailer
        z.compress(b"".join(encode_record(*r) for r in records[i : i + 50])) + z.flush(zlib.Z_SYNC_FLUSH)
        for i in range(0, len(records), 50))
    path = tmp_path / "ptmon-2026-11-01.jsonl.gz"
    refusals = []
    for at in (len(data) // 3, len(data) // 2, 2 * len(data) // 3):
        path.write_bytes(data[:at] + b"\xff" * 64 + data[at + 64 :])
        with pytest.raises(ArchiveDamaged) as refused:
            _read_all(path, blocks=blocks)
        refusals.append(str(refused.value))
    assert any("(no gzip trailer, and lines that are no archive records before the last one)" in r for r in refusals)


@pytest.mark.parametrize("blocks", [False, True], ids=["lines", "blocks"])
def test_a_crash_cut_anywhere_is_never_damage(tmp_path: Path, blocks: bool) -> None:
    """Test that a day file cut at any byte (a crash mid-write), even inside a character of a payload
    beyond ASCII, reads up to the cut as cut short, never as damage."""
    writer = ArchiveWriter(tmp_path / "a")
    for start in range(0, 600, 100):
        writer.append([(T0 + i, f"putuo/iot/taopu/d{i}/hb", f'{{"seq":{i},"note":"长征镇桃浦镇"}}')
                       for i in range(start, start + 100)])
    writer.finish()
    (path,) = archive_files(tmp_path / "a")
    data = path.read_bytes()
    for cut in range(20, len(data) - 8, max(1, len(data) // 300)):
        path.write_bytes(data[:cut])
        reader = _read_all(path, blocks=blocks)
        assert reader.truncated == [str(path)] and not reader.damaged, cut


# Characters a device may send in a payload that orjson archives as they are (only those below U+0020, the
# quote and the backslash are escaped) but that str.isprintable() calls unprintable: spaces and format
# characters common in Chinese text and emoji, DEL and the C1 controls, private use and noncharacters.
_UNPRINTABLE_BUT_ARCHIVED = ("上海\u3000普陀", "a\u00a0b", "del\x7fx", "nel\x85x", "\ufeffbom", "👨\u200d👩", "ls\u2028x",
                             "\ue000", "shy\u00adx", "\ufffe")


@pytest.mark.parametrize("blocks", [False, True], ids=["lines", "blocks"])
@pytest.mark.parametrize("text", _UNPRINTABLE_BUT_ARCHIVED)
def test_a_crash_cut_inside_any_character_a_device_may_send_is_never_damage(tmp_path: Path, blocks: bool,
                                                                            text: str) -> None:
    """Test that a day file cut at any byte of a batch whose payloads hold text the collector archives as
    received (an ideographic space, a no-break space, DEL, a byte-order mark, a zero-width joiner, ...;
    escaped quotes and backslashes too) reads up to the cut as cut short: never damage, never a crash."""
    writer = ArchiveWriter(tmp_path / "a")
    writer.append([(T0 + i, "putuo/iot/taopu/taopu-lift1/hb", f'{{"seq":{i},"备注":"{text}","q":"\\"{text}\\\\"}}')
                   for i in range(20)])
    (path,) = archive_files(tmp_path / "a")
    writer.abandon()
    data = path.read_bytes()
    for cut in range(11, len(data)):
        path.write_bytes(data[:cut])
        reader = _read_all(path, blocks=blocks)
        assert reader.truncated == [str(path)] and not reader.damaged, cut
