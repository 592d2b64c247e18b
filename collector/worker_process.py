"""What a forked helper process (a replay's scanning worker) sets up first, so that stopping the
command stops it too.

* Ctrl-C in a terminal reaches the whole foreground process group, the workers included. A worker
  interrupted while it sends a result back holds the executor's result-queue lock forever, and the
  command then hangs in its shutdown. So the workers ignore SIGINT: the command itself is
  interrupted, and its shutdown of the pool ends them.
* A command killed (SIGTERM, SIGKILL, the OOM killer) runs no shutdown, and its workers would wait
  on the executor's queue for ever. On Linux they ask the kernel for SIGKILL when their parent dies
  (``PR_SET_PDEATHSIG``); elsewhere they are left as before.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def set_up_worker(parent: int) -> None:
    """In a worker just forked from process ``parent``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # no prctl to call: left as before
        return
    if os.getppid() != parent:  # the parent died before the request: no signal will come
        os._exit(1)
