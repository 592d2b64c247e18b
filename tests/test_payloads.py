"""The bulk payload parser (collector/payloads.py) takes exactly what ``orjson.loads`` gives.

Every payload it parses must give the same keys and integer values as ``orjson.loads``; all
it is not sure of must be left to orjson (``slow``). The heartbeat shapes of the wire
contract must take the bulk path, or it would buy nothing.
"""

from __future__ import annotations

import json

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ptmon.ids import padded
from ptmon.payloads import parse_payloads, parse_spans

pytestmark = pytest.mark.usefixtures("scanner")  # each test with the compiled scanner and with numpy

HEARTBEATS = [
    '{"ts":1762012800,"seq":5,"boot":77,"reads":1234,"read_ok":1200}',
    '{"ts":1762012801,"seq":6,"boot":77,"bat":69,"rssi":-113,"reads":1240,"read_ok":1201}',
    '{"ts":1762012802,"seq":0,"boot":-9,"face_try":0,"face_ok":0}',
    '{}',
    ' { "seq" : 7 , "boot":\t8 }\n',
    '{"seq":999999999999999999}',  # 18 digits: the most taken here
    '{"seq":-0}',
]
LEFT_TO_ORJSON = [
    '{"seq":1.5}', '{"seq":1e3}', '{"seq":"7"}', '{"seq":null}', '{"seq":true}', '{"a":{"b":1}}',
    '{"seq":1234567890123456789}', '{"seq":01}', '{"seq":--1}', '{"seq":1-2}', '{"seq":-}',
    '{"seq":1 2}', '{"se\\u0071":1}', '{"k1":5}', '{"seq":1,"seq":2}', '[1,2]', '7', '{"seq":1',
    '{"seq":1}}', '{"seq":1,}', '{,"seq":1}', '{"seq"1}', '{"a\x01":1}', '{"seq":1}\x7f', '',
]


def check(payloads: list[str] | list[bytes]) -> set[int]:
    """Assert that every bulk-parsed payload equals orjson's; return the bulk-parsed rows."""
    parsed = parse_payloads(payloads)
    assert parsed is not None
    taken: set[int] = set()
    for shape in parsed.shapes:
        for i, row in enumerate(shape.rows.tolist()):
            assert row not in taken
            taken.add(row)
            expected = orjson.loads(payloads[row])
            got = dict(zip(shape.keys, shape.values[i].tolist()))
            assert got == expected and list(got) == list(expected), payloads[row]
            assert all(type(v) is int for v in expected.values())
    assert taken.isdisjoint(parsed.slow.tolist()) and len(taken) + len(parsed.slow) == len(payloads)
    sizes = [len(p.encode() if isinstance(p, str) else p) for p in payloads]
    assert parsed.size.tolist() == sizes
    return taken


def test_heartbeats_are_parsed_in_bulk_and_equal_orjson() -> None:
    assert check(HEARTBEATS) == set(range(len(HEARTBEATS)))
    assert check([p.encode() for p in HEARTBEATS]) == set(range(len(HEARTBEATS)))


def test_what_is_not_a_flat_integer_object_is_left_to_orjson() -> None:
    payloads = [*HEARTBEATS, *LEFT_TO_ORJSON]
    taken = check(payloads)
    assert taken == set(range(len(HEARTBEATS))), [payloads[i] for i in sorted(taken - set(range(len(HEARTBEATS))))]


def test_invalid_utf8_and_nul_are_left_to_orjson() -> None:
    parsed = parse_payloads([b'{"seq":1}', b'{"s\xffq":1}', b'{"seq":2}'])
    assert parsed is not None and parsed.slow.tolist() == [1]
    assert parse_payloads(['{"seq":1}', '{"seq":\x002}']) is None  # cannot be split at NUL: all to orjson


