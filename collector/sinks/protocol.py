"""The one shape every sink has (Telegraf's output plugin: Connect, Write, Close; client_python's
one-method ``Collector``): the collector opens its sinks in pipeline order, submits batches,
persists them at each checkpoint and closes them at shutdown, without knowing what each one is.

A sink never blocks the event loop in :meth:`Sink.submit`; what it cannot take now it keeps (in
memory, in a spool, in the ledger's pending rows) and says why in :meth:`Sink.health`.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class Sink(Protocol):
    """A stage after the engine: the archive, the ledger, InfluxDB, /metrics."""

    name: str  # in logs and in the order below: "archive", "ledger", "influx", "metrics"

    async def open(self) -> None:
        """Ready to take batches (files found, servers bound, databases created)."""

    def submit(self, batch: list) -> None:
        """Take one batch of this sink's items (records, episodes, line-protocol lines); never blocks."""

    async def persist(self) -> None:
        """Make everything submitted so far durable; raises :class:`~ptmon.errors.SinkError` or
        ``OSError`` when it cannot now (the caller reports it and tries again)."""

    async def close(self) -> None:
        """Persist what can be within the sink's deadline and release what it holds."""

    def health(self) -> str | None:
        """None while the sink takes everything; otherwise why it does not (one line)."""
