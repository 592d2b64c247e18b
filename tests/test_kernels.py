"""The compiled archive scanner and payload parser (kernels.c) give exactly what their numpy
references give (lines.scan_numpy, payloads.parse_spans_numpy), on generated and hostile input.

test_lines.py and test_payloads.py run every case with both against orjson; here the two are
compared with each other, column by column, on input built to hit every branch of the grammar.
"""

from __future__ import annotations

import logging
import os
import random
import subprocess
import tracemalloc
from pathlib import Path

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ptmon import kernels
from ptmon.archive import encode_record
from ptmon.cli import main
from ptmon.decode import Decoder
from ptmon.ids import padded
from ptmon.lines import Block, scan, scan_numpy
from ptmon.payloads import Parsed, parse_spans, parse_spans_numpy

from .conftest import HEADER, T0, make_registry, use_numpy_scanner

built = pytest.mark.skipif(not kernels.available(), reason="the compiled scanner is not built")


def test_the_compiled_scanner_is_built() -> None:
    """Test that the install compiled kernels.c (scripts/test installs gcc for it): without it every
    other test here is skipped and the numpy scanner runs, correct but slower."""
    if os.environ.get("PTMON_KERNELS", "").strip().lower() == "numpy":
        pytest.skip("PTMON_KERNELS=numpy chooses the numpy scanner")
    assert kernels.available(), ("ptmon._kernels was not built: install gcc (apt-get install gcc libc6-dev) and "
                                 "run `pip install -e .` again")
    assert kernels.in_use().startswith("compiled")


def _both_scans(data: bytes) -> tuple[Block, Block]:
    buffer = padded(data)
    return scan(data), scan_numpy(buffer, np.frombuffer(buffer, dtype=np.uint8, count=len(data)))


COLUMNS = ("t", "topic_start", "topic_end", "payload_start", "payload_end", "payload_chars")


def assert_same_scan(data: bytes) -> Block:
    compiled, reference = _both_scans(data)
    assert compiled.starts.tolist() == reference.starts.tolist()
    assert compiled.ends.tolist() == reference.ends.tolist()
    assert compiled.plain.tolist() == reference.plain.tolist(), data
    for name in COLUMNS:
        got, expected = getattr(compiled.lines, name), getattr(reference.lines, name)
        assert got.dtype == expected.dtype and got.tobytes() == expected.tobytes(), name  # bit for bit
    return compiled


NUMBERS = ["0", "5", "0.5", "1.", ".5", "01", "00.1", "-1", "1e3", "1.5E2", "1.2.3", "9007199254740992",
           "9007199254740993", "900719925474099.3", "12345678901234567", "123456789012345678", "1762012800.123456",
           "1762012800.000001", "", " 1", "1 ", "+1", "0.0", "0.00000000000000001"]
TOPICS = ["putuo/iot/taopu/s-1/hb", "", "$ptmon/tick", "$", "a\\b", 'a\\"b', "é", "a\x7fb", "a\tb", "x" * 200]
PAYLOADS = ['{\\"seq\\":1}', "", "online", '\\"', '\\\\', "\\n", "b\\", '{\\"a\\":\\"x\\\\y\\"}', "\x01", "é", '"', "}"]
PIECES = [b'{"t":', b',"topic":"', b'","payload":"', b'"}', b"\n", b"\\", b'"', b"}", b"{", b",", b":", b"\x00"]


def _line(rng: random.Random) -> bytes:
    number, topic, payload = rng.choice(NUMBERS), rng.choice(TOPICS), rng.choice(PAYLOADS)
    line = f'{{"t":{number},"topic":"{topic}","payload":"{payload}"}}'.encode()
    for _ in range(rng.choice([0, 0, 0, 1, 2])):  # a cut, a byte changed, a piece of the grammar put in
        at = rng.randrange(len(line) + 1)
        how = rng.randrange(3)
        if how == 0:
            line = line[:at] + line[at + rng.randrange(1, 4):]
        elif how == 1:
            line = line[:at] + bytes([rng.randrange(256)]) + line[at + 1:]
        else:
            line = line[:at] + rng.choice(PIECES) + line[at:]
    return line


