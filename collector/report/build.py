"""The inputs of a monthly report, from the ledger or recomputed from the raw archive.

``--from-archive`` replays the archive into a fresh in-memory ledger with the very listeners
the live collector runs, then reads it with the same code as the real ledger: the two sources
differ only in where the sums came from, so a reviewer can verify every figure. Exemptions
always come from the real ledger (they are approvals, not measurements).
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from ..anomaly.ledger import read_anomalies
from ..errors import UsageError
from ..ledger.read import ledger_daily, ledger_results, ledger_warnings
from ..ledger.rebuild import rebuild_ledger, recompute_month
from ..ledger.store import Ledger
from ..merge import recompute_partitions, tagged_archives
from ..registry import Registry
from ..replay import Progress
from ..rules import RULE_FILES, Rules
from ..sinks.archive import read_archive_files
from ..snapshots import month_sources
from ..timebase import day_of, format_instant, month_bounds
from .computed_with import recomputed_note, refuse_other_versions
from .model import InputFile, ReportInputs
from .status import last_observed

_DAY = re.compile(r"ptmon-(\d{4}-\d{2}-\d{2})")


def build_inputs(*, month: str, registry: Registry, rules: Rules, ledger_path: Path | None,
                 archive_dirs: Sequence[Path] | None, progress: Callable[[str], None] | None = None,
                 now: int | None = None, ledger_label: str | None = None) -> ReportInputs:
    """The month's report inputs; ``now`` (µs, default the clock) is when the report is made,
    which decides whether the month is over (:mod:`ptmon.report.status`); ``ledger_label`` names
    the ledger in the report when it is not ``ledger_path`` itself (partitions' ledgers merged)."""
    start, end = month_bounds(month)
    made_at = time.time_ns() // 1000 if now is None else now
    say = progress or (lambda text: None)
    real = Ledger(ledger_path, readonly=True) if ledger_path is not None and Path(ledger_path).exists() else None
    if archive_dirs is None and real is None:
        raise UsageError(f"no ledger at {ledger_path}: give --ledger, or --from-archive to recompute from the archive")
    files = [InputFile(role="registry", path=registry.path, sha256=_sha256_file(Path(registry.path))),
             *(InputFile(role="rules", path=str(rules.directory / name), sha256=_sha256_file(rules.directory / name))
               for name in RULE_FILES)]
    try:
        exemptions = real.exemptions(start=start, end=end) if real is not None else []
        if archive_dirs is not None:
            source, ledger = "archive", Ledger(":memory:")

            def report(p: Progress) -> None:
                at = format_instant(p.clock) if p.clock is not None else "-"
                say(f"  {p.records:,} records, {p.records / max(p.elapsed, 1e-9):,.0f}/s, at {at}")

            files += _recompute(month, registry, ledger, archive_dirs, say, report)
        else:
            assert real is not None
            source, ledger = "ledger", real
            refuse_other_versions(real, ledger_label or str(ledger_path), month, start, end, registry)
            say(f"reading {month} from the ledger {ledger_path}")
        results = ledger_results(ledger, registry, start, end, exemptions)
        warnings = ledger_warnings(ledger, registry, start, end) if source == "ledger" else []
        if source == "archive" and real is not None and (note := recomputed_note(real, start, end, registry)):
            say(note)
            warnings.append(note)
        inputs = ReportInputs(
            month=month, start=start, end=end, source=source, rules=rules, registry=registry, results=results,
            daily=ledger_daily(ledger, registry, start, end, exemptions), exemptions=exemptions,
            episodes=ledger.episodes(start, end), anomalies=read_anomalies(ledger, month), warnings=warnings,
            made_at=made_at,
            observed_until=last_observed(ledger.spans(), start, end),
            files=files + ([InputFile(role="ledger", path=ledger_label or str(ledger_path),
                                      sha256=_ledger_digest(ledger, start, end))]
                           if source == "ledger" else []),
        )
        if ledger is not real:
            ledger.close()
    finally:
        if real is not None:
            real.close()
    digest = hashlib.sha256("".join(f"{f.role}\0{f.sha256}\n" for f in inputs.files).encode()).hexdigest()
    say(f"{len(results.rows)} KPI rows, {len(inputs.episodes)} offline episodes, {len(exemptions)} exemptions")
    return ReportInputs(**{**vars(inputs), "digest": digest})


def _recompute(month: str, registry: Registry, ledger: Ledger, sources: Sequence[Path], say: Callable[[str], None],
               progress: Callable[[Progress], None]) -> list[InputFile]:
    """The month recomputed into ``ledger``: from directories, their month-start snapshot and the
    archive files after it (every earlier file without a snapshot); files given by name are read
    from the beginning, as they are. Returns the files read, fingerprinted."""
    _, end = month_bounds(month)
    missing = [str(p) for p in map(Path, sources) if not p.exists()]
    if missing:
        raise UsageError(f"no such archive file or directory: {', '.join(missing)}")
    directories = [Path(p) for p in sources if Path(p).is_dir()]
    if (partitions := tagged_archives(list(map(Path, sources)))) is not None:
        read = recompute_partitions(partitions, registry, month, ledger, progress=progress, say=say)
    elif len(directories) == len(sources):
        found = month_sources(directories, month)
        if not found.files:
            raise UsageError(f"no archive files for {month} in {', '.join(map(str, sources))}")
        say(f"recomputing {month} from {found.describe()}")
        read = recompute_month(directories, registry, month, ledger, progress=progress).inputs()
    else:
        paths = [p for source in map(Path, sources) for p in (read_archive_files(source) if source.is_dir() else [source])]
        say(f"recomputing {month} from {len(paths)} archive file(s), read from the beginning")
        rebuild_ledger(paths, registry, ledger, end=end, progress=progress)
        read = [("archive", p, None) for p in paths]
    return [InputFile(role=role, path=str(p), sha256=_sha256_file(p) if told is None else hashlib.sha256(told).hexdigest())
            for role, p, told in read]


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _ledger_digest(ledger: Ledger, start: int, end: int) -> str:
    """SHA-256 of the ledger rows the month's figures come from (the file itself changes as it grows)."""
    digest = hashlib.sha256()
    for row in ledger.hours(start, end):
        digest.update(repr(row).encode())
    for day in ledger.days(day_of(start), day_of(end)):
        digest.update(repr(day).encode())
    for span in ledger.spans():
        digest.update(repr(span).encode())
    return digest.hexdigest()
