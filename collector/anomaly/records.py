"""What an anomaly is, as the ledger, InfluxDB, alerts and the report see it."""

from __future__ import annotations

from dataclasses import dataclass

KIND_NAMES = {"blind": "失明 (blind)", "degraded": "劣化 (degraded)", "stuck": "卡死 (stuck)"}


@dataclass(frozen=True, kw_only=True)
class Anomaly:
    """One anomaly of one device, as far as one month holds it.

    ``start`` is the receive time of the first message that began the evidence, ``detected`` the
    one that raised it, ``end`` the one that cleared it (None: still open). The counts are those of
    its messages within ``month`` (YYYY-MM, Shanghai): attempts (reads for a sensor) and successes
    counted, and what the device's baseline expected of them over the same messages.
    """

    device: str
    kind: str  # blind, degraded, stuck
    contract: str
    street: str
    type: str
    community: str
    gateway: str
    start: int  # µs
    detected: int  # µs
    end: int | None  # µs
    month: str
    attempts: float
    successes: float
    expected_attempts: float
    expected_successes: float
    event: str = ""  # what made this record: raised, cleared, month_end ("" : a view of an open one)

    @property
    def missing_attempts(self) -> float:
        """Attempts (captures) the device should have made and did not: what a blind camera costs."""
        return max(0.0, self.expected_attempts - self.attempts)

    @property
    def missing_successes(self) -> float:
        """Successes below what the baseline expected of the attempts made (degraded, stuck)."""
        return max(0.0, self.expected_successes - self.successes)

    def key(self) -> tuple[str, str, int, str]:
        return (self.device, self.kind, self.start, self.month)
