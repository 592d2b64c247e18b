"""State checkpoints: what the live collector needs to continue the month after a restart.

One ``.npz`` file (read with ``allow_pickle=False``; nothing is pickled) holding:

* ``meta``: a UTF-8 JSON document as a uint8 array: format and version, saved-at (unix µs),
  registry and rules versions, the contracts (sample interval, online method) and streets,
  the gateway ids, the engine's scalars, every tally keyed by contract and street code, the
  decoder's counts (and its rate clock and window length) and the caller's ``extra`` (e.g. the
  archive position);
* ``device_ids``: the registry's device ids, UTF-8 joined by ``\\n`` (ids cannot hold control
  characters), as a uint8 array (the registry's id blob as it is; restored through its index,
  so no two-million-entry dict is built);
* one array per per-device engine attribute (rows in ``device_ids`` order) and per gateway one;
* with a rate limit, the decoder's rate windows per device and per gateway, so a replay of the
  archive rejects exactly what the restarted collector did;
* ``partition`` in ``meta``: the partition collector whose state it is (its streets and versions,
  :class:`~ptmon.partition.Partition`), ``null`` for a whole-district collector. A collector refuses
  another's checkpoint (:func:`load_checkpoint` with ``partition``) rather than continue and then
  overwrite it; a checkpoint without the key (older, or a month-start snapshot) is not checked;
* ``ext.*``: arrays other stages hand in (the device-health monitor's, keyed by device id in its
  own way), returned as they were saved in :attr:`Checkpoint.extensions`.

State is restored by id, so the registry may change between runs. Tally sums are restored by
contract and street code; sums the current rules have no place for, or a changed sample grid,
raise :class:`CheckpointError`: those numbers feed payments.
"""

from __future__ import annotations

import json
import time
import zipfile
import zlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import EllipsisType
from typing import TYPE_CHECKING, Any

import numpy as np

from .checkpoint_rows import (
    RATE_ARRAYS,
    device_rows,
    restore_rates,
    restore_rows,
    rows_by_id,
    saved_device_ids,
    whole,
)
from .decode import Decoder, RateState
from .durable import replacing_file
from .engine import NEVER, Engine
from .errors import CheckpointError, PtmonError, UsageError, reason
from .plausibility import ALLOWANCE_CAP_MS
from .registry import Registry
from .rules import COUNTERS, Rules
from .tally import Tally

if TYPE_CHECKING:
    from .partition import Partition

FORMAT = "ptmon-checkpoint"
FORMAT_VERSION = 2  # 2: sampled_online, the per-hour message counts
# online_until is not saved: it is last_heartbeat + the type's timeout, rebuilt on load.
DEVICE_ARRAYS = ("last_heartbeat", "seen", "seq", "has_seq", "boot", "has_boot",
                 "counters", "has_baseline", "seen_day", "sampled_online", "resets_today", "unmatched", "allowance",
                 "missing", "last_ts", "jump")
# Added after checkpoints were first written: a checkpoint without them restores the rest, and
# these start as at a device's first message (a burst of allowance, nothing unmatched or missing).
LATER_DEVICE_ARRAYS = ("resets_today", "unmatched", "allowance", "missing", "last_ts")
# A checkpoint written before provisional seq gaps has no "jump": every gap it holds was counted lost
# already, which is what jump 0 (no provisional gap) means, so it restores exactly with zeros.
SINCE_PROVISIONAL_GAPS = ("jump",)
GATEWAY_ARRAYS = ("gateway_online", "gateway_since")
FRESH_START = ("move {path} away to start with a fresh checkpoint (the month so far can be "
               "recomputed from the archive with `ptmon replay`)")
_MALFORMED = (KeyError, TypeError, ValueError, IndexError, AttributeError, OverflowError,
              UsageError)


@dataclass(frozen=True)
class DecoderCounts:
    """The decoder's running counts, as saved."""

    rejects: dict[str, int]
    bad_fields: dict[str, int]
    unknown_topics: dict[str, int]
    unknown_overflow: int
    accepted: int

    @classmethod
    def of(cls, decoder: Decoder) -> DecoderCounts:
        return cls(dict(decoder.rejects), dict(decoder.bad_fields), dict(decoder.unknown_topics),
                   decoder.unknown_overflow, decoder.accepted)

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> DecoderCounts:
        return cls(_int_map(doc["rejects"]), _int_map(doc["bad_fields"]),
                   _int_map(doc["unknown_topics"]), whole(doc["unknown_overflow"]),
                   whole(doc["accepted"]))


