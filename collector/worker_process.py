"""What a forked helper process (a replay's scanning worker) sets up first, so that stopping the
command stops it too.

* Ctrl-C in a terminal reaches the whole foreground process group, the workers included. A worker
  interrupted while it sends a result back holds the executor's result-queue lock forever, and the
  command then hangs in its shutdown. So the workers ignore SIGINT: the command itself is
  interrupted, and its shutdown of the pool ends them.
* A Ctrl-C while the pool starts (the workers forked, its thread not yet running) is either lost in
  the fork's own bookkeeping or leaves a worker the shutdown never tells to stop. So the command
  holds SIGINT back while the pool starts (:func:`sigint_held`) and takes it right after.
* A command killed (SIGTERM, SIGKILL, the OOM killer) runs no shutdown, and its workers would wait
  on the executor's queue for ever. On Linux they ask the kernel for SIGKILL when their parent dies
  (``PR_SET_PDEATHSIG``); elsewhere they are left as before.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
from collections.abc import Iterator

PR_SET_PDEATHSIG = 1  # linux/prctl.h


@contextlib.contextmanager
def sigint_held() -> Iterator[None]:
    """SIGINT held back (blocked) in this thread, and taken when the block ends."""
    before = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def set_up_worker(parent: int) -> None:
    """In a worker just forked from process ``parent`` (while its parent held SIGINT back)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # ignored now: nothing left held
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # no prctl to call: left as before
        return
    if os.getppid() != parent:  # the parent died before the request: no signal will come
        os._exit(1)
