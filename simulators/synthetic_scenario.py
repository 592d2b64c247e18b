"""What happens in the synthetic district besides normal operation: street outages, degraded
streets, silent, flapping and failing devices (:class:`Scenario`, read by
:class:`ptmon.simulators.synthetic.TrafficGenerator`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ptmon.timebase import US_PER_S

from .faults import DeviceFault


@dataclass(frozen=True, kw_only=True)
class Outage:
    """Devices of ``street`` (of ``contract``, or of every contract) send nothing in ``[from_us, to_us)``."""

    street: str
    from_us: int
    to_us: int
    contract: str | None = None


@dataclass(frozen=True, kw_only=True)
class Degradation:
    """A degraded street: success probabilities of ``contract`` × ``street`` multiplied by ``factor``."""

    contract: str
    street: str
    factor: float


@dataclass(frozen=True, kw_only=True, eq=False)
class Silence:
    """Devices (registry indices) that send nothing in ``[from_us, to_us)``: a dead gateway, a broken device."""

    devices: np.ndarray
    from_us: int
    to_us: int


@dataclass(frozen=True, kw_only=True, eq=False)
class Flapping:
    """Devices that go silent for the second half of every ``period_us`` (counted from the epoch)."""

    devices: np.ndarray
    period_us: int


@dataclass(frozen=True, kw_only=True, eq=False)
class SuccessWindow:
    """Success probabilities of ``devices`` multiplied by ``factor`` for heartbeats due in ``[from_us, to_us)``."""

    devices: np.ndarray
    factor: float
    from_us: int
    to_us: int


@dataclass(frozen=True, kw_only=True)
class Scenario:
    """What happens in the synthetic district besides normal operation.

    ``silent_fraction`` of the devices (chosen by the seed) never report; ``loss`` is the
    share of other messages lost on the way; ``jitter`` the largest lateness as a share of
    the period. With ``lead_in`` every device also sends its last heartbeat before
    ``start_us`` (at most one period before it), so the window starts as a monitor that had
    been running all along would see it: devices online and counter baselines set.
    ``silences``, ``flapping``, ``success_windows`` and ``never_report`` (registry indices)
    act on chosen devices (``simulators.scenario`` builds them from a scenario file).
    """

    seed: int = 1
    outages: tuple[Outage, ...] = ()
    degraded: tuple[Degradation, ...] = ()
    silent_fraction: float = 0.0
    loss: float = 0.0
    jitter: float = 0.03
    lead_in: bool = False
    silences: tuple[Silence, ...] = ()
    flapping: tuple[Flapping, ...] = ()
    success_windows: tuple[SuccessWindow, ...] = ()
    never_report: tuple[int, ...] = ()
    faults: tuple[DeviceFault, ...] = ()  # blind and degraded cameras, stuck sensors (simulators.faults)

    def __post_init__(self) -> None:
        for name in ("silent_fraction", "loss"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"Scenario.{name} must be in [0, 1): {getattr(self, name)}")
        if not 0.0 <= self.jitter <= 0.5:
            raise ValueError(f"Scenario.jitter must be in [0, 0.5]: {self.jitter}")
        for w in (*self.outages, *self.silences, *self.success_windows):
            if w.to_us <= w.from_us:
                raise ValueError(f"{type(w).__name__}: to_us must be after from_us")
        for d in (*self.degraded, *self.success_windows):
            if not 0.0 <= d.factor <= 1.0:
                raise ValueError(f"{type(d).__name__}: factor must be in [0, 1]: {d.factor}")
        if any(f.period_us < 2 * US_PER_S for f in self.flapping):
            raise ValueError("Flapping: period_us must be at least 2 s")
