"""InfluxDB line protocol: escaping and line building, apart from any transport.

``measurement,tag=value,... field=value,... timestamp``. The rules below are what InfluxDB
1.x/2.x (the Go parser) stores, checked against a real InfluxDB 1.6.7 by
``tests/test_lineproto.py``:

* measurement: ``,`` and space are escaped with a backslash. (InfluxDB 1.x unescapes names
  twice, so a backslash just before ``,``, space, ``=`` or ``"`` in a name is lost.)
* tag keys, tag values, field keys: ``,``, space and ``=`` are escaped with a backslash.
  Every other character is kept as it is, backslashes, quotes, tabs, CRs and UTF-8
  included: the server unescapes only those pairs, so ``a\\,b`` (backslash, comma) is
  written ``a\\\\,b`` and stored exactly. In field keys the server also unescapes ``\\"``,
  so a backslash just before a quote is doubled.
* string field values: ``"`` and ``\\`` are escaped; newlines, tabs and CRs stay literal
  (the server keeps a newline inside a quoted string, it does not end the line).

Two things no line can carry in a measurement, tag or field key, so they are mapped, the
way influxdb-client's ``Point`` and Telegraf do:

* a newline becomes the two characters ``\\n`` (backslash, n), which InfluxDB stores and
  shows as such; a value that really contains backslash-n cannot be told apart from it;
* trailing backslashes are dropped (``dev\\`` → ``dev``): before the ``,``, ``=`` or space
  that follows, any backslash reads as an escape and breaks the line.

An empty tag key or value (after that) drops the tag: line protocol has no empty tags.
Other parsers differ on backslashes: VictoriaMetrics (and InfluxDB 3) read ``\\\\`` as one
backslash, so there tag values with backslashes are stored differently.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from functools import lru_cache

FieldValue = int | float | bool | str

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_MEASUREMENT = str.maketrans({",": "\\,", " ": "\\ ", "\n": "\\n"})
_KEY = str.maketrans({",": "\\,", " ": "\\ ", "=": "\\=", "\n": "\\n"})
_STRING = str.maketrans({"\\": "\\\\", '"': '\\"'})
_MEASUREMENT_SPECIAL = re.compile(r"[, \n\\]").search
_KEY_SPECIAL = re.compile(r"[, =\n\\]").search


def escape_measurement(name: str) -> str:
    """The measurement as written in a line; ValueError when nothing of it is left."""
    if _MEASUREMENT_SPECIAL(name):
        name = name.rstrip("\\").translate(_MEASUREMENT)
    if not name or name[0] == "#":
        # empty is no line at all, and a line starting with '#' is a comment
        raise ValueError(f"measurement name cannot be written in line protocol: {name!r}")
    return name


def escape_tag(text: str) -> str:
    """A tag key or value as written in a line ('' means: omit the tag)."""
    if _KEY_SPECIAL(text):
        return text.rstrip("\\").translate(_KEY)
    return text


@lru_cache(maxsize=4096)
def escape_field_key(key: str) -> str:
    """A field key as written in a line ('' means: omit the field)."""
    if _KEY_SPECIAL(key):
        key = key.rstrip("\\").translate(_KEY)
    if '\\"' in key:
        # the server reads \" in a field key as a quote; \\" keeps the backslash
        key = key.replace('\\"', '\\\\"')
    return key


def escape_string(value: str) -> str:
    """A string field value, with its quotes."""
    if "\\" in value or '"' in value:
        value = value.translate(_STRING)
    return f'"{value}"'


def series_prefix(measurement: str, tags: Mapping[str, str]) -> str:
    """``measurement,tag=value,... `` (with the trailing space), built once per series.

    Tags are sorted by key, as InfluxDB stores them (it sorts unsorted tags on every write).
    Append the fields and the timestamp: ``f"{prefix}bat={bat!r},seq={seq}i {t}"``.
    """
    parts = [escape_measurement(measurement)]
    for key, value in sorted((escape_tag(k), escape_tag(v)) for k, v in tags.items()):
        if key and value:
            parts.append(f"{key}={value}")
    return ",".join(parts) + " "


def format_field(key: str, value: FieldValue) -> str | None:
    """``key=value`` with the value typed (``1i``, ``1.5``, ``true``, ``"text"``); None when unwritable."""
    key = escape_field_key(key)
    if not key:
        return None
    if isinstance(value, bool):  # before int: bool is an int
        return f"{key}={'true' if value else 'false'}"
    if isinstance(value, int):
        # outside int64 the server rejects the whole batch
        return f"{key}={value}i" if INT64_MIN <= value <= INT64_MAX else None
    if isinstance(value, float):
        # NaN and inf have no line-protocol form
        return f"{key}={float(value)!r}" if math.isfinite(value) else None
    if isinstance(value, str):
        return f"{key}={escape_string(value)}"
    raise TypeError(f"field {key}: unsupported type {type(value).__name__}")


def format_fields(fields: Mapping[str, FieldValue]) -> str:
    """``a=1i,b=2.5`` for the writable fields ('' when none is)."""
    return ",".join(text for k, v in fields.items() if (text := format_field(k, v)) is not None)


def line_from_prefix(prefix: str, fields: Mapping[str, FieldValue], timestamp: int) -> str | None:
    """A line for a series prefix from ``series_prefix``; None when no field is writable."""
    text = format_fields(fields)
    return f"{prefix}{text} {timestamp}" if text else None


def line(measurement: str, tags: Mapping[str, str], fields: Mapping[str, FieldValue], timestamp: int) -> str | None:
    """One point as a line (no trailing newline); None when no field is writable.

    ``timestamp`` is in the precision the sink writes with (microseconds for ptmon).
    """
    return line_from_prefix(series_prefix(measurement, tags), fields, timestamp)


def split_lines(body: bytes) -> list[bytes]:
    """The lines of a body; a newline inside a quoted string field does not end a line.

    Follows InfluxDB's own scanner: a backslash escapes the next byte anywhere, the field
    set starts at the first unescaped space, and there a quote opens a string only as a
    field's value (more ``=`` than ``,`` seen). Slow (Python per byte), but only used to
    split a batch the server found too large.
    """
    lines: list[bytes] = []
    start = i = 0
    n = len(body)
    in_fields = quoted = False
    equals = commas = 0
    while i < n:
        c = body[i]
        if c == 0x5C and i + 1 < n:  # backslash
            i += 2
            continue
        if c == 0x0A and not quoted:
            lines.append(body[start:i])
            start, in_fields, equals, commas = i + 1, False, 0, 0
        elif c == 0x20:
            in_fields = True
        elif in_fields and not quoted and c == 0x3D:
            equals += 1
        elif in_fields and not quoted and c == 0x2C:
            commas += 1
        elif in_fields and c == 0x22 and equals > commas:
            quoted = not quoted
        i += 1
    lines.append(body[start:])
    return [text for text in lines if text.strip()]
