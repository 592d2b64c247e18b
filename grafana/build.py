"""Write the dashboard JSON files from the rule files: ``python -m ptmon.grafana.build [--check]``.

Why generated, and by plain Python rather than grafanalib or grafana-foundation-sdk: the
dashboards repeat the same facts dozens of times (ten street names, 36 device types, each
contract KPI's threshold, the same InfluxQL shapes), and they must follow ``rules/``: a threshold
changed in contracts.yaml must change the colours and threshold lines with it. A small builder
over dicts reads the rules and produces exactly the JSON Grafana stores, with no dependency that
lags behind Grafana's schema (grafanalib) or changes with every Grafana release (the foundation
SDK). The JSON files are committed, so Grafana and reviewers need no Python; ``--check`` (and
tests/test_grafana.py) fails when they differ from what the rules give.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ptmon.rules import Rules, load_rules

from .boards import cameras, collector, overview, street
from .names import Names

DASHBOARD_DIR = Path(__file__).resolve().parent / "dashboards"
BOARDS: dict[str, Callable[[Names], dict[str, Any]]] = {
    "overview.json": overview.build,
    "street.json": street.build,
    "cameras.json": cameras.build,
    "collector.json": collector.build,
}


def render(rules: Rules | None = None) -> dict[str, str]:
    """File name -> the dashboard's JSON text, for the given rules (default: the shipped ones)."""
    names = Names.from_rules(rules or load_rules())
    return {name: json.dumps(build(names), ensure_ascii=False, indent=2) + "\n" for name, build in BOARDS.items()}


def stale_files(directory: Path = DASHBOARD_DIR, rules: Rules | None = None) -> list[str]:
    """Dashboard files missing from ``directory`` or different from what the rules give."""
    return [name for name, text in render(rules).items()
            if not (directory / name).is_file() or (directory / name).read_text(encoding="utf-8") != text]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ptmon.grafana.build", description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="only check that the files are up to date")
    parser.add_argument("--rules", type=Path, help="rules directory (default: the shipped rules/)")
    args = parser.parse_args(argv)
    rules = load_rules(args.rules) if args.rules else None
    if args.check:
        stale = stale_files(rules=rules)
        for name in stale:
            print(f"{DASHBOARD_DIR / name} is out of date: run python -m ptmon.grafana.build", file=sys.stderr)
        return 1 if stale else 0
    DASHBOARD_DIR.mkdir(exist_ok=True)
    for name, text in render(rules).items():
        (DASHBOARD_DIR / name).write_text(text, encoding="utf-8")
        print(DASHBOARD_DIR / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
