"""A sealed closing read back: its registry and rules as they were, its exemptions, late
heartbeats, archive files, KPI rows and money, and the report inputs it renders from."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..ledger.closing import Closing, blob
from ..ledger.records import Exemption
from ..ledger.store import Ledger
from ..registry import Registry
from ..report.model import ReportInputs
from ..results import KpiRow
from ..rules import RULE_FILES, Rules
from .fingerprint import FileMark, exemptions_from_docs
from .late import LateHeartbeat
from .sealdoc import (
    Money,
    inputs_from_doc,
    money_from_doc,
    registry_from_bytes,
    row_from_doc,
    rules_from_files,
)

_LOADED: dict[tuple[str, ...], Registry] = {}  # sealed registries by their files' SHA-256: parsed once per process


@dataclass
class Sealed:
    closing: Closing
    registry: Registry
    registry_bytes: bytes
    rules_files: dict[str, bytes]
    exemptions: list[Exemption]
    late: list[LateHeartbeat]
    archive: list[FileMark]
    snapshot: FileMark | None
    rows: list[KpiRow]
    money: dict[str, Money]

    @property
    def rules(self) -> Rules:
        return self.registry.rules

    @property
    def inputs(self) -> dict[str, Any]:
        return self.closing.doc["inputs"]

    @property
    def snapshots(self) -> list[FileMark]:
        """The month-start snapshot(s) sealed: the one, or each partition's."""
        if self.snapshot is not None:
            return [self.snapshot]
        return [FileMark.from_doc(d) for d in self.inputs.get("snapshots", [])]

    def report_inputs(self) -> ReportInputs:
        return inputs_from_doc(self.closing.doc["report"], self.registry)


def load_sealed(ledger: Ledger, closing: Closing) -> Sealed:
    doc = closing.doc
    blobs = doc["blobs"]
    rules_files = {name: blob(ledger, blobs[f"rules/{name}"]) for name in RULE_FILES}
    registry_bytes = blob(ledger, blobs["registry"])
    key = (blobs["registry"], *(blobs[f"rules/{name}"] for name in RULE_FILES), doc["inputs"]["registry"]["path"],
           doc["inputs"]["rules"]["directory"])
    if key not in _LOADED:
        rules = rules_from_files(rules_files, doc["inputs"]["rules"]["directory"])
        _LOADED[key] = registry_from_bytes(registry_bytes, rules, doc["inputs"]["registry"]["path"])
    inputs = doc["inputs"]
    late = [LateHeartbeat.from_doc(x) for x in json.loads(blob(ledger, blobs["late"]))["late"]]
    return Sealed(
        closing=closing, registry=_LOADED[key], registry_bytes=registry_bytes, rules_files=rules_files,
        exemptions=exemptions_from_docs(inputs["exemptions"]), late=late,
        archive=[FileMark.from_doc(x) for x in inputs["archive"]],
        snapshot=FileMark.from_doc(inputs["snapshot"]) if inputs["snapshot"] else None,
        rows=[row_from_doc(x) for x in doc["kpis"]], money=money_from_doc(doc["money"]))
