"""Partitions: a collector that owns a declared set of streets (街镇).

A partition collector subscribes only to its streets' heartbeat topics (``putuo/+/{street}/+/hb``;
MQTT keeps one topic's messages in order to one subscriber, so a device always reaches the same
collector in order), keeps only its streets' registry rows, and tags its archive directory
(``partition.json``) and its ledger (``meta`` key ``partition``) with what it owns and the rule
and registry versions it ran with. :mod:`ptmon.merge` checks those tags before it combines
partitions into one month.

Archive records carry no partition, so a day file that travels without its directory (synced back
without ``partition.json``, copied into another partition's) cannot say whose it is by its records.
Each file a partition writes therefore starts with a ``$ptmon/partition`` record (:func:`file_header`),
and :func:`archive_tag`, which every reader of an archive directory goes through, refuses a file whose
record disagrees with its directory (:func:`check_day_files`).

The registry is filtered after it is loaded (:func:`restrict_registry`), above the CSV parser,
so that any loader gives the same partition. The restricted registry keeps the file's version and
its code tables (communities, gateways), and is tagged with its streets (``Registry.partition``).
Every collector takes ``putuo/gw/+/status``, so every partition receives every gateway's status:
the decoder takes the statuses only of gateways that serve a device of its streets. Another
partition's gateway changes nothing here and raises nothing; its status is counted as
``other_partition_gateway`` (ordinary traffic, not data quality), so the merged data quality holds
it once, from its owner. A gateway the registry does not know has no owner: the partition holding
the rules' first street counts it as ``unknown_gateway``, the others as ``other_partition_gateway``,
so merged partitions count it as often as one whole-district collector does.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import orjson

from .archive import PARTITION_TOPIC
from .config import DEFAULT_TOPICS, CollectorConfig
from .errors import PtmonError, UsageError, reason
from .ids import IdIndex
from .registry import Registry
from .rules import Rules

if TYPE_CHECKING:  # the ledger imports this module's neighbours; only its type is needed here
    from .ledger.store import Ledger

PARTITION_FILE = "partition.json"
LEDGER_KEY = "partition"
GATEWAY_TOPIC = "putuo/gw/+/status"
HEAD_BYTES = 1 << 14  # compressed bytes read for an archive file's first line


@dataclass(frozen=True)
class Partition:
    """What one collector owns and the inputs it ran with."""

    streets: tuple[str, ...]  # street codes, in the rules' order
    rules_version: str
    registry_version: str

    @property
    def label(self) -> str:
        return "+".join(self.streets)

    def to_json(self) -> str:
        return json.dumps({"streets": list(self.streets), "rules_version": self.rules_version,
                           "registry_version": self.registry_version}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, where: str) -> Partition:
        try:
            doc = json.loads(text)
            return cls(tuple(doc["streets"]), str(doc["rules_version"]), str(doc["registry_version"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise PtmonError(f"{where}: not a partition tag ({exc})") from exc


def owned_streets(rules: Rules, streets: Iterable[str]) -> tuple[str, ...]:
    """The streets named, checked against the rules and put in the rules' order."""
    named = list(streets)
    known = rules.street_codes()
    unknown = sorted(set(named) - set(known))
    if unknown:
        raise UsageError(f"partition: unknown street(s) {', '.join(unknown)} (known: {', '.join(known)})")
    if len(set(named)) != len(named):
        raise UsageError(f"partition: a street is named twice in {', '.join(named)}")
    return tuple(s for s in known if s in named)


def partition_topics(streets: Sequence[str]) -> tuple[str, ...]:
    """The MQTT topic filters of a partition: its streets' heartbeats, and every gateway status."""
    return (*(f"putuo/+/{street}/+/hb" for street in streets), GATEWAY_TOPIC)


def restrict_registry(registry: Registry, streets: Sequence[str]) -> Registry:
    """The registry's rows of ``streets`` only, same version and code tables, tagged with its streets."""
    codes = registry.rules.street_codes()
    owned = owned_streets(registry.rules, streets)
    keep = np.isin(registry.street, [codes.index(s) for s in owned])
    rows = np.flatnonzero(keep)
    ids = registry.ids.take(rows)
    contract, street = registry.contract[rows], registry.street[rows]
    n_streets = len(codes)
    group = contract.astype(np.int64) * n_streets + street
    bounds = np.searchsorted(contract, np.arange(len(registry.rules.contracts) + 1))
    return dataclasses.replace(
        registry, ids=ids, index=IdIndex(ids), contract=contract, street=street,
        type=registry.type[rows], accepted_day=registry.accepted_day[rows], retired_day=registry.retired_day[rows],
        community=registry.community[rows], gateway=registry.gateway[rows], scenario=registry.scenario[rows],
        contract_slices={c.code: slice(int(bounds[i]), int(bounds[i + 1])) for i, c in enumerate(registry.rules.contracts)},
        group_bounds=np.searchsorted(group, np.arange(len(registry.rules.contracts) * n_streets + 1)).astype(np.int64),
        partition=owned,
    )


