"""The ptmon command line: replay output, determinism, and error messages."""

from __future__ import annotations

import csv
import random
import subprocess
import sys

import pytest

from ptmon.archive import write_archive
from ptmon.cli import main
from ptmon.results import CSV_COLUMNS

from .conftest import HEADER, T0, hb, raw


@pytest.fixture
def archive_and_registry(tmp_path):
    rng = random.Random(3)
    registry = tmp_path / "registry.csv"
    devices = [(f"c{i}", "cam", "face_cam", "taopu") for i in range(20)] + [(f"s{i}", "iot", "smoke", "wanli") for i in range(20)]
    registry.write_text(HEADER + "\n" + "".join(f"{d},{c},{t},{s},scn,{s}-c1,gw-{s},2026-01-01,\n" for d, c, t, s in devices))
    records = []
    for k in range(0, 7200, 30):
        d, c, _, s = rng.choice(devices)
        counters = {"face_try": k, "face_ok": k - k // 50} if c == "cam" else {"reads": k, "read_ok": k}
        records.append(hb(T0 + k + rng.random(), d, c, s, seq=k, **counters))
    records.append(raw(T0 + 100.5, "putuo/cam/taopu/ghost/hb", "{}"))
    records.sort()
    parts = [tmp_path / "a.jsonl.gz", tmp_path / "b.jsonl.gz"]
    write_archive(parts[0], records[: len(records) // 2])
    write_archive(parts[1], records[len(records) // 2 :])
    return parts, registry


def test_replay_csv_is_byte_identical_across_runs(tmp_path, archive_and_registry, capsys):
    """Test that the same archives and registry give the same CSV bytes, whatever the file order."""
    parts, registry = archive_and_registry
    outs = []
    for n, order in enumerate([parts, parts[::-1], parts]):
        out = tmp_path / f"kpi{n}.csv"
        code = main(["replay", *map(str, order), "--start", "2026-11-01T00:00", "--end", "2026-11-01T02:00",
                     "--registry", str(registry), "--csv", str(out)])
        assert code == 0
        outs.append(out.read_bytes())
    assert outs[0] == outs[1] == outs[2]
    rows = list(csv.DictReader(outs[0].decode().splitlines()))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert {r["street"] for r in rows} >= {"taopu", "wanli", "district"}
    online = next(r for r in rows if (r["contract"], r["street"], r["kpi"]) == ("cam", "taopu", "online"))
    assert len(online["value"].split(".")[1]) >= 6 and online["observed_seconds"] == "7140"  # first record at 00:00:00.x: the 00:00 sample was not observed
    table = capsys.readouterr().out
    assert "桃浦镇" in table and "putuo/cam/taopu/ghost/hb" in table


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--month", "2026-11", "--start", "2026-11-01"], "either --month or --start/--end"),
        (["--start", "2026-11-01"], "give the period"),
        (["--start", "2026-11-02", "--end", "2026-11-01"], "is not after --start"),
        (["--start", "2026-11-01T00:00:30", "--end", "2026-11-02"], "must fall on the 60 s sample grid"),
        (["--month", "2026-11", "--rules", "/nonexistent"], "rules directory not found"),
    ],
    ids=["both", "missing", "reversed", "off-grid", "rules"],
)
def test_replay_argument_errors(archive_and_registry, capsys, args, message):
    """Test that bad replay arguments exit 2 with a message saying what is wrong."""
    parts, registry = archive_and_registry
    assert main(["replay", str(parts[0]), "--registry", str(registry), *args]) == 2
    assert message in capsys.readouterr().err


def test_help_explains_commands():
    """Test that `ptmon --help` lists the commands with their purpose (run as a real process)."""
    out = subprocess.run([sys.executable, "-m", "ptmon.cli", "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("replay", "registry", "rules", "demo"):
        assert command in out
    assert "上线率" in out
