"""The kinds of value a config key holds, each a pydantic validator with its own words.

A validator raises :func:`invalid`, whose error the loader turns into
``<file>: <key> must be <expected>: <value>``; pydantic's own messages never reach a user.
Validators see the raw value (``BeforeValidator``): a TOML ``true`` is no integer, ``"5"`` is
no number. In a file (``FileContext`` in the validation context) paths are relative to the
file's directory and files must exist; in code and command-line overrides they are taken as given.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BeforeValidator, ValidationInfo
from pydantic_core import PydanticCustomError

from ..durations import parse_duration

DURATION = "a positive duration (seconds, or '90s', '15m', '6h', '1d')"
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(?:([kmgt])i?)?b?\s*", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class FileContext:
    """What validation needs to know about the file being read."""

    file: str
    base: Path  # the file's directory: relative paths start here
    env: Mapping[str, str]  # where password_env / token_env are looked up


def file_context(info: ValidationInfo) -> FileContext | None:
    """The file being read, None when a config is built in code or from the command line."""
    context = info.context
    return context.get("file") if isinstance(context, dict) else None


def invalid(expected: str, value: Any, *, key: str = "") -> PydanticCustomError:
    """``<key> must be <expected>: <value>``; ``key`` names a key of the model when a model
    validator (not a field's) finds the fault."""
    return refused(f"must be {expected}", key=key, shown=repr(value))


def refused(text: str, *, key: str = "", shown: str = "") -> PydanticCustomError:
    """``<key> <text>[: <shown>]``: for faults that are not a wrong value (a secret in a URL)."""
    return PydanticCustomError("ptmon", "{text}", {"text": text, "key": key, "shown": shown})


def _check(function: Callable[..., Any]) -> BeforeValidator:
    return BeforeValidator(function)


def integer(low: int, high: int | None = None) -> BeforeValidator:
    span = f"from {low} to {high}" if high is not None else f"at least {low}"

    def check(value: Any) -> int:
        if (isinstance(value, bool) or not isinstance(value, int) or value < low
                or (high is not None and value > high)):
            raise invalid(f"an integer {span}", value)
        return value
    return _check(check)


def flag() -> BeforeValidator:
    def check(value: Any) -> bool:
        if not isinstance(value, bool):
            raise invalid("true or false", value)
        return value
    return _check(check)


def as_text(value: Any, *, required: bool = False) -> str:
    """A string without NUL; ``required``: not blank."""
    if not isinstance(value, str) or "\0" in value or (required and not value.strip()):
        raise invalid("a non-empty string" if required else "a string", value)
    return value


def text(*, required: bool = False, empty_is_none: bool = False) -> BeforeValidator:
    """A string without NUL; ``required``: not blank; ``empty_is_none``: "" (or None) is None."""
    def check(value: Any) -> str | None:
        if empty_is_none and value in (None, ""):
            return None
        return as_text(value, required=required)
    return _check(check)


def choice(*options: Any) -> BeforeValidator:
    *rest, last = (repr(option) for option in options)
    expected = f"{', '.join(rest)} or {last}"

    def check(value: Any) -> Any:
        if not any(value == option and type(value) is type(option) for option in options):
            raise invalid(expected, value)
        return value
    return _check(check)


def seconds(*, whole: bool = False, high: float = math.inf, zero: bool = False) -> BeforeValidator:
    """A duration as in the rule files ('90s', '15m'); a plain non-integer number too unless
    ``whole`` (then the value is an int); ``zero``: 0 means "never"."""
    return _check(lambda value: as_seconds(value, whole=whole, high=high, zero=zero))


def as_seconds(value: Any, *, whole: bool = False, high: float = math.inf,
               zero: bool = False) -> float | int:
    if zero and value == 0:
        return 0
    result: float | None = parse_duration(value)
    if result is None and not whole and isinstance(value, float):
        result = value
    if result is None or not 0 < result <= high or math.isinf(result):
        span = f", at most {high:.0f} s" if high < math.inf else ""
        raise invalid((DURATION if whole else DURATION + " or a number of seconds like 0.5") + span,
                      value)
    return int(result) if whole else float(result)


def size(low: int = 1, high: int | None = None, span: str = "") -> BeforeValidator:
    """Bytes from an integer or ``"64MB"``, ``"10GB"``, ``"512KiB"`` (units of 1024)."""
    def check(value: Any) -> int:
        result = None
        if isinstance(value, int) and not isinstance(value, bool):
            result = value
        elif isinstance(value, str) and (match := _SIZE.fullmatch(value)):
            result = int(float(match[1]) * _SIZE_UNITS[(match[2] or "").lower()])
        if result is None or result <= 0:
            raise invalid("a positive size (bytes, or like '64MB', '10GB')", value)
        if result < low or (high is not None and result > high):
            raise invalid(span, value)
        return result
    return _check(check)


def share() -> BeforeValidator:
    """A fraction in (0, 1): 0.02 for 2 %."""
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
            raise invalid("a fraction between 0 and 1 (0.02 for 2 %)", value)
        return float(value)
    return _check(check)


def proportion() -> BeforeValidator:
    """A fraction in [0, 1]: 0.9 for 90 %."""
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise invalid("a fraction from 0 to 1 (0.9 for 90 %)", value)
        return float(value)
    return _check(check)


def path(*, required: bool = False, existing: bool = False) -> BeforeValidator:
    """A path, relative to the config file's directory in a file; empty is None unless
    ``required``."""
    def check(value: Any, info: ValidationInfo) -> Path | None:
        context = file_context(info)
        if isinstance(value, Path):  # a default, or built in code
            if context is None:
                return value
            value = str(value)
        if value is None and not required:
            return None
        if not isinstance(value, str) or "\0" in value:
            raise invalid("a string", value)
        if not value:
            if required:
                raise invalid("a non-empty path", value)
            return None
        if context is None:
            return Path(value)
        result = context.base / Path(value).expanduser()
        if existing and not result.is_file():
            raise invalid("an existing file", value)
        return result
    return _check(check)


def env_name(value: Any, key: str) -> str | None:
    """The name of an environment variable (``password_env``, ``token_env``), None if not given."""
    if value is not None and (not isinstance(value, str) or not _ENV_NAME.fullmatch(value)):
        raise invalid("an environment variable name", value, key=key)
    return value
