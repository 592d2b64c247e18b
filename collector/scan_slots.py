"""Pieces to the scanning workers and blocks back through shared memory, not the executor's pipes.

A replay's scanning workers (archive.py) get each piece of decompressed lines (about 4 MB) and
send back its scanned block (about 3 MB of arrays). Through the executor's pipes both were
pickled, written, read and unpickled whole: some 2.8 GB a district day, each megabyte copied four
times and crossing the kernel twice. Here the workers inherit, through the fork, one shared
anonymous mapping cut into slots. The reader copies a piece into a slot and sends the worker only
its place; the worker copies it out, scans it, and writes the block's arrays back into the same
slot (pickle protocol 5's out-of-band buffers), sending through the pipe only the rest of the
pickle (a few kB). The reader copies the arrays out at once, so nothing it keeps views a slot.
A piece or a block larger than a slot goes through the pipe as before.

A slot is written again only once the block last scanned in it was received: the reader keeps
fewer pieces in flight than there are slots and takes the blocks back in order.
"""

from __future__ import annotations

import mmap
import pickle
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Packed:
    """A worker's result left in its slot: the pickle without its buffers, and where they lie."""

    pickled: bytes
    spans: tuple[tuple[int, int], ...]  # (offset, bytes) of each out-of-band buffer, in order


class Slots:
    """``count`` slots of ``size`` bytes in one shared anonymous mapping (created before the fork)."""

    def __init__(self, count: int, size: int) -> None:
        self.count, self.size = count, size
        self.memory = mmap.mmap(-1, count * size)  # MAP_SHARED: the forked workers see the same pages
        self._next = 0

    def put(self, data: bytes) -> tuple[int, int] | bytes:
        """Place ``data`` in the next slot: what to send its worker (``data`` itself when too large)."""
        if len(data) > self.size:
            return data
        at = self._next * self.size
        self._next = (self._next + 1) % self.count
        self.memory[at : at + len(data)] = data
        return at, len(data)

    def take(self, at: int, length: int) -> bytes:
        """In a worker: the piece placed at ``at``, copied out of the slot."""
        return self.memory[at : at + length]

    def pack(self, result: Any, at: int) -> Packed | Any:
        """In a worker: ``result`` with its buffers written into the slot at ``at`` (``result`` itself,
        for the pipe, when they do not fit)."""
        buffers: list[pickle.PickleBuffer] = []
        pickled = pickle.dumps(result, protocol=5, buffer_callback=buffers.append)
        raws = [b.raw() for b in buffers]
        if sum(r.nbytes for r in raws) > self.size:
            return result
        spans = []
        for raw in raws:
            self.memory[at : at + raw.nbytes] = raw
            spans.append((at, raw.nbytes))
            at += raw.nbytes
        return Packed(pickled, tuple(spans))

    def unpack(self, sent: Packed | Any) -> Any:
        """What a worker sent, its buffers copied out of the slot (the slot can be written again)."""
        if not isinstance(sent, Packed):
            return sent
        buffers = [np.frombuffer(self.memory, np.uint8, length, at).copy() for at, length in sent.spans]
        return pickle.loads(sent.pickled, buffers=buffers)
