"""Signals and shutdown waits, in uvicorn's manner: the first SIGINT/SIGTERM asks for an orderly stop,
the second sets ``force_exit``, which the loops honour by no longer waiting on anything outside the
process (the broker, InfluxDB, the mail server).

Nothing here ends the process: a forced shutdown still returns through the normal path, so locks are
released and the exit status (130) is the caller's to give.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any, TypeVar

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


T = TypeVar("T")


def in_daemon_thread(blocking: Callable[[], T]) -> asyncio.Future[T]:
    """``blocking()`` in a daemon thread of its own, as a future of the running loop.

    For calls that may hang on the network (an HTTP write, a broker's disconnect): unlike the loop's
    executor, whose threads the interpreter joins at exit, a daemon thread given up on by a forced
    exit does not hold the process."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(outcome: Callable[[], None]) -> None:
        with contextlib.suppress(RuntimeError):  # the loop ended meanwhile (a forced exit did not wait for this thread)
            loop.call_soon_threadsafe(lambda: None if future.done() else outcome())

    def run() -> None:
        try:
            result = blocking()
        except BaseException as exc:  # handed to the awaiting task, as asyncio.to_thread does
            error = exc  # `exc` is unbound when the except block ends; the callback runs later
            settle(lambda: future.set_exception(error))
        else:
            settle(lambda: future.set_result(result))

    threading.Thread(target=run, name=getattr(blocking, "__name__", "ptmon-blocking"), daemon=True).start()
    return future


async def unless_forced(blocking: Callable[[], object], forced: asyncio.Event) -> bool:
    """Run ``blocking`` in a daemon thread until it returns or ``forced`` is set; False when forced."""
    return await awaited_unless_forced(in_daemon_thread(blocking), forced)


async def awaited_unless_forced(awaitable: asyncio.Future[Any], forced: asyncio.Event) -> bool:
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
