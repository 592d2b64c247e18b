"""What changed since a closing, and what each change does to the money (for status and restate).

The inputs of a closed month can change afterwards: archive records for the month turn up
(a file of it added or appended), the registry is corrected (a device's ``accepted_on``), the
rules change, an exemption is approved or revoked, late heartbeats arrive. Each is found by
comparing what the closing sealed with what is there now, and its effect is computed as a
**waterfall**, in this fixed order, each step on top of the ones before it:

    archive → registry → rules → exemptions → late heartbeats

The first three change what the month's sums are computed from, so each is a recomputation of
the month from the archive (with the registry and rules of that step: the sealed ones are kept
in the ledger); exemptions and late heartbeats are applied when the sums are read. The steps'
effects add up to the total: the figures with every input as it is now, which is what a
restatement seals and what a fresh recomputation of the month gives.

The sums are read from the live ledger only while its rows of the month are those the sealed
figures were read from (their SHA-256 is sealed); otherwise — the month was restated from the
archive, or the ledger's rows changed since — they are recomputed from the archive.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..errors import PtmonError
from ..exemptions import ExemptionMask
from ..ledger.closing import Closing
from ..ledger.records import Exemption
from ..ledger.store import Ledger
from ..registry import Registry, load_registry
from ..results import KpiRow
from ..rules import RULE_FILES
from .context import MonthContext
from .figures import Difference, Figures, difference, ledger_month_digest, month_figures
from .fingerprint import FileChange, compare_files, exemption_changes, registry_changes, sha256_file
from .late import LateHeartbeat, counted, describe, of_contract
from .sealdoc import Money
from .sealed import Sealed, load_sealed

TITLES = {"archive": "报文存档 archive", "registry": "设备清单 registry", "rules": "规则文件 rules",
          "exemptions": "豁免 exemptions", "late": "迟到心跳 late heartbeats"}
Before = tuple[list[KpiRow], dict[str, Money]]


@dataclass
class Step:
    what: str  # archive, registry, rules, exemptions or late
    details: list[str]  # what changed, one line each
    registry: Registry | None = None  # slow steps: the registry (and rules) the month is recomputed with
    diff: Difference | None = None  # its effect, on top of the steps before it
    shown: list[str] | None = None  # the lines shown, when they say more than the sealed details

    @property
    def title(self) -> str:
        return TITLES[self.what]

    @property
    def lines(self) -> list[str]:
        """What changed, as shown to the operator (a partition's exemption with its number there)."""
        return self.details if self.shown is None else self.shown

    def to_doc(self) -> dict[str, object]:
        """As a restatement records it: what changed and the money it moved."""
        money = [] if self.diff is None else [
            {"street": m.street, "deduction_delta": str(m.deduction_delta), "payable_delta": str(m.payable_delta)}
            for m in self.diff.money]
        return {"what": self.what, "details": list(self.details), "money": money,
                "payable_delta": str(self.diff.payable_delta()) if self.diff else "0.00"}


@dataclass
class Analysis:
    contract: str
    sealed: Sealed
    steps: list[Step] = field(default_factory=list)  # the inputs that changed, in waterfall order
    notes: list[str] = field(default_factory=list)  # informational lines
    final: Figures | None = None  # every input as it is now (None when nothing changed and it was not asked for)
    total: Difference | None = None  # final against the closing
    tampered: list[FileChange] = field(default_factory=list)  # sealed archive files altered or gone
    basis: Ledger | None = None  # where the current figures are read from: the live ledger, or a recomputation
    seconds: float = 0.0

    @property
    def closing(self) -> Closing:
        return self.sealed.closing

    @property
    def changed(self) -> bool:
        return bool(self.steps)


def analyse(ctx: MonthContext, closing: Closing, *, want_final: bool = False) -> Analysis:
    """The changes since ``closing`` and their effects; ``want_final`` computes the current
    figures even when nothing changed (a restatement needs them)."""
    began = time.monotonic()
    sealed = load_sealed(ctx.ledger, closing)
    out = Analysis(contract=closing.contract, sealed=sealed)
    out.steps = _slow_steps(ctx, sealed, out)
    current = ctx.setup.registry
    before: Before = (sealed.rows, sealed.money)
    exemptions, late = sealed.exemptions, sealed.late
    latest: Figures | None = None
    for step in out.steps:
        assert step.registry is not None
        latest = _figures(ctx, ctx.recomputed(step.registry)[0], step.registry, closing.contract, exemptions, late)
        before = _apply(step, latest, before)
    basis = out.basis = _basis(ctx, sealed, out)
    now_exemptions = ctx.ledger.exemptions(start=ctx.bounds[0], end=ctx.bounds[1])
    covered = (_covering(sealed.exemptions, current, closing.contract), _covering(now_exemptions, current,
                                                                                 closing.contract))
    if lines := exemption_changes(*covered):  # as sealed by a restatement; shown with each one's partition number
        exemptions = now_exemptions
        latest = _figures(ctx, basis, current, closing.contract, exemptions, late)
        shown = exemption_changes(*covered, ctx.exemption_places) if ctx.exemption_places else None
        before = _apply(_added(out, Step("exemptions", lines, shown=shown)), latest, before)
    late_now = ctx.late_scan().heartbeats
    if (late_step := _late_step(current, closing.contract, ctx.month, sealed.late, late_now)) is not None:
        late = late_now
        latest = _figures(ctx, basis, current, closing.contract, exemptions, late)
        before = _apply(_added(out, late_step), latest, before)
    if latest is None and want_final:
        latest = _figures(ctx, basis, current, closing.contract, exemptions, late)
    out.final = latest
    if latest is not None:
        out.total = difference(sealed.rows, sealed.money, latest.rows(), latest.money_by_street())
    out.notes += _notes(ctx, out, current)
    out.seconds = time.monotonic() - began
    return out


def _basis(ctx: MonthContext, sealed: Sealed, out: Analysis) -> Ledger:
    """The live ledger while its rows of the month are those the sealed figures were read from
    and no input they are computed from changed; a recomputation from the archive otherwise."""
    now = ledger_month_digest(ctx.ledger, ctx.month)
    inputs = sealed.inputs
    if now != inputs["ledger_month_sha256"]:
        out.notes.append("台账中本月的数据自封存后有改动 (the ledger's rows of the month changed since the closing: a "
                         "`ptmon ledger rebuild`, or an edit)：数字按报文存档重新计算，不取自台账")
    elif now != inputs.get("basis_month_sha256", now) and not out.steps:
        out.notes.append("台账中本月的数据仍是更正前的 (the ledger still holds the rows from before the restatement)："
                         f"数字按报文存档重新计算；`ptmon ledger rebuild --month {ctx.month}` 可使台账与之一致")
    if out.steps or now != inputs.get("basis_month_sha256", inputs["ledger_month_sha256"]):
        return ctx.recomputed(ctx.setup.registry)[0]
    return ctx.ledger


def _covering(exemptions: Sequence[Exemption], registry: Registry, contract: str) -> list[Exemption]:
    """The exemptions that cover devices of ``contract`` (and those covering no device at all:
    a mistyped target is worth seeing)."""
    mask = ExemptionMask(registry)
    ci = [c.code for c in registry.rules.contracts].index(contract)
    out = []
    for e in exemptions:
        rows = mask.rows_of(e)
        if not len(rows) or (registry.contract[rows] == ci).any():
            out.append(e)
    return out


def _added(out: Analysis, step: Step) -> Step:
    out.steps.append(step)
    return step


def _apply(step: Step, figures: Figures, before: Before) -> Before:
    step.diff = difference(*before, figures.rows(), figures.money_by_street())
    return figures.rows(), figures.money_by_street()


def _figures(ctx: MonthContext, basis: Ledger, registry: Registry, contract: str, exemptions: Sequence[Exemption],
             late: Sequence[LateHeartbeat]) -> Figures:
    return month_figures(basis, registry, ctx.month, contract, exemptions, late, source="ledger", made_at=ctx.now)


def _slow_steps(ctx: MonthContext, sealed: Sealed, out: Analysis) -> list[Step]:
    """The archive, registry and rules steps that apply, each with the registry the month is
    recomputed with: the sealed one until the registry changes, the current one after."""
    steps = []
    archive = _archive_changes(ctx, sealed)
    out.tampered = [c for c in archive if c.tampered]
    if archive:
        steps.append(Step("archive", [c.describe() for c in archive], registry=sealed.registry))
    current = ctx.setup.registry
    raw = ctx.setup.registry_path.read_bytes()
    rules = [name for name in RULE_FILES if sha256_file(ctx.setup.rules_dir / name) != sealed.inputs["rules"]["files"][name]]
    if raw != sealed.registry_bytes:
        details = registry_changes(sealed.registry_bytes, raw, out.contract) or [
            "本合同的设备未变，仅其他合同的设备有变 (rows of other contracts only)"]
        registry = current
        if rules:  # the new registry under the sealed rules, so that its effect shows apart from theirs
            try:
                registry = dataclasses.replace(load_registry(ctx.setup.registry_path, sealed.rules), path=current.path)
            except PtmonError:
                details.append(f"（须与新规则一并计算 needs the new rules: {', '.join(rules)}）")
                rules = []
        steps.append(Step("registry", details, registry=registry))
    if rules:
        steps.append(Step("rules", [f"{name} 已改动 (changed)" for name in rules], registry=current))
    return steps


def _archive_changes(ctx: MonthContext, sealed: Sealed) -> list[FileChange]:
    files, snapshots = ctx.archive_now()
    return compare_files(sealed.archive, files) + compare_files(sealed.snapshots, snapshots)


def _late_step(registry: Registry, contract: str, month: str, sealed: list[LateHeartbeat],
               now: list[LateHeartbeat]) -> Step | None:
    """Late heartbeats of the contract found since the closing (or gone since), if any."""
    before, after = set(of_contract(sealed, registry, contract)), of_contract(now, registry, contract)
    new = [h for h in after if h not in before]
    gone = before - set(after)
    if not new and not gone:
        return None
    terms = registry.rules.contract(contract)
    rule = terms.late_heartbeats
    lines = [f"结账后新到 (new since the closing)：{describe(new)}"] if new else []
    if gone:
        lines.append(f"封存的迟到心跳中有 {len(gone):,} 条已不在报文存档中 (no longer in the archive)")
    if rule.count:
        lines.append(f"按合同规则计入 (counted, contracts.yaml {contract}.late_heartbeats：迟到不超过 {span_h(rule.max_delay)}，"
                     f"月末后 {span_h(rule.received_within)} 内收到)：新到的 {len(counted(new, registry, terms, month)):,} 条")
    else:
        lines.append(f"按合同规则不计入：以接收时间为准 (not counted: receive time decides; {contract}.late_heartbeats.count "
                     "is false)，对金额无影响")
    return Step("late", lines)


def span_h(seconds: int) -> str:
    return f"{seconds // 3600} 小时" if seconds % 3600 == 0 else f"{seconds} 秒"


def _notes(ctx: MonthContext, out: Analysis, registry: Registry) -> list[str]:
    notes = []
    sealed_config = out.sealed.inputs.get("config")
    path = ctx.setup.config_path
    if sealed_config and path is not None and path.is_file() and sha256_file(path) != sealed_config["sha256"]:
        notes.append(f"配置文件 {path} 结账后有改动 (config changed)：不影响指标与金额（它们来自报文存档、设备清单、规则与豁免）")
    found = of_contract(ctx.late_scan().heartbeats, registry, out.contract)
    if found:
        terms = registry.rules.contract(out.contract)
        if not terms.late_heartbeats.count:
            how = "不计入：以接收时间为准 (not counted)"
        else:
            n = len(counted(found, registry, terms, ctx.month))
            how = (f"其中 {n:,} 条在合同规则的限度内计入 (counted within the contract's limits)"
                   + (f"，{len(found) - n:,} 条超出限度不计入 (beyond the limits: not counted)" if n < len(found) else ""))
        notes.append(f"报文存档中本月的迟到心跳 (late heartbeats of the month)：{describe(found)}；{how}")
    return notes
