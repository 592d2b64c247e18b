"""One month from many partitions: ledgers, archives and replays of partition collectors merged.

Every KPI is a ratio of per-street sums, and each street belongs to exactly one partition, so a
merged figure is exact: a street's rows are its owner's, and the district's sums are the sums of
the streets. Before anything is merged, :func:`ptmon.partition.check_partitions` refuses
partitions that overlap, miss a street of the rules, or ran with other rules or registry versions.

A street's observed time is its own partition's: its samples, and so its expected device samples,
were taken over that time. The observed time of the merged district (its row, the coverage and
the gaps) is the time *every* partition observed (the intersection of their spans): a gap of one
collector is a gap of the district. With collectors that ran over the same instants, as they
should, all of these are the same.

The functions here are the building blocks of ``ptmon report``, ``ptmon replay`` and anything
else that needs a district month (a month close): :func:`merge_ledgers` fills one ledger from
several, :func:`merge_results` combines replay results, :func:`recompute_partitions` and
:func:`replay_partitions` recompute partitions' archives with each one's registry rows.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path

from .errors import UsageError, reason
from .ledger.grid import SampleGrid
from .ledger.observed import union
from .ledger.read import MERGED_SPANS_KEY
from .ledger.records import Exemption
from .ledger.store import Ledger
from .partition import (
    Partition,
    archive_tag,
    check_partitions,
    ledger_tag,
    refuse_untagged_archives,
    restrict_registry,
)
from .registry import Registry
from .replay import Progress
from .results import KpiRow, Results
from .rules import Rules
from .tally import DISTRICT
from .timebase import DAY_US, US_PER_S, day_of, day_start

_PER_STREET = ("hours", "days", "counts")  # rows keyed by street: the owner's
_PER_DEVICE = ("status", "episodes")  # devices are in one partition's registry rows only
_EXEMPTION_COLUMNS = ('scope', 'target', 'start', '"end"', 'reason', 'approver', 'created_at', 'revoked_at',
                      'revoked_by', 'revoke_reason')


def tagged_archives(sources: Sequence[Path]) -> list[tuple[Path, Partition | None]] | None:
    """Each archive directory or file with its partition tag, or None when none is tagged (one
    archive). A file carries the tag of the directory it is in: a partition's day file alone is
    a partition, not the district."""
    tags = [(Path(p), archive_tag(Path(p) if looked_at(Path(p), Path.is_dir) else Path(p).parent)) for p in sources]
    return tags if any(t is not None for _, t in tags) else None


def looked_at(archive: Path, test: Callable[[Path], bool]) -> bool:
    """``test(archive)`` (``Path.exists``, ``Path.is_dir``), which raises below a directory ptmon
    may not search: then a UsageError naming the archive and that directory."""
    try:
        return test(archive)
    except OSError as exc:
        raise UsageError(f"{archive}: cannot reach the archive: {reason(exc)}") from exc


def open_partition_ledgers(paths: Sequence[Path], rules: Rules) -> list[tuple[Partition | None, Ledger]]:
    """The ledgers, read-only, checked as a set of partitions."""
    opened = [Ledger(p, readonly=True) for p in paths]
    try:
        tagged = [(p, ledger_tag(ledger.db, str(p))) for p, ledger in zip(paths, opened)]
        check_partitions(rules, [(str(p), t) for p, t in tagged])
    except BaseException:
        for ledger in opened:
            ledger.close()
        raise
    return [(t, ledger) for (_, t), ledger in zip(tagged, opened)]


def merge_ledgers(sources: Sequence[tuple[Partition | None, Ledger]], into: Ledger, rules: Rules) -> None:
    """Fill ``into`` (empty) with the partitions' rows: each street's from its owner, devices'
    status and episodes from all, messages of no device and unknown topics summed, the spans every
    partition observed, and the exemptions of all (each once)."""
    with into.transaction() as db:
        _merge_into(db, sources, rules)


def write_merged(merged: Ledger, db: sqlite3.Connection) -> None:
    """Replace the rows a merge fills (every table of MERGED_TABLES, and its ``status_since``) in
    ``db``, an open transaction on a ledger holding an earlier merge or none, with the rows of the
    merge ``merged``, exemption ids and all; everything else there (its closings) stays."""
    db.execute("DELETE FROM sqlite_sequence WHERE name = 'exemptions'")  # the ids inserted below set it again
    for table in MERGED_TABLES:
        db.execute(f"DELETE FROM {table}")
        rows = merged.db.execute(f"SELECT * FROM {table}")
        db.executemany(f"INSERT INTO {table} VALUES ({', '.join('?' * len(rows.description))})", rows)
    db.execute("DELETE FROM meta WHERE key IN ('status_since', ?)", (MERGED_SPANS_KEY,))
    db.executemany("INSERT INTO meta VALUES (?, ?)", merged.db.execute("SELECT key, value FROM meta "
                                                                       "WHERE key IN ('status_since', ?)",
                                                                       (MERGED_SPANS_KEY,)))


MERGED_TABLES = ("hours", "days", "counts", "status", "episodes", "unknown_topics", "spans", "exemptions")


def _merge_into(db: sqlite3.Connection, sources: Sequence[tuple[Partition | None, Ledger]], rules: Rules) -> None:
    spans: list[list[int]] | None = None
    for part, ledger in sources:
        owned = set(part.streets if part is not None else rules.street_codes())
        _copy_streets(ledger.db, db, owned, str(ledger.path))
        for table in _PER_DEVICE:
            _copy(ledger.db, db, table, f"SELECT * FROM {table}")
        for row in ledger.db.execute("SELECT hour, contract, street, kind, n FROM counts WHERE street = ''"):
            db.execute("INSERT INTO counts VALUES (?, ?, ?, ?, ?) ON CONFLICT (hour, contract, street, kind) "
                       "DO UPDATE SET n = n + excluded.n", row)
        for row in ledger.db.execute("SELECT hour, topic, n FROM unknown_topics"):
            db.execute("INSERT INTO unknown_topics VALUES (?, ?, ?) ON CONFLICT (hour, topic) "
                       "DO UPDATE SET n = n + excluded.n", row)
        spans = ledger.spans() if spans is None else intersect_spans(spans, ledger.spans())
    _copy_exemptions([ledger.db for _, ledger in sources], db)
    db.executemany('INSERT INTO spans (start, "end") VALUES (?, ?)', spans or [])
    db.execute("DELETE FROM meta WHERE key = ?", (MERGED_SPANS_KEY,))
    if len(sources) > 1:  # the hours' samples are each partition's: the district's are read within these spans
        db.execute("INSERT INTO meta VALUES (?, '1')", (MERGED_SPANS_KEY,))
    since = max((ledger.status_since() for _, ledger in sources), default=0)  # an upgraded partition's limit holds
    db.execute("DELETE FROM meta WHERE key = 'status_since'")
    if since:
        db.execute("INSERT INTO meta VALUES ('status_since', ?)", (str(since),))


def _copy_streets(src: sqlite3.Connection, dst: sqlite3.Connection, owned: set[str], where: str) -> None:
    for table in _PER_STREET:
        for row in src.execute(f"SELECT * FROM {table} WHERE street != ''"):
            if row[2] in owned:
                dst.execute(f"INSERT INTO {table} VALUES ({', '.join('?' * len(row))})", row)
            elif table == "hours" and any(row[4:6]):
                raise UsageError(f"{where}: holds devices of street {row[2]}, which is not in its partition")


def _copy(src: sqlite3.Connection, dst: sqlite3.Connection, table: str, query: str) -> None:
    for row in src.execute(query):
        dst.execute(f"INSERT OR IGNORE INTO {table} VALUES ({', '.join('?' * len(row))})", row)


def _copy_exemptions(sources: Sequence[sqlite3.Connection], dst: sqlite3.Connection) -> None:
    """Every partition's exemptions (:func:`merged_exemptions`), numbered 1, 2, … in that order."""
    columns = ", ".join(_EXEMPTION_COLUMNS)
    for row, _ in merged_exemptions(sources):
        dst.execute(f"INSERT INTO exemptions ({columns}) VALUES ({', '.join('?' * len(row))})", row)


