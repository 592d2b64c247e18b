"""`ptmon month verify YYYY-MM`: the seals against the ledger and the files.

For every version of every closed contract of the month:

* **the seal**: the stored document still hashes to the recorded seal, each restatement names
  its predecessor's seal (the chain is unbroken), and the files sealed inside the ledger (the
  registry, the rule files, the late heartbeats) still hash to their names;
* **the archive**: every archive file and month-start snapshot sealed is still there with the
  sealed bytes (an appended file keeps its sealed bytes as a prefix and is reported as appended,
  not as altered); files added or appended after a superseded version are the next version's
  evidence, and only those that arrived after the latest version are reported;
* for the latest version, **the registry, rule files and config** named by the command against
  those sealed, and the sealed late heartbeats still found in the archive after the month.

Exit status 1 when anything differs, with each difference named.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..ledger.closing import blob_problems, closings
from ..rules import RULE_FILES
from .context import MonthContext
from .figures import ledger_month_digest
from .fingerprint import FileMark, compare_files, sha256_file
from .integrity import document_problems, ledger_rows_problem, recomputed_from_ledger
from .parts import partition_ledger_changes, parts_doc
from .sealed import load_sealed


@dataclass
class Verdict:
    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def ok(self, text: str) -> None:
        self.lines.append(f"  ok    {text}")

    def bad(self, text: str) -> None:
        self.lines.append(f"  FAIL  {text}")
        self.problems.append(text)


def verify_month(ctx: MonthContext, contracts: Sequence[str]) -> Verdict:
    v = Verdict()
    for code in contracts:
        versions = closings(ctx.ledger, ctx.month, code)
        if not versions:
            v.lines.append(f"{ctx.month} {code}: not closed, nothing sealed to check")
            continue
        v.lines.append(f"{ctx.month} {code}: {len(versions)} version(s)")
        previous = None
        for n, c in enumerate(versions):
            if c.sealed_ok():
                v.ok(f"{c.label}: the stored closing hashes to its seal {c.seal[:16]}…")
            else:
                v.bad(f"{c.label}: the stored closing no longer hashes to its seal {c.seal[:16]}… (altered in the ledger)")
            if previous is not None and c.doc.get("previous_seal") != previous.seal:
                v.bad(f"{c.label}: does not name the seal of {previous.label} (the chain of versions is broken)")
            blobs = blob_problems(ctx.ledger, c)
            for blob_problem in blobs:
                v.bad(f"{c.label}: {blob_problem}")
            if not blobs:
                _recomputed(ctx, v, c)
            _archive(ctx, v, c.label, [FileMark.from_doc(x) for x in c.doc["inputs"]["archive"]],
                     sealed_snapshots(c.doc["inputs"]), superseded=n < len(versions) - 1)
            previous = c
        _latest_files(ctx, v, versions[-1])
        problem, found = ledger_rows_problem(ctx.ledger, ctx.month, versions[-1],
                                             ctx.setup.ledger_command("verify", ctx.month))
        v.bad(problem) if problem else v.ok(found)
        if ctx.parts or "partitions" in versions[-1].doc["inputs"]:
            _partitions(ctx, v, versions[-1])
    return v


def _recomputed(ctx: MonthContext, v: Verdict, c) -> None:
    """The version's own document, and its figures from the ledger's rows when it was made from them."""
    sealed = load_sealed(ctx.ledger, c)
    problems = document_problems(c, sealed)
    if (found := recomputed_from_ledger(ctx.ledger, ctx.month, c, sealed)) is not None:
        problems.append(found)
    for problem in problems:
        v.bad(problem)
    if not problems:
        v.ok(f"{c.label}: signer, date and reason as sealed; money recomputed from its KPI rows to the fen")


def _archive(ctx: MonthContext, v: Verdict, label: str, marks: list[FileMark], snapshots: list[FileMark], *,
             superseded: bool = False) -> None:
    """The version's sealed archive files still there with their sealed bytes. For a superseded
    version, files added or appended since are new evidence that a later version sealed (or that
    the latest version's check reports): only its own sealed bytes altered or gone fail it."""
    files, snapshots_now = ctx.archive_now()
    changes = compare_files(marks, files)
    if snapshots:
        changes += compare_files(snapshots, snapshots_now)
    if superseded:
        later = [c for c in changes if not c.tampered]
        changes = [c for c in changes if c.tampered]
        if later and not changes:
            v.ok(f"{label}: {len(marks)} archive file(s) as sealed; {len(later)} added or appended since, the latest "
                 "version's to account for")
            return
    for change in changes:
        v.bad(f"{label}: archive {change.describe()}")
    if not changes:
        shown = (" and the month-start snapshot" if len(snapshots) == 1 else
                 f" and {len(snapshots)} month-start snapshots" if snapshots else "")
        v.ok(f"{label}: {len(marks)} archive file(s){shown} as sealed")


def _partitions(ctx: MonthContext, v: Verdict, c) -> None:
    """Each partition's ledger against the SHA-256 of its rows sealed in the latest version."""
    now = parts_doc(ctx.parts, lambda ledger: ledger_month_digest(ledger, ctx.month))
    ok, bad = partition_ledger_changes(c.doc["inputs"].get("partitions", []), now, ctx.month,
                                       ctx.setup.input_options())
    for text in ok:
        v.ok(text)
    for text in bad:
        v.bad(f"{c.label}: {text}")


def sealed_snapshots(inputs: dict[str, Any]) -> list[FileMark]:
    """The month-start snapshot(s) a version sealed: one, or each partition's."""
    docs = [inputs["snapshot"]] if inputs["snapshot"] else inputs.get("snapshots", [])
    return [FileMark.from_doc(d) for d in docs]


def _latest_files(ctx: MonthContext, v: Verdict, c) -> None:
    inputs = c.doc["inputs"]
    setup = ctx.setup
    if sha256_file(setup.registry_path) == inputs["registry"]["sha256"]:
        v.ok(f"registry {setup.registry_path} as sealed in {c.label}")
    else:
        v.bad(f"registry {setup.registry_path} differs from the one sealed in {c.label} (sealed copy kept in the "
              "ledger; a correction shows in `ptmon month status`)")
    for name in RULE_FILES:
        path = setup.rules_dir / name
        if sha256_file(path) == inputs["rules"]["files"][name]:
            v.ok(f"rules {path} as sealed")
        else:
            v.bad(f"rules {path} differs from the one sealed in {c.label}")
    if inputs.get("config") and setup.config_path is not None:
        if sha256_file(setup.config_path) == inputs["config"]["sha256"]:
            v.ok(f"config {setup.config_path} as sealed")
        else:
            v.bad(f"config {setup.config_path} differs from the one sealed in {c.label}")
    if blob_problems(ctx.ledger, c):
        v.bad(f"the late heartbeats sealed in {c.label} cannot be checked: its sealed files in the ledger are altered "
              "or missing (above)")
        return
    sealed = load_sealed(ctx.ledger, c)
    if sealed.late:
        found = set(ctx.scan_late(inputs["late"]["until"]).heartbeats)
        missing = [h for h in sealed.late if h not in found]
        if missing:
            v.bad(f"{len(missing):,} of the {len(sealed.late):,} late heartbeats sealed in {c.label} are no longer in the "
                  "archive after the month")
        else:
            v.ok(f"{len(sealed.late):,} sealed late heartbeats still in the archive after the month")