def test_generated_blocks_scan_alike() -> None:
    """Test thousands of lines near the plain grammar, each rule broken in turn, in blocks with and
    without a final newline, cut anywhere."""
    rng = random.Random(5)
    for _ in range(300):
        data = b"\n".join(_line(rng) for _ in range(rng.randrange(1, 60)))
        data += rng.choice([b"\n", b""])
        assert_same_scan(data)
        assert_same_scan(data[: rng.randrange(len(data) + 1)])


@pytest.mark.parametrize("data", [b"", b"\n", b"\n\n", b"x", b'{"t":1,"topic":"a","payload":"b"}',
                                  b'{"t":1,"topic":"a","payload":"b"}\n\n', b'{"t":1,"topic":"a","payload":"\\'])
def test_edges_scan_alike(data: bytes) -> None:
    assert_same_scan(data)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=80), max_size=12))
def test_arbitrary_bytes_scan_alike(lines: list[bytes]) -> None:
    assert_same_scan(b"\n".join(lines))


def test_the_collectors_own_lines_are_plain() -> None:
    rng = random.Random(2)
    data = b"".join(encode_record(round(T0 + rng.random() * 86_400, 6), f"putuo/iot/taopu/s-{i}/hb",
                                  orjson.dumps({"seq": i, "boot": -i, "ts": T0 + i}).decode()) for i in range(2000))
    block = assert_same_scan(data)
    assert block.plain.all() and len(block.lines) == 2000


def _rows(parsed: Parsed) -> dict[int, tuple[tuple[str, ...], list[int]]]:
    return {row: (shape.keys, shape.values[i].tolist()) for shape in parsed.shapes for i, row in enumerate(shape.rows.tolist())}


def assert_same_parse(payloads: list[bytes], escaped: bool = False) -> Parsed:
    buffer, array, starts, ends = _spans(payloads)
    compiled = parse_spans(buffer, array, starts, ends, escaped=escaped)
    reference = parse_spans_numpy(buffer, array, starts, ends, escaped, compiled.size)
    assert _rows(compiled) == _rows(reference), payloads
    assert compiled.slow.tolist() == reference.slow.tolist()
    return compiled


VALUES = ["0", "-0", "7", "-7", "01", "--1", "1-2", "-", "999999999999999999", "-999999999999999999",
          "1234567890123456789", "1.5", "1e3", '"7"', "null", "true", "[1]", "{}"]
KEYS = ["seq", "boot", "ts", "k1", "a\\b", 'a\\"b', "é", "", "a\x01", "x" * 40]


def _payload(rng: random.Random, escaped: bool) -> bytes:
    keys = rng.sample(KEYS, rng.randrange(0, 6))
    space = lambda: rng.choice(["", "", " ", "\t", "\n", "\r", "\x0b"])  # noqa: E731
    body = "{" + ",".join(f'{space()}"{k}"{space()}:{space()}{rng.choice(VALUES)}{space()}' for k in keys) + "}"
    if rng.random() < 0.2:
        at = rng.randrange(len(body) + 1)
        body = body[:at] + rng.choice(["\x7f", "\x00", "\\", "-", "5", '"', ",", "}", "\xff"]) + body[at:]
    data = body.encode("utf-8", "surrogateescape") if "\xff" not in body else body.replace("\xff", "").encode() + b"\xff"
    return data.replace(b'"', b'\\"') if escaped else data


@pytest.mark.parametrize("escaped", [False, True])
def test_generated_payloads_parse_alike(escaped: bool) -> None:
    rng = random.Random(9)
    taken = 0
    for _ in range(400):
        parsed = assert_same_parse([_payload(rng, escaped) for _ in range(rng.randrange(1, 25))], escaped)
        taken += sum(len(s.rows) for s in parsed.shapes)
    assert taken > 500  # the bulk path was taken, not only orjson's


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=40).filter(lambda b: b"\0" not in b), min_size=1, max_size=12), st.booleans())
def test_arbitrary_payload_bytes_parse_alike(payloads: list[bytes], escaped: bool) -> None:
    assert_same_parse(payloads, escaped)