def merged_exemptions(sources: Sequence[sqlite3.Connection]) -> list[tuple[tuple[object, ...], list[tuple[int, int]]]]:
    """Every partition's exemptions in the order they were recorded (then by partition and id), each
    with where it is recorded: (source index, its id there). One exemption recorded in several
    partitions' ledgers (the same scope, target, window, reason and approver, in force in each or
    revoked in each) is one: its devices are exempted once, so it is listed once, as first
    recorded, with every copy's place (each must be revoked where it is recorded). Copies that
    differ (another reason or approver, or revoked in one ledger only) are listed each, as two such
    records of one ledger are. A merge numbers them the same every time; one recorded later comes last."""
    columns = ", ".join(_EXEMPTION_COLUMNS)
    groups: dict[tuple[object, ...], list[tuple[tuple[int, int, int], tuple[object, ...]]]] = {}
    for n, src in enumerate(sources):
        seen: dict[tuple[object, ...], int] = {}
        for id_, *row in src.execute(f"SELECT id, {columns} FROM exemptions ORDER BY id"):
            same = (*row[:6], row[7] is None)  # scope … approver, and whether it is revoked
            copy = seen[same] = seen.get(same, -1) + 1  # the k-th of its kind in a ledger is the k-th in the others
            groups.setdefault((*same, copy), []).append(((row[6], n, id_), tuple(row)))  # row[6]: created_at
    listed = sorted((sorted(copies) for copies in groups.values()), key=lambda copies: copies[0][0])
    return [(copies[0][1], [(n, id_) for (_, n, id_), _ in copies]) for copies in listed]


