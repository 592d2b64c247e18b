"""What a monthly report is made of, whichever source (ledger or raw archive) it came from.

The builders in :mod:`ptmon.report.build` fill a :class:`ReportInputs`; the renderers
(PDF, HTML, XLSX, CSV) only read it, so the same numbers reach every format.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

from ..anomaly.records import Anomaly
from ..ledger.records import Episode, Exemption
from ..registry import Registry
from ..results import Results
from ..rules import Rules
from .versions import ClosingInfo


@dataclass(frozen=True, kw_only=True)
class DailyKpi:
    """One KPI of one contract × street (or ``district``) over one Shanghai day."""

    day: date
    contract: str
    street: str
    kpi: str
    numerator: int
    denominator: int


@dataclass(frozen=True, kw_only=True)
class InputFile:
    """A file the numbers came from, so a reviewer can check they hold the same bytes."""

    role: str  # "ledger", "archive", "registry", "rules"
    path: str
    sha256: str


@dataclass(frozen=True, kw_only=True)
class ReportInputs:
    month: str  # YYYY-MM
    start: int  # µs, the month's first instant (Asia/Shanghai)
    end: int  # µs, the next month's first instant
    source: str  # "ledger" or "archive"
    rules: Rules
    registry: Registry
    results: Results  # month KPIs per contract × street and district, coverage and gaps
    daily: list[DailyKpi] = field(default_factory=list)
    exemptions: list[Exemption] = field(default_factory=list)  # overlapping the month, revoked ones too
    episodes: list[Episode] = field(default_factory=list)  # overlapping the month
    anomalies: list[Anomaly] = field(default_factory=list)  # devices online but not doing their job, the month's rows
    files: list[InputFile] = field(default_factory=list)
    digest: str = ""  # SHA-256 over the input files, in order
    warnings: list[str] = field(default_factory=list)  # what a reviewer must know before signing
    # µs, when the report was made: before ``end`` the month is not over (report.status). None:
    # not known, taken as after the month (the renderers have no clock of their own).
    made_at: int | None = None
    # µs, the end of the monitor's last observed span within the month (ledger spans), capped at
    # ``end``; None: not known, judged from ``results.gaps`` alone.
    observed_until: int | None = None
    # A report of a sealed closing (第 N 版): its version, seal and history (report.versions);
    # None for a report read from the live ledger or recomputed from the archive.
    closing: ClosingInfo | None = None
