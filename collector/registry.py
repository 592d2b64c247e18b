"""The device registry (the contract inventory): the denominator of every KPI.

The CSV (columns ``device_id,contract,type,street,scenario,community,gateway,accepted_on,
retired_on``) is read whole and checked row by row; any bad row fails the load with every
problem listed as ``file:line: what``. A registry is never half-loaded. Device and gateway
ids name an MQTT topic level and an InfluxDB tag, so they may not hold ``/ + #``, control
characters, edge spaces or a final backslash.

It is read column-first, a chunk of rows at a time, keeping only compact columns (peak memory
a few times the file's size, not tens of Python objects a row). In memory it is columnar: one
numpy array per attribute, indexed by device, with contract, street and type as small ints,
and the ids as one UTF-8 blob with a hash-sorted index (``ids.py``). Devices are ordered by contract, then street (file order
within), so that every contract × street group is one contiguous slice: the engine counts a
sample with a compare over the contract's slice and one ``count_nonzero`` per street.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from .errors import RegistryError, reason
from .ids import DeviceIds, IdIndex
from .rules import Rules
from .timebase import date_to_day

if TYPE_CHECKING:
    from _csv import Reader as CsvReader  # what csv.reader() returns (it has line_num)

COLUMNS = (
    "device_id",
    "contract",
    "type",
    "street",
    "scenario",
    "community",
    "gateway",
    "accepted_on",
    "retired_on",
)
NEVER = np.iinfo(np.int32).max  # retired_day of a device with no retired_on
MAX_PROBLEMS_SHOWN = 20
_FORBIDDEN_ID_CHAR = re.compile(r"[/+#\x00-\x1f\x7f]")


@dataclass(frozen=True, eq=False)
class Registry:
    """Columnar registry. Index ``i`` is a device; ``group[i]`` is its contract × street."""

    path: str
    version: str
    rules: Rules
    ids: DeviceIds  # a Sequence[str]: ids[i], len, iteration
    index: IdIndex  # a Mapping[str, int]: id → row
    contract: np.ndarray  # int8, index into rules.contracts
    street: np.ndarray  # int16, index into rules.streets
    type: np.ndarray  # int16, index into rules.types
    accepted_day: np.ndarray  # int32, Shanghai day number of accepted_on
    retired_day: np.ndarray  # int32, day number of retired_on, NEVER when empty
    community: np.ndarray  # int32, index into communities
    gateway: np.ndarray  # int32, index into gateways ("" when none)
    scenario: np.ndarray  # int32, index into scenarios
    communities: list[str]
    gateways: list[str]
    scenarios: list[str]
    contract_slices: dict[str, slice] = field(default_factory=dict)
    group_bounds: np.ndarray = field(default_factory=lambda: np.zeros(1, np.int64))  # [G + 1] slice starts
    partition: tuple[str, ...] | None = None  # the streets a partition's registry keeps (None: the district's)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def n_streets(self) -> int:
        return len(self.rules.streets)

    @property
    def group(self) -> np.ndarray:
        """Contract × street group of every device: ``contract * n_streets + street``."""
        return self.contract.astype(np.int32) * self.n_streets + self.street

    def group_slice(self, group: int) -> slice:
        return slice(int(self.group_bounds[group]), int(self.group_bounds[group + 1]))

    def expected_mask(self, day: int, where: slice = slice(None)) -> np.ndarray:
        """Devices (of ``where``) under lease on Shanghai day ``day``."""
        return (self.accepted_day[where] <= day) & (day < self.retired_day[where])


class _Codes(dict[str, int]):
    """Interns strings as small ints, in first-seen order (``codes[value]``, a lookup in C)."""

    def __init__(self) -> None:
        super().__init__()
        self.interned: list[str] = []  # the strings by code

    def __missing__(self, value: str) -> int:
        self[value] = code = len(self.interned)
        self.interned.append(value)
        return code

    def code(self, value: str) -> int:
        return self[value]


class _Lookup(dict[str, int]):
    """A code table answering ``missing`` for an unknown key (so ``map`` stays in C)."""

    def __init__(self, items: dict[str, int], missing: int) -> None:
        super().__init__(items)
        self.missing = missing

    def __missing__(self, key: str) -> int:
        return self.missing


class _Dates(dict[str, int]):
    """``YYYY-MM-DD`` → day number, BAD_DATE when not a date; a registry has few distinct dates."""

    def __missing__(self, text: str) -> int:
        day = _parse_date(text)
        self[text] = found = BAD_DATE if day is None else day
        return found


BAD_DATE = np.iinfo(np.int32).min
CHUNK_ROWS = 1 << 16


def _parse_date(text: str) -> int | None:
    try:
        return date_to_day(date.fromisoformat(text)) if len(text) == 10 else None
    except ValueError:
        return None


def _check_id(value: str, column: str = "device_id") -> str | None:
    """Why ``value`` cannot be an id that names a topic level and an InfluxDB tag, or None."""
    if not value:
        return f"{column} is empty"
    if value != value.strip():
        return f"{column} {value!r} has leading or trailing spaces"
    if _FORBIDDEN_ID_CHAR.search(value):
        return f"{column} {value!r} contains a character not allowed in an MQTT topic level (/ + # or a control character)"
    if value.endswith("\\"):
        # InfluxDB 1.x reads no escaping of a final backslash in a tag value: such an id
        # would share the heartbeat series of the id without it.
        return f"{column} {value!r} ends in a backslash, which an InfluxDB tag value cannot end with"
    return None


def load_registry(path: str | Path, rules: Rules) -> Registry:
    """Read and validate a registry CSV; raise :class:`RegistryError` listing every bad row."""
    p = Path(path)
    try:
        raw = p.open("rb", buffering=0)
    except OSError as exc:
        raise RegistryError(f"{p}: cannot read registry: {reason(exc)}") from exc
    checked = _CheckedBytes(raw, str(p))
    with io.TextIOWrapper(io.BufferedReader(checked, 1 << 20), encoding="utf-8-sig", newline="") as stream:
        try:
            return _parse(str(p), stream, checked.version, rules)
        except OSError as exc:
            raise RegistryError(f"{p}: cannot read registry: {reason(exc)}") from exc
        except RegistryError:
            checked.drain()  # a file that is not UTF-8 says so first, whatever else is wrong
            raise


def parse_registry(text: str, rules: Rules, label: str = "<registry>") -> Registry:
    """A registry from CSV text (tests, tools); same checks as :func:`load_registry`."""
    version = hashlib.sha256(text.encode()).hexdigest()[:16]
    return _parse(label, io.StringIO(text, newline=""), lambda: version, rules)


class _CheckedBytes(io.RawIOBase):
    """The file's bytes as read, hashed (the registry's version) and checked to be UTF-8 on the way,
    so the file is read once and never held whole; the first bad byte is named by its offset."""

    def __init__(self, raw: io.RawIOBase, label: str) -> None:
        self.raw, self.label = raw, label
        self.sha = hashlib.sha256()
        self.utf8 = codecs.getincrementaldecoder("utf-8")()
        self.offset = 0  # bytes checked so far

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self.raw.readinto(buffer) or 0
        data = bytes(memoryview(buffer)[:n])
        self.sha.update(data)
        pending = len(self.utf8.getstate()[0])  # an unfinished character from the last read
        try:
            self.utf8.decode(data, final=n == 0)
        except UnicodeDecodeError as exc:
            raise RegistryError(f"{self.label}: registry is not UTF-8 (byte {self.offset - pending + exc.start})") from exc
        self.offset += n
        return n

    def drain(self) -> None:
        """Read (and check) the rest of the file."""
        buffer = bytearray(1 << 20)
        while self.readinto(buffer):
            pass

    def version(self) -> str:
        """The hash of the whole file (once it has all been read)."""
        return self.sha.hexdigest()[:16]

    def close(self) -> None:
        self.raw.close()
        super().close()


class _Tables:
    """The rules' codes and the interned strings, shared by every chunk of a registry."""

    def __init__(self, rules: Rules) -> None:
        self.rules = rules
        self.contract_ix = {c.code: i for i, c in enumerate(rules.contracts)}
        self.street_ix = {s.code: i for i, s in enumerate(rules.streets)}
        self.type_ix = {t.code: i for i, t in enumerate(rules.types)}
        self.contracts, self.streets = _Lookup(self.contract_ix, -1), _Lookup(self.street_ix, -1)
        self.types = _Lookup(self.type_ix, -1)
        self.type_contract = np.array([self.contract_ix.get(t.contract, -2) for t in rules.types] + [-1], dtype=np.int16)
        self.accepted, self.retired = _Dates(), _Dates({"": NEVER})
        self.communities, self.gateways, self.scenarios = _Codes(), _Codes(), _Codes()
        self.gateway_why: dict[str, str | None] = {"": None}


