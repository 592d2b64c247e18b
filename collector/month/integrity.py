"""What `ptmon month verify` recomputes from a sealed closing, beyond its seal.

A seal (SHA-256 of the document) shows that a document is the one sealed; it cannot show that the
document was made by ptmon: anyone who can write the ledger file can INSERT a document of their
own with its correct SHA-256. So each version is also checked against itself and the ledger:

* **the table's columns** (who, when, why, month, contract, version) say what the sealed
  document says: the report shows the document's, never the columns';
* **its money follows from its KPI rows** under the payment rule of its sealed rules (Decimal, to
  the fen), the street lines add up to the district's, and the report's KPI table is the same rows;
* **the ledger's rows of the month** are still those fingerprinted at the closing (or, after
  `ptmon ledger rebuild`, those of the recomputation it was sealed from);
* for a version computed from the ledger as it still is, **its KPI rows are recomputed** from
  those rows with the version's own sealed registry, rules, exemptions and late heartbeats.

What this cannot catch is stated in docs/month-close.md (a forger who fakes rows and figures
consistently, for a version recomputed from the archive, is caught only by recomputing the
month from the archive, as `ptmon month status` does, or by the seal on the signed copy).
"""

from __future__ import annotations

from decimal import Decimal

from ..ledger.closing import Closing
from ..ledger.store import Ledger
from ..tally import DISTRICT
from .figures import ledger_month_digest, money_lines, month_figures
from .sealdoc import money_to_doc, row_from_doc, row_to_doc
from .sealed import Sealed


def document_problems(c: Closing, sealed: Sealed) -> list[str]:
    """What in the version's own document, or in its table row, does not add up."""
    problems = [f"{c.label}: the closings table says {m}: edited outside ptmon" for m in c.column_mismatches()]
    rules = sealed.rules
    report_rows = [x for x in c.doc["report"]["results"]["rows"] if x[0] == c.contract]
    if report_rows != c.doc["kpis"]:
        problems.append(f"{c.label}: the report's KPI table is not the sealed KPI rows")
    terms = rules.contract(c.contract)
    recomputed = money_to_doc(money_lines(terms, [row_from_doc(x) for x in c.doc["kpis"]], rules.street_codes()))
    if recomputed != c.doc["money"]:
        wrong = [m["street"] for m, r in zip(c.doc["money"], recomputed) if m != r] or ["the lines"]
        problems.append(f"{c.label}: its money does not follow from its KPI rows under the payment rule "
                        f"({', '.join(wrong)}): not a closing ptmon computed")
    streets = [m for m in c.doc["money"] if m["street"] != DISTRICT]
    district = next((m for m in c.doc["money"] if m["street"] == DISTRICT), None)
    if district is not None:
        for key in ("fee", "deduction", "payable"):
            if sum((Decimal(m[key]) for m in streets), Decimal(0)) != Decimal(district[key]):
                problems.append(f"{c.label}: the streets' {key} do not add up to the district's {district[key]}")
    return problems


def chain_problems(versions: list[Closing]) -> list[str]:
    """Each version's seal, its table row against its document, and the chain of seals: what a
    report checks of the versions it renders (cheap: no recomputation)."""
    problems = []
    previous: Closing | None = None
    for c in versions:
        if not c.sealed_ok():
            problems.append(f"{c.label}: the stored closing no longer matches its seal (altered in the ledger)")
        problems += [f"{c.label}: the closings table says {m}: edited outside ptmon" for m in c.column_mismatches()]
        if previous is not None and c.doc.get("previous_seal") != previous.seal:
            problems.append(f"{c.label}: does not name the seal of {previous.label} (the chain of versions is broken)")
        previous = c
    return problems


def ledger_rows_problem(ledger: Ledger, month: str, c: Closing, verify: str) -> tuple[str | None, str]:
    """Whether the ledger's rows of the month are as fingerprinted at the closing ``c``:
    (a problem or None, what was found)."""
    now = ledger_month_digest(ledger, month)
    inputs = c.doc["inputs"]
    if now == inputs["ledger_month_sha256"]:
        return None, f"the ledger's rows of {month} are those sealed in {c.label}"
    if now == inputs.get("basis_month_sha256"):
        return None, (f"the ledger's rows of {month} are those {c.label} was recomputed from (the month was rebuilt "
                      "from the archive since)")
    return (f"the ledger's rows of {month} (hours, days, counts, device status, spans) changed since {c.label} was "
            f"sealed: they no longer hash to {inputs['ledger_month_sha256'][:16]}…; {verify} compares them with the "
            "archive"), ""


def recomputed_from_ledger(ledger: Ledger, month: str, c: Closing, sealed: Sealed) -> str | None:
    """For a version whose figures came from the ledger's rows as they still are: its KPI rows
    and money recomputed from them; a problem, or None (also when it cannot be done here)."""
    if ledger_month_digest(ledger, month) != c.doc["inputs"].get("basis_month_sha256"):
        return None
    figures = month_figures(ledger, sealed.registry, month, c.contract, sealed.exemptions, sealed.late,
                            source="ledger", made_at=c.closed_at)
    if [row_to_doc(r) for r in figures.rows()] != c.doc["kpis"]:
        return f"{c.label}: its KPI rows are not those of the ledger's rows it was sealed from: not a closing ptmon computed"
    if money_to_doc(figures.money) != c.doc["money"]:
        return f"{c.label}: its money is not that of the ledger's rows it was sealed from"
    return None
