"""The compiled archive scan and payload parse (kernels.c), when the install built them.

``pip install`` compiles kernels.c into ``ptmon/_kernels*.so`` when a C compiler is at hand
(setup.py; the build is optional). lines.scan and payloads.parse_spans then do in one pass per
line what their numpy code does in some twenty passes over the block, with the same lines and
values (tests/test_kernels.py compares them; kernels.c says which payloads past its limits it
leaves to orjson, which gives the same values). Without the library, with one built from another
kernels.c (checked through its ``ptk_build``), or with ``PTMON_KERNELS=numpy`` in the
environment, the numpy code runs: slower, never different. ``ptmon -v replay`` logs which one
it uses, and the benchmarks print it.

The library is plain C called through ctypes: it uses no Python API, so it needs no Python
headers to build and does not depend on the interpreter's ABI.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.machinery
import logging
import os
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

MAX_SHAPES = 32  # kernels.c PTK_MAX_SHAPES (payloads.MAX_SHAPES)
SHAPE_BYTES = 256  # PTK_SHAPE_BYTES
MAX_VALUES = 16  # PTK_MAX_VALUES
PLAIN_LINE_BYTES = 32  # the shortest plain line, {"t":0,"topic":"","payload":""}, and its newline
SOURCE = Path(__file__).with_name("kernels.c")
CHOICES = ("compiled", "numpy")  # PTMON_KERNELS

_i64, _ptr = ctypes.c_int64, ctypes.c_void_p


def source_digest() -> str:
    """The SHA-256 of kernels.c, which setup.py compiles into the library (``ptk_build``)."""
    return hashlib.sha256(SOURCE.read_bytes()).hexdigest()


def expected_build(source: str) -> str:
    return f"ptk 1 shapes={MAX_SHAPES} shape_bytes={SHAPE_BYTES} values={MAX_VALUES} source={source}"


def _library() -> Path | None:
    """The compiled library beside this file (where the install put it), if any."""
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = Path(__file__).with_name("_kernels" + suffix)
        if path.is_file():
            return path
    return None


def _load(path: Path | None = None) -> tuple[ctypes.CDLL | None, str]:
    """(the library at ``path``, else the one beside this file, None when the numpy code runs; why
    not, for :func:`in_use`)."""
    choice = os.environ.get("PTMON_KERNELS", "").strip().lower()
    if choice == "numpy":
        return None, "chosen by PTMON_KERNELS=numpy"
    if choice not in ("", *CHOICES):
        log.warning("PTMON_KERNELS=%s is neither of %s; ignored", choice, ", ".join(CHOICES))
    path = path or _library()
    if path is None:
        return None, "the compiled scanner is not built: no C compiler at install"
    try:
        lib = ctypes.CDLL(str(path))
        lib.ptk_build.restype = ctypes.c_char_p
        lib.ptk_build.argtypes = []
        build = lib.ptk_build().decode("ascii", "replace")
        lib.ptk_count_lines.argtypes = [_ptr, _i64]
        lib.ptk_count_lines.restype = _i64
        lib.ptk_scan.argtypes = [_ptr, _i64, _i64, ctypes.c_double, _i64, *[_ptr] * 9]
        lib.ptk_scan.restype = _i64
        lib.ptk_parse.argtypes = [_ptr, _ptr, _ptr, _i64, ctypes.c_int32, _ptr, _ptr, _ptr, _ptr]
        lib.ptk_parse.restype = ctypes.c_int32
    except (OSError, AttributeError) as exc:  # not a library, or one without these functions
        why = f"cannot load the compiled scanner {path} ({exc})"
    else:
        try:
            source = source_digest()  # installed beside this file (package data): without it, no check
        except OSError as exc:
            why = f"cannot check the compiled scanner {path} against {SOURCE} ({exc.strerror or exc})"
        else:
            if build == expected_build(source):
                return lib, ""
            why = f"the compiled scanner {path} was built from another kernels.c ({build!r})"
    log.warning("%s: using the numpy one, more slowly (a new `pip install` rebuilds it)", why)
    return None, why


_lib: ctypes.CDLL | None = None
_why: str | None = None  # None: not loaded yet (loaded at first use, once logging is set up)


def _loaded() -> ctypes.CDLL | None:
    global _lib, _why
    if _why is None:
        _lib, _why = _load()
    return _lib


def available() -> bool:
    """Whether the compiled scan and parse are in use."""
    return _loaded() is not None


def in_use() -> str:
    """What scans archive lines and parses payloads, for logs and benchmarks."""
    return "compiled (ptmon._kernels)" if _loaded() is not None else f"numpy ({_why})"


def _at(array: np.ndarray) -> int:
    return array.ctypes.data


def _byte_array(array: np.ndarray) -> np.ndarray:
    """``array``, refused unless it is contiguous bytes, as the C code reads it."""
    if array.dtype != np.uint8 or not array.flags.c_contiguous:
        raise ValueError("the compiled scanner reads a contiguous uint8 array")
    return array


def scan(array: np.ndarray, time_limit: float) -> tuple[np.ndarray, ...]:
    """(starts, ends, plain, t, topic_start, topic_end, payload_start, payload_end, payload_chars) of
    the lines in ``array`` (uint8, contiguous), as lines.scan finds them, receive times below
    ``time_limit`` (seconds)."""
    lib = _loaded()
    assert lib is not None
    n = len(_byte_array(array))
    count = lib.ptk_count_lines(_at(array), n)
    room = min(count, n // PLAIN_LINE_BYTES + 1)  # no more lines can be plain: a block of newlines costs no columns
    starts, ends = np.empty(count, np.int64), np.empty(count, np.int64)
    plain = np.empty(count, np.bool_)
    t = np.empty(room, np.float64)
    columns = [np.empty(room, np.int64) for _ in range(5)]
    taken = lib.ptk_scan(_at(array), n, count, time_limit, room, _at(starts), _at(ends), _at(plain), _at(t),
                         *map(_at, columns))
    return (starts, ends, plain, t[:taken].copy(), *(c[:taken].copy() for c in columns))


def parse(array: np.ndarray, starts: np.ndarray, ends: np.ndarray, escaped: bool) -> tuple[np.ndarray, np.ndarray, list[bytes]]:
    """(shape of each payload, -1 where left to orjson; its integers, ``MAX_VALUES`` a row; the
    shapes' bytes) of the payloads at ``array[starts[i]:ends[i]]``, as payloads.parse_spans reads them."""
    lib = _loaded()
    assert lib is not None
    n = len(starts)
    starts = np.ascontiguousarray(starts, dtype=np.int64)
    ends = np.ascontiguousarray(ends, dtype=np.int64)
    if len(ends) != n:
        raise ValueError(f"{n} payload starts but {len(ends)} ends")
    if n and (int(starts.min()) < 0 or int(ends.max()) > len(array) or bool((ends < starts).any())):
        raise ValueError("payload spans outside the buffer")  # the C code reads exactly these bytes
    _byte_array(array)
    shape_of = np.empty(n, np.int32)
    values = np.empty((n, MAX_VALUES), np.int64)
    table = np.empty(MAX_SHAPES * SHAPE_BYTES, np.uint8)
    length = np.empty(MAX_SHAPES, np.int32)
    found = lib.ptk_parse(_at(array), _at(starts), _at(ends), n, int(escaped), _at(shape_of), _at(values),
                          _at(table), _at(length))
    shapes = [table[k * SHAPE_BYTES : k * SHAPE_BYTES + int(length[k])].tobytes() for k in range(found)]
    return shape_of, values, shapes
