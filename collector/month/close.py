"""`ptmon month close` and `ptmon month restate`: seal a contract's month, version by version.

Closing (第 1 版) refuses, saying why and what to do, when

* the grace period after the month's end has not passed (``[month] close_grace``),
* a collector still writes the month into this ledger (it runs on the data directory and has
  not yet written anything after the month's end; for partitions, into any partition's ledger),
* the contract's month is already closed (restate it instead),
* ``--now`` (simulations and tests) is after the clock, or, for a restatement, before the
  previous version's seal time,
* the month was not wholly observed and ``--accept-gaps`` was not given (the report pays on
  observed time only; a reviewer must have judged the gaps), or nothing of it was observed (or
  less than ``[month] min_coverage``), with ``--accept-gaps`` too, or
* the ledger's month differs from a recomputation of it from the archive (the count and the
  first differing row are named; `ptmon ledger verify --month` lists them): the ledger is the
  record, the archive the evidence, and a closing needs both to agree.

Then it writes the sealed closing: the figures read from the ledger with the exemptions as
recorded and the late heartbeats that count under the contract's rule, the money lines, and
the SHA-256 of every input, with who closed it and when.

A restatement (第 2 版 …) seals the month with every input as it is now — the figures a fresh
recomputation gives — beside a record of what changed since the previous version, step by
step with the money each change moved, and why (``--reason``). Earlier versions stay.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any

from .. import __version__
from ..errors import PtmonError
from ..ledger.closing import (
    FORMAT,
    FORMAT_VERSION,
    Closing,
    canonical,
    closing,
    sha256_bytes,
)
from ..ledger.month import month_differences
from ..ledger.store import Ledger
from ..lock import collector_running
from ..report.model import InputFile
from ..rules import RULE_FILES
from . import context
from .analysis import Analysis, analyse
from .context import MonthContext
from .figures import Figures, ledger_month_digest, month_figures
from .fingerprint import exemption_docs, mark, sha256_file
from .late import LateHeartbeat
from .parts import parts_doc
from .sealdoc import file_bytes, inputs_to_doc, money_to_doc, row_to_doc
from .words import span, when


class CloseRefused(PtmonError):
    """A closing or restatement that must not happen now; the message says why and what to do."""


class NothingChanged(CloseRefused):
    """A restatement of a month whose inputs are all as sealed."""


@dataclass
class Sealing:
    """What a close or restate wrote, for the command's summary."""

    closing: Closing
    figures: Figures
    analysis: Analysis | None = None


def check_closable(ctx: MonthContext) -> None:
    """The grace period is over and no collector still writes the month."""
    end = ctx.bounds[1]
    opens = end + ctx.setup.close_grace
    if ctx.now < opens:
        raise CloseRefused(
            f"{ctx.month} ends {when(end)}; it can be closed from {when(opens)}, after the grace "
            f"period ([month] close_grace = {span(ctx.setup.close_grace)} in the config) in which late "
            "exemptions, registry corrections and buffered heartbeats still come in")
    writers = [(ctx.setup.data_dir, ctx.setup.ledger, ctx.ledger)] if not ctx.parts else [
        (part.ledger.parent, part.ledger, ledger) for part, ledger in ctx.parts]
    for data_dir, path, ledger in writers:
        if collector_running(data_dir, path) and not _written_past(ledger, end):
            raise CloseRefused(
                f"a collector on {data_dir or path} is still writing {ctx.month} into the ledger "
                f"(it has written nothing after "
                f"{when(end)} yet: catching up, or rebuilding the month); wait until it has, then close")


def check_seal_time(ctx: MonthContext, previous: Closing | None) -> None:
    """The instant sealed as the version's date (``--now``, or the clock) is neither after the
    clock nor before the contract's previous version: versions are dated in the order they were
    made, and a seal never claims a date at which its inputs (the previous version's among them)
    did not yet exist."""
    clock = context.wall_clock()
    if ctx.now > clock:
        raise CloseRefused(f"--now {when(ctx.now)} is after the clock ({when(clock)}): a seal is never dated in the future")
    if previous is not None and ctx.now < previous.closed_at:
        raise CloseRefused(f"--now {when(ctx.now)} is before {previous.label} of {previous.contract} {ctx.month} (sealed "
                           f"{when(previous.closed_at)}): a new version is dated after the one it restates")


def _written_past(ledger: Ledger, end: int) -> bool:
    last = ledger.last_hour()
    return (last is not None and last >= end) or any(b >= end for _, b in ledger.spans())