@dataclass
class _Chunks:
    """Columns of every row of the right width, chunk by chunk (bad rows too: they take part in
    the duplicate check and are never loaded)."""

    arrays: dict[str, list[np.ndarray]] = field(default_factory=dict)
    id_parts: list[bytes] = field(default_factory=list)
    id_lengths: list[np.ndarray] = field(default_factory=list)

    def add(self, **columns: np.ndarray) -> None:
        for name, values in columns.items():
            self.arrays.setdefault(name, []).append(values)

    def column(self, name: str) -> np.ndarray:
        return np.concatenate(self.arrays[name]) if name in self.arrays else np.zeros(0, np.int64)


def _parse(label: str, stream: IO[str], version: Callable[[], str], rules: Rules) -> Registry:
    reader = csv.reader(stream)
    header = next(reader, None)
    if header is None:
        raise RegistryError(f"{label}: registry is empty (expected a header: {','.join(COLUMNS)})")
    header = [h.strip() for h in header]
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise RegistryError(f"{label}:1: header lacks column(s) {', '.join(missing)} (expected {','.join(COLUMNS)})")
    col = [header.index(c) for c in COLUMNS]
    tables, chunks = _Tables(rules), _Chunks()
    problems: dict[int, list[str]] = {}
    for lines, rows in _row_chunks(reader, len(header), problems):
        _parse_chunk(lines, rows, col, tables, chunks, problems)
    ids = DeviceIds.from_parts(chunks.id_parts, chunks.id_lengths)
    good = chunks.column("good")
    _find_duplicates(ids, chunks, good, problems)
    if problems:
        _raise(label, problems)
    if not len(ids):
        raise RegistryError(f"{label}: registry has no devices")
    return _columnar(label, version(), rules, ids, chunks, tables)


