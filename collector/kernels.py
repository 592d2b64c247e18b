"""The compiled archive scan and payload parse (kernels.c), when the install built them.

``pip install`` compiles kernels.c into ``ptmon/_kernels*.so`` when a C compiler is at hand
(setup.py; the build is optional). lines.scan and payloads.parse_spans then do in one pass per
line what their numpy code does in some twenty passes over the block, with the same results
(tests/test_kernels.py compares them). Without the library, or with ``PTMON_KERNELS=numpy`` in
the environment, the numpy code runs: slower, never different. ``ptmon replay`` logs which one
it uses, and the benchmarks print it.

The library is plain C called through ctypes: it uses no Python API, so it needs no Python
headers to build and does not depend on the interpreter's ABI.
"""

from __future__ import annotations

import ctypes
import importlib.machinery
import logging
import os
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

MAX_SHAPES = 32  # kernels.c PTK_MAX_SHAPES (payloads.MAX_SHAPES)
SHAPE_BYTES = 256  # PTK_SHAPE_BYTES
MAX_VALUES = 16  # PTK_MAX_VALUES

_i64, _ptr = ctypes.c_int64, ctypes.c_void_p


def _library() -> Path | None:
    """The compiled library beside this file (where the install put it), if any."""
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = Path(__file__).with_name("_kernels" + suffix)
        if path.is_file():
            return path
    return None


def _load() -> ctypes.CDLL | None:
    if os.environ.get("PTMON_KERNELS", "").strip().lower() == "numpy":
        return None
    path = _library()
    if path is None:
        return None
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as exc:
        log.warning("cannot load the compiled scanner %s (%s): using the numpy one, more slowly", path, exc)
        return None
    lib.ptk_count_lines.argtypes = [_ptr, _i64]
    lib.ptk_count_lines.restype = _i64
    lib.ptk_scan.argtypes = [_ptr, _i64, _i64, *[_ptr] * 9]
    lib.ptk_scan.restype = _i64
    lib.ptk_parse.argtypes = [_ptr, _ptr, _ptr, _i64, ctypes.c_int32, _ptr, _ptr, _ptr, _ptr]
    lib.ptk_parse.restype = ctypes.c_int32
    return lib


_lib = _load()


def available() -> bool:
    """Whether the compiled scan and parse are in use."""
    return _lib is not None


def in_use() -> str:
    """What scans archive lines and parses payloads, for --help texts and benchmarks."""
    return "compiled (ptmon._kernels)" if _lib is not None else "numpy (the compiled scanner is not built)"


def _at(array: np.ndarray) -> int:
    return array.ctypes.data


def scan(array: np.ndarray) -> tuple[np.ndarray, ...]:
    """(starts, ends, plain, t, topic_start, topic_end, payload_start, payload_end, payload_chars) of
    the lines in ``array`` (uint8, contiguous), as lines.scan finds them."""
    assert _lib is not None
    if array.dtype != np.uint8 or not array.flags.c_contiguous:
        raise ValueError("the scan reads a contiguous uint8 array")
    n = len(array)
    count = _lib.ptk_count_lines(_at(array), n)
    starts, ends = np.empty(count, np.int64), np.empty(count, np.int64)
    plain = np.empty(count, np.bool_)
    t = np.empty(count, np.float64)
    columns = [np.empty(count, np.int64) for _ in range(5)]
    taken = _lib.ptk_scan(_at(array), n, count, _at(starts), _at(ends), _at(plain), _at(t), *map(_at, columns))
    return (starts, ends, plain, t[:taken].copy(), *(c[:taken].copy() for c in columns))


def parse(array: np.ndarray, starts: np.ndarray, ends: np.ndarray, escaped: bool) -> tuple[np.ndarray, np.ndarray, list[bytes]]:
    """(shape of each payload, -1 where left to orjson; its integers, ``MAX_VALUES`` a row; the
    shapes' bytes) of the payloads at ``array[starts[i]:ends[i]]``, as payloads.parse_spans reads them."""
    assert _lib is not None
    n = len(starts)
    starts = np.ascontiguousarray(starts, dtype=np.int64)
    ends = np.ascontiguousarray(ends, dtype=np.int64)
    if n and (int(starts.min()) < 0 or int(ends.max()) > len(array) or bool((ends < starts).any())):
        raise ValueError("payload spans outside the buffer")  # the C code reads exactly these bytes
    if array.dtype != np.uint8 or not array.flags.c_contiguous:
        raise ValueError("the parse reads a contiguous uint8 array")
    shape_of = np.empty(n, np.int32)
    values = np.empty((n, MAX_VALUES), np.int64)
    table = np.empty(MAX_SHAPES * SHAPE_BYTES, np.uint8)
    length = np.empty(MAX_SHAPES, np.int32)
    found = _lib.ptk_parse(_at(array), _at(starts), _at(ends), n, int(escaped), _at(shape_of), _at(values),
                           _at(table), _at(length))
    shapes = [table[k * SHAPE_BYTES : k * SHAPE_BYTES + int(length[k])].tobytes() for k in range(found)]
    return shape_of, values, shapes
