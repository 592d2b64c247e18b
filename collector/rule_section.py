"""A hand reader of one mapping of a rule file, key by key, with errors that say where.

rules/anomaly.yaml is still read this way; streets, types, contracts and alerts are pydantic
models (:mod:`ptmon.rule_files`, :mod:`ptmon.alerting.rule_file`).
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from .durations import parse_duration
from .errors import ConfigError
from .rule_fields import CODE_RE, MAX_FEE
from .rule_fields import to_decimal as _to_decimal


class RuleSection:
    """One mapping of a rule file, read key by key with errors that say where."""

    def __init__(self, file: str, path: str, value: Any) -> None:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{file}: {path or 'top level'} must be a mapping: {value!r}")
        self.file, self.path, self.data = file, path, value
        self._seen: set[str] = set()

    def _where(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def fail(self, key: str, expected: str, value: Any) -> ConfigError:
        return ConfigError(f"{self.file}: {self._where(key)} {expected}: {value!r}")

    def get(self, key: str, default: Any = ...) -> Any:
        self._seen.add(key)
        if key in self.data:
            return self.data[key]
        if default is ...:
            raise ConfigError(f"{self.file}: {self._where(key)} is missing")
        return default

    def text(self, key: str, default: Any = ...) -> str:
        value = self.get(key, default)
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, "must be a non-empty string", value)
        return value.strip()

    def choice(self, key: str, options: tuple[str, ...], default: Any = ...) -> str:
        value = self.get(key, default)
        if value not in options:
            raise self.fail(key, f"must be one of {', '.join(options)}", value)
        return str(value)

    def flag(self, key: str, default: bool) -> bool:
        value = self.get(key, default)
        if not isinstance(value, bool):
            raise self.fail(key, "must be true or false", value)
        return value

    def duration(self, key: str, default: Any = ...) -> int:
        value = self.get(key, default)
        seconds = parse_duration(value)
        if seconds is None or seconds <= 0:
            raise self.fail(key, "must be a positive duration (seconds, or '90s', '15m', '6h', '1d')", value)
        return seconds

    def fraction(self, key: str) -> Decimal:
        value = self.get(key)
        try:
            number = Decimal(str(value)) if isinstance(value, (int, float, str)) and not isinstance(value, bool) else None
        except InvalidOperation:
            number = None
        if number is None or not number.is_finite() or not 0 < number <= 1:
            raise self.fail(key, "must be a fraction in (0, 1]", value)
        return number

    def decimal(self, key: str, low: Decimal, high: Decimal | None, default: Any = ...) -> Decimal:
        """A decimal number in ``[low, high]`` (``high`` None: unbounded), given as a number or a string."""
        value = self.get(key, default)
        number = _to_decimal(value)
        if number is None or number < low or (high is not None and number > high):
            bounds = f"[{low}, {high}]" if high is not None else f">= {low}"
            raise self.fail(key, f"must be a decimal number {bounds}", value)
        return number

    def integer(self, key: str, low: int, high: int, default: Any = ...) -> int:
        value = self.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.fail(key, f"must be a whole number in [{low}, {high}]", value)
        return value

    def money(self, key: str) -> Decimal:
        """An amount in yuan: a non-negative decimal with at most two places (fen)."""
        value = self.get(key)
        number = _to_decimal(value)
        if number is None or number < 0 or number > MAX_FEE or number != number.quantize(Decimal("0.01")):
            raise self.fail(key, "must be an amount in yuan >= 0 with at most 2 decimals (write it as a string)", value)
        return number

    def section(self, key: str) -> RuleSection:
        return RuleSection(self.file, self._where(key), self.get(key))

    def codes(self) -> list[str]:
        """The keys, each checked to be a code (a street, a KPI, a contract...)."""
        for key in self.data:
            if not isinstance(key, str) or not CODE_RE.fullmatch(key):
                raise ConfigError(
                    f"{self.file}: {self._where(str(key))} is not a valid code "
                    "(lower-case letters, digits and _, starting with a letter)"
                )
        return list(self.data)

    def items(self) -> list[tuple[str, RuleSection]]:
        return [(key, self.section(key)) for key in self.codes()]

    def done(self) -> None:
        unknown = sorted(str(k) for k in self.data if k not in self._seen)
        if unknown:
            raise ConfigError(f"{self.file}: {self._where(unknown[0])} is not a known key")