def _row_chunks(reader: CsvReader, width: int, problems: dict[int, list[str]]) -> Iterator[tuple[list[int], list[list[str]]]]:
    """(line numbers, rows) of up to CHUNK_ROWS rows of ``width`` fields; blank rows skipped,
    rows of another width noted as problems."""
    lines: list[int] = []
    rows: list[list[str]] = []
    for fields in reader:
        if len(fields) != width:
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue
            problems[reader.line_num] = [f"expected {width} fields, found {len(fields)}"]
            continue
        lines.append(reader.line_num)
        rows.append(fields)
        if len(rows) == CHUNK_ROWS:
            yield lines, rows
            lines, rows = [], []
    if rows:
        yield lines, rows


def _parse_chunk(lines: list[int], rows: list[list[str]], col: list[int], tables: _Tables, chunks: _Chunks,
                 problems: dict[int, list[str]]) -> None:
    """Validate a chunk column by column (lookups mapped in C); the rows found bad get their
    problems worded row by row by :func:`_row_problems`."""
    n = len(rows)
    columns = list(zip(*rows))
    ids, contracts, types, streets, scenarios, communities, gateways, accepted, retired = (columns[i] for i in col)
    contract = np.fromiter(map(tables.contracts.__getitem__, contracts), np.int16, n)
    type_ = np.fromiter(map(tables.types.__getitem__, types), np.int16, n)
    street = np.fromiter(map(tables.streets.__getitem__, streets), np.int16, n)
    accepted_day = np.fromiter(map(tables.accepted.__getitem__, map(str.strip, accepted)), np.int64, n)
    retired_day = np.fromiter(map(tables.retired.__getitem__, map(str.strip, retired)), np.int64, n)
    id_why = list(map(_check_id, ids))
    id_ok = np.fromiter(map(_is_none, id_why), bool, n)
    gateway_names = list(map(str.strip, gateways))
    gateway_ok = np.fromiter((_gateway_ok(tables, g) for g in gateway_names), bool, n)
    bad = (~id_ok | ~gateway_ok | (contract < 0) | (type_ < 0) | (street < 0)
           | ((type_ >= 0) & (contract >= 0) & (tables.type_contract[type_] != contract))
           | (accepted_day == BAD_DATE) | (retired_day == BAD_DATE)
           | ((accepted_day != BAD_DATE) & (retired_day != BAD_DATE) & (retired_day <= accepted_day)))
    for i in np.flatnonzero(bad).tolist():
        problems[lines[i]] = _row_problems(rows[i], col, tables)
    encoded = [x.encode("utf-8", "surrogatepass") if ok else b"" for x, ok in zip(ids, id_ok.tolist())]
    chunks.id_parts.append(b"\n".join(encoded) + b"\n")
    chunks.id_lengths.append(np.fromiter(map(len, encoded), np.int64, n) + 1)
    chunks.add(
        line=np.array(lines, dtype=np.int64), good=~bad, gateway_ok=gateway_ok, id_ok=id_ok,
        contract=contract.astype(np.int8), street=street, type=type_,
        accepted_day=accepted_day.astype(np.int32), retired_day=retired_day.astype(np.int32),
        community=np.fromiter(map(tables.communities.__getitem__, map(str.strip, communities)), np.int32, n),
        gateway=np.fromiter(map(tables.gateways.__getitem__, gateway_names), np.int32, n),
        scenario=np.fromiter(map(tables.scenarios.__getitem__, map(str.strip, scenarios)), np.int32, n),
    )


