"""This process's memory as the kernel counts it, for the benchmarks' figures.

The peak is ``VmHWM``, not ``getrusage().ru_maxrss``: Linux keeps ``ru_maxrss`` across exec, so a
benchmark's child would report its parent's size at the fork when the parent was the larger.
"""

from __future__ import annotations

import os


def current_rss() -> int:
    """Resident bytes now."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss() -> int:
    """Resident bytes at the most, since this process started or last exec'd."""
    with open("/proc/self/status") as status:
        line = next(x for x in status if x.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024
