"""What the engine emits, and to whom: the listener protocols.

Listeners are plain objects with the one method each protocol names; the engine calls them in
time order with its samples, counter deltas and status changes (the tally, the ledger, the
alerting and anomaly stages, the metrics). Arrays passed are the engine's to reuse unless a
protocol says they are fresh copies.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


class EngineListener(Protocol):
    """What the engine emits. Arrays are fresh copies the listener may keep."""

    def on_sample(self, contract: int, t: int, online: np.ndarray, expected: np.ndarray) -> None:
        """A sample of ``contract`` at instant ``t``: online and expected devices per street."""

    def on_deltas(self, slot_start: int, sums: np.ndarray) -> None:
        """Counter deltas [group, counter] received in the tick slot starting at ``slot_start``."""

    def on_first_seen(self, day: int, counts: np.ndarray) -> None:
        """Devices per group heard from for the first time on Shanghai day ``day``."""


class DeviceListener(Protocol):
    def on_device_sample(self, contract: int, t: int, online: np.ndarray, expected: np.ndarray) -> None:
        """Masks over the contract's registry slice at sample ``t``; read-only, valid during the call."""


class DeltaListener(Protocol):
    def on_device_deltas(self, t: np.ndarray, devices: np.ndarray, deltas: np.ndarray) -> None:
        """Applied heartbeats of distinct devices (each device's messages in arrival order across
        calls): receive times, registry rows and counter deltas [row, COUNTERS] (zero outside the
        lease, and for a device's first message, which only sets its baseline). Read-only."""


class UnexemptedListener(Protocol):
    def on_unexempted_sample(self, contract: int, t: int, online: np.ndarray, expected: np.ndarray) -> None:
        """A sample with exemptions left out: devices under lease (and those of them online) per street."""


class StatusListener(Protocol):
    def on_status(self, contract: int, t: int, changed: np.ndarray, online: np.ndarray) -> None:
        """At sample ``t``: the registry rows of ``contract`` whose online status (heard within
        their timeout, lease and exemptions aside) differs from their previous sample, and the new status."""


class GatewayListener(Protocol):
    def on_gateway(self, t: int, gateway: int, online: bool) -> None:
        """A gateway's status changed (``offline`` is its MQTT Last Will)."""