def _is_none(value: object) -> bool:
    return value is None


def _gateway_ok(tables: _Tables, gateway: str) -> bool:
    why = tables.gateway_why.get(gateway, False)
    if why is False:
        why = tables.gateway_why[gateway] = _check_id(gateway, "gateway")
    return why is None


def _row_problems(fields: list[str], col: list[int], tables: _Tables) -> list[str]:
    """Every problem of one row, in the order they are reported (a duplicate id is found later)."""
    device_id, contract, type_code, street, _scenario, _community, gateway, accepted, retired = (fields[i] for i in col)
    rules, contract_ix, type_ix = tables.rules, tables.contract_ix, tables.type_ix
    bad = []
    if (why := _check_id(device_id)) is not None:
        bad.append(why)
    if gateway.strip() and (why := _check_id(gateway.strip(), "gateway")) is not None:
        bad.append(why)  # a gateway reports on putuo/gw/{gateway}/status
    if contract not in contract_ix:
        bad.append(f"unknown contract {contract!r} (known: {', '.join(contract_ix)})")
    if type_code not in type_ix:
        bad.append(f"unknown type {type_code!r}")
    elif contract in contract_ix and rules.types[type_ix[type_code]].contract != contract:
        bad.append(f"type {type_code!r} belongs to contract {rules.types[type_ix[type_code]].contract!r}, not {contract!r}")
    if street not in tables.street_ix:
        bad.append(f"unknown street {street!r} (known: {', '.join(tables.street_ix)})")
    accepted_day = _parse_date(accepted.strip())
    if accepted_day is None:
        bad.append(f"accepted_on {accepted!r} is not a date YYYY-MM-DD")
    retired_day = NEVER if not retired.strip() else _parse_date(retired.strip())
    if retired_day is None:
        bad.append(f"retired_on {retired!r} is not a date YYYY-MM-DD (or empty)")
    elif accepted_day is not None and retired_day <= accepted_day:
        bad.append(f"retired_on {retired} is not after accepted_on {accepted}")
    return bad


