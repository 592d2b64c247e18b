"""The report as CSV: the replay CSV's columns and rows, plus ``fee,deduction,payable,coverage,provisional``.

The first ten columns are :meth:`Results.write_csv`'s own lines (byte for byte, so the CSV
equals a replay's), restricted to the report's contracts. The money belongs to a contract ×
street and repeats on each of its KPI rows; the district rows carry the sums of the streets.
Summing a money column over all rows therefore counts each street once per KPI: filter on one
``kpi`` (e.g. ``online``) and on ``street != district`` first. Empty when the contract has no
payment rule.

A report of a sealed closing (第 N 版) adds ``version`` (N) and ``seal`` (the closing's SHA-256)
after them, the same on every row; a report from the live ledger has neither.

``coverage`` is the contract's monitoring coverage (observed seconds / the month's seconds),
rounded half-up to 9 decimals like ``value``; ``provisional`` is ``true`` when the contract's
figures and amounts are provisional (month not over, or coverage below 1: see
:mod:`ptmon.report.status`), else ``false``. Columns are only ever added at the end.
"""

from __future__ import annotations

import csv
import io
from fractions import Fraction
from pathlib import Path

from ..results import CSV_COLUMNS
from .view import ReportView

MONEY_COLUMNS = ("fee", "deduction", "payable")
STATUS_COLUMNS = ("coverage", "provisional")
CLOSING_COLUMNS = ("version", "seal")


def csv_text(view: ReportView) -> str:
    money: dict[tuple[str, str], tuple[str, str, str]] = {}
    status: dict[str, tuple[str, str]] = {}
    for c in view.contracts:
        status[c.contract.code] = (ratio_text(c.coverage), str(c.provisional).lower())
        for line in [*c.streets, c.district]:
            p = line.payment
            if p is not None:
                money[c.contract.code, line.code] = (str(p.fee), str(p.deduction), str(p.payable))
    wanted = set(view.contract_codes)
    reader = csv.reader(io.StringIO(view.inputs.results.csv_text()))
    header = next(reader)
    assert tuple(header) == CSV_COLUMNS
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    closing = view.inputs.closing
    sealed = (str(closing.version), closing.seal) if closing is not None else ()
    writer.writerow((*CSV_COLUMNS, *MONEY_COLUMNS, *STATUS_COLUMNS, *(CLOSING_COLUMNS if sealed else ())))
    for row in reader:
        contract, street = row[0], row[1]
        if contract in wanted:
            writer.writerow((*row, *money.get((contract, street), ("", "", "")), *status[contract], *sealed))
    return out.getvalue()


def ratio_text(value: Fraction, decimals: int = 9) -> str:
    """A fraction rounded half-up to ``decimals`` places: ``0.000185185``."""
    scale = 10**decimals
    scaled = (2 * value.numerator * scale + value.denominator) // (2 * value.denominator)
    return f"{scaled // scale}.{scaled % scale:0{decimals}d}"


def render_csv(view: ReportView, path: Path) -> None:
    path.write_text(csv_text(view), encoding="utf-8", newline="")