def close_month(ctx: MonthContext, contracts: Sequence[str], *, by: str, accept_gaps: bool = False) -> list[Sealing]:
    """Close ``contracts`` (第 1 版 each); every check passes for all of them or none is closed."""
    if not by.strip():
        raise CloseRefused("say who closes the month: --by NAME")
    check_closable(ctx)
    check_seal_time(ctx, None)
    done = [c for c in contracts if closing(ctx.ledger, ctx.month, c) is not None]
    if done:
        raise CloseRefused("; ".join(_already(ctx, c) for c in done))
    start, end = ctx.bounds
    exemptions = ctx.ledger.exemptions(start=start, end=end)
    late = ctx.late_scan().heartbeats
    files, blobs, inputs = seal_inputs(ctx, ctx.ledger, exemptions, late)
    all_figures = {c: month_figures(ctx.ledger, ctx.setup.registry, ctx.month, c, exemptions, late, source="ledger",
                                    made_at=ctx.now, files=files) for c in contracts}
    for figures in all_figures.values():
        _check_coverage(ctx, figures, accept_gaps)
    _check_against_archive(ctx, contracts, exemptions)
    docs = [_doc(ctx, figures, inputs, blobs, version=1, previous=None, by=by, reason="", changes=[],
                 gaps_accepted=(by.strip(), 1) if accept_gaps and _coverage(figures) < 1 else None)
            for figures in all_figures.values()]
    sealed = ctx.record([(doc, blobs) for doc in docs])  # all contracts, or none
    return [Sealing(c, figures) for c, figures in zip(sealed, all_figures.values())]


def restate_month(ctx: MonthContext, contract: str, *, by: str, reason: str, accept_gaps: bool = False) -> Sealing:
    """A new version of ``contract``'s closed month with every input as it is now."""
    if not by.strip() or not reason.strip():
        raise CloseRefused("a restatement needs who makes it and why: --by NAME --reason TEXT")
    previous = closing(ctx.ledger, ctx.month, contract)
    if previous is None:
        raise CloseRefused(f"{contract} {ctx.month} is not closed: close it first (`ptmon month close {ctx.month} "
                           f"--contract {contract} --by NAME{ctx.setup.where}`)")
    check_closable(ctx)
    check_seal_time(ctx, previous)
    analysis = analyse(ctx, previous, want_final=True)
    if analysis.tampered:
        raise CloseRefused(f"sealed archive files of {ctx.month} were altered or are gone: "
                           + "; ".join(c.describe() for c in analysis.tampered)
                           + ". Restore them from the backup before restating (`ptmon month verify` lists them)")
    if not analysis.changed:
        raise NothingChanged(f"nothing changed since {previous.label} of {contract} {ctx.month}: a restatement would "
                           "repeat it (`ptmon month status` shows what would change)")
    assert analysis.final is not None
    accepted = _gaps_acceptance(ctx, previous, analysis.final, by=by, accept_gaps=accept_gaps)
    basis = analysis.basis
    assert basis is not None
    from_archive = basis is not ctx.ledger
    exemptions = ctx.ledger.exemptions(start=ctx.bounds[0], end=ctx.bounds[1])
    late = ctx.late_scan().heartbeats
    files, blobs, inputs = seal_inputs(ctx, basis, exemptions, late)
    figures = month_figures(basis, ctx.setup.registry, ctx.month, contract, exemptions, late,
                            source="archive" if from_archive else "ledger", made_at=ctx.now, files=files)
    if (figures.rows(), figures.money) != (analysis.final.rows(), analysis.final.money):
        raise PtmonError(f"{contract} {ctx.month}: the restated figures differ from the analysis' (a bug: please report)")
    doc = _doc(ctx, figures, inputs, blobs, version=previous.version + 1, previous=previous, by=by, reason=reason,
               changes=[s.to_doc() for s in analysis.steps], gaps_accepted=accepted)
    return Sealing(ctx.record([(doc, blobs)])[0], figures, analysis)


def _already(ctx: MonthContext, contract: str) -> str:
    c = closing(ctx.ledger, ctx.month, contract)
    assert c is not None
    return (f"{contract} {ctx.month} is already closed ({c.label}, by {c.closed_by} at {when(c.closed_at)}); "
            f"a change since is a restatement: `ptmon month status {ctx.month}{ctx.setup.where}`, then `ptmon month "
            f"restate {ctx.month} --contract {contract} --reason TEXT --by NAME{ctx.setup.where}`")


