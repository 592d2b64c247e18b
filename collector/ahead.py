"""An iterator's items produced ahead of their consumer, in order, by another process.

The producer runs on the second core (its own GIL: numpy and zlib in a thread still left too
much under the one GIL to gain) while the consumer works on the items already made.
Exceptions reach the consumer at the item where they happened; closing the consumer stops
the producer.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Generator, Iterator
from multiprocessing.connection import Connection
from typing import Any, TypeVar

T = TypeVar("T")


def ahead_in_process(produce: Callable[[], Iterator[T]]) -> Generator[T, None, None]:
    """``produce()``'s items made in a forked child process (its own GIL, the second core) and
    sent back pickled, one ahead; the child's exception is raised at its place. Only for work
    that needs nothing the parent changes after the fork, and in a process without other
    threads (a replay, not the live collector). Without ``fork`` (not POSIX): made here."""
    if "fork" not in multiprocessing.get_all_start_methods():
        yield from produce()
        return
    receive, send = multiprocessing.get_context("fork").Pipe(duplex=False)
    child = multiprocessing.get_context("fork").Process(target=_send_all, args=(produce, send), name="ptmon-read-ahead", daemon=True)
    child.start()
    send.close()
    try:
        while True:
            try:
                kind, item = receive.recv()
            except EOFError:
                raise RuntimeError("the read-ahead process ended without a word") from None
            if kind == "done":
                return
            if kind == "error":
                raise item
            yield item
    finally:
        receive.close()
        if child.is_alive():
            child.terminate()
        child.join()


def _send_all(produce: Callable[[], Iterator[Any]], send: Connection) -> None:
    try:
        for item in produce():
            send.send(("item", item))
    except BrokenPipeError:
        return  # the parent stopped reading
    except BaseException as exc:  # raised in the parent
        send.send(("error", exc))
        return
    send.send(("done", None))