@built
def test_the_compiled_parsers_own_limits_leave_payloads_to_orjson() -> None:
    """Test the three limits of kernels.c (16 integers, a 256-byte shape, 32 shapes a batch): the
    payloads past them are left to orjson, and the decoder takes the same values either way."""
    many = orjson.dumps({f"k{chr(97 + i)}": i for i in range(17)})
    long_shape = orjson.dumps({"x" * 300: 1})
    shapes = [orjson.dumps({"s" + "x" * i: i}) for i in range(40)]
    parsed = parse_spans(*_spans([many, long_shape, *shapes]))
    slow = set(parsed.slow.tolist())
    assert {0, 1} <= slow and len(slow & set(range(2, 42))) == 8
    assert sum(len(s.rows) for s in parsed.shapes) == 32


def _spans(payloads: list[bytes]) -> tuple[bytes, np.ndarray, np.ndarray, np.ndarray]:
    """(buffer, its bytes, starts, ends) of the payloads joined by NUL, as parse_payloads joins them."""
    raw = b"\0".join(payloads)
    buffer = padded(raw)
    starts = np.cumsum([0, *(len(p) + 1 for p in payloads[:-1])]).astype(np.int64)
    ends = starts + np.array([len(p) for p in payloads], dtype=np.int64)
    return buffer, np.frombuffer(buffer, dtype=np.uint8, count=len(raw)), starts, ends


@built
def test_spans_outside_the_buffer_are_refused_before_the_c_code_reads_them() -> None:
    array = np.frombuffer(padded(b"{}"), dtype=np.uint8, count=2)
    for starts, ends in (([0], [3]), ([-1], [1]), ([2], [1])):
        with pytest.raises(ValueError, match="outside the buffer"):
            kernels.parse(array, np.array(starts), np.array(ends), False)


def _decoded(registry, messages, monkeypatch: pytest.MonkeyPatch, compiled: bool) -> list[object]:
    """The batches the decoder gives for ``messages`` as records and as archive lines, with its rejects."""
    if not compiled:
        use_numpy_scanner(monkeypatch)
    found: list[object] = []
    for batch_of in (lambda: messages, lambda: scan(b"".join(encode_record(*m) for m in messages)).lines):
        decoder = Decoder(registry)
        batch = decoder.decode(batch_of())
        found += [{name: getattr(batch, name).tobytes() for name in ("t", "device", "seq", "boot", "counters", "has_counter",
                                                                   "ts", "bat", "rssi")},
                  dict(decoder.rejects), dict(decoder.bad_fields)]
    monkeypatch.undo()
    return found


@built
def test_a_batch_decodes_alike_with_either(rules, monkeypatch: pytest.MonkeyPatch) -> None:
    """Test that the decoder gives the same batch and rejects from the same messages with either
    scanner, as records and as archive lines, the messages a mix of heartbeats and payloads the bulk
    path leaves to orjson (a float, an array, 19 digits, 20 keys)."""
    registry = make_registry(rules, *(f"s-{i},iot,smoke,taopu" for i in range(50)))
    rng = random.Random(4)
    messages = []
    for i in range(3000):
        payload = rng.choice([orjson.dumps({"seq": i, "boot": 1, "reads": 10, "read_ok": rng.randrange(12)}).decode(),
                              '{"seq":1.5}', "[]", '{"seq":' + "9" * 19 + "}", '{"seq":7,"bat":-3,"rssi":-90}',
                              orjson.dumps({f"k{j}": j for j in range(20)}).decode()])
        messages.append((T0 + i * 0.5, f"putuo/iot/taopu/s-{rng.randrange(60)}/hb", payload))
    compiled = _decoded(registry, messages, monkeypatch, compiled=True)
    assert compiled == _decoded(registry, messages, monkeypatch, compiled=False)
    rejects = compiled[1]
    assert isinstance(rejects, dict) and rejects["unknown_device"] > 100 and rejects["bad_value"] > 100