def test_archive_line_bodies_with_escaped_quotes() -> None:
    bodies = [orjson.dumps(p).decode()[1:-1] for p in HEARTBEATS[:3]] + ['{\\"seq\\":1.5}', '{\\"a\\\\b\\":1}']
    raw = "\0".join(bodies).encode()
    buffer = padded(raw)
    array = np.frombuffer(buffer, dtype=np.uint8, count=len(raw))
    ends = np.flatnonzero(array == 0)
    starts = np.concatenate([[0], ends + 1])
    parsed = parse_spans(buffer, array, starts, np.append(ends, len(raw)), escaped=True)
    taken = {row: dict(zip(s.keys, s.values[i].tolist())) for s in parsed.shapes for i, row in enumerate(s.rows.tolist())}
    assert taken == {i: orjson.loads(p) for i, p in enumerate(HEARTBEATS[:3])}
    assert parsed.slow.tolist() == [3, 4]


values = st.one_of(st.integers(-(10**20), 10**20), st.floats(allow_nan=False), st.text(max_size=3), st.none(), st.booleans())
objects = st.dictionaries(st.sampled_from(["ts", "seq", "boot", "reads", "read_ok", "bat", "k", "é"]), values, max_size=7)


@settings(max_examples=300, deadline=None)
@given(st.lists(objects, min_size=1, max_size=40), st.integers(0, 1))
def test_random_objects_equal_orjson(objs: list[dict], seed: int) -> None:
    payloads = [json.dumps(o, separators=(",", ":"), ensure_ascii=seed % 2 == 0) for o in objs]
    taken = check(payloads)
    for i in set(range(len(objs))) - taken:  # only what holds an escape, a non-integer or a long number is left out
        assert "\\" in payloads[i] or any(type(v) is not int or abs(v) >= 10**18 for v in objs[i].values()), payloads[i]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=30), min_size=1, max_size=20), st.data())
def test_mutated_bytes_never_differ_from_orjson(noise: list[bytes], data: st.DataObject) -> None:
    payloads = []
    for extra in noise:
        base = data.draw(st.sampled_from(HEARTBEATS)).encode()
        at = data.draw(st.integers(0, len(base)))
        payloads.append((base[:at] + extra + base[at:]).replace(b"\0", b""))
    parsed = parse_payloads(payloads)
    assert parsed is not None
    for shape in parsed.shapes:
        for i, row in enumerate(shape.rows.tolist()):
            assert orjson.loads(payloads[row]) == dict(zip(shape.keys, shape.values[i].tolist()))


def test_integer_boot_ids_parsed_in_bulk_key_as_boot_key() -> None:
    from ptmon.boot_ids import _BOOT_CACHE_LIMIT, _IntBootKeys, boot_key

    cache = _IntBootKeys()
    rng = np.random.default_rng(1)
    for size in (5000, 5000, _BOOT_CACHE_LIMIT):  # new ids, then some seen, then past the limit (cleared)
        values = rng.integers(-(10**17), 10**17, size)
        values[::3] = values[0]
        values[1::5] = 7
        expected = [boot_key(v) for v in values[:20000].tolist()]
        assert cache(values)[:20000].tolist() == expected
        assert boot_key(7) == boot_key("7")  # the same key as the id sent as a string


def test_integer_boot_id_cache_grows_and_clears_with_the_same_keys() -> None:
    from ptmon.boot_ids import _BOOT_CACHE_LIMIT, _IntBootKeys, boot_key

    cache = _IntBootKeys()
    rng = np.random.default_rng(2)
    edge = np.array([0, -1, 1, 10**18 - 1, -(10**18) + 1, 7], dtype=np.int64)
    seen = edge
    for size in (3, 4000, 120_000, _BOOT_CACHE_LIMIT // 2):  # grows past its first slots, then is cleared
        values = np.concatenate([edge, rng.integers(-(10**18) + 1, 10**18, size), seen[:1000]])
        keys = cache(values)
        sample = np.arange(0, len(values), max(1, len(values) // 2000))
        assert keys[sample].tolist() == [boot_key(v) for v in values[sample].tolist()]
        assert np.array_equal(cache(values[::-1]), keys[::-1])  # found again, in any order
        assert 4 * cache.size <= len(cache.ids) and cache.size <= _BOOT_CACHE_LIMIT
        seen = values
