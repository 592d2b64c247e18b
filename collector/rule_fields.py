"""The kinds of value the rule files of ``rules/`` hold, as pydantic validators, and reading a
rule file through a model with the messages users know:
``rules/contracts.yaml: cam.kpis.online.threshold must be a fraction in (0, 1]: 95``.

The models are :class:`ptmon.config.base.Section` dataclasses, as ptmon.toml's tables are: a key
a model does not declare is refused naming the known ones, and every fault names the file and
the dotted key path. These validators keep the rule files' own words ("a whole number in
[0, 254]", "one of iot, cam"), which rules/README.md and users' habits rely on.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import yaml
from pydantic import BeforeValidator, TypeAdapter, ValidationError, ValidationInfo

from .config.fields import FileContext, file_context, invalid, refused
from .durations import parse_duration
from .errors import ConfigError, reason

CODE_RE = re.compile(r"[a-z][a-z0-9_]{0,31}")
_CLOCK = re.compile(r"([01]?\d|2[0-3]):([0-5]\d)")
NOT_A_CODE = "is not a valid code (lower-case letters, digits and _, starting with a letter)"
DURATION = "a positive duration (seconds, or '90s', '15m', '6h', '1d')"
MAX_FEE = Decimal(10) ** 12  # yuan; a bound well above any lease fee, so quantize stays exact
_NOT_A_MAPPING = ("dataclass_type", "dataclass_args_type", "model_type", "dict_type")


@dataclass(frozen=True)
class RuleFileContext(FileContext):
    """A rule file being read, with what the files read before it define (``known``: the
    contracts of contracts.yaml for types.yaml; the whole :class:`Rules` for alerts.yaml)."""

    known: Mapping[str, Any] = field(default_factory=dict)


def defined_before(info: ValidationInfo, name: str) -> Any:
    """What the files read before define under ``name``; None when validating in code."""
    context = file_context(info)
    return context.known.get(name) if isinstance(context, RuleFileContext) else None


def to_decimal(value: Any) -> Decimal | None:
    """A finite Decimal from a YAML number or string; None when it is not one.

    A YAML float goes through ``str`` (its shortest repr), so ``0.3`` is ``Decimal("0.3")``.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, str, Decimal)):
        return None
    try:
        number = Decimal(str(value).strip().replace(",", "").replace("_", ""))
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def rule_text() -> BeforeValidator:
    """A non-blank string, stripped."""
    def check(value: Any) -> str:
        if not isinstance(value, str) or not value.strip():
            raise invalid("a non-empty string", value)
        return value.strip()
    return BeforeValidator(check)


def one_of(options: Iterable[str] | None = None, *, known: str = "") -> BeforeValidator:
    """One of ``options``, or of the codes an earlier file defines under ``known`` (the
    contracts of contracts.yaml, for types.yaml)."""
    fixed = tuple(options or ())

    def check(value: Any, info: ValidationInfo) -> str:
        choices = fixed or tuple(defined_before(info, known) or ())
        if value not in choices:
            raise invalid(f"one of {', '.join(choices)}", value)
        return str(value)
    return BeforeValidator(check)


def duration(*, zero: bool = False) -> BeforeValidator:
    """Whole seconds from ``90`` or ``"90s"``, ``"15m"``, ``"6h"``, ``"1d"``; above zero, or
    ``zero``: at least zero."""
    expected = DURATION.replace("a positive", "a non-negative") if zero else DURATION

    def check(value: Any) -> int:
        seconds = parse_duration(value)
        if seconds is None or seconds < 0 or (seconds == 0 and not zero):
            raise invalid(expected, value)
        return seconds
    return BeforeValidator(check)


def fraction() -> BeforeValidator:
    """A threshold: a decimal in (0, 1], 0.95 for 95 %."""
    def check(value: Any) -> Decimal:
        try:
            number = (Decimal(str(value)) if isinstance(value, (int, float, str, Decimal))
                      and not isinstance(value, bool) else None)
        except InvalidOperation:
            number = None
        if number is None or not number.is_finite() or not 0 < number <= 1:
            raise invalid("a fraction in (0, 1]", value)
        return number
    return BeforeValidator(check)


def decimal_in(low: Decimal, high: Decimal | None = None) -> BeforeValidator:
    """A decimal number in ``[low, high]`` (``high`` None: unbounded), as a number or a string."""
    bounds = f"[{low}, {high}]" if high is not None else f">= {low}"

    def check(value: Any) -> Decimal:
        number = to_decimal(value)
        if number is None or number < low or (high is not None and number > high):
            raise invalid(f"a decimal number {bounds}", value)
        return number
    return BeforeValidator(check)


