"""The rules and registry a ledger's month was computed with, checked against the files a report reads.

The ledger's hours hold sums the collector computed with its rules (what counts as a read, a
capture, a plausible counter) and its registry (which devices are expected, on which street);
the report reads them with ``--rules`` and ``--registry`` and applies those files' thresholds and
payment terms. With other files the money is that of no computation: a threshold edited after
the fact would turn the collector's sums into another deduction under a header naming the new
rules. So :func:`refuse_other_versions` refuses a ledger month computed with other versions.

There is no legitimate mismatch to let through: a collector restarted with changed rules or
registry rebuilds the whole month from the archive with the new files (collector/restore.py),
so one month's rows carry one pair of versions, the pair its collector last ran with. A month
whose rows carry several pairs (an older ptmon, a ledger edited by hand) is refused too: no set
of files reproduces it. Recomputing the month with the files given (``--from-archive``, or
``ptmon ledger rebuild --month``) is how a corrected registry or rules reach a report.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import UsageError
from ..ledger.store import Ledger
from ..registry import Registry
from ..timebase import day_of

Versions = tuple[str, str]  # (rules version, registry version)


def month_versions(ledger: Ledger, start: int, end: int) -> list[Versions]:
    """The (rules, registry) versions of the ledger's hour and day rows in ``[start, end)``, sorted."""
    found = ledger.db.execute(
        "SELECT rules_version, registry_version FROM hours WHERE hour >= ? AND hour < ? "
        "UNION SELECT rules_version, registry_version FROM days WHERE day >= ? AND day < ?",
        (start, end, day_of(start), day_of(end))).fetchall()
    return sorted((str(r), str(g)) for r, g in found)


def refuse_other_versions(ledger: Ledger, where: str, month: str, start: int, end: int, registry: Registry) -> None:
    """Raise, in one line, unless every row of the ledger's month was computed with the rules and
    registry the report reads (``registry`` and its rules); a month without rows passes."""
    given = (registry.rules.version, registry.version)
    found = month_versions(ledger, start, end)
    if not found or found == [given]:
        return
    files = [f"--rules {registry.rules.directory} (rules {given[0]})", f"--registry {registry.path} (registry {given[1]})"]
    if len(found) > 1:
        problem = (f"the ledger {where} computed {month} with several versions ({_pairs(found)}): no set of files "
                   f"reproduces it, not {' and '.join(files)} either")
    else:
        other = [text for text, mine, theirs in zip(files, given, found[0]) if mine != theirs]
        problem = (f"the ledger {where} computed {month} with {_pairs(found)}, not with {' and '.join(other)}: "
                   "the money would not be that of the KPIs")
    raise UsageError(f"{problem}. Give the files the collector ran with (`ptmon rules check DIR` and `ptmon registry "
                     f"check FILE` print a file's version), or recompute the month with these files: `ptmon report "
                     f"--from-archive ...`, or `ptmon ledger rebuild --month {month}` to rewrite the ledger's month")


def _pairs(found: Sequence[Versions]) -> str:
    return "; ".join(f"rules {r}, registry {g}" for r, g in found)


def recomputed_note(ledger: Ledger, start: int, end: int, registry: Registry) -> str | None:
    """For a month recomputed from the archive (``--from-archive``) with other files than the
    ledger's month was computed with (a corrected registry, say: legitimate, the report names the
    files it used), the note that says so to the reviewer; None when they are the same."""
    given = (registry.rules.version, registry.version)
    found = month_versions(ledger, start, end)
    if not found or found == [given]:
        return None
    return (f"本报告由归档按规则 rules {given[0]}、设备清单 registry {given[1]} 重算；台账本月由 {_pairs(found)} 计算 "
            "(recomputed from the archive with other rules or registry than the collector's ledger)")