@dataclass
class Checkpoint:
    """A loaded checkpoint: a restored engine with its tallies attached, and what else was saved."""

    engine: Engine
    tallies: list[Tally]
    named: dict[str, Tally]  # tallies saved by name, not attached (the ledger's open hour and day)
    decoder_counts: DecoderCounts
    decoder_rates: RateState | None  # None: saved without a rate limit
    extra: dict[str, Any]
    saved_at: int  # unix µs
    notes: list[str]  # what did not fit exactly (registry or rule changes), for the log
    registry_version: str = ""  # of the registry and rules the state was computed with
    rules_version: str = ""
    extensions: dict[str, np.ndarray] = field(default_factory=dict)  # other stages' arrays, by name


# --- save -------------------------------------------------------------------------------


def save_checkpoint(path: Path, *, engine: Engine, tallies: Sequence[Tally], decoder: Decoder,
                    extra: Mapping[str, Any], named: Mapping[str, Tally | None] | None = None,
                    extensions: Mapping[str, np.ndarray] | None = None,
                    partition: Partition | EllipsisType | None = ...) -> None:
    """Write the state atomically and durably; ``extra`` must be JSON-serialisable, ``extensions``
    numeric arrays (no objects: the file is read without pickle). ``partition``: whose state it is
    (None: the whole district's; not given: not recorded)."""
    named_given: dict[str, Tally] = {k: v for k, v in (named or {}).items() if v is not None}
    if any(tally.engine is not engine for tally in [*tallies, *named_given.values()]):
        raise ValueError("every tally saved must be attached to the engine saved")
    registry, rules = engine.registry, engine.registry.rules
    meta = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "saved_at": time.time_ns() // 1000,
        "registry_version": registry.version,
        "rules_version": rules.version,
        "counters": list(COUNTERS),
        "contracts": {c.code: {"sample_interval": c.sample_interval,
                               "online_method": c.online_method} for c in rules.contracts},
        "streets": rules.street_codes(),
        "gateways": list(registry.gateways),
        "engine": {"clock": engine.clock, "up": engine.up, "down_at": engine.down_at,
                   "next_tick": engine.next_tick, "tick": engine.tick, "spans": engine.spans,
                   "stats": dict(engine.stats)},
        "tallies": [_tally_doc(tally, rules) for tally in tallies],
        "named_tallies": {name: _tally_doc(tally, rules) for name, tally in named_given.items()},
        "decoder": vars(DecoderCounts.of(decoder)),
        "extra": dict(extra),
    }
    if partition is not ...:
        meta["partition"] = None if partition is None else json.loads(partition.to_json())
    rates = decoder.rate_state()
    if rates is not None:
        meta["decoder_rate"] = {"window": rates.window, "clock": rates.clock}
    blob = json.dumps(meta, ensure_ascii=False, separators=(",", ":"), default=_plain).encode()
    arrays = {
        "meta": np.frombuffer(blob, dtype=np.uint8),
        "device_ids": np.frombuffer(registry.ids.joined(), dtype=np.uint8),
        **{name: getattr(engine, name) for name in DEVICE_ARRAYS + GATEWAY_ARRAYS},
    }
    if rates is not None:
        arrays |= {name: getattr(rates, attribute) for attribute, (name, _, _) in RATE_ARRAYS.items()}
    arrays |= {f"ext.{name}": array for name, array in (extensions or {}).items()}
    _write_atomic(Path(path), arrays)


def _tally_doc(tally: Tally, rules: Rules) -> dict[str, Any]:
    contracts, streets = [c.code for c in rules.contracts], rules.street_codes()
    grid = (len(contracts), len(streets))
    return {
        "start": tally.start,
        "end": tally.end,
        "samples": dict(zip(contracts, tally.samples.tolist())),
        "online": _nest(tally.online, contracts, streets),
        "expected": _nest(tally.expected, contracts, streets),
        "counters": _nest(tally.counters.reshape(*grid, -1), contracts, streets),
        "day_online": {str(day): _nest(counts.reshape(grid), contracts, streets)
                       for day, counts in sorted(tally.day_online.items())},
        "day_samples": [[contracts[ci], day, n]
                        for (ci, day), n in sorted(tally.day_samples.items())],
        "counts": {kind: {"groups": _nest(per_group[:-1].reshape(grid), contracts, streets), "none": int(per_group[-1])}
                   for kind, per_group in sorted(tally.counts.items())},
        "unknown": dict(tally.unknown),
    }


