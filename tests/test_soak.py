"""The soak (bench/soak.py), short: two streets for about a minute, one broker restart, a short InfluxDB outage
and one collector SIGKILL, with every check of the full soak."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from .conftest import write_two_street_registry
from .programs import program

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def soak():  # type: ignore[no-untyped-def]
    program("mosquitto"), program("influxd")  # one line naming the package, before anything starts
    spec = importlib.util.spec_from_file_location("bench_soak", ROOT / "bench" / "soak.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_soak"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_short_soak_passes_every_check(soak, tmp_path):
    """Test that through a broker restart, an InfluxDB outage, a collector SIGKILL, a ledger lock and a full disk,
    the archive holds every acknowledged message, InfluxDB one point per accepted heartbeat, the replay the live KPIs
    and the ledger's, in bounded memory, and the collector resumed from each storage fault by itself."""
    lines: list[str] = []
    options = soak.SoakOptions(workdir=tmp_path, registry=write_two_street_registry(tmp_path / "registry.csv"),
                               minutes=1.0, speed=120.0, broker_restarts=1, influx_outage=5.0, rss_limit_mb=400,
                               checkpoint_interval=2.0, ledger_lock=5.0, disk_full=5.0, data_fs_mb=256,
                               progress=lines.append)
    report = soak.run(options)
    table = report.table()
    assert report.passed, table
    assert [c.name[0] for c in report.checks] == ["1", "1", "2", "2", "3", "3", "4", "5"]
    assert "broker restart" in table and "collector SIGKILL" in table and "influx stop" in table
    assert "ledger lock for 5 s" in table and "disk full" in table and "disk freed" in table
    assert "not reached" not in table, table
    assert len(list((tmp_path / "collector" / "archive").glob("*.jsonl.gz"))) >= 2  # a part per collector start
    assert "links: reconnects" in table  # the simulator's links came back by themselves


def test_multiset_difference_tells_missing_from_redelivered(soak):
    """Test that the message check counts a missing message, a redelivered copy and a never-sent one apart."""
    sent = np.array([1, 2, 2, 3], dtype=np.int64)
    archived = np.array([1, 1, 2, 3, 9], dtype=np.int64)  # 1 twice (redelivered), 2 once (one missing), 9 never sent
    missing, redelivered, foreign, bad = soak.multiset_difference(sent, archived)
    assert (missing, redelivered, foreign) == (1, 1, 1)
    assert sorted(bad.tolist()) == [2, 9]


def test_soak_help_explains_its_options():
    """Test that `python bench/soak.py --help` names the options and what is checked."""
    import subprocess

    out = subprocess.run([sys.executable, str(ROOT / "bench" / "soak.py"), "--help"], capture_output=True, text=True,
                         check=True).stdout
    for word in ("--minutes", "--speed", "--registry", "--workdir", "--rss-limit-mb", "--disk-full", "--ledger-lock",
                 "InfluxDB", "replay"):
        assert word in out
