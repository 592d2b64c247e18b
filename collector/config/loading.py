"""Reading ptmon.toml, laying command-line options over it, and saying what is wrong in the
words users know: ``<file>: <table.key> must be <expected>: <value>``."""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from ..errors import ConfigError, reason
from .fields import FileContext
from .sections import CollectorConfig

_COLLECTOR = TypeAdapter(CollectorConfig)
_NOT_A_TABLE = ("dataclass_type", "dataclass_args_type", "model_type", "dict_type")


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> CollectorConfig:
    """The collector's config from the TOML file at ``path``; secrets from ``env`` (os.environ)."""
    file = Path(path)
    context = FileContext(str(path), file.absolute().parent, os.environ if env is None else env)
    try:
        config = _COLLECTOR.validate_python(_read_toml(file), context={"file": context})
    except ValidationError as exc:
        key, fault = describe(exc)
        raise ConfigError(f"{path}: {key} {fault}") from None
    return dataclasses.replace(config, source=file.absolute())


def with_overrides(config: CollectorConfig, changes: Mapping[str, Any],
                   options: Mapping[str, str]) -> CollectorConfig:
    """``config`` with ``changes`` laid over it (``{"data_dir": ..., "mqtt": {"host": ...}}``),
    validated by the same model as a file; ``options`` names the option that set each key
    (``{"mqtt.topics": "--topic/--street"}``), for the message. Paths are taken as given."""
    data = _fields(config)
    for key, value in changes.items():
        data[key] = {**_fields(data[key]), **value} if isinstance(value, Mapping) else value
    try:
        return _COLLECTOR.validate_python(data)
    except ValidationError as exc:
        key, fault = describe(exc)
        raise ConfigError(f"{options.get(key, 'command line')}: {key} {fault}") from None


def _fields(section: Any) -> dict[str, Any]:
    return {field.name: getattr(section, field.name) for field in dataclasses.fields(section)}


def describe(exc: ValidationError) -> tuple[str, str]:
    """The dotted key of the first fault and what is wrong with it ("must be ...: value")."""
    error = exc.errors(include_url=False)[0]
    where = [str(part) for part in error["loc"]]
    ctx = error.get("ctx") or {}
    if error["type"] == "ptmon":
        key = ".".join([*where, ctx["key"]] if ctx["key"] else where)
        return key, ctx["text"] + (f": {ctx['shown']}" if ctx["shown"] else "")
    key = ".".join(where)
    if error["type"] in _NOT_A_TABLE:
        return key, f"must be a table: {error['input']!r}"
    return key, f"is wrong ({error['msg']}): {error['input']!r}"  # a fault no field validator words


def _read_toml(file: Path) -> dict[str, Any]:
    try:
        with file.open("rb") as stream:
            return tomllib.load(stream)
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read config file: {reason(exc)}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file}: not valid TOML: {exc}") from exc
