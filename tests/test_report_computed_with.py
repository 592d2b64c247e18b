"""The report's money is computed with the rules and registry its KPIs were computed with: a ledger
month computed with other versions than ``--rules`` / ``--registry`` is refused (merged partitions'
ledgers and one whole-district ledger alike), a month of mixed versions too; ``--from-archive``
recomputes with the files given and says so when the ledger's month had others.

The ledgers are real: tests/partition_data.py's collectors (the ``collected`` fixture)."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from ptmon.cli import main
from ptmon.registry import load_registry
from ptmon.rules import load_rules


def _edited_rules(collected, target: Path) -> Path:  # type: ignore[no-untyped-def]
    """The collectors' rules with the iot online threshold raised (0.90 → 0.99): another version."""
    shutil.copytree(collected["rules"], target)
    contracts = target / "contracts.yaml"
    text = contracts.read_text(encoding="utf-8")
    assert text.count("threshold: 0.90}") == 1
    contracts.write_text(text.replace("threshold: 0.90}", "threshold: 0.99}"), encoding="utf-8")
    assert load_rules(target).version != load_rules(collected["rules"]).version
    return target


def _shorter_registry(collected, target: Path) -> Path:  # type: ignore[no-untyped-def]
    """The collectors' registry without its last device: another version."""
    lines = Path(collected["registry"]).read_text(encoding="utf-8").splitlines(keepends=True)
    target.write_text("".join(lines[:-1]), encoding="utf-8")
    return target


def _report(capsys, out: Path, *args: str) -> tuple[int, str]:  # type: ignore[no-untyped-def]
    code = main(["report", "--month", "2026-11", "--format", "csv,html", "--out", str(out), *args])
    return code, capsys.readouterr().err


def test_a_ledger_month_computed_with_other_rules_or_registry_is_refused(collected, tmp_path, capsys) -> None:
    """Test that merged partitions' ledgers and a whole-district ledger are refused, in one line naming
    the ledger's versions and the given file's, when read with edited rules or another registry; and
    that nothing is written."""
    tmp = collected["tmp"]
    rules, registry = str(collected["rules"]), str(collected["registry"])
    ruled = load_rules(rules)
    ran_with = f"rules {ruled.version}, registry {load_registry(registry, ruled).version}"
    edited = _edited_rules(collected, tmp_path / "rules2")
    shorter = _shorter_registry(collected, tmp_path / "reg2.csv")
    merged = ["--ledger", str(tmp / "a" / "ledger.sqlite"), str(tmp / "b" / "ledger.sqlite")]
    whole = ["--ledger", str(tmp / "all" / "ledger.sqlite")]
    edited_is = f"--rules {edited} (rules {load_rules(edited).version})"
    cases = [([*merged, "--registry", registry, "--rules", str(edited)], edited_is),
             ([*whole, "--registry", registry, "--rules", str(edited)], f"--rules {edited} (rules "),
             ([*whole, "--registry", str(shorter), "--rules", rules],
              f"--registry {shorter} (registry {load_registry(shorter, ruled).version})"),
             ([*merged, "--registry", str(shorter), "--rules", rules], f"--registry {shorter} (registry ")]
    for args, given in cases:
        code, err = _report(capsys, tmp_path / "out", *args)
        assert code == 2, err
        (line,) = err.strip().splitlines()
        assert f"computed 2026-11 with {ran_with}, not with {given}" in line, line
        assert "ptmon rules check" in line and "--from-archive" in line and "ptmon ledger rebuild --month 2026-11" in line
        assert "Traceback" not in err
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
    code, err = _report(capsys, tmp_path / "ok", *whole, "--registry", registry, "--rules", rules)  # the right files
    assert code == 0, err


def test_a_ledger_month_of_mixed_versions_is_refused(collected, tmp_path, capsys) -> None:
    """Test that a month whose hour rows carry two rules versions (no collector writes one: a restart
    with other files rebuilds the month) is refused even with the files of most of its rows."""
    ledger = tmp_path / "ledger.sqlite"
    shutil.copy(collected["tmp"] / "all" / "ledger.sqlite", ledger)
    with sqlite3.connect(ledger) as db:
        (first,) = db.execute("SELECT min(hour) FROM hours").fetchone()
        assert db.execute("UPDATE hours SET rules_version = '0123456789abcdef' WHERE hour = ?", (first,)).rowcount
    code, err = _report(capsys, tmp_path / "out", "--ledger", str(ledger), "--registry", str(collected["registry"]),
                        "--rules", str(collected["rules"]))
    assert code == 2
    assert "computed 2026-11 with several versions (rules 0123456789abcdef, registry " in err
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_from_archive_recomputes_with_the_files_given_and_says_the_ledger_had_others(collected, tmp_path, capsys) -> None:
    """Test that --from-archive with edited rules (a legitimate recomputation: the report names the
    files it used) applies them, and notes in the report and on stderr that the ledger's month was
    computed with other rules."""
    tmp = collected["tmp"]
    edited = _edited_rules(collected, tmp_path / "rules2")
    code, err = _report(capsys, tmp_path / "out", "--registry", str(collected["registry"]), "--rules", str(edited),
                        "--ledger", str(tmp / "a" / "ledger.sqlite"), str(tmp / "b" / "ledger.sqlite"),
                        "--from-archive", str(tmp / "a" / "archive"), str(tmp / "b" / "archive"))
    assert code == 0, err
    note = f"台账本月由 rules {load_rules(collected['rules']).version}"
    assert note in err
    assert note in (tmp_path / "out" / "report-2026-11.html").read_text(encoding="utf-8")
    assert f"规则版本 {load_rules(edited).version}" in (tmp_path / "out" / "report-2026-11.html").read_text(encoding="utf-8")
    rows = (tmp_path / "out" / "report-2026-11.csv").read_text(encoding="utf-8").splitlines()
    assert any(r.startswith("iot,district,online,") and ",0.99," in r for r in rows)


@pytest.mark.parametrize("spelling", ["same", "another"])
def test_the_same_ledger_given_twice_is_named_as_such(collected, tmp_path, capsys, spelling) -> None:
    """Test that a ledger given twice (as it was, or under another spelling of its path) is refused as
    given twice, not as a street in two partitions."""
    tmp = collected["tmp"]
    path = tmp / "a" / "ledger.sqlite"
    again = path if spelling == "same" else tmp / "a" / ".." / "a" / "ledger.sqlite"
    code, err = _report(capsys, tmp_path / "out", "--registry", str(collected["registry"]), "--rules",
                        str(collected["rules"]), "--ledger", str(path), str(tmp / "b" / "ledger.sqlite"), str(again))
    assert code == 2
    assert (f"{path} is given twice" if spelling == "same" else f"{again} is {path}, given twice") in err, err
    assert "in two partitions" not in err
