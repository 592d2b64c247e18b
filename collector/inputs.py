"""Where the offline commands (``ptmon ledger``, ``ptmon month``) find their inputs: the config
file, when given, with ``--rules``, ``--registry``, ``--ledger`` and ``--archive`` over it."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import UsageError
from .rules import DEFAULT_RULES_DIR

if TYPE_CHECKING:
    from .config import CollectorConfig

DEFAULT_DATA_DIR = Path("ptmon-data")


@dataclass(frozen=True)
class CommandInputs:
    config: CollectorConfig | None
    rules_dir: Path
    registry_path: Path
    ledger: Path
    archive: Path

    @property
    def data_dir(self) -> Path:
        """The collector's data dir (its lock says whether it runs): the config's, else the ledger's."""
        return self.config.data_dir if self.config else self.ledger.parent


def command_inputs(args: argparse.Namespace) -> CommandInputs:
    from .config import (
        load_config,  # pydantic's import is a third of a second: only when a config is read
    )

    config = load_config(args.config) if args.config else None
    rules_dir = Path(args.rules or (config.rules if config and config.rules else DEFAULT_RULES_DIR))
    registry_path = args.registry or (config.registry if config else None)
    if registry_path is None:
        raise UsageError("give the registry: --registry FILE, or --config FILE naming it")
    ledger = Path(args.ledger) if args.ledger else config.ledger_path if config else DEFAULT_DATA_DIR / "ledger.sqlite"
    archive = Path(args.archive) if args.archive else config.archive_path if config else DEFAULT_DATA_DIR / "archive"
    return CommandInputs(config, rules_dir, Path(registry_path), ledger, archive)