def _built(tmp_path: Path, name: str, *flags: str) -> Path:
    library = tmp_path / name
    subprocess.run(["gcc", "-O1", "-shared", "-fPIC", *flags, "-o", str(library), str(kernels.SOURCE)], check=True)
    return library


@built
def test_a_library_of_another_build_is_not_used(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Test that a library left from another kernels.c, one without a function, and a file that is no
    library are each refused with a warning naming it, and the numpy code runs: a stale library
    whose limits differ would write past the arrays sized here."""
    caplog.set_level(logging.WARNING)
    this = _built(tmp_path, "this.so", f"-DPTK_SOURCE={kernels.source_digest()}")
    assert kernels._load(this)[0] is not None and not caplog.records
    empty = tmp_path / "empty.so"
    empty.write_bytes(b"")
    for library, said in ((_built(tmp_path, "stale.so", "-DPTK_SOURCE=0123"), "was built from another kernels.c"),
                          (_built(tmp_path, "old.so", "-Dptk_parse=ptk_parse_v0"), "cannot load the compiled scanner"),
                          (empty, "cannot load the compiled scanner")):
        caplog.clear()
        lib, why = kernels._load(library)
        assert lib is None and said in why and str(library) in why
        assert [r.getMessage() for r in caplog.records] == [f"{why}: using the numpy one, more slowly (a new `pip install` "
                                                            "rebuilds it)"]


def test_ptmon_kernels_chooses_numpy_and_other_values_are_said_to_be_ignored(monkeypatch: pytest.MonkeyPatch,
                                                                           caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("PTMON_KERNELS", "Numpy ")
    assert kernels._load() == (None, "chosen by PTMON_KERNELS=numpy")
    monkeypatch.setenv("PTMON_KERNELS", "off")
    caplog.set_level(logging.WARNING)
    assert (kernels._load()[0] is not None) == kernels.available()  # the default: the library when built
    assert "PTMON_KERNELS=off is neither of compiled, numpy; ignored" in caplog.text


@built
def test_spans_of_unequal_counts_are_refused() -> None:
    array = np.frombuffer(padded(b"{}{}"), dtype=np.uint8, count=4)
    with pytest.raises(ValueError, match="4 payload starts but 1 ends"):
        kernels.parse(array, np.arange(4), np.array([2]), False)


@built
def test_a_block_of_newlines_costs_no_plain_columns() -> None:
    """Test that a hostile block of 4 MiB of newlines (4 Mi lines, none plain) allocates its line
    starts and ends, not six columns a line for plain lines it cannot hold."""
    data = b"\n" * (4 << 20)
    tracemalloc.start()
    block = scan(data)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(block.starts) == 4 << 20 and not block.plain.any()
    assert peak < 100 << 20, peak  # starts and ends are 64 MiB; the plain columns would add 192 MiB


@built
def test_a_library_that_cannot_be_checked_against_its_source_is_not_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    """Test that without a readable kernels.c beside kernels.py (a broken install, a file made unreadable)
    the library is not taken on its own word: one warning, and the numpy code."""
    library = _built(tmp_path, "this.so", f"-DPTK_SOURCE={kernels.source_digest()}")
    monkeypatch.setattr(kernels, "SOURCE", tmp_path / "missing" / "kernels.c")
    lib, why = kernels._load(library)
    assert lib is None and why.startswith(f"cannot check the compiled scanner {library} against {tmp_path}")
    assert "No such file or directory" in why and caplog.records[-1].levelno == logging.WARNING


def test_check_config_says_which_scanner_the_collector_will_use(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "ptmon.toml"
    config.write_text(f'registry = "{tmp_path / "registry.csv"}"\n')
    (tmp_path / "registry.csv").write_text(f"{HEADER}\ns1,iot,smoke,taopu,scn,taopu-c1,gw-taopu,2026-01-01,\n")
    assert main(["collect", "--config", str(config), "--check-config"]) == 0
    assert f"payload parser and archive scanner: {kernels.in_use()}\n" in capsys.readouterr().out