def _nest(a: np.ndarray, contracts: list[str], streets: list[str]) -> dict[str, dict[str, Any]]:
    """[contract, street, ...] → {contract: {street: value}}."""
    return {c: {s: a[ci, si].tolist() for si, s in enumerate(streets)}
            for ci, c in enumerate(contracts)}


def _plain(value: Any) -> Any:
    if isinstance(value, (np.integer, np.bool_)):
        return value.item()
    raise TypeError(f"checkpoint: {type(value).__name__} is not JSON-serialisable")


def _write_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    try:
        with replacing_file(path) as f:
            np.savez(f, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds as allow_pickle
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot write the checkpoint: {reason(exc)}") from exc


# --- load -------------------------------------------------------------------------------


def try_load_checkpoint(path: Path, registry: Registry) -> Checkpoint | None:
    """:func:`load_checkpoint`, or None when there is no file at ``path`` (a first start)."""
    return load_checkpoint(path, registry) if Path(path).exists() else None


def load_checkpoint(path: Path, registry: Registry, *, partition: Partition | EllipsisType | None = ...) -> Checkpoint:
    """Restore a checkpoint onto a fresh engine of ``registry``; :class:`CheckpointError` when
    the file is missing, unreadable, or its sums do not fit the current rules. Given ``partition``
    (None: the whole district), :class:`UsageError` for another collector's checkpoint."""
    path = Path(path)
    arrays, meta = _read(path)
    if partition is not ... and "partition" in meta:
        _refuse_another_collectors(path, meta["partition"], partition)
    elif partition is not ... and partition is not None:
        _refuse_other_streets(path, meta, partition)
    try:
        return _restore(path, arrays, meta, registry)
    except _MALFORMED as exc:
        why = f"{type(exc).__name__}: {exc}"
        raise CheckpointError(f"{path}: malformed checkpoint ({why})") from exc


def restore_decoder(decoder: Decoder, checkpoint: Checkpoint) -> None:
    """Give a fresh decoder the counts saved in ``checkpoint``."""
    counts, limit = checkpoint.decoder_counts, decoder.unknown_limit
    topics = list(counts.unknown_topics.items())
    decoder.rejects = Counter(counts.rejects)
    decoder.bad_fields = Counter(counts.bad_fields)
    decoder.unknown_topics = dict(topics[:limit])
    decoder.unknown_overflow = counts.unknown_overflow + sum(n for _, n in topics[limit:])
    decoder.accepted = counts.accepted
    if checkpoint.decoder_rates is not None:
        decoder.restore_rate_state(checkpoint.decoder_rates)


def _read(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The arrays and the JSON document of a checkpoint file, or CheckpointError saying why not."""
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise CheckpointError(f"{path}: not a ptmon checkpoint (one numpy array, not .npz)")
        with loaded:
            arrays = {name: loaded[name] for name in loaded.files}
    except FileNotFoundError as exc:
        raise CheckpointError(f"{path}: no checkpoint file") from exc
    except PermissionError as exc:  # not damage: nothing is moved aside or rebuilt for it
        raise UsageError(f"{path}: cannot read the checkpoint: {reason(exc)}; give ptmon read access to it") from exc
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise CheckpointError(f"{path}: not a readable ptmon checkpoint (corrupt or truncated?): "
                              f"{type(exc).__name__}: {exc}") from exc
    blob = arrays.pop("meta", None)
    if blob is None or blob.dtype != np.uint8 or blob.ndim != 1:
        raise CheckpointError(f"{path}: not a ptmon checkpoint (no meta document)")
    try:
        meta = json.loads(blob.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: the checkpoint's meta document is not JSON: {exc}") from exc
    found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
    if found != FORMAT:
        raise CheckpointError(f"{path}: not a ptmon checkpoint (format {found!r})")
    if meta.get("version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {meta.get('version')!r}; "
                              f"this ptmon reads version {FORMAT_VERSION}")
    return arrays, meta


def _refuse_another_collectors(path: Path, saved: Any, partition: Partition | None) -> None:
    """Refuse a checkpoint another partition (or the whole district, or a partition for a whole-district
    collector) saved: continued here, its state would mix two sets of streets and be overwritten."""
    from .partition import Partition

    try:
        owner = None if saved is None else Partition.from_json(json.dumps(saved), str(path))
    except PtmonError as exc:
        raise CheckpointError(f"{path}: malformed checkpoint (its partition: {exc})") from exc
    if (owner.streets if owner else None) == (partition.streets if partition else None):
        return
    raise UsageError(f"{path} is {_whose(owner)}'s checkpoint, not {_whose(partition)}'s: checkpoint_file points at "
                     "another collector's state, which this one would continue and overwrite. Left as it is; give "
                     "each collector its own checkpoint_file (the default is in its data_dir)")


def _refuse_other_streets(path: Path, meta: dict[str, Any], partition: Partition) -> None:
    """A checkpoint written before checkpoints named their partition: refused by a partition when it
    expected devices of a street the partition does not own (its own never did: its registry held its
    streets only). A whole-district checkpoint is one; a partition's given to the district is not caught."""
    try:
        counted = {street for tally in meta["tallies"] for by_street in tally["expected"].values()
                   for street, n in by_street.items() if n}
    except (KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{path}: malformed checkpoint ({type(exc).__name__}: {exc})") from exc
    if foreign := sorted(counted - set(partition.streets)):
        raise UsageError(f"{path} counted devices of street(s) {', '.join(foreign)}, which partition {partition.label} "
                         "does not own: checkpoint_file points at another collector's state, which this one would "
                         "continue and overwrite. Left as it is; give each collector its own checkpoint_file")


def _whose(partition: Partition | None) -> str:
    return f"partition {partition.label}" if partition is not None else "the whole-district collector"


def _restore(path: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any],
             registry: Registry) -> Checkpoint:
    notes: list[str] = []
    if meta["counters"] != list(COUNTERS):
        raise CheckpointError(f"{path}: the checkpoint's counters {meta['counters']} differ")
    _check_rules(path, meta, registry.rules, notes)
    if meta["registry_version"] != registry.version:
        notes.append("the registry changed since the checkpoint "
                     f"(version {meta['registry_version']} → {registry.version})")
    engine = Engine(registry)
    if (tick := whole(meta["engine"]["tick"])) != engine.tick:
        raise CheckpointError(f"{path}: the sample grid changed from {tick // 10**6} s to "
                              f"{engine.tick // 10**6} s, so the month cannot be continued; "
                              + FRESH_START.format(path=path))
    rows = {"device": device_rows(saved_device_ids(arrays.pop("device_ids")), registry),
            "gateway": rows_by_id(list(meta["gateways"]), registry.gateways, "gateway")}
    absent = [name for name in (*LATER_DEVICE_ARRAYS, *SINCE_PROVISIONAL_GAPS) if name not in arrays]
    if set(absent) - set(SINCE_PROVISIONAL_GAPS):
        notes.append(f"the checkpoint predates the counter plausibility and loss state ({', '.join(absent)}); "
                     "it starts afresh")
        engine.allowance[:] = ALLOWANCE_CAP_MS  # as a device's first message would: cut to its type's burst when used
    restore_rows(path, arrays, tuple(n for n in DEVICE_ARRAYS if n not in absent), rows["device"], engine, notes, "device")
    restore_rows(path, arrays, GATEWAY_ARRAYS, rows["gateway"], engine, notes, "gateway")
    heard = engine.last_heartbeat != NEVER
    engine.online_until = np.where(heard, engine.last_heartbeat + engine.timeout, NEVER)
    _restore_scalars(meta["engine"], engine)
    tallies = [_restore_tally(doc, engine) for doc in meta["tallies"]]
    named = {name: _restore_tally(doc, engine, attach=False) for name, doc in meta.get("named_tallies", {}).items()}
    return Checkpoint(engine=engine, tallies=tallies, named=named,
                      decoder_counts=DecoderCounts.from_doc(meta["decoder"]),
                      decoder_rates=restore_rates(path, arrays, meta, rows),
                      extra=dict(meta["extra"]), saved_at=whole(meta["saved_at"]), notes=notes,
                      registry_version=str(meta["registry_version"]), rules_version=str(meta["rules_version"]),
                      extensions={name[4:]: array for name, array in arrays.items() if name.startswith("ext.")})


def _check_rules(path: Path, meta: dict[str, Any], rules: Rules, notes: list[str]) -> None:
    """Raise when saved sums have no place in the current rules or a sample interval changed."""
    saved, streets = meta["contracts"], meta["streets"]
    current = {c.code: c for c in rules.contracts}
    gone = [f"contract {c}" for c in saved if c not in current]
    gone += [f"street {s}" for s in streets if s not in rules.street_codes()]
    if gone:
        raise CheckpointError(f"{path}: the checkpoint holds the period's sums for "
                              f"{', '.join(gone)}, which the rules no longer define; they feed "
                              "payments and are not dropped silently. Restore the rules, or "
                              + FRESH_START.format(path=path))
    moved = [f"{c}: {s['sample_interval']} s → {current[c].sample_interval} s"
             for c, s in saved.items() if s["sample_interval"] != current[c].sample_interval]
    if moved:
        raise CheckpointError(f"{path}: the sample interval changed ({'; '.join(moved)}), so the "
                              "month's samples cannot be continued on the new grid; "
                              + FRESH_START.format(path=path))
    notes += [f"contract {c}'s online method changed from {s['online_method']} to "
              f"{current[c].online_method}" for c, s in saved.items()
              if s["online_method"] != current[c].online_method]
    added = [f"contract {c}" for c in current if c not in saved]
    added += [f"street {s}" for s in rules.street_codes() if s not in streets]
    if added:
        notes.append(f"new since the checkpoint, their sums starting at zero: {', '.join(added)}")
    if meta["rules_version"] != rules.version:
        notes.append("the rules changed since the checkpoint "
                     f"(version {meta['rules_version']} → {rules.version})")


def _restore_scalars(doc: dict[str, Any], engine: Engine) -> None:
    if not isinstance(doc["up"], bool):
        raise TypeError(f"engine.up is {doc['up']!r}")
    engine.clock = None if doc["clock"] is None else whole(doc["clock"])
    engine.up = doc["up"]
    engine.down_at = None if doc["down_at"] is None else whole(doc["down_at"])
    engine.next_tick = whole(doc["next_tick"])
    engine.spans = [[whole(a), whole(b)] for a, b in doc["spans"]]
    engine.stats = Counter(_int_map(doc["stats"]))


def _restore_tally(doc: dict[str, Any], engine: Engine, *, attach: bool = True) -> Tally:
    """A tally of the saved period with the saved sums, attached to ``engine``."""
    rules = engine.registry.rules
    contracts = {c.code: i for i, c in enumerate(rules.contracts)}
    streets = {s: i for i, s in enumerate(rules.street_codes())}
    tally = Tally(engine, whole(doc["start"]), whole(doc["end"]))
    for code, n in doc["samples"].items():
        tally.samples[contracts[code]] = whole(n)
    tally.online[:] = _unnest(doc["online"], contracts, streets)
    tally.expected[:] = _unnest(doc["expected"], contracts, streets)
    tally.counters[:] = _unnest(doc["counters"], contracts, streets, (len(COUNTERS),)).reshape(
        engine.n_groups, len(COUNTERS))
    for day, counts in doc["day_online"].items():
        tally.day_online[int(day)] = _unnest(counts, contracts, streets).reshape(engine.n_groups)
    for code, day, n in doc["day_samples"]:
        tally.day_samples[contracts[code], whole(day)] = whole(n)
    for kind, by in doc.get("counts", {}).items():
        groups = _unnest(by["groups"], contracts, streets).reshape(engine.n_groups)
        tally.counts[str(kind)] = np.append(groups, whole(by["none"]))
    tally.unknown = {str(topic): whole(n) for topic, n in doc.get("unknown", {}).items()}
    if attach:
        engine.listeners.append(tally)
        engine.count_listeners.append(tally)
    return tally


def _unnest(doc: dict[str, dict[str, Any]], contracts: dict[str, int], streets: dict[str, int],
            tail: tuple[int, ...] = ()) -> np.ndarray:
    """{contract: {street: value}} → [contract, street, *tail] int64 (codes absent: zero)."""
    out = np.zeros((len(contracts), len(streets), *tail), dtype=np.int64)
    for contract, by_street in doc.items():
        for street, value in by_street.items():
            if np.shape(value) != tail or any(type(v) is not int for v in np.ravel(value).tolist()):
                raise ValueError(f"{contract}/{street} holds {value!r}, not ints of shape {tail}")
            out[contracts[contract], streets[street]] = value
    return out


def _int_map(doc: Mapping[str, Any]) -> dict[str, int]:
    return {str(key): whole(value) for key, value in doc.items()}
