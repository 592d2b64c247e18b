"""Versions of a closed month after an outside test: each version verified against its own
sealed inputs, seals dated in the order they were made, a report that renders only versions
that check, and a restatement that says truthfully who accepted the monitoring gaps.

The month is tests/month_data.py's synthetic November, closed through the command line.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

from ptmon.archive import write_archive
from ptmon.cli import main
from ptmon.ledger.closing import closings
from ptmon.ledger.store import Ledger
from ptmon.timebase import parse_instant

from . import month_data as md
from .test_month_close import CLOSE, LATER, Month, _copy, month_with_a_gap


def _late_part(m: Month, day: str) -> Path:
    """A part file of a November day, turned up after the closing (a restarted collector's)."""
    start = parse_instant(f"2026-11-{day}T00:00") // 1_000_000
    path = m.archive / f"ptmon-2026-11-{day}.1.jsonl.gz"
    write_archive(path, [(start + 60 * i + 30.0, "putuo/cam/changzheng/changzheng-cam0/hb", f'{{"ts": {start + 60 * i + 29}}}')
                         for i in range(600)])
    return path


def _restated(m: Month, capsys) -> None:  # type: ignore[no-untyped-def]
    _late_part(m, "12")
    assert main(m.month("restate", md.MONTH, "--reason", "补传", "--by", "王五", now=LATER)) == 0
    capsys.readouterr()


def test_a_superseded_version_is_verified_against_its_own_sealed_files(closed: Month, capsys) -> None:  # type: ignore[no-untyped-def]
    """Test that after a proper restatement (an archive part added, sealed by 第 2 版) `month verify` passes, 第 1 版
    included; that a file added after the latest version fails that version only; and that a superseded version's
    own sealed file altered still fails it."""
    _restated(closed, capsys)
    assert main(closed.month("verify", md.MONTH, now=LATER)) == 0
    out = capsys.readouterr().out
    assert "FAIL" not in out and "第 1 版: " in out and "OK: every seal matches" in out

    _late_part(closed, "13")
    assert main(closed.month("verify", md.MONTH, now=LATER)) == 1
    fails = [line for line in capsys.readouterr().out.splitlines() if "FAIL" in line]
    assert fails and all("第 2 版: archive ptmon-2026-11-13.1.jsonl.gz：结账后新增的文件" in line for line in fails)

    (closed.archive / "ptmon-2026-11-13.1.jsonl.gz").unlink()
    (closed.archive / "ptmon-2026-11-20.jsonl.gz").write_bytes(b"")  # sealed by both versions
    assert main(closed.month("verify", md.MONTH, now=LATER)) == 1
    out = capsys.readouterr().out
    assert "FAIL  第 1 版: archive ptmon-2026-11-20.jsonl.gz" in out and "FAIL  第 2 版: archive ptmon-2026-11-20.jsonl.gz" in out


def test_now_cannot_date_a_seal_before_the_previous_version_or_after_the_clock(pristine: Path, tmp_path: Path,
                                                                                monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    """Test that a restatement whose --now is before the previous version's seal, or after the clock, is refused in one
    line with exit status 2 and seals nothing; and a close dated after the clock too."""
    import ptmon.month.context as month_context

    monkeypatch.setattr(month_context, "wall_clock", lambda: parse_instant(CLOSE) - 1)
    other = _copy(pristine, tmp_path / "o")
    assert main(other.month("close", md.MONTH, "--by", "张三")) == 2
    assert "a seal is never dated in the future" in capsys.readouterr().err
    monkeypatch.undo()

    closed = _copy(pristine, tmp_path / "m")
    assert main(closed.month("close", md.MONTH, "--by", "张三")) == 0
    _restated(closed, capsys)
    _late_part(closed, "13")
    restate = closed.month("restate", md.MONTH, "--contract", "cam", "--reason", "x", "--by", "钱七", now="2026-12-02T08:59")
    assert main(restate) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "is before 第 2 版 of cam 2026-11 (sealed 2026-12-02T09:00:00+08:00)" in err
    assert main(closed.month("restate", md.MONTH, "--reason", "x", "--by", "钱七", now="2026-12-01T02:00")) == 2
    assert "is before 第 2 版" in capsys.readouterr().err

    monkeypatch.setattr(month_context, "wall_clock", lambda: parse_instant("2026-12-03T00:00"))
    assert main(closed.month("restate", md.MONTH, "--reason", "x", "--by", "钱七", now="2026-12-03T00:01")) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "is after the clock (2026-12-03T00:00:00+08:00): a seal is never dated in the future" in err
    with Ledger(closed.ledger, readonly=True) as ledger:
        assert [c.version for c in closings(ledger, md.MONTH)] == [1, 2, 1, 2]
    assert main(closed.month("restate", md.MONTH, "--reason", "x", "--by", "钱七", now="2026-12-02T23:00")) == 0



def test_the_report_refuses_a_version_that_does_not_check_against_its_seal(closed: Month, tmp_path: Path,
                                                                            capsys) -> None:  # type: ignore[no-untyped-def]
    """Test that a 第 2 版 inserted by SQL as a copy of 第 1 版's row (its document and seal, a new version number and
    signer) is refused by `ptmon report` in one line with exit status 2 and nothing written, while 第 1 版 still
    renders."""
    with sqlite3.connect(closed.ledger) as db:
        db.execute("INSERT INTO closings SELECT month, contract, 2, closed_at + 60, '黑客', reason, doc, seal "
                   "FROM closings WHERE contract = 'cam' AND version = 1")
    out = tmp_path / "r"
    assert main(["report", "--month", md.MONTH, "--config", str(closed.config), "--contract", "cam", "--format", "csv",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "cam 2026-11: not rendered, 第 2 版: the closings table says version 2 (sealed: 1)" in err
    assert not out.exists() or not list(out.iterdir())
    assert main(["report", "--month", md.MONTH, "--config", str(closed.config), "--contract", "cam", "--format", "csv",
                 "--version", "1", "--out", str(out)]) == 0


def test_a_full_disk_under_the_scratch_ledger_is_one_line_and_seals_nothing(pristine: Path, tmp_path: Path,
                                                                            monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    """Test that SQLite's "database or disk is full" while the month is recomputed from the archive into the scratch
    ledger beside the ledger (a real SQLITE_FULL, from max_page_count) gives one line, exit status 2, no closing."""
    m = _copy(pristine, tmp_path / "m")
    opened = Ledger.__init__

    def no_room(self, path, *args, **kwargs):  # type: ignore[no-untyped-def]
        opened(self, path, *args, **kwargs)
        if Path(path).name == "recomputed.sqlite":
            pages = self.db.execute("PRAGMA page_count").fetchone()[0]
            self.db.execute(f"PRAGMA max_page_count = {pages + 4}")

    monkeypatch.setattr(Ledger, "__init__", no_room)
    assert main(m.month("close", md.MONTH, "--by", "张三")) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("ptmon month: ")]
    assert len(err) == 1 and "recomputing 2026-11 from the archive into a scratch ledger: database or disk is full: " \
                              "nothing was sealed" in err[0]
    monkeypatch.undo()
    assert not list(m.ledger.parent.glob("ptmon-month-*"))  # the scratch ledger is gone
    with Ledger(m.ledger, readonly=True) as ledger:
        assert closings(ledger) == []


def _can_mount_tmpfs() -> bool:
    import subprocess

    try:
        return subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
                              capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.skipif(not _can_mount_tmpfs(), reason="needs unshare -rm and a tmpfs mount (user namespaces)")
def test_a_disk_with_no_free_block_is_told_as_full_not_as_an_unusable_ledger(pristine: Path, tmp_path: Path) -> None:
    """Test, on a real full tmpfs (a user namespace's mount), that `month close` with no free block, where SQLite
    cannot even open the WAL ledger ("disk I/O error"), says in one line that the disk is full and nothing was sealed."""
    import subprocess
    import sys

    m = _copy(pristine, tmp_path / "m")
    size = sum(p.stat().st_size for p in m.root.rglob("*") if p.is_file()) // 1024 + 256
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    script = (f"set -e; mount -t tmpfs -o size={size}k tmpfs {mnt}; cp -a {m.root}/. {mnt}/; "
              f"fallocate -l $(( $(df -k --output=avail {mnt} | tail -1) * 1024 )) {mnt}/filler || "
              f"dd if=/dev/zero of={mnt}/filler bs=1k 2>/dev/null || true; "
              f"{sys.executable} -m ptmon.cli month close {md.MONTH} --by 张三 --config {mnt}/ptmon.toml --now {CLOSE}; "
              f"echo unreachable")
    done = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stdout + done.stderr
    err = [line for line in done.stderr.splitlines() if not line.startswith("ptmon month: ")]
    assert len(err) == 1 and err[0].startswith("ptmon: error: ") and "database or disk is full: nothing was sealed" in err[0]
    assert "not a usable ledger" not in done.stderr


def test_a_restatement_names_who_accepted_the_gaps_and_in_which_version(pristine: Path, tmp_path: Path,
                                                                       capsys) -> None:  # type: ignore[no-untyped-def]
    """Test that a restatement of a month whose gaps 张三 accepted at 第 1 版 says, without --accept-gaps, that 张三
    accepted them at 第 1 版 (not that its own signer did); that with --accept-gaps it names its own signer; and that
    gaps outside those accepted need --accept-gaps."""
    from ptmon.month.close import _within

    from .test_month_close import _report

    m = month_with_a_gap(pristine, tmp_path / "m")
    assert main(m.month("close", md.MONTH, "--contract", "iot", "--by", "张三", "--accept-gaps")) == 0
    old = "changzheng-lift0,iot,elevator,changzheng,scn,changzheng-c1,gw-changzheng-iot,2026-01-01,"
    m.registry.write_text(m.registry.read_text().replace(old, old.replace("2026-01-01", "2026-11-09")))

    assert main(m.month("restate", md.MONTH, "--contract", "iot", "--reason", "验收日期更正", "--by", "王五", now=LATER)) == 0
    files = _report(m, tmp_path / "r2", "--contract", "iot", formats="html,xlsx")
    html = files["report-2026-11-iot-v2.html"].decode()
    assert "监测缺口已由 张三 于第 1 版封存时审核认定" in html and "已由 王五" not in html
    with Ledger(m.ledger, readonly=True) as ledger:
        assert closings(ledger, md.MONTH, "iot")[-1].doc["gaps_accepted_by"] == {"by": "张三", "version": 1}

    m.registry.write_text(m.registry.read_text().replace(old.replace("2026-01-01", "2026-11-09"),
                                                         old.replace("2026-01-01", "2026-11-10")))
    assert main(m.month("restate", md.MONTH, "--contract", "iot", "--reason", "再更正", "--by", "王五", "--accept-gaps",
                        now=LATER)) == 0
    html = _report(m, tmp_path / "r3", "--contract", "iot", formats="html")["report-2026-11-iot-v3.html"].decode()
    assert "监测缺口已由 王五 于封存时审核认定" in html

    day = (parse_instant("2026-11-15T00:00"), parse_instant("2026-11-16T00:00"))
    assert _within([day], {day}) and _within([], set()) and not _within([(day[0] - 60_000_000, day[1])], {day})


def test_verify_fails_an_altered_sealed_file_and_revocations_print_to_the_second(closed: Month, capsys) -> None:  # type: ignore[no-untyped-def]
    """Test that a sealed file altered inside the ledger (triggers dropped; one no longer zlib data) is a FAIL line of
    `month verify` with exit status 1, not an error; and that `exempt list` prints a revocation time to the second."""
    import zlib

    with Ledger(closed.ledger, readonly=True) as ledger:
        v1 = closings(ledger, md.MONTH, "cam")[0]
    with sqlite3.connect(closed.ledger) as db:
        db.execute("DROP TRIGGER closing_blobs_never_updated")
        for name in ("late", "registry"):
            data = zlib.decompress(db.execute("SELECT data FROM closing_blobs WHERE sha256 = ?",
                                              (v1.doc["blobs"][name],)).fetchone()[0])
            db.execute("UPDATE closing_blobs SET data = ? WHERE sha256 = ?",
                       (zlib.compress(data + b" ") if name == "late" else b"not zlib", v1.doc["blobs"][name]))
    assert main(closed.month("verify", md.MONTH)) == 1
    captured = capsys.readouterr()
    assert "ptmon: error" not in captured.err
    assert "no longer hashes to its SHA-256 (altered)" in captured.out
    assert "late heartbeats sealed in 第 1 版 cannot be checked" in captured.out

    assert main(["exempt", "--config", str(closed.config), "add", "--device", "changzheng-cam0", "--from", "2026-11-10",
                 "--to", "2026-11-11", "--reason", "r", "--approver", "李四"]) == 0
    assert main(["exempt", "--config", str(closed.config), "revoke", "1", "--by", "李四", "--reason", "误登"]) == 0
    capsys.readouterr()
    assert main(["exempt", "--config", str(closed.config), "list"]) == 0
    listed = capsys.readouterr().out
    assert re.search(r"\[revoked \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+08:00 by 李四: 误登\]", listed), listed


def test_close_prints_money_with_thousands_separators(pristine: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    """Test that `month close` prints the district's fee, deduction and payable as `month status` does (716,874.99)."""
    m = _copy(pristine, tmp_path / "m")
    assert main(m.month("close", md.MONTH, "--contract", "cam", "--by", "张三")) == 0
    out = capsys.readouterr().out
    assert re.search(r"fee \d{1,3}(,\d{3})+\.\d\d, deduction [\d,]+\.\d\d, payable \d{1,3}(,\d{3})+\.\d\d", out), out
    assert main(m.month("status", md.MONTH, "--contract", "cam")) == 0
    payable = re.search(r"payable (\d{1,3}(?:,\d{3})+\.\d\d)", out).group(1)  # type: ignore[union-attr]
    assert f"payable {payable}" in capsys.readouterr().out