def intersect_spans(a: Sequence[Sequence[int]], b: Sequence[Sequence[int]]) -> list[list[int]]:
    """The instants in both span lists ([start, end] inclusive; a ledger's may overlap where a rebuild
    cut one short and wrote one from before the cut)."""
    a, b = union(a), union(b)
    out, i, j = [], 0, 0
    while i < len(a) and j < len(b):
        start, end = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if start <= end:
            out.append([start, end])
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


def merge_results(parts: Sequence[tuple[Partition, Results]], rules: Rules) -> Results:
    """One district's results from the partitions': street rows from their owner (with its observed
    time), district rows summed with the observed time every partition had (as the report from
    merged ledgers shows them), rejects and counts summed."""
    owner = {street: i for i, (part, _) in enumerate(parts) for street in part.streets}
    first = parts[0][1]
    gaps = _union(sorted({g for _, r in parts for g in r.gaps}))
    coverage = _district_coverage([r for _, r in parts], rules, gaps)
    rows = []
    for k, row in enumerate(first.rows):
        same = [results.rows[k] for _, results in parts]
        if any((r.contract, r.street, r.kpi) != (row.contract, row.street, row.kpi) for r in same):
            raise UsageError("cannot merge these partitions: their results list other KPIs (other rules?)")
        if row.street != DISTRICT:  # the owner's row: its sums and the time they were taken over
            rows.append(same[owner[row.street]])
            continue
        rows.append(KpiRow(contract=row.contract, street=DISTRICT, kpi=row.kpi, threshold=row.threshold,
                           numerator=sum(r.numerator for r in same), denominator=sum(r.denominator for r in same),
                           expected_device_samples=sum(r.expected_device_samples for r in same),
                           observed_seconds=coverage[row.contract]["observed_seconds"]))
    return Results(start=first.start, end=first.end, rows=rows, coverage=coverage, gaps=gaps,
                   rules_version=first.rules_version, registry_version=first.registry_version,
                   rejects=_sum(r.rejects for _, r in parts), engine_stats=_sum(r.engine_stats for _, r in parts),
                   unknown_topics=_sum(r.unknown_topics for _, r in parts))


def _district_coverage(results: Sequence[Results], rules: Rules, gaps: Sequence[tuple[int, int]]) -> dict[str, dict[str, int]]:
    """Each contract's coverage of the district: the sample instants outside every partition's
    gaps (two partitions down at different minutes of one hour leave the district both gaps, not
    the longer one), and the days whole inside the period with all of them observed."""
    first = results[0]
    out = {}
    for contract in rules.contracts:
        interval = contract.sample_interval * US_PER_S
        grid = SampleGrid(first.start, first.end, interval)
        seen = grid.outside(gaps)
        days = range(day_of(first.start + DAY_US - 1), day_of(first.end))
        whole = sum(bool(seen[grid.index(day_start(d)):grid.index(day_start(d + 1))].all()) for d in days)
        covs = [r.coverage[contract.code] for r in results]
        samples = min(int(seen.sum()), *(c["samples"] for c in covs))
        out[contract.code] = {"observed_seconds": samples * contract.sample_interval,
                              "period_seconds": covs[0]["period_seconds"], "samples": samples,
                              "complete_days": min(whole, *(c["complete_days"] for c in covs))}
    return out


