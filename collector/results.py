"""KPI results of a period: exact values, the replay CSV, and the terminal table.

Values are kept as the integer numerator and denominator they come from; the fraction is
formatted with 9 decimals rounded half-up, and pass/fail compares the exact fraction with
the threshold, so ``0.949999999…`` never rounds into a pass.
"""

from __future__ import annotations

import csv
import io
import unicodedata
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from typing import IO

from .counting import IMPLAUSIBLE_KINDS
from .rules import Rules
from .timebase import format_instant

CSV_COLUMNS = (
    "contract",
    "street",
    "kpi",
    "value",
    "threshold",
    "pass",
    "expected_device_samples",
    "observed_seconds",
    "numerator",
    "denominator",
)
VALUE_DECIMALS = 9


@dataclass(frozen=True, kw_only=True)
class KpiRow:
    """One KPI of one contract × street (or ``district``) over a period."""

    contract: str
    street: str
    kpi: str
    numerator: int
    denominator: int
    threshold: Decimal
    expected_device_samples: int
    observed_seconds: int

    @property
    def value(self) -> Fraction | None:
        """The exact rate, or None when nothing was expected (no devices, no attempts)."""
        return Fraction(self.numerator, self.denominator) if self.denominator else None

    @property
    def passed(self) -> bool | None:
        value = self.value
        return None if value is None else value >= Fraction(self.threshold)

    def value_text(self, decimals: int = VALUE_DECIMALS) -> str:
        """The value as a fraction rounded half-up to ``decimals`` places, '' when undefined."""
        return _half_up(self.numerator, self.denominator, decimals)

    def percent_text(self, decimals: int = 3) -> str:
        """The value in per cent rounded half-up, '' when undefined."""
        return _half_up(100 * self.numerator, self.denominator, decimals)


def _half_up(numerator: int, denominator: int, decimals: int) -> str:
    if not denominator:
        return ""
    scale = 10**decimals
    scaled = (2 * numerator * scale + denominator) // (2 * denominator)
    return f"{scaled // scale}.{scaled % scale:0{decimals}d}"


@dataclass(eq=False, kw_only=True)
class Results:
    """KPIs per contract × street and district-wide for ``[start, end)``, with coverage."""

    start: int
    end: int
    rows: list[KpiRow]
    coverage: dict[str, dict[str, int]]
    gaps: list[tuple[int, int]]
    rules_version: str
    registry_version: str
    rejects: dict[str, int] = field(default_factory=dict)
    engine_stats: dict[str, int] = field(default_factory=dict)
    unknown_topics: dict[str, int] = field(default_factory=dict)

    def row(self, contract: str, street: str, kpi: str) -> KpiRow:
        return next(r for r in self.rows if (r.contract, r.street, r.kpi) == (contract, street, kpi))

    def write_csv(self, out: IO[str]) -> None:
        """The replay CSV: one line per contract × street × KPI, byte-stable for equal inputs."""
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for r in self.rows:
            passed = r.passed
            writer.writerow(
                (
                    r.contract,
                    r.street,
                    r.kpi,
                    r.value_text(),
                    str(r.threshold),
                    "" if passed is None else str(passed).lower(),
                    r.expected_device_samples,
                    r.observed_seconds,
                    r.numerator,
                    r.denominator,
                )
            )

    def csv_text(self) -> str:
        buf = io.StringIO()
        self.write_csv(buf)
        return buf.getvalue()

    def table(self, rules: Rules) -> str:
        """A terminal table in Chinese first, one block per contract."""
        street_names = {s.code: s.name for s in rules.streets} | {"district": "全区合计"}
        lines = [f"统计期间 (period): {format_instant(self.start)} — {format_instant(self.end)}"]
        for contract in rules.contracts:
            cov = self.coverage[contract.code]
            share = cov["observed_seconds"] / cov["period_seconds"] if cov["period_seconds"] else 0.0
            method = {"time_weighted": f"时间加权, 每 {contract.sample_interval} 秒采样", "daily": "按日"}[contract.online_method]
            lines += ["", f"{contract.name} [{contract.code}]  在线率口径: {method}  监测覆盖 {share:.2%}"]
            header = ["街镇 street"] + [f"{k.name} [{k.code}] ≥{k.threshold}" for k in contract.kpis]
            body = []
            for street in [s.code for s in rules.streets] + ["district"]:
                cells = [street_names[street]]
                for kpi in contract.kpis:
                    r = self.row(contract.code, street, kpi.code)
                    mark = {True: "达标", False: "未达标", None: ""}[r.passed]
                    cells.append(f"{r.percent_text()}% {mark}" if r.denominator else "—")
                body.append(cells)
            lines += _grid(header, body)
        for a, b in self.gaps:
            lines.append(f"监测缺口 (monitoring gap): {format_instant(a)} — {format_instant(b)}")
        if self.rejects:
            lines.append("拒收消息 (rejected): " + ", ".join(f"{k} {v}" for k, v in sorted(self.rejects.items())))
        ignored = {k: v for k, v in self.engine_stats.items() if k in ("duplicate", "stale", "late", "outside_lease") and v}
        if ignored:
            lines.append("忽略消息 (ignored): " + ", ".join(f"{k} {v}" for k, v in sorted(ignored.items())))
        implausible = {k: v for k, v in self.engine_stats.items() if k in IMPLAUSIBLE_KINDS and v}
        if implausible:
            lines.append("计数不可信，未计入 (implausible counters, not counted): "
                         + ", ".join(f"{k} {v}" for k, v in sorted(implausible.items())))
        lost, recovered = self.engine_stats.get("lost", 0), self.engine_stats.get("recovered", 0)
        if lost or recovered:
            lines.append(f"传输丢失 (lost in transit): {lost - recovered} (lost {lost}, recovered {recovered}); "
                         "丢失的心跳仍计为未上报 (still missed heartbeats for the contract)")
        if self.unknown_topics:
            top = sorted(self.unknown_topics.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
            lines.append("未登记设备 (unknown devices): " + ", ".join(f"{t} ×{n}" for t, n in top))
        lines.append(f"规则版本 rules {self.rules_version} · 设备清单版本 registry {self.registry_version}")
        return "\n".join(lines)


def _width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _grid(header: list[str], body: list[list[str]]) -> list[str]:
    rows = [header, *body]
    widths = [max(_width(row[i]) for row in rows) for i in range(len(header))]
    out = []
    for n, row in enumerate(rows):
        out.append("  ".join(cell + " " * (widths[i] - _width(cell)) for i, cell in enumerate(row)).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return out
