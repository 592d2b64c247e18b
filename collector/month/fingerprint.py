"""SHA-256 of a closing's inputs as files, and what changed in them since.

A closing seals the month's archive files and month-start snapshot (name, size, SHA-256), the
registry and rule files (their bytes are kept in the ledger too, so a later report and a later
comparison can use them as they were), the config file, and the exemptions as recorded. Later,
each is compared with what is there now:

* an archive file is **unchanged**, **appended** (longer, and its first sealed bytes still hash
  to the sealed SHA-256: records were added at its end), **modified** (anything else: the sealed
  bytes are not there any more), **missing**, or **added** (a file of the month not sealed);
* the registry: the rows of the contract added, removed or changed, field by field;
* the rules: which files changed; the exemptions: which were recorded or revoked since.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..ledger.records import Exemption
from .words import when

BLOCK = 1 << 20


@dataclass(frozen=True, kw_only=True)
class FileMark:
    """A file as sealed: its name (no directory: archives move), size and SHA-256."""

    name: str
    size: int
    sha256: str

    def to_doc(self) -> dict[str, Any]:
        return {"name": self.name, "size": self.size, "sha256": self.sha256}

    @staticmethod
    def from_doc(d: Mapping[str, Any]) -> FileMark:
        return FileMark(name=d["name"], size=int(d["size"]), sha256=d["sha256"])


@dataclass(frozen=True, kw_only=True)
class FileChange:
    name: str
    kind: str  # "appended", "modified", "missing", "added"
    sealed: FileMark | None
    now: FileMark | None

    def describe(self) -> str:
        words = {"appended": "结账后追加了记录 (records appended since the closing)",
                 "modified": "已被改动：封存时的内容不复存在 (MODIFIED: the sealed bytes are gone)",
                 "missing": "缺失 (MISSING)", "added": "结账后新增的文件 (added since the closing)"}
        sizes = f"（{self.sealed.size:,} → {self.now.size:,} 字节）" if self.sealed and self.now else ""
        return f"{self.name}：{words[self.kind]}{sizes}"

    @property
    def tampered(self) -> bool:
        """The sealed evidence itself is gone or altered (an addition is new evidence, not tampering)."""
        return self.kind in ("modified", "missing")


def sha256_file(path: Path, limit: int | None = None) -> str:
    """SHA-256 of a file, or of its first ``limit`` bytes."""
    digest, left = hashlib.sha256(), limit
    with path.open("rb") as f:
        while left is None or left > 0:
            block = f.read(BLOCK if left is None else min(BLOCK, left))
            if not block:
                break
            digest.update(block)
            left = None if left is None else left - len(block)
    return digest.hexdigest()


def mark(path: Path) -> FileMark:
    return FileMark(name=path.name, size=path.stat().st_size, sha256=sha256_file(path))


def compare_files(sealed: Sequence[FileMark], now: Mapping[str, Path]) -> list[FileChange]:
    """The sealed files against the files there now (by name), in name order."""
    changes = []
    by_name = {m.name: m for m in sealed}
    for name in sorted(set(by_name) | set(now)):
        before, path = by_name.get(name), now.get(name)
        if path is None:
            changes.append(FileChange(name=name, kind="missing", sealed=before, now=None))
            continue
        if before is None:
            changes.append(FileChange(name=name, kind="added", sealed=None, now=mark(path)))
            continue
        size = path.stat().st_size
        if size == before.size and sha256_file(path) == before.sha256:
            continue
        appended = size > before.size and sha256_file(path, before.size) == before.sha256
        changes.append(FileChange(name=name, kind="appended" if appended else "modified", sealed=before,
                                  now=FileMark(name=name, size=size, sha256=sha256_file(path))))
    return changes


# --- exemptions -----------------------------------------------------------------------------------

def exemption_docs(exemptions: Iterable[Exemption]) -> list[dict[str, Any]]:
    """The exemptions as recorded (revoked ones too), by id: what a closing seals."""
    return [asdict(e) for e in sorted(exemptions, key=lambda e: e.id)]


def exemptions_from_docs(docs: Iterable[Mapping[str, Any]]) -> list[Exemption]:
    return [Exemption(**d) for d in docs]


def exemption_changes(sealed: Sequence[Exemption], now: Sequence[Exemption],
                      places: Mapping[int, str] = {}) -> list[str]:
    """Exemptions recorded or revoked since the closing, one line each; ``places``: where an
    exemption of a merged month is recorded (by its merged id), shown beside its number."""
    before = {e.id: e for e in sealed}
    out = []
    for e in sorted(now, key=lambda e: e.id):
        old = before.get(e.id)
        window = f"{_SCOPES.get(e.scope, e.scope)} {e.target}，{when(e.start)} 至 {when(e.end)}"
        number = f"豁免 {e.id} [{places[e.id]}]" if e.id in places else f"豁免 {e.id}"
        if old is None:
            state = "" if e.active else "（已撤销 already revoked）"
            out.append(f"{number} 补登 (recorded) {when(e.created_at)}{state}：{window}，原因 {e.reason}，审批人 {e.approver}")
        elif old.active and not e.active:
            out.append(f"{number} 撤销 (revoked) {when(e.revoked_at or 0)}，{e.revoked_by}：{window}，撤销原因 "
                       f"{e.revoke_reason}")
        elif old != e:
            out.append(f"{number} 在台账中被改动 (changed in the ledger)：{window}")
    for missing in sorted(set(before) - {e.id for e in now}):
        out.append(f"豁免 {missing} 已不在台账中 (deleted from the ledger)")
    return out


_SCOPES = {"device": "设备", "street": "街镇", "gateway": "网关"}


# --- registry --------------------------------------------------------------------------------------

def registry_changes(sealed: bytes, now: bytes, contract: str, limit: int = 50) -> list[str]:
    """Rows of ``contract`` added, removed or changed between two registry files, one line each
    (``taopu-cam3: accepted_on 2026-01-01 → 2026-11-15``); at most ``limit`` lines and a count."""
    before, after = _rows(sealed, contract), _rows(now, contract)
    out = []
    for device in sorted(set(before) | set(after)):
        old, new = before.get(device), after.get(device)
        if old is None:
            assert new is not None  # the device is in one of the two
            out.append(f"{device}：新增 (added)，accepted_on {new['accepted_on']}，retired_on {new['retired_on'] or '—'}")
        elif new is None:
            out.append(f"{device}：从设备清单中删除 (removed)")
        elif old != new:
            fields = [f"{k} {old.get(k) or '—'} → {new.get(k) or '—'}" for k in new if old.get(k) != new.get(k)]
            out.append(f"{device}：{'，'.join(fields)}")
    if len(out) > limit:
        out = [*out[:limit], f"…… 另有 {len(out) - limit:,} 行 (more rows)"]
    return out


def _rows(raw: bytes, contract: str) -> dict[str, dict[str, str]]:
    reader = csv.DictReader(io.StringIO(raw.decode("utf-8-sig"), newline=""))
    rows = {}
    for row in reader:
        clean = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
        if clean.get("contract") == contract:
            rows[clean.get("device_id", "")] = clean
    return rows
