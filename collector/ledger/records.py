"""Rows of the ledger that other parts read: KPI hours and days, message counts, exemptions,
device offline episodes and alert emails.

Instants are int64 µs since the Unix epoch, like everywhere in the engine; a window is the
half-open range ``[start, end)``.
"""

from __future__ import annotations

from dataclasses import dataclass

EXEMPTION_SCOPES = ("device", "street", "gateway")


@dataclass(frozen=True, kw_only=True)
class Exemption:
    """An approved window in which some devices leave the denominator (docs/domain.md, Expected)."""

    id: int
    scope: str  # one of EXEMPTION_SCOPES
    target: str  # a device id, a street code or a gateway id
    start: int
    end: int
    reason: str
    approver: str
    created_at: int  # when it was recorded; a window that began earlier was applied late
    revoked_at: int | None = None
    revoked_by: str | None = None
    revoke_reason: str | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def covers(self, t: int) -> bool:
        return self.active and self.start <= t < self.end


@dataclass(frozen=True, kw_only=True)
class Episode:
    """One offline episode of one expected device: offline from ``start`` until ``end``.

    ``end`` is None while the device is still offline. ``start`` is when its last heartbeat
    timed out (or, for a device never heard from, the first sample that found it offline);
    ``end`` is the receive time of the heartbeat that brought it back, or the instant it
    stopped being expected (retired, exempted).
    """

    device: str
    contract: str
    street: str
    type: str
    community: str
    gateway: str
    start: int
    end: int | None = None
    restored: bool = False  # True when it ended by a heartbeat (a repair), not by leaving the denominator

    def seconds(self, until: int) -> float:
        """Length in seconds, an open episode counted up to ``until``."""
        end = self.end if self.end is not None else until
        return max(0, end - self.start) / 1_000_000

@dataclass(frozen=True, kw_only=True)
class HourRow:
    hour: int
    contract: str
    street: str
    samples: int
    online: int
    expected: int
    counters: tuple[int, ...]  # in COUNTERS order
    exemptions: str = ""
    rules_version: str = ""
    registry_version: str = ""


@dataclass(frozen=True, kw_only=True)
class CountRow:
    hour: int
    contract: str  # '' with street '': messages of no registry device
    street: str
    kind: str
    n: int


@dataclass(frozen=True, kw_only=True)
class DayRow:
    day: int
    contract: str
    street: str
    samples: int
    online_devices: int
    rules_version: str = ""
    registry_version: str = ""


@dataclass(frozen=True, kw_only=True)
class AlertMessage:
    """One alert email in the outbox."""

    id: int
    event_key: str
    kind: str
    event: str
    contract: str
    street: str
    kpi: str
    at: int
    subject: str
    recipients: tuple[str, ...]
    message: bytes
    status: str
    attempts: int
    last_error: str | None
    sent_at: int | None