def whole_in(low: int, high: int) -> BeforeValidator:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise invalid(f"a whole number in [{low}, {high}]", value)
        return value
    return BeforeValidator(check)


def money() -> BeforeValidator:
    """An amount in yuan: a non-negative decimal with at most two places (fen)."""
    def check(value: Any) -> Decimal:
        number = to_decimal(value)
        if number is None or number < 0 or number > MAX_FEE or number != number.quantize(Decimal("0.01")):
            raise invalid("an amount in yuan >= 0 with at most 2 decimals (write it as a string)", value)
        return number
    return BeforeValidator(check)


def time_of_day() -> BeforeValidator:
    """Seconds after Shanghai midnight from "HH:MM" (built in code: the seconds themselves)."""
    def check(value: Any, info: ValidationInfo) -> int:
        if isinstance(value, int) and not isinstance(value, bool) and info.context is None:
            return value
        m = _CLOCK.fullmatch(value.strip()) if isinstance(value, str) else None
        if m is None:
            raise invalid('a Shanghai time of day "HH:MM"', value)
        return int(m.group(1)) * 3600 + int(m.group(2)) * 60
    return BeforeValidator(check)


def number(low: float, high: float) -> BeforeValidator:
    """A number (not a boolean) in ``[low, high]``, as a float."""
    def plain(x: float) -> str:
        return str(int(x)) if float(x).is_integer() else str(x)

    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            raise invalid(f"a number in [{plain(low)}, {plain(high)}]", value)
        return float(value)
    return BeforeValidator(check)


def check_codes(data: Any, where: str = "") -> None:
    """Every key of a mapping is a code (a street, a KPI, a contract...); ``where`` is the dotted
    path of the mapping inside the model being validated."""
    if not isinstance(data, dict):
        return  # the model says "must be a mapping"
    for key in data:
        if not isinstance(key, str) or not CODE_RE.fullmatch(key):
            raise refused(NOT_A_CODE, key=f"{where}.{key}" if where else str(key))


class _UniqueKeys(yaml.SafeLoader):
    """YAML with a key given twice in one mapping refused (PyYAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                line = first.setdefault(key, key_node.start_mark.line + 1)
            except TypeError:  # an unhashable key: the constructor below says so
                continue
            if line != key_node.start_mark.line + 1:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first given at line {line})", key_node.start_mark)
        return super().construct_mapping(node, deep)


def read_rule_file(path: Path, what: str = "rule file") -> tuple[Any, bytes]:
    """The YAML document of ``path`` and its bytes (for the version hash); a key given twice in
    one mapping is refused with its line."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read {what}: {reason(exc)}") from exc
    try:
        return yaml.load(raw, Loader=_UniqueKeys), raw
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc


def validate_rule_file(adapter: TypeAdapter[Any], doc: Any, label: str, **known: Any) -> Any:
    """``doc`` validated by ``adapter``; a fault becomes ``ConfigError("<label>: <key> <fault>")``.

    ``known`` is what the files read before define (``contracts``: the codes a type may name).
    """
    file = RuleFileContext(label, Path(label).parent, {}, known)
    try:
        return adapter.validate_python(doc, context={"file": file})
    except ValidationError as exc:
        raise ConfigError(f"{label}: {fault_of(exc)}") from None


def fault_of(exc: ValidationError) -> str:
    """``<key path> <what is wrong>`` of the first fault, in the rule files' words; the path is
    dotted, with list items as ``rules[0]``."""
    error = exc.errors(include_url=False)[0]
    ctx = error.get("ctx") or {}
    parts = [*error["loc"], ctx["key"]] if error["type"] == "ptmon" and ctx["key"] else error["loc"]
    key = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in parts).lstrip(".")
    key = key or "top level"
    if error["type"] == "ptmon":
        return f"{key} {ctx['text']}" + (f": {ctx['shown']}" if ctx["shown"] else "")
    if error["type"] == "missing":
        return f"{key} is missing"
    if error["type"] in _NOT_A_MAPPING:
        return f"{key} must be a mapping: {error['input']!r}"
    if error["type"] in ("list_type", "tuple_type"):
        return f"{key} must be a list: {error['input']!r}"
    return f"{key} is wrong ({error['msg']}): {error['input']!r}"  # a fault no validator words