def partition_of(registry: Registry, streets: Sequence[str]) -> Partition:
    return Partition(owned_streets(registry.rules, streets), registry.rules.version, registry.version)


def partitioned_config(config: CollectorConfig) -> CollectorConfig:
    """A partition's config subscribes to its streets' topics unless topics were set by hand."""
    if not config.streets or config.mqtt.topics != DEFAULT_TOPICS:
        return config
    return dataclasses.replace(config, mqtt=dataclasses.replace(config.mqtt, topics=partition_topics(config.streets)))


def owned_points(lines: list[str], streets: Sequence[str]) -> list[str]:
    """A partition's ``sla`` and ``loss`` points of its own streets only: another street's would
    overwrite its owner's series with zeros, and its "district" is only its share of the district."""
    keep = {f"street={s}" for s in streets}
    out = []
    for line in lines:
        if line.startswith(("sla,", "loss,")):
            tags = line.split(" ", 1)[0].split(",")[1:]
            if not keep.intersection(tags):
                continue
        out.append(line)
    return out


# --- tags ---------------------------------------------------------------------------------------

def archive_tag(directory: Path) -> Partition | None:
    """The partition an archive directory was written by (None: a whole-district collector's),
    refusing day files that say they are another partition's (:func:`check_day_files`)."""
    path = Path(directory) / PARTITION_FILE
    try:  # a directory ptmon may not read or search is named as such, not by the file sought in it
        os.listdir(directory)
        os.lstat(path)
    except PermissionError as exc:
        raise UsageError(f"{directory}: cannot read the archive directory: {reason(exc)}") from exc
    except OSError:
        pass  # missing, or not a directory: said by whoever reads it
    try:
        tag = Partition.from_json(path.read_text(encoding="utf-8"), str(path)) if path.is_file() else None
    except PtmonError as exc:
        raise PtmonError(f"{exc}{_restore_hint(Path(directory))}") from exc
    check_day_files(Path(directory), tag)
    return tag


def _restore_hint(directory: Path) -> str:
    """How to restore a damaged ``partition.json`` (emptied by a power cut while written, say): from
    what the directory's day files say, when one does."""
    from .sinks.archive import archive_files

    for day_file in archive_files(directory):
        if (says := file_partition(day_file)) is not None:
            return (f". {day_file.name} says it is partition {says.label}'s: if this directory is, write "
                    f"{says.to_json()} to {directory / PARTITION_FILE}")
    return (f". It names the partition that wrote this directory; its ledger holds the same tag (meta key "
            f"'{LEDGER_KEY}'): restore the file from it")


# --- day files identify themselves ------------------------------------------------------------

def file_header(partition: Partition) -> tuple[str, str]:
    """The ``$ptmon/partition`` control record (topic, payload) a partition writes first in every archive file."""
    return PARTITION_TOPIC, partition.to_json()


def file_partition(path: Path) -> Partition | None:
    """The partition an archive file says wrote it (its first line), None when it says none
    (the whole district's, or written before files identified themselves) or cannot be read."""
    try:
        with open(path, "rb") as f:
            head = zlib.decompressobj(31).decompress(f.read(HEAD_BYTES), HEAD_BYTES)
    except (OSError, zlib.error):
        return None  # unreadable: its readers report the damage
    line = head.split(b"\n", 1)[0]
    if PARTITION_TOPIC.encode() not in line:
        return None
    try:
        record = orjson.loads(line)
        if record["topic"] != PARTITION_TOPIC:
            return None
        return Partition.from_json(record["payload"], f"{path}: its {PARTITION_TOPIC} record")
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None