def _gaps_acceptance(ctx: MonthContext, previous: Closing, final: Figures, *, by: str,
                     accept_gaps: bool) -> tuple[str, int] | None:
    """Who accepted the restated month's monitoring gaps, and in which version: the restater with
    --accept-gaps; else whoever accepted them before, when the gaps are (within) those accepted;
    else the restatement is refused as a closing would be. None: no gaps."""
    if _coverage(final) >= 1:
        return None
    earlier = accepted_gaps(previous)
    before = {tuple(g) for g in previous.doc["report"]["results"]["gaps"]}
    carried = earlier is not None and _within(final.inputs.results.gaps, before)
    _check_coverage(ctx, final, accept_gaps or carried, verb="restate")
    return (by.strip(), previous.version + 1) if accept_gaps else earlier


def _within(gaps: Sequence[tuple[int, int]], accepted: set[tuple[int, ...]]) -> bool:
    """Every instant of ``gaps`` lies in one of the ``accepted`` gaps."""
    return all(any(a <= start and end <= b for a, b in accepted) for start, end in gaps)


def accepted_gaps(c: Closing) -> tuple[str, int] | None:
    """Who accepted a closing's monitoring gaps and in which version (None: none accepted);
    a document from before this was recorded names its own signer and version."""
    if not c.doc.get("gaps_accepted"):
        return None
    by = c.doc.get("gaps_accepted_by")
    return (by["by"], int(by["version"])) if by else (c.closed_by, c.version)


def _coverage(figures: Figures) -> Fraction:
    cov = figures.inputs.results.coverage[figures.contract]
    return Fraction(cov["observed_seconds"], cov["period_seconds"]) if cov["period_seconds"] else Fraction(0)


def _check_coverage(ctx: MonthContext, figures: Figures, accept_gaps: bool, verb: str = "close") -> None:
    coverage = _coverage(figures)
    floor = Fraction(ctx.setup.min_coverage).limit_denominator(10_000)
    if coverage == 0 or coverage < floor:
        what = ("no time of it was observed (the ledger holds nothing of the month)" if coverage == 0 else
                f"it was observed {float(coverage):.4%} of the month, below [month] min_coverage = {float(floor):.2%}")
        raise CloseRefused(
            f"{figures.contract} {ctx.month} cannot be closed, not even with --accept-gaps: {what}. A payment on "
            "unobserved time would be a guess; check that this is the right ledger and month (`ptmon month status`), "
            "that the collector ran, and recompute a lost month from the archive (`ptmon ledger rebuild --month`)")
    if coverage < 1 and not accept_gaps:
        gaps = figures.inputs.results.gaps
        shown = ", ".join(f"{when(a)} – {when(b)}" for a, b in gaps[:5]) + (" …" if len(gaps) > 5 else "")
        raise CloseRefused(
            f"{figures.contract} {ctx.month} was observed {float(coverage):.4%} of the month (monitoring gaps: {shown}); "
            f"the figures count observed time only, so a reviewer must judge the gaps: {verb} with --accept-gaps once "
            "they have (the report then names the gaps as accepted, and by whom)")


def _check_against_archive(ctx: MonthContext, contracts: Sequence[str], exemptions: list) -> None:
    """The ledger's month equals a recomputation from the archive (KPI, hour and count rows)."""
    recomputed, done = ctx.recomputed(ctx.setup.registry)
    found = month_differences(ctx.ledger, recomputed, ctx.setup.registry, ctx.month, exemptions, contracts)
    if found:
        raise CloseRefused(
            f"the ledger's {ctx.month} differs from its recomputation from the archive ({done.sources.describe()}, "
            f"{done.records:,} records): {len(found)} row(s), the first: {' '.join(found[0].split())}; "
            f"find out why before closing: "
            f"{ctx.setup.ledger_command('verify', ctx.month)} lists them all; a ledger that lost hours (a crash before "
            f"they were written) is repaired with {ctx.setup.ledger_command('rebuild', ctx.month)} (collector stopped)")