def _sum(dicts) -> dict[str, int]:
    out: dict[str, int] = {}
    for d in dicts:
        for key, n in d.items():
            out[key] = out.get(key, 0) + n
    return dict(sorted(out.items())) if out else out


def _union(gaps: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for a, b in gaps:
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _checked(archives: list[tuple[Path, Partition | None]], registry: Registry) -> list[tuple[Path, Partition]]:
    refuse_untagged_archives(archives)  # one without partition.json beside tagged ones
    check_partitions(registry.rules, [(str(p), t) for p, t in archives])
    untagged = [str(p) for p, t in archives if t is None]
    if untagged:  # none of them tagged: one whole-district archive
        raise UsageError(f"not a partition's archive (no partition.json): {', '.join(untagged)}")
    return [(p, t) for p, t in archives if t is not None]


def replay_partitions(archives: list[tuple[Path, Partition | None]], registry: Registry, start: int, end: int, *,
                      month: str | None = None, exemptions: Sequence[Exemption] = (),
                      progress: Callable[[Progress], None] | None = None,
                      say: Callable[[str], None] = lambda text: None) -> Results:
    """Replay each partition's archive directory with its own registry rows; the merged results."""
    from .replay import replay
    from .sinks.archive import archive_paths
    from .snapshots import load_snapshot, month_sources

    parts = []
    for directory, part in _checked(archives, registry):
        own = restrict_registry(registry, part.streets)
        paths, state = archive_paths([directory]), None
        if month is not None and directory.is_dir():
            sources = month_sources([directory], month)
            paths, state = sources.read(), load_snapshot(sources.snapshot, own) if sources.snapshot else None
        say(f"partition {part.label}: {len(paths)} archive file(s) in {directory}")
        parts.append((part, replay(paths, own, start, end, progress=progress, exemptions=exemptions, state=state)))
    return merge_results(parts, registry.rules)


def recompute_partitions(archives: list[tuple[Path, Partition | None]], registry: Registry, month: str,
                         into: Ledger, *, progress: Callable[[Progress], None] | None = None,
                         say: Callable[[str], None] = lambda text: None) -> list[tuple[str, Path, bytes | None]]:
    """Recompute ``month`` from each partition's archive directory (its snapshot and the files after
    it) with its own registry rows, and merge the results into ``into``. Returns the files read (as
    ``Recomputed.inputs`` gives them)."""
    from .ledger.rebuild import rebuild_ledger, recompute_month
    from .snapshots import month_sources
    from .timebase import month_bounds

    read: list[tuple[str, Path, bytes | None]] = []
    ledgers = []
    try:
        for directory, part in _checked(archives, registry):
            ledger = Ledger(":memory:")
            ledgers.append((part, ledger))
            own = restrict_registry(registry, part.streets)
            if directory.is_file():  # a file given by name is read from its beginning, as it is
                say(f"recomputing partition {part.label} from {directory}, read from the beginning")
                rebuild_ledger([directory], own, ledger, end=month_bounds(month)[1], progress=progress)
                read.append(("archive", directory, None))
                continue
            found = month_sources([directory], month)
            if not found.files:
                raise UsageError(f"no archive files for {month} in {directory} (partition {part.label})")
            say(f"recomputing partition {part.label} from {found.describe()}")
            read += recompute_month([directory], own, month, ledger, progress=progress).inputs()
        merge_ledgers(ledgers, into, registry.rules)
    finally:
        for _, ledger in ledgers:
            ledger.close()
    return read


def merged_ledger_file(paths: Sequence[Path], rules: Rules, out: Path) -> Path:
    """The partition ledgers at ``paths`` merged into a new ledger file ``out``."""
    sources = open_partition_ledgers(paths, rules)
    try:
        with Ledger(out) as merged:
            merge_ledgers(sources, merged, rules)
    finally:
        for _, ledger in sources:
            ledger.close()
    return out


__all__ = [
    "intersect_spans",
    "merge_ledgers",
    "merge_results",
    "merged_exemptions",
    "merged_ledger_file",
    "recompute_partitions",
    "replay_partitions",
    "tagged_archives",
    "write_merged",
]
