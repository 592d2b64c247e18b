"""Line protocol: escaping tables, and a round trip through a real InfluxDB 1.6.7."""

from __future__ import annotations

import math

import pytest

from ptmon.config import InfluxConfig
from ptmon.sinks.influx_transport import V1Transport
from ptmon.sinks.lineproto import (
    escape_field_key,
    escape_measurement,
    escape_string,
    escape_tag,
    format_field,
    line,
    series_prefix,
    split_lines,
)
from tests.servers import InfluxServer, influx_rows

T0 = 1_700_000_000_000_000  # µs

TAGS = [  # (id, value, as written)
    ("plain", "taopu", "taopu"),
    ("comma", "a,b", "a\\,b"),
    ("space", "a b", "a\\ b"),
    ("equals", "a=b", "a\\=b"),
    ("quote", 'a"b', 'a"b'),
    ("backslash", "a\\b", "a\\b"),
    ("backslash-comma", "a\\,b", "a\\\\,b"),
    ("backslash-quote", 'a\\"b', 'a\\"b'),
    ("trailing-backslash", "dev\\\\", "dev"),
    ("only-backslashes", "\\\\", ""),
    ("newline", "a\nb", "a\\nb"),
    ("tab", "a\tb", "a\tb"),
    ("cr", "a\rb", "a\rb"),
    ("utf8", "普陀 区", "普陀\\ 区"),
    ("empty", "", ""),
]


@pytest.mark.parametrize(("value", "written"), [t[1:] for t in TAGS], ids=[t[0] for t in TAGS])
def test_escape_tag(value: str, written: str) -> None:
    """Test that tag keys and values are escaped as InfluxDB unescapes them."""
    assert escape_tag(value) == written


FIELD_KEYS = [
    ("plain", "bat", "bat"),
    ("specials", "a b,c=d", "a\\ b\\,c\\=d"),
    ("quote", 'a"b', 'a"b'),
    ("backslash-quote", 'a\\"b', 'a\\\\"b'),
    ("trailing-backslash", "k\\", "k"),
    ("newline", "a\nb", "a\\nb"),
]


@pytest.mark.parametrize(("key", "written"), [t[1:] for t in FIELD_KEYS], ids=[t[0] for t in FIELD_KEYS])
def test_escape_field_key(key: str, written: str) -> None:
    """Test that field keys are escaped, a backslash before a quote doubled."""
    assert escape_field_key(key) == written


MEASUREMENTS = [
    ("plain", "heartbeat", "heartbeat"),
    ("comma-space", "a b,c", "a\\ b\\,c"),
    ("equals-quote", 'a=b"c', 'a=b"c'),
    ("newline", "a\nb", "a\\nb"),
    ("trailing-backslash", "m\\", "m"),
]


@pytest.mark.parametrize(("name", "written"), [t[1:] for t in MEASUREMENTS], ids=[t[0] for t in MEASUREMENTS])
def test_escape_measurement(name: str, written: str) -> None:
    """Test that measurement names escape only commas and spaces."""
    assert escape_measurement(name) == written


@pytest.mark.parametrize("name", ["", "\\", "#comment"], ids=["empty", "backslash", "hash"])
def test_unwritable_measurement(name: str) -> None:
    """Test that a measurement no line can carry is refused."""
    with pytest.raises(ValueError):
        escape_measurement(name)


STRINGS = [
    ("plain", "ok", '"ok"'),
    ("quote", 'a"b', '"a\\"b"'),
    ("backslash", "a\\b", '"a\\\\b"'),
    ("trailing-backslash", "x\\", '"x\\\\"'),
    ("newline-tab-cr", "a\nb\tc\rd", '"a\nb\tc\rd"'),
]


@pytest.mark.parametrize(("value", "written"), [t[1:] for t in STRINGS], ids=[t[0] for t in STRINGS])
def test_escape_string(value: str, written: str) -> None:
    """Test that string field values escape quotes and backslashes only."""
    assert escape_string(value) == written


FIELDS: list[tuple[str, object, str | None]] = [
    ("int", 42, "f=42i"),
    ("negative-int", -(2**63), "f=-9223372036854775808i"),
    ("int-too-large", 2**63, None),
    ("bool-not-int", True, "f=true"),
    ("false", False, "f=false"),
    ("float", 1.5, "f=1.5"),
    ("float-exponent", 1e16, "f=1e+16"),
    ("nan", math.nan, None),
    ("inf", math.inf, None),
    ("string", 'say "hi"', 'f="say \\"hi\\""'),
]


@pytest.mark.parametrize(("value", "written"), [t[1:] for t in FIELDS], ids=[t[0] for t in FIELDS])
def test_format_field(value: int | float | bool | str, written: str | None) -> None:
    """Test that field values get their type suffix and unwritable ones are skipped."""
    assert format_field("f", value) == written


LINES = [
    ("full", ("hb", {"street": "taopu", "device": "d 1"}, {"seq": 7, "bat": 97.5}, T0),
     f"hb,device=d\\ 1,street=taopu seq=7i,bat=97.5 {T0}"),
    ("empty-tag-omitted", ("hb", {"street": "", "device": "d1"}, {"seq": 1}, 5), "hb,device=d1 seq=1i 5"),
    ("no-tags", ("hb", {}, {"ok": True}, 5), "hb ok=true 5"),
    ("nan-skipped", ("hb", {"d": "x"}, {"bat": math.nan, "seq": 2}, 5), "hb,d=x seq=2i 5"),
    ("no-fields", ("hb", {"d": "x"}, {}, 5), None),
    ("only-nan", ("hb", {"d": "x"}, {"bat": math.nan}, 5), None),
]