def check_day_files(directory: Path, tag: Partition | None) -> None:
    """Refuse, in one line, a day file whose ``$ptmon/partition`` record disagrees with its directory's
    tag: another partition's file copied in, or a partition's file in a directory without ``partition.json``
    (read as the whole district, its other streets would come out 0 % online)."""
    from .sinks.archive import archive_files

    for path in archive_files(directory):
        says = file_partition(path)
        if says is None or (tag is not None and says.streets == tag.streets):
            continue
        if tag is not None:
            raise UsageError(f"{path} is partition {says.label}'s day file, but {directory} is partition {tag.label}'s "
                             f"({PARTITION_FILE}): move it back to partition {says.label}'s archive directory")
        raise UsageError(f"{path} is partition {says.label}'s day file, but {directory} has no {PARTITION_FILE}, so it "
                         f"would be read as the whole district: restore the partition's {PARTITION_FILE} beside it "
                         f"(copy it from its archive directory, or write {says.to_json()} to {directory / PARTITION_FILE})")


def ledger_tag(db: sqlite3.Connection, where: str) -> Partition | None:
    """The partition of a ledger (its sqlite3 connection), None when untagged."""
    row = db.execute("SELECT value FROM meta WHERE key = ?", (LEDGER_KEY,)).fetchone()
    return Partition.from_json(row[0], where) if row else None


def claim(partition: Partition, archive_dir: Path, ledger: Ledger) -> None:
    """Tag the archive directory and the ledger with ``partition``; refuse storage that another
    partition wrote (its months would mix two sets of streets)."""
    ledger_path = str(getattr(ledger, "path", "ledger"))
    tags = _tags(archive_dir, ledger)
    for where, found in tags:
        if found is not None and found.streets != partition.streets:
            raise UsageError(f"{where} belongs to partition {found.label}, not {partition.label}: give each "
                             "partition its own data directory (a changed partition starts a new one)")
    if all(found is None for _, found in tags) and _holds_data(archive_dir, ledger):
        raise UsageError(f"{archive_dir} and {ledger_path} hold a whole-district collector's data (no partition tag): "
                         f"partition {partition.label} would take them over and mix its streets' months with the "
                         "district's. Give the partition its own data directory (data_dir)")
    archive_dir.mkdir(parents=True, exist_ok=True)
    tag = archive_dir / PARTITION_FILE
    tmp = tag.with_suffix(".tmp")
    tmp.write_text(partition.to_json() + "\n", encoding="utf-8")
    tmp.replace(tag)
    with ledger.transaction() as db:
        db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (LEDGER_KEY, partition.to_json()))


def refuse_partitioned(archive_dir: Path, ledger: Ledger) -> None:
    """A whole-district collector (no ``streets``) refuses storage a partition wrote: it would
    write every street into that partition's archive and ledger, under its tag."""
    for where, found in _tags(archive_dir, ledger):
        if found is not None:
            raise UsageError(f"{where} belongs to partition {found.label}: a whole-district collector (streets = []) "
                             "would write every street into it. Give it its own data directory (data_dir), or run "
                             f"this one as the partition (streets = {list(found.streets)})")


def _tags(archive_dir: Path, ledger: Ledger) -> list[tuple[str, Partition | None]]:
    """The partition tags of an archive directory and a ledger, each with where it was read."""
    ledger_path = str(getattr(ledger, "path", "ledger"))
    return [(str(archive_dir), archive_tag(archive_dir)), (ledger_path, ledger_tag(ledger.db, ledger_path))]


def _holds_data(archive_dir: Path, ledger: Ledger) -> bool:
    from .sinks.archive import archive_files

    return (archive_dir.is_dir() and bool(archive_files(archive_dir))) or bool(ledger.has_hours())


# --- a set of partitions ------------------------------------------------------------------------

def storage_tag(ledger_path: Path, archive_dir: Path) -> Partition | None:
    """The partition a ledger and its archive directory were written by (None: the whole
    district's), refusing a pair that two different collectors wrote."""
    from .ledger.store import Ledger

    in_archive = archive_tag(archive_dir)
    in_ledger = None
    if ledger_path.is_file():
        with Ledger(ledger_path, readonly=True) as ledger:
            in_ledger = ledger_tag(ledger.db, str(ledger_path))
    if not archive_dir.is_dir():
        return in_ledger  # no archive there (a default not given): nothing to compare; its users say it is missing
    if ledger_path.is_file() and (in_ledger.streets if in_ledger else None) != (in_archive.streets if in_archive else None):
        raise UsageError(f"{ledger_path} ({in_ledger.label if in_ledger else 'whole district'}) and {archive_dir} "
                         f"({in_archive.label if in_archive else 'whole district'}) were written by different collectors")
    return in_ledger or in_archive


