"""The report's inputs as a sealed document holds them, and back.

Everything :class:`~ptmon.report.model.ReportInputs` carries becomes plain JSON (integers,
strings, lists), exactly: fractions stay numerator/denominator pairs, thresholds and money are
decimal strings, instants integer µs. The registry and the rules are not in it: their files
are sealed as they were (blobs) and loaded again from those bytes, under the paths they had.
The same document therefore renders the same report, byte for byte, on every run.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Mapping
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

from ..ledger.records import Episode, Exemption
from ..outputs import scratch_directory
from ..payment import PaymentLine
from ..registry import Registry, parse_registry
from ..report.model import DailyKpi, InputFile, ReportInputs
from ..results import KpiRow, Results
from ..rules import RULE_FILES, Rules, load_rules


def inputs_to_doc(inputs: ReportInputs) -> dict[str, Any]:
    return {
        "month": inputs.month, "start": inputs.start, "end": inputs.end, "source": inputs.source,
        "results": results_to_doc(inputs.results),
        "daily": [[d.day.isoformat(), d.contract, d.street, d.kpi, d.numerator, d.denominator] for d in inputs.daily],
        "exemptions": [dataclasses.asdict(e) for e in inputs.exemptions],
        "episodes": [[e.device, e.contract, e.street, e.type, e.community, e.gateway, e.start, e.end, e.restored]
                     for e in inputs.episodes],
        "files": [[f.role, f.path, f.sha256] for f in inputs.files],
        "digest": inputs.digest, "warnings": list(inputs.warnings), "made_at": inputs.made_at,
        "observed_until": inputs.observed_until,
    }


def inputs_from_doc(d: Mapping[str, Any], registry: Registry) -> ReportInputs:
    return ReportInputs(
        month=d["month"], start=d["start"], end=d["end"], source=d["source"], rules=registry.rules, registry=registry,
        results=results_from_doc(d["results"]),
        daily=[DailyKpi(day=date.fromisoformat(x[0]), contract=x[1], street=x[2], kpi=x[3], numerator=x[4],
                        denominator=x[5]) for x in d["daily"]],
        exemptions=[Exemption(**x) for x in d["exemptions"]],
        episodes=[Episode(device=x[0], contract=x[1], street=x[2], type=x[3], community=x[4], gateway=x[5], start=x[6],
                          end=x[7], restored=bool(x[8])) for x in d["episodes"]],
        files=[InputFile(role=x[0], path=x[1], sha256=x[2]) for x in d["files"]],
        digest=d["digest"], warnings=list(d["warnings"]), made_at=d["made_at"], observed_until=d["observed_until"],
    )


def row_to_doc(r: KpiRow) -> list[Any]:
    return [r.contract, r.street, r.kpi, r.numerator, r.denominator, str(r.threshold), r.expected_device_samples,
            r.observed_seconds]


def row_from_doc(x: list[Any]) -> KpiRow:
    return KpiRow(contract=x[0], street=x[1], kpi=x[2], numerator=x[3], denominator=x[4], threshold=Decimal(x[5]),
                  expected_device_samples=x[6], observed_seconds=x[7])


def results_to_doc(r: Results) -> dict[str, Any]:
    return {"start": r.start, "end": r.end, "rows": [row_to_doc(x) for x in r.rows], "coverage": r.coverage,
            "gaps": [list(g) for g in r.gaps], "rules_version": r.rules_version, "registry_version": r.registry_version,
            "rejects": dict(r.rejects), "engine_stats": dict(r.engine_stats), "unknown_topics": dict(r.unknown_topics)}


def results_from_doc(d: Mapping[str, Any]) -> Results:
    return Results(start=d["start"], end=d["end"], rows=[row_from_doc(x) for x in d["rows"]],
                   coverage={k: dict(v) for k, v in d["coverage"].items()}, gaps=[(a, b) for a, b in d["gaps"]],
                   rules_version=d["rules_version"], registry_version=d["registry_version"],
                   rejects=Counter(d["rejects"]), engine_stats=Counter(d["engine_stats"]),
                   unknown_topics=dict(d["unknown_topics"]))


def money_to_doc(lines: list[PaymentLine]) -> list[dict[str, Any]]:
    return [{"street": p.street, "fee": str(p.fee), "deduction": str(p.deduction), "payable": str(p.payable),
             "fraction": [p.deduction_fraction.numerator, p.deduction_fraction.denominator], "capped": p.capped,
             "undetermined": list(p.undetermined)} for p in lines]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Money:
    """A money line as sealed: what the comparison of versions needs."""

    street: str
    fee: Decimal
    deduction: Decimal
    payable: Decimal


def money_from_doc(lines: list[Mapping[str, Any]]) -> dict[str, Money]:
    return {x["street"]: Money(street=x["street"], fee=Decimal(x["fee"]), deduction=Decimal(x["deduction"]),
                               payable=Decimal(x["payable"])) for x in lines}


def money_of(lines: list[PaymentLine]) -> dict[str, Money]:
    return {p.street: Money(street=p.street, fee=p.fee, deduction=p.deduction, payable=p.payable) for p in lines}


# --- the registry and rules as sealed ------------------------------------------------------------

def rules_from_files(files: Mapping[str, bytes], directory: str) -> Rules:
    """Rules from the sealed bytes of the rule files, shown under the directory they came from."""
    with scratch_directory("ptmon-sealed-rules-") as tmp:
        for name in RULE_FILES:
            (Path(tmp) / name).write_bytes(files[name])
        rules = load_rules(tmp)
    return dataclasses.replace(rules, directory=Path(directory))


def registry_from_bytes(raw: bytes, rules: Rules, path: str) -> Registry:
    """A registry from the sealed bytes of its file, under its path and version (sha256 of the bytes)."""
    import hashlib

    registry = parse_registry(raw.decode("utf-8-sig"), rules, label=path)
    return dataclasses.replace(registry, path=path, version=hashlib.sha256(raw).hexdigest()[:16])


def file_bytes(path: Path) -> tuple[bytes, str]:
    """A file's bytes and SHA-256, read once (so the two agree even if it is being replaced)."""
    import hashlib

    data = path.read_bytes()
    return data, hashlib.sha256(data).hexdigest()

