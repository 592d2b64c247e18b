"""Signals and shutdown waits, in uvicorn's manner: the first SIGINT/SIGTERM asks for an orderly stop,
the second sets ``force_exit``, which the loops honour by no longer waiting on anything outside the
process (the broker, InfluxDB, the mail server).

Nothing here ends the process: a forced shutdown still returns through the normal path, so locks are
released and the exit status (130) is the caller's to give.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import threading
from collections.abc import Callable

EXIT_SIGNALS = (signal.SIGINT, signal.SIGTERM)
FORCED_EXIT_STATUS = 130  # as a shell reports a process ended by SIGINT


class ExitRequest:
    """``should_exit`` after the first signal, ``force_exit`` after the second (uvicorn's two flags).

    ``stopping`` and ``forcing`` are what the program says on standard error at each.
    """

    def __init__(self, *, stopping: str, forcing: str, should_exit: asyncio.Event | None = None,
                 on_force: Callable[[], None] | None = None) -> None:
        self.should_exit = should_exit if should_exit is not None else asyncio.Event()
        self.stopping, self.forcing = stopping, forcing
        self.on_force = on_force
        self.force_exit = False

    def handle_exit(self) -> None:
        if self.should_exit.is_set():
            print(self.forcing, file=sys.stderr)
            self.force_exit = True
            if self.on_force is not None:
                self.on_force()
            return
        print(self.stopping, file=sys.stderr)
        self.should_exit.set()

    def install(self) -> None:
        """On the running loop, for SIGINT and SIGTERM."""
        loop = asyncio.get_running_loop()
        for sig in EXIT_SIGNALS:
            loop.add_signal_handler(sig, self.handle_exit)


async def unless_forced(blocking: Callable[[], object], forced: asyncio.Event) -> bool:
    """Run ``blocking`` in a daemon thread until it returns or ``forced`` is set; False when forced.

    A daemon thread, not the loop's executor: after a forced exit nothing may hold the interpreter
    at exit waiting for a join that was given up on (the executor's threads are joined at exit)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def run() -> None:
        try:
            blocking()
        finally:
            try:
                loop.call_soon_threadsafe(lambda: done.done() or done.set_result(None))
            except RuntimeError:  # the loop ended meanwhile (a forced exit did not wait for this thread)
                pass

    threading.Thread(target=run, name=getattr(blocking, "__name__", "shutdown-wait"), daemon=True).start()
    return await awaited_unless_forced(done, forced)


async def awaited_unless_forced(awaitable: asyncio.Future[object] | asyncio.Task[object], forced: asyncio.Event) -> bool:
    """Wait for ``awaitable`` unless ``forced`` is (or becomes) set first; then cancel it and return False."""
    if forced.is_set():
        awaitable.cancel()
        return False
    forcing = asyncio.ensure_future(forced.wait())
    try:
        await asyncio.wait({awaitable, forcing}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        forcing.cancel()
    if awaitable.done():
        awaitable.result()  # its exception, if any, is the caller's
        return True
    awaitable.cancel()
    return False