def refuse_untagged_archives(archives: Sequence[tuple[Path, Partition | None]],
                             ledgers: Sequence[tuple[Path, Partition]] = ()) -> None:
    """Refuse an archive directory without ``partition.json`` given beside partitions' archives,
    saying so: it is not told apart from a whole-district collector's archive (every street, so
    "in two partitions"), and is most often a partition's archive whose tag was not copied with
    its day files. ``ledgers``: the partitions' ledgers given, to name the one whose archive it may be."""
    untagged = [p for p, t in archives if t is None]
    if not untagged or len(untagged) == len(archives):
        return
    shown = ", ".join(f"{p} (its directory)" if p.is_file() else str(p) for p in untagged)
    found = list(dict.fromkeys(t.streets for _, t in archives if t is not None))
    orphans = [(path, tag) for path, tag in ledgers if tag.streets not in found]
    hint = ""
    if len(untagged) == 1 and len(orphans) == 1:
        path, tag = orphans[0]
        hint = f" It is likely partition {tag.label}'s, the partition of {path}, whose archive is missing here."
    ledger = str(orphans[0][0]) if len(untagged) == 1 and len(orphans) == 1 else "ITS_LEDGER"
    directory = untagged[0].parent if untagged[0].is_file() else untagged[0]
    labels = ", ".join("+".join(streets) for streets in found)
    raise UsageError(
        f"cannot merge these partitions: archive directory {shown} has no {PARTITION_FILE} (the partition tag a "
        f"partition collector writes there at its start), beside partitions' archives ({labels}): which streets it "
        f"holds cannot be told.{hint} If it is a partition's archive whose {PARTITION_FILE} was lost (copied or restored "
        "without it), put the tag back: start that partition's collector on its data directory once (it writes the "
        f"tag again), or copy it from the partition's ledger: `sqlite3 {ledger} \"SELECT value FROM meta WHERE key = "
        f"'{LEDGER_KEY}'\" > {directory / PARTITION_FILE}`. A whole-district collector's archive (untagged too) "
        "overlaps every partition: leave it out")


def check_partitions(rules: Rules, tagged: Sequence[tuple[str, Partition | None]], *,
                     same_inputs: bool = True) -> None:
    """Refuse, with the reason, partitions that overlap, miss a street of the rules or ran with
    other rules (or registry) versions. An untagged source stands for the whole district."""
    problems: list[str] = []
    tagged = _once(tagged, problems)
    owner: dict[str, str] = {}
    for where, part in tagged:
        for street in part.streets if part is not None else rules.street_codes():
            if street in owner:
                problems.append(f"street {street} is in two partitions: {owner[street]} and {where}")
            owner.setdefault(street, where)
    missing = [s for s in rules.street_codes() if s not in owner]
    if missing:
        problems.append(f"street(s) {', '.join(missing)} in no partition given (the rules have "
                        f"{', '.join(rules.street_codes())})")
    unknown = sorted(set(owner) - set(rules.street_codes()))
    if unknown:
        problems.append(f"street(s) {', '.join(unknown)} are not in the rules {rules.version}")
    if same_inputs:
        for what, attr in (("rules", "rules_version"), ("registry", "registry_version")):
            versions = {where: getattr(p, attr) for where, p in tagged if p is not None}
            if len(set(versions.values())) > 1:
                problems.append(f"mixed {what} versions: " + ", ".join(f"{w} {v}" for w, v in versions.items())
                                + f". Every partition must run with the same {what} file: restart each partition's "
                                  f"collector with it (each then recomputes its month from its archive and "
                                  f"retags its ledger and archive)")
    if problems:
        raise UsageError("cannot merge these partitions:\n  " + "\n  ".join(problems))


def _once(tagged: Sequence[tuple[str, Partition | None]], problems: list[str]) -> list[tuple[str, Partition | None]]:
    """Each source once: one given twice (however spelled) is named as such, not as two partitions."""
    seen: dict[str, str] = {}
    out = []
    for where, part in tagged:
        key = os.path.realpath(where)
        if key in seen:
            first = seen[key]
            problems.append(f"{where} is given twice" if first == where else f"{where} is {first}, given twice")
            continue
        seen[key] = where
        out.append((where, part))
    return out
