"""The compact id tables (ids.py) and the topic lookup built on them (topics.py) answer as a
list, a dict and a string comparison would, for ids of every length across the 8-byte words
they are hashed and compared in, and never take a near miss for a device."""

from __future__ import annotations

import random

import numpy as np
import pytest

from ptmon.ids import DeviceIds, IdIndex, padded, words
from ptmon.registry import Registry
from ptmon.topics import TopicMap

from .conftest import make_registry

ALPHABET = "abcXYZ019-_.:" + "普陀镇路"


def random_ids(rng: random.Random, n: int) -> list[str]:
    ids: set[str] = set()
    while len(ids) < n:
        ids.add("".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 27))))
    return sorted(ids, key=lambda _: rng.random())


def near_misses(rng: random.Random, ids: list[str]) -> list[str]:
    """Strings an id is not: one character changed, dropped or added, at either end or inside."""
    misses = []
    for x in rng.sample(ids, 200):
        i = rng.randrange(len(x))
        misses += [x[:i] + "Q" + x[i + 1:], x[:i] + x[i + 1:], x + "a", "a" + x, x[:-1]]
    known = set(ids)
    return [m for m in misses if m not in known]


@pytest.fixture(scope="module")
def ids() -> list[str]:
    return random_ids(random.Random(7), 3000)


def test_device_ids_answer_as_the_list(ids: list[str]) -> None:
    """Test that DeviceIds indexes, iterates, contains, slices and gathers as the list of str."""
    table = DeviceIds.from_strings(ids)
    assert table.offsets.dtype == np.int32  # 4 bytes an id below 2 GiB of ids
    assert len(table) == len(ids) and list(table) == ids and table == ids
    assert [table[i] for i in (0, 1, -1, -len(ids))] == [ids[0], ids[1], ids[-1], ids[0]]
    assert table[5:9] == ids[5:9]
    with pytest.raises(IndexError):
        table[len(ids)]
    assert all(x in table for x in ids[:100]) and "not-an-id" not in table and ids[0][:-1] + "Q" not in table
    rows = np.array([4, 0, 2999, 4], dtype=np.int64)
    assert table.take(rows) == [ids[r] for r in rows]
    assert DeviceIds.from_joined(table.joined()) == ids
    assert table.lengths.tolist() == [len(x.encode()) for x in ids]


def test_id_index_answers_as_the_dict(ids: list[str]) -> None:
    """Test that the index finds every id's row, one by one and in bulk from another buffer, and
    answers no row for near misses, whose hashes share most of their words with an id's."""
    rng = random.Random(8)
    index = IdIndex(DeviceIds.from_strings(ids))
    reference = {x: i for i, x in enumerate(ids)}
    misses = near_misses(rng, ids)
    assert all(index.get(x) == reference[x] for x in ids) and all(index.get(m) is None for m in misses)
    queries = rng.sample(ids, 1000) + misses
    encoded = [q.encode() for q in queries]
    lengths = np.array([len(e) for e in encoded], dtype=np.int64)
    buffer = padded(b"|".join(encoded))
    starts = np.cumsum(lengths + 1) - lengths - 1
    got = index.lookup(words(buffer), starts, lengths)
    assert got.tolist() == [reference.get(q, -1) for q in queries]


@pytest.fixture(scope="module")
def topic_registry(rules, ids: list[str]) -> Registry:
    streets = ["taopu", "wanli", "changzheng"]
    rows = [f"{x},cam,face_cam,{streets[i % 3]}" if i % 2 else f"{x},iot,elevator,{streets[i % 3]}"
            for i, x in enumerate(ids)]
    return make_registry(rules, *rows)


def test_topic_map_takes_only_a_device_s_own_heartbeat_topic(topic_registry: Registry) -> None:
    """Test that TopicMap.rows gives a registry row exactly for the device's own heartbeat topic,
    the same in bulk as one by one, and -1 for the same id under another contract or street,
    another suffix or level count, and for ids the registry does not hold."""
    rng = random.Random(9)
    registry = topic_registry
    contracts, streets = [c.code for c in registry.rules.contracts], registry.rules.street_codes()
    own = {f"putuo/{contracts[registry.contract[i]]}/{streets[registry.street[i]]}/{registry.ids[i]}/hb": i
           for i in range(len(registry))}
    topics = rng.sample(sorted(own), 1500)
    for topic in rng.sample(topics, 300):
        _, contract, street, device, _ = topic.split("/")
        other_contract = "iot" if contract == "cam" else "cam"
        other_street = "ganquan" if street != "ganquan" else "taopu"
        topics += [f"putuo/{other_contract}/{street}/{device}/hb", f"putuo/{contract}/{other_street}/{device}/hb",
                   f"putuo/{contract}/{street}/{device}/hbx", f"putuo/{contract}/{street}/{device}/h",
                   f"putuo/{contract}/{street}/{device}/hb/x", f"putuo/{contract}/{street}/x/{device}/hb",
                   f"Putuo/{contract}/{street}/{device}/hb", f"putuo/{contract}/{street}/{device}Q/hb",
                   f"putuo/{contract}/{street}{device}/hb", f"{contract}/{street}/{device}/hb"]
    topics += ["", "/", "putuo////hb", "hb"]
    rng.shuffle(topics)
    expected = [own.get(t, -1) for t in topics]
    assert TopicMap(registry).rows(topics).tolist() == expected
    assert [-1 if (r := TopicMap(registry).row(t)) is None else r for t in topics] == expected
