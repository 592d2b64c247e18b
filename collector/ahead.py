"""An iterator's items produced by a thread ahead of their consumer, in order.

For work that releases the GIL (zlib, numpy on large arrays): the producing thread runs on
the second core while the consumer works on the items already made. Exceptions reach the
consumer at the item where they happened; closing the consumer stops the thread.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Generator, Iterator
from typing import TypeVar

T = TypeVar("T")
_DONE = object()
_POLL = 0.1  # seconds between checks of a stopped consumer while the queue is full


def ahead(items: Iterator[T], depth: int) -> Generator[T, None, None]:
    """``items`` made up to ``depth`` ahead by a daemon thread."""
    made: queue.Queue[object] = queue.Queue(depth)
    stopped = threading.Event()

    def put(item: object) -> bool:
        while not stopped.is_set():
            try:
                made.put(item, timeout=_POLL)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
        except BaseException as exc:  # handed to the consumer, raised there
            put((None, exc))
            return
        put(_DONE)

    thread = threading.Thread(target=produce, name="ptmon-read-ahead", daemon=True)
    thread.start()
    return _consume(made, stopped, thread)


def _consume(made: queue.Queue[object], stopped: threading.Event, thread: threading.Thread) -> Generator[T, None, None]:
    try:
        while True:
            got = made.get()
            if got is _DONE:
                return
            item, exc = got  # type: ignore[misc]
            if exc is not None:
                raise exc
            yield item
    finally:
        stopped.set()
        thread.join()
