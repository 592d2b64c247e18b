"""Packaging: one import package, every sub-package and data file listed, a wheel that works alone."""

from __future__ import annotations

import importlib.resources
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _setuptools() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_every_package_folder_is_listed() -> None:
    """Test that every folder holding an __init__.py maps to a listed ptmon package, so none is left out of the wheel."""
    config = _setuptools()
    folders = {package: Path(folder) for package, folder in config["package-dir"].items()}
    listed = set(config["packages"])
    found = set()
    for package, folder in folders.items():
        for init in (REPO / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(REPO / folder)
            found.add(".".join([package, *relative.parts]))
    assert found == listed


def test_rules_scenarios_and_dashboards_are_package_data() -> None:
    """Test that the shipped rules, scenarios and dashboards are reachable through importlib.resources."""
    rules = importlib.resources.files("ptmon.default_rules")
    assert {"streets.yaml", "types.yaml", "contracts.yaml", "alerts.yaml"} <= {p.name for p in rules.iterdir()}
    scenarios = importlib.resources.files("ptmon.simulators") / "scenarios"
    assert (scenarios / "street-outage.yaml").is_file()
    dashboards = importlib.resources.files("ptmon.grafana") / "dashboards"
    assert (dashboards / "overview.json").is_file()


@pytest.mark.parametrize("compiler", [True, False])
def test_wheel_holds_the_data_and_runs_from_elsewhere(tmp_path: Path, compiler: bool) -> None:
    """Test that a built wheel carries rules, scenarios and dashboards, and that `ptmon rules check`
    runs from it outside the checkout; with a C compiler it carries the compiled scanner, without
    one (CC=/bin/false) it builds all the same and ptmon uses its numpy scanner."""
    source = tmp_path / "source"  # a copy: setuptools builds in the source tree's build/
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, check=True, capture_output=True).stdout.split(b"\0")
    for name in filter(None, (t.decode() for t in tracked)):
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(source)],
                   check=True, capture_output=True, env=os.environ | ({} if compiler else {"CC": "/bin/false"}))
    wheel = next(tmp_path.glob("ptmon-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("ptmon/default_rules/contracts.yaml", "ptmon/default_rules/README.md",
                   "ptmon/simulators/scenarios/bad-day.yaml", "ptmon/grafana/dashboards/street.json",
                   "ptmon/grafana/provisioning/datasources/ptmon.yaml", "ptmon/cli.py"):
        assert needed in names
    assert not any(n.startswith(("collector/", "simulators/", "tests/")) for n in names)
    assert any(n.startswith("ptmon/_kernels") and n.endswith(".so") for n in names) == compiler
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    run = subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); from ptmon.cli import main; "
                          "from ptmon.kernels import in_use; print(in_use()); raise SystemExit(main(['rules', 'check']))",
                          str(target)], cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert str(target) in run.stdout and "10 streets" in run.stdout
    assert run.stdout.startswith("compiled" if compiler else "numpy")