def _find_duplicates(ids: DeviceIds, chunks: _Chunks, good: np.ndarray, problems: dict[int, list[str]]) -> None:
    """A row repeating the id of an earlier row that had no problem is a duplicate (unless its
    gateway is bad, reported instead); found by sorting 64-bit hashes, confirmed on the bytes."""
    id_ok = chunks.column("id_ok")
    rows = np.flatnonzero(id_ok)
    if len(rows) < 2:
        return
    hashes = np.concatenate([IdIndex.hashes_of(ids, rows[a:a + CHUNK_ROWS]) for a in range(0, len(rows), CHUNK_ROWS)])
    order = np.argsort(hashes, kind="stable")  # equal hashes keep file order
    hashes, rows = hashes[order], rows[order]
    repeated = np.flatnonzero(hashes[1:] == hashes[:-1])
    if not len(repeated):
        return
    line, gateway_ok = chunks.column("line"), chunks.column("gateway_ok")
    candidates = np.unique(np.concatenate([repeated, repeated + 1]))
    by_id: dict[bytes, list[int]] = {}
    for row in sorted(rows[candidates].tolist()):
        by_id.setdefault(ids.raw(row), []).append(row)
    for raw, same in by_id.items():
        first = next((r for r in same if good[r]), None)
        if first is None:
            continue
        for r in same:
            if r > first and gateway_ok[r]:
                problems.setdefault(int(line[r]), []).insert(
                    0, f"duplicate device_id {raw.decode('utf-8', 'surrogatepass')!r} (first on line {int(line[first])})")
                good[r] = False


def _raise(label: str, problems: dict[int, list[str]]) -> None:
    listed = [f"{label}:{line}: {why}" for line in sorted(problems) for why in problems[line]]
    shown = listed[:MAX_PROBLEMS_SHOWN]
    more = len(listed) - len(shown)
    raise RegistryError(
        f"{label}: {len(listed)} problem(s); nothing was loaded:\n  "
        + "\n  ".join(shown)
        + (f"\n  ... and {more} more" if more else ""),
        listed,
    )


def _columnar(label: str, version: str, rules: Rules, ids: DeviceIds, chunks: _Chunks, tables: _Tables) -> Registry:
    contract, street = chunks.column("contract"), chunks.column("street")
    order = np.argsort(contract.astype(np.int64) * len(rules.streets) + street, kind="stable")  # contract, street, file order
    contract, street = contract[order], street[order]
    bounds = np.searchsorted(contract, np.arange(len(rules.contracts) + 1))
    group = contract.astype(np.int64) * len(rules.streets) + street
    group_bounds = np.searchsorted(group, np.arange(len(rules.contracts) * len(rules.streets) + 1))
    sorted_ids = ids if bool((order == np.arange(len(order))).all()) else ids.take(order)
    del ids
    columns: dict[str, Any] = {name: chunks.column(name)[order]
                               for name in ("type", "accepted_day", "retired_day", "community", "gateway", "scenario")}
    return Registry(
        path=label,
        version=version,
        rules=rules,
        ids=sorted_ids,
        index=IdIndex(sorted_ids),
        contract=contract,
        street=street,
        **columns,
        communities=tables.communities.interned,
        gateways=tables.gateways.interned,
        scenarios=tables.scenarios.interned,
        contract_slices={
            c.code: slice(int(bounds[i]), int(bounds[i + 1])) for i, c in enumerate(rules.contracts)
        },
        group_bounds=group_bounds.astype(np.int64),
    )