@pytest.mark.parametrize(("args", "written"), [t[1:] for t in LINES], ids=[t[0] for t in LINES])
def test_line(args: tuple, written: str | None) -> None:  # type: ignore[type-arg]
    """Test that a point becomes one line, tags sorted, or None without writable fields."""
    assert line(*args) == written


def test_series_prefix_appends_fields() -> None:
    """Test that a prebuilt prefix plus fields and time is the same line as line()."""
    prefix = series_prefix("hb", {"street": "a,b", "device": "d1"})
    assert f"{prefix}seq=1i {T0}" == line("hb", {"device": "d1", "street": "a,b"}, {"seq": 1}, T0)


SPLITS = [
    ("simple", b"a f=1i 1\nb f=2i 2", [b"a f=1i 1", b"b f=2i 2"]),
    ("trailing-newline", b"a f=1i 1\n", [b"a f=1i 1"]),
    ("newline-in-string", b'a s="x\ny" 1\nb f=1i 2', [b'a s="x\ny" 1', b"b f=1i 2"]),
    ("quote-in-tag", b'a,k=x"y f=1i 1\nb s="q" 2', [b'a,k=x"y f=1i 1', b'b s="q" 2']),
    ("escaped-quote", b'a s="x\\"\ny" 1\nb f=1i 2', [b'a s="x\\"\ny" 1', b"b f=1i 2"]),
    ("quote-in-field-key", b'a g"h=1i,s="p\nq" 1\nb f=1i 2', [b'a g"h=1i,s="p\nq" 1', b"b f=1i 2"]),
]


@pytest.mark.parametrize(("body", "lines"), [t[1:] for t in SPLITS], ids=[t[0] for t in SPLITS])
def test_split_lines(body: bytes, lines: list[bytes]) -> None:
    """Test that bodies split at line ends, not at newlines inside string fields."""
    assert split_lines(body) == lines


NASTY = [
    "plain", "a,b", "a b", "a=b", 'a"b', "a\\b", "a\\,b", "a\\ b", "a\\=b", 'a\\"b', "a\\\\b",
    "dev\\", "a\tb", "a\rb", "a\nb", "a\\nb", "普陀区 曹杨新村", "émoji 🚀", "#hash", "\\lead",
    "x=", "=x", ",", " ", "\\", "'single'", "",
]


def stored_tag(value: str) -> str | None:
    """What InfluxDB should hold for a tag value: the documented mapping, None when omitted."""
    mapped = value.rstrip("\\").replace("\n", "\\n")
    return mapped or None


def test_round_trip_through_influxdb(influx_server: InfluxServer, influx_db: str) -> None:
    """Test that InfluxDB 1.6.7 stores every nasty tag value and string exactly as documented."""
    lines = [line("rt", {"k": value, "n": str(i)}, {"i": i, "s": value}, T0 + i) for i, value in enumerate(NASTY)]
    body = "\n".join(text for text in lines if text).encode()
    config = InfluxConfig(url=influx_server.url, database=influx_db)
    V1Transport(config).write(body, gzipped=False)

    rows = influx_rows(influx_server.url, influx_db, 'SELECT "i", "k", "s" FROM "rt"')
    assert len(rows) == len(NASTY)
    for _, i, k, s in rows:
        assert (k, s) == (stored_tag(NASTY[i]), NASTY[i]), f"point {i}: {NASTY[i]!r}"
    tag_values = {r[1] for r in influx_rows(influx_server.url, influx_db, 'SHOW TAG VALUES FROM "rt" WITH KEY = "k"')}
    assert tag_values == {stored_tag(v) for v in NASTY} - {None}


NASTY_KEYS = ["a b", "a,b", "a=b", 'a"b', "a\\b", 'a\\"b', "街道", "a\tb", "a\nb"]
NASTY_MEASUREMENTS = ["m a", "m,b", "m=c", 'm"d', "普陀", "m\te", "m\\f", "m\ng"]


def test_round_trip_keys_and_measurements(influx_server: InfluxServer, influx_db: str) -> None:
    """Test that InfluxDB 1.6.7 stores nasty tag keys, field keys and measurement names as meant."""
    lines = [line("keys", {key: "v"}, {key: 1}, T0 + i) for i, key in enumerate(NASTY_KEYS)]
    lines += [line(name, {"k": "v"}, {"f": 1}, T0) for name in NASTY_MEASUREMENTS]
    V1Transport(InfluxConfig(url=influx_server.url, database=influx_db)).write(
        "\n".join(text for text in lines if text).encode(), gzipped=False)

    url = influx_server.url
    mapped = {k.replace("\n", "\\n") for k in NASTY_KEYS}
    assert {r[0] for r in influx_rows(url, influx_db, 'SHOW TAG KEYS FROM "keys"')} == mapped
    assert {r[0] for r in influx_rows(url, influx_db, 'SHOW FIELD KEYS FROM "keys"')} == mapped
    measurements = {r[0] for r in influx_rows(url, influx_db, "SHOW MEASUREMENTS")}
    assert measurements == {m.replace("\n", "\\n") for m in NASTY_MEASUREMENTS} | {"keys"}
