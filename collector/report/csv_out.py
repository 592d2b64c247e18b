"""The report as CSV: the replay CSV's columns and rows, plus ``fee,deduction,payable``.

The first ten columns are :meth:`Results.write_csv`'s own lines (byte for byte, so the CSV
equals a replay's), restricted to the report's contracts. The money belongs to a contract ×
street and repeats on each of its KPI rows; the district rows carry the sums of the streets.
Summing a money column over all rows therefore counts each street once per KPI: filter on one
``kpi`` (e.g. ``online``) and on ``street != district`` first. Empty when the contract has no
payment rule.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from ..results import CSV_COLUMNS
from .view import ReportView

MONEY_COLUMNS = ("fee", "deduction", "payable")


def csv_text(view: ReportView) -> str:
    money: dict[tuple[str, str], tuple[str, str, str]] = {}
    for c in view.contracts:
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
    writer.writerow((*CSV_COLUMNS, *MONEY_COLUMNS))
    for row in reader:
        contract, street = row[0], row[1]
        if contract in wanted:
            writer.writerow((*row, *money.get((contract, street), ("", "", ""))))
    return out.getvalue()


def render_csv(view: ReportView, path: Path) -> None:
    path.write_text(csv_text(view), encoding="utf-8", newline="")
