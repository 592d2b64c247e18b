"""A test whose server program is missing fails with one line naming the Debian package."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .programs import PACKAGES

ROOT = Path(__file__).resolve().parent.parent

PROBE = '''
from tests import programs
from tests.servers import InfluxServer, victoria_metrics


def test_victoria_metrics(tmp_path, monkeypatch):
    monkeypatch.setattr(programs, "find", lambda name: None)
    with victoria_metrics(tmp_path):
        pass


def test_influxd(tmp_path, monkeypatch):
    monkeypatch.setattr(programs, "find", lambda name: None)
    InfluxServer(tmp_path).start()
'''


def test_missing_server_program_fails_with_one_line_naming_the_package(tmp_path):
    """Test that a missing influxd or victoria-metrics fails its test with one line naming the package to
    install, not a FileNotFoundError traceback."""
    probe = tmp_path / "test_probe.py"
    probe.write_text(PROBE)
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
                          str(probe)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1, out.stdout
    assert "2 failed" in out.stdout
    assert "FileNotFoundError" not in out.stdout and "Traceback" not in out.stdout
    for name in ("victoria-metrics", "influxd"):
        line = f"{name} is not installed: apt-get install {PACKAGES[name]} (scripts/test installs every package the tests need)"
        assert line in out.stdout.splitlines(), out.stdout