def seal_inputs(ctx: MonthContext, basis: Ledger, exemptions: list, late: list[LateHeartbeat]
                ) -> tuple[list[InputFile], dict[str, bytes], dict[str, Any]]:
    """The inputs of the figures as files for the report, blobs for the ledger and marks for the seal."""
    setup = ctx.setup
    archive, snapshots = ctx.archive_now()
    registry_raw, registry_sha = file_bytes(setup.registry_path)
    rules = {name: file_bytes(setup.rules_dir / name) for name in RULE_FILES}
    late_raw = canonical({"late": [h.to_doc() for h in late]})
    ex_docs = exemption_docs(exemptions)
    ex_sha = sha256_bytes(canonical({"exemptions": ex_docs}))
    ledger_sha = ledger_month_digest(ctx.ledger, ctx.month)  # the live ledger's rows, to tell later if they change
    basis_sha = ledger_sha if basis is ctx.ledger else ledger_month_digest(basis, ctx.month)
    blobs = {sha: data for data, sha in [(registry_raw, registry_sha), *rules.values()]}
    blobs[sha256_bytes(late_raw)] = late_raw
    marks = [replace(mark(p), name=name) for name, p in archive.items()]
    shots = [replace(mark(p), name=name) for name, p in snapshots.items()]
    snapshot = shots[0] if shots and not ctx.parts else None
    config = setup.config_path
    archive_dirs = " + ".join(str(d) for d in setup.archives)
    files = [InputFile(role="archive", path=str(p), sha256=m.sha256) for p, m in zip(archive.values(), marks)]
    files += [InputFile(role="snapshot", path=str(p), sha256=m.sha256) for p, m in zip(snapshots.values(), shots)]
    files += [InputFile(role="registry", path=str(setup.registry_path), sha256=registry_sha)]
    files += [InputFile(role="rules", path=str(setup.rules_dir / name), sha256=rules[name][1]) for name in RULE_FILES]
    files += [InputFile(role="config", path=str(config), sha256=sha256_file(config))] if config else []
    parts = parts_doc(ctx.parts, lambda ledger: ledger_month_digest(ledger, ctx.month))
    files += [InputFile(role="ledger", path=f"{p['ledger']} (partition {'+'.join(p['streets'])}, {ctx.month})",
                        sha256=p["ledger_month_sha256"]) for p in parts]
    merged = f", merged from {len(parts)} partitions" if parts else ""
    files += [InputFile(role="exemptions", path=f"{setup.ledger} (exemptions{merged})", sha256=ex_sha),
              InputFile(role="ledger", path=f"{setup.ledger} ({ctx.month}{merged})" if basis is ctx.ledger
                        else f"{setup.ledger.parent} (recomputed from the archive, {ctx.month})", sha256=basis_sha),
              InputFile(role="late", path=f"{archive_dirs} (after {ctx.month})", sha256=sha256_bytes(late_raw))]
    inputs = {
        "archive_dir": archive_dirs, "archive": [m.to_doc() for m in marks],
        "snapshot": snapshot.to_doc() if snapshot else None,
        **({"snapshots": [m.to_doc() for m in shots], "partitions": parts} if ctx.parts else {}),
        "registry": {"path": str(setup.registry_path), "sha256": registry_sha, "version": setup.registry.version},
        "rules": {"directory": str(setup.rules_dir), "version": setup.registry.rules.version,
                  "files": {name: sha for name, (_, sha) in rules.items()}},
        "config": {"path": str(config), "sha256": sha256_file(config)} if config else None,
        "exemptions": ex_docs, "exemptions_sha256": ex_sha, "ledger_month_sha256": ledger_sha,
        "basis_month_sha256": basis_sha,
        "late": {"until": ctx.late_until(), "found": len(late), "sha256": sha256_bytes(late_raw)},
    }
    doc_blobs = {"registry": registry_sha, "late": sha256_bytes(late_raw),
                 **{f"rules/{name}": sha for name, (_, sha) in rules.items()}}
    inputs["blobs"] = doc_blobs
    return files, blobs, inputs


def _doc(ctx: MonthContext, figures: Figures, inputs: dict[str, Any], blobs: dict[str, bytes], *, version: int,
         previous: Closing | None, by: str, reason: str, changes: list[dict[str, Any]],
         gaps_accepted: tuple[str, int] | None) -> dict[str, Any]:
    contract = ctx.setup.registry.rules.contract(figures.contract)
    rule = contract.late_heartbeats
    doc_inputs = {k: v for k, v in inputs.items() if k != "blobs"}
    doc_inputs["late"] = {**inputs["late"], "of_contract": len(figures.late), "counted": len(figures.counted),
                          "credit": figures.credit.by_street(), "rule": {"count": rule.count, "max_delay": rule.max_delay,
                                                                         "received_within": rule.received_within}}
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION, "ptmon_version": __version__,
        "month": ctx.month, "contract": figures.contract, "version": version,
        "previous_seal": previous.seal if previous else None,
        "closed_at": ctx.now, "closed_by": by.strip(), "reason": reason.strip(), "gaps_accepted": gaps_accepted is not None,
        **({"gaps_accepted_by": {"by": gaps_accepted[0], "version": gaps_accepted[1]}} if gaps_accepted else {}),
        "inputs": doc_inputs, "blobs": inputs["blobs"],
        "kpis": [row_to_doc(r) for r in figures.rows()], "money": money_to_doc(figures.money),
        "report": inputs_to_doc(figures.inputs), "changes": changes,
    }

