"""The live simulator: the district's devices and gateways over MQTT, in simulated time.

Traffic comes from the same model as the synthetic archives (:mod:`simulators.synthetic`),
one simulated hour at a time; this module paces it against the wall clock (``--speed K``:
simulated time runs K times faster), adds the scenario's bad traffic, and sends every
message through its gateway's MQTT link. Each gateway holds its own connection with
``offline`` as its retained Last Will; a scenario's gateway death drops that connection
abruptly so the broker announces it, exactly as a gateway losing power would.

``--record FILE`` writes what was sent as an archive (``t`` = simulated send time), with
``$ptmon/monitor`` up/down records at the ends of the simulated window, so ``ptmon replay``
of the recording gives the KPIs the scenario implies.

**Sent** means delivered to the broker: at QoS 1 acknowledged by it (PUBACK), at QoS 0 written
to the socket. Only sent messages are counted in :class:`Summary` and recorded. When the
broker goes away the links reconnect by themselves and resend what it had not acknowledged
(:mod:`simulators.link`), so at QoS 1 a broker restart loses nothing the summary calls sent;
what a link could not keep (its backlog full) is counted as dropped. Acknowledgements come
back out of send order across links, so the recording is written in time order up to the
oldest message still undelivered (a watermark), the rest at the end.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import gzip
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ptmon.archive import MONITOR_TOPIC, encode_record
from ptmon.errors import UsageError
from ptmon.lifecycle import ExitRequest, awaited_unless_forced
from ptmon.registry import Registry
from ptmon.timebase import US_PER_S, format_instant

from .link import BrokerAddress, Link, LinkError
from .scenario import Plan
from .synthetic import Traffic, TrafficGenerator

log = logging.getLogger(__name__)

HEARTBEAT, DUPLICATE, REORDERED, UNKNOWN, MALFORMED, STATUS = range(6)
KIND_NAMES = ("heartbeat", "duplicate", "reordered", "unknown_device", "malformed", "gateway_status")
MALFORMED_PAYLOADS = (
    '{"seq":',  # truncated JSON
    "[1, 2, 3]",  # not an object
    '{"reads":"many"}',  # wrong type
    '{"bat":NaN}',  # NaN is not JSON
    '{"reads":1,"read_ok":5}',  # more successes than attempts
    '{"pad":"' + "x" * 5000 + '"}',  # oversize
)
MAX_BATCH = 20_000  # messages per publish round: bounds the lag a round can add
CONNECT_CONCURRENCY = 64
KILL_SETTLE = 2.0  # seconds a dying gateway's link gets to have its last messages acknowledged
RECORD_EVERY = 1.0  # seconds between writes of the recording (each looks at every link's oldest undelivered message)
Row = tuple[int, str, str, int]  # (simulated send time µs, topic, payload, kind): one message, as tagged and recorded


@dataclass(frozen=True, kw_only=True)
class Options:
    """How to run: broker, pace, window, recording, shard."""

    broker: BrokerAddress
    start_us: int
    duration_us: int | None = None  # None: until interrupted
    speed: float = 1.0  # 0: as fast as possible
    qos: int = 0
    record: Path | None = None
    shard: tuple[int, int] = (0, 1)
    client_prefix: str = "ptmon-sim"
    progress_every: float = 2.0
    anchor_wall: float | None = None  # unix time at which simulated time is start_us (default: when sending begins)
    warm_up_us: int = 0  # >0: each device's last heartbeat before start_us, spread evenly over this span before it
    settle_timeout: float = 30.0  # seconds to wait at the end for the broker to acknowledge what was published


@dataclass
class Summary:
    """What a run did, printed at the end."""

    sent: Counter[str] = field(default_factory=Counter)  # delivered (QoS 1: acknowledged by the broker), by kind
    not_sent: int = 0  # for a gateway the scenario had killed: its devices are silent
    dropped: int = 0  # a link's backlog was full while the broker was away
    unacknowledged: int = 0  # still undelivered at the end, or when a gateway was killed: not counted as sent
    resent: int = 0  # unacknowledged QoS 1 messages written again (DUP) after a reconnect
    reconnects: int = 0  # links reconnected after the broker went away
    gateways_killed: int = 0
    gateways_revived: int = 0
    sim_start_us: int = 0
    sim_reached_us: int = 0
    wall_seconds: float = 0.0
    max_lag_s: float = 0.0
    interrupted: bool = False

    def rate(self) -> float:
        return sum(self.sent.values()) / self.wall_seconds if self.wall_seconds else 0.0

    def lines(self, plan: Plan) -> list[str]:
        out = [
            f"simulated {format_instant(self.sim_start_us)} — {format_instant(self.sim_reached_us)}"
            f" in {self.wall_seconds:.1f} s wall ({'interrupted' if self.interrupted else 'done'})",
            f"sent {sum(self.sent.values()):,} messages, {self.rate():,.0f} msg/s; "
            f"max lag behind schedule {self.max_lag_s:.2f} s",
            "  by kind: " + ", ".join(f"{k} {v:,}" for k, v in sorted(self.sent.items())),
        ]
        if self.not_sent:
            out.append(f"  not sent (gateway link down): {self.not_sent:,}")
        out.append(f"links: reconnects {self.reconnects:,}, resent {self.resent:,}, dropped {self.dropped:,}, "
                   f"unacknowledged {self.unacknowledged:,}")
        out.append(f"scenario {plan.name!r}: gateways killed {self.gateways_killed}, revived {self.gateways_revived}")
        out += [f"  {line}" for line in plan.summary]
        return out


class Recorder:
    """What was sent, as an archive ``ptmon replay`` reads. Failing to write it (a full disk) is a
    UsageError naming the file, which ends the run: the simulator's other OSErrors are the broker's."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with self._writing():
            self._out = gzip.open(path, "wb", compresslevel=1)  # noqa: SIM115 - open for the whole run, closed by close()

    def write(self, rows: list[Row]) -> None:
        with self._writing():
            self._out.write(b"".join([encode_record(row[0] / US_PER_S, row[1], row[2]) for row in rows]))

    def monitor(self, t_us: int, state: str) -> None:
        self.write([(t_us, MONITOR_TOPIC, state, -1)])

    def close(self) -> None:
        with self._writing():
            self._out.close()

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        try:
            yield
        except OSError as exc:
            raise UsageError(f"--record {self.path}: cannot write the recording: {exc.strerror or exc}; "
                             "what it holds is cut short") from exc


AnchorSource = Callable[[int], Awaitable[float]]


class Simulator:
    """One process's share of the district (``--shard i/n``: whole gateways per shard).

    ``anchor_source``, when given, holds the window back: the warm-up (every device's last
    heartbeat before the start) is sent at once, then ``await anchor_source(delivered)`` (with
    the number of messages delivered so far) gives the unix time at which simulated time is
    ``start_us``. A collector sharing the simulated clock can so take the whole warm-up in,
    however long its broker needs, before the window begins.
    """

    def __init__(self, registry: Registry, plan: Plan, options: Options, *,
                 anchor_source: AnchorSource | None = None) -> None:
        self.registry, self.plan, self.options = registry, plan, options
        traffic = replace(plan.traffic, lead_in=True) if options.warm_up_us else plan.traffic
        self.generator = TrafficGenerator(registry, registry.rules, traffic)
        self.lead_us = int(self.generator.period.max())
        self.anchor_source = anchor_source
        self.anchor_wall = options.anchor_wall
        index, count = options.shard
        self.in_shard = registry.gateway % count == index
        # The warm-up's messages go out evenly spread (by rank, in time order): one per device at most.
        self.lead_in_total = max(1, int((self.in_shard & ~self.generator.silent).sum()))
        self.lead_in_sent = 0
        gateways = sorted(set(registry.gateway[self.in_shard].tolist()))
        self.gateway_names = registry.gateways
        self.link_of_gateway = {g: n for n, g in enumerate(gateways)}
        self.links = [self._gateway_link(g) for g in gateways]
        self.rogue = Link(options.broker, f"{options.client_prefix}-rogue-{index}", qos=options.qos,
                          on_delivered=self._delivered)
        self.summary = Summary(sim_start_us=options.start_us, sim_reached_us=options.start_us)
        self.stop = asyncio.Event()
        self.forced = asyncio.Event()  # a second signal: shutdown stops waiting for the broker's acknowledgements
        mine = [d for d in plan.gateway_deaths if d.gateway in {self.gateway_names[g] for g in gateways}]
        self.deaths = sorted(
            [(d.at_us, "kill", d) for d in mine] + [(d.revive_us, "revive", d) for d in mine if d.revive_us is not None],
            key=lambda e: e[0],
        )
        self.recorder = Recorder(options.record) if options.record else None
        self._unrecorded: list[Row] = []  # delivered, waiting for the watermark to pass them
        self._recorded_at = time.monotonic()

    def _gateway_link(self, g: int) -> Link:
        name = self.gateway_names[g] or f"direct-{self.options.shard[0]}"
        will = (f"putuo/gw/{name}/status", b"offline", 1, True) if self.gateway_names[g] else None
        return Link(self.options.broker, f"{self.options.client_prefix}-{name}", qos=self.options.qos, will=will,
                    on_connect=self._announce if will else None, on_delivered=self._delivered)

    # --- what was sent ------------------------------------------------------------------

    def _announce(self, link: Link) -> None:
        """A gateway's birth message on every connect (first, after a broker restart, revived)."""
        assert link.will is not None
        t = self.summary.sim_reached_us
        link.publish([(link.will[0], b"online")], retain=True, tags=[(t, link.will[0], "online", STATUS)])

    def _delivered(self, tags: list[Row]) -> None:
        """Messages the broker now has (QoS 1: acknowledged): counted as sent and recorded."""
        kinds = Counter(tag[3] for tag in tags)
        for kind, count in kinds.items():
            self.summary.sent[KIND_NAMES[kind]] += count
        if self.recorder:
            self._unrecorded += tags

    def _record(self, *, final: bool = False) -> None:
        """Write delivered messages in time order, up to the oldest one still undelivered."""
        if not self.recorder or not self._unrecorded:
            return
        if not final and time.monotonic() - self._recorded_at < RECORD_EVERY:
            return
        self._recorded_at = time.monotonic()
        self._unrecorded.sort()  # by time, then topic and payload: the same run gives the same bytes
        cut = len(self._unrecorded)
        if not final:
            oldest = [tag[0] for link in (*self.links, self.rogue) if (tag := link.oldest_pending_tag()) is not None]
            if oldest:
                watermark = min(oldest)
                cut = bisect.bisect_left(self._unrecorded, (watermark,))  # the first row at or after it
        self.recorder.write(self._unrecorded[:cut])
        del self._unrecorded[:cut]

    # --- lifecycle ----------------------------------------------------------------------

    async def run(self, progress: Callable[[Summary], None] | None = None) -> Summary:
        began = time.monotonic()
        await self._connect_all()
        if self.recorder:
            self.recorder.monitor(self.options.start_us - self.options.warm_up_us, "up")
        reporter = asyncio.create_task(self._report(progress)) if progress else None
        try:
            await self._play()
        finally:
            if reporter:
                reporter.cancel()
            self.summary.wall_seconds = time.monotonic() - began
            self.summary.interrupted = self.stop.is_set()
            await self._shutdown()
        return self.summary

    async def _connect_all(self) -> None:
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

        async def connect(link: Link) -> None:
            async with gate:
                await link.connect()  # a gateway announces itself in its on_connect

        self.summary.sim_reached_us = self.options.start_us - self.options.warm_up_us
        await asyncio.gather(*(connect(link) for link in self.links), connect(self.rogue))

    async def _shutdown(self) -> None:
        """Gateways announce ``offline``; wait for the broker to have everything; record; disconnect."""
        t = self.summary.sim_reached_us
        for link in self.links:
            if link.accepting and link.will is not None:
                link.publish([(link.will[0], b"offline")], retain=True, tags=[(t, link.will[0], "offline", STATUS)])
        links = [*self.links, self.rogue]
        settle = 0.0 if self.force_exit else self.options.settle_timeout
        closing = asyncio.gather(*(link.close(settle) for link in links), return_exceptions=True)
        if not await awaited_unless_forced(closing, self.forced):  # forced while waiting: close at once
            closing = asyncio.gather(*(link.close(0.0) for link in links), return_exceptions=True)
        results = await closing
        self.summary.unacknowledged += sum(r for r in results if isinstance(r, int))
        self.summary.dropped = sum(link.dropped for link in links)
        self.summary.resent = sum(link.resent for link in links)
        self.summary.reconnects = sum(link.reconnects for link in links)
        if self.recorder:
            self._record(final=True)
            self.recorder.monitor(t, "down")
            self.recorder.close()

    @property
    def force_exit(self) -> bool:
        return self.forced.is_set()

    @force_exit.setter
    def force_exit(self, value: bool) -> None:
        if value:
            self.forced.set()

    # --- pacing -------------------------------------------------------------------------

    def _sim_now(self, wall0: float) -> float:
        if self.options.speed <= 0:
            return float("inf")
        if self.anchor_source is not None:  # holding the window back: only the warm-up is due
            return float(self.options.start_us - 1)
        if self.anchor_wall is not None:  # shared with a collector on the same simulated clock
            return self.options.start_us + (time.time() - self.anchor_wall) * self.options.speed * US_PER_S
        return self.options.start_us - self.options.warm_up_us + (time.monotonic() - wall0) * self.options.speed * US_PER_S

    async def _take_anchor(self) -> None:
        """The warm-up is out: once the broker has it all, ask when the window starts."""
        assert self.anchor_source is not None
        links = [*self.links, self.rogue]
        await asyncio.gather(*(link.drain() for link in links if link.accepting), return_exceptions=True)
        self._record(final=True)
        source, self.anchor_source = self.anchor_source, None
        waiter = asyncio.ensure_future(source(sum(self.summary.sent.values())))
        stopper = asyncio.ensure_future(self.stop.wait())
        await asyncio.wait([waiter, stopper], return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if not waiter.done():
            waiter.cancel()
            return
        self.anchor_wall = waiter.result()

    async def _play(self) -> None:
        end = self.options.start_us + self.options.duration_us if self.options.duration_us else 2**62
        wall0 = time.monotonic()
        for number, chunk in enumerate(self.generator.chunks(self.options.start_us, end)):
            t, topics, payloads, kinds, links = self._chunk_rows(chunk, number)
            i = 0
            while i < len(t):
                if self.stop.is_set():
                    return
                if self.anchor_source is not None and t[i] >= self.options.start_us:
                    await self._take_anchor()
                    continue
                now = self._sim_now(wall0)
                await self._gateway_events(int(min(now, t[i])))  # a kill or revive due before the next message
                next_event = self.deaths[0][0] if self.deaths else 2**62
                # send what is due, but never past the next gateway event: messages keep their order around it
                j = min(int(np.searchsorted(t, now, side="right")), int(np.searchsorted(t, next_event, side="left")),
                        i + MAX_BATCH)
                if j <= i:  # nothing due yet (a shared clock may start behind what the warm-up sent)
                    wait = (min(int(t[i]), next_event) - now) / US_PER_S / self.options.speed
                    await self._sleep(min(max(wait, 0.001), 0.25))
                    continue
                await self._send(t[i:j], topics[i:j], payloads[i:j], kinds[i:j], links[i:j])
                if now != float("inf") and self.anchor_source is None:  # not while holding for the anchor
                    self.summary.max_lag_s = max(self.summary.max_lag_s, (now - t[i]) / US_PER_S / self.options.speed)
                i = j
        if self.anchor_source is not None and not self.stop.is_set():
            await self._take_anchor()  # a window without a message still starts when told
        await self._gateway_events(end)
        if self.options.speed > 0:  # let simulated time reach the window's end
            while not self.stop.is_set() and self._sim_now(wall0) < end:
                await self._sleep(min((end - self._sim_now(wall0)) / US_PER_S / self.options.speed, 0.25))
        if not self.stop.is_set():
            self.summary.sim_reached_us = end

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), seconds)

    def _chunk_rows(self, chunk: Traffic, number: int) -> tuple[np.ndarray, list[str], list[str], np.ndarray, np.ndarray]:
        """One chunk's messages for this shard, with the scenario's bad traffic, sorted by send time."""
        chunk = chunk.take(self.in_shard[chunk.device])
        payloads = self.generator.payloads(chunk)
        topics = self.generator.topics[chunk.device].tolist()
        rogue = len(self.links)
        link_index = np.array([self.link_of_gateway[g] for g in self.registry.gateway[chunk.device].tolist()], dtype=np.int64)
        t, kinds = chunk.t.copy(), np.full(len(chunk), HEARTBEAT, dtype=np.int8)
        if self.options.warm_up_us:
            # As if the district had been running: each device's last heartbeat before the start, in time
            # order and evenly spread over the warm-up. Spread by time instead, the short-period devices'
            # heartbeats (cameras: a minute) would all crowd into its last instants, a burst a slow
            # broker delivers late, so that cameras look offline when the window starts.
            start, warm = self.options.start_us, self.options.warm_up_us
            early = np.flatnonzero(t < start)  # a prefix: the chunk is in time order
            rank = self.lead_in_sent + np.arange(len(early))
            t[early] = start - warm + np.minimum(rank, self.lead_in_total - 1) * warm // self.lead_in_total
            self.lead_in_sent += len(early)
        rng = np.random.default_rng([self.plan.traffic.seed & 0xFFFFFFFF, number, 0x1A])
        inj = self.plan.injections
        extra_t, extra_topics, extra_payloads, extra_kinds, extra_links = [], [], [], [], []
        # Bad traffic belongs to the window: the warm-up is what the devices last said before it.
        lo, hi = (max(int(chunk.t.min()), self.options.start_us), int(chunk.t.max()) + 1) if len(chunk) else (0, 0)
        if len(chunk):
            if inj.duplicate_fraction:
                picked = np.flatnonzero(rng.random(len(chunk)) < inj.duplicate_fraction)
                extra_t.append(t[picked] + (rng.random(len(picked)) * 2 * US_PER_S).astype(np.int64))
                extra_topics += [topics[k] for k in picked.tolist()]
                extra_payloads += [payloads[k] for k in picked.tolist()]
                extra_kinds.append(np.full(len(picked), DUPLICATE, np.int8))
                extra_links.append(link_index[picked])  # a redelivery comes through the device's gateway
            if inj.reorder_fraction:
                picked = np.flatnonzero(rng.random(len(chunk)) < inj.reorder_fraction)
                t[picked] += inj.reorder_delay_us  # sent late: a later message of the device may arrive first
                kinds[picked] = REORDERED
            minutes = max(0, hi - lo) / (60 * US_PER_S)
            for rate, kind in ((inj.unknown_per_minute, UNKNOWN), (inj.malformed_per_minute, MALFORMED)):
                count = int(rng.poisson(rate * minutes)) if rate else 0
                if not count:
                    continue
                extra_t.append(lo + (rng.random(count) * (hi - lo)).astype(np.int64))
                extra_kinds.append(np.full(count, kind, np.int8))
                extra_links.append(np.full(count, rogue, np.int64))
                if kind == UNKNOWN:
                    streets, contracts = self.registry.rules.street_codes(), [c.code for c in self.registry.rules.contracts]
                    extra_topics += [
                        f"putuo/{contracts[rng.integers(len(contracts))]}/{streets[rng.integers(len(streets))]}/ghost-{number}-{k}/hb"
                        for k in range(count)]
                    extra_payloads += ['{"seq":1}'] * count
                else:
                    rows = rng.integers(0, len(chunk), count)
                    extra_topics += [topics[k] for k in rows.tolist()]
                    extra_payloads += [MALFORMED_PAYLOADS[k % len(MALFORMED_PAYLOADS)] for k in range(count)]
        if extra_t:
            t = np.concatenate([t, *extra_t])
            kinds = np.concatenate([kinds, *extra_kinds])
            link_index = np.concatenate([link_index, *extra_links])
            topics, payloads = topics + extra_topics, payloads + extra_payloads
        order = np.argsort(t, kind="stable")
        return (t[order], [topics[k] for k in order.tolist()], [payloads[k] for k in order.tolist()], kinds[order],
                link_index[order])

    async def _send(self, t: np.ndarray, topics: list[str], payloads: list[str], kinds: np.ndarray, links: np.ndarray) -> None:
        by_link: dict[int, list[int]] = {}
        for row, link in enumerate(links.tolist()):
            by_link.setdefault(link, []).append(row)
        touched = []
        times, kind_list = t.tolist(), kinds.tolist()
        self.summary.sim_reached_us = int(t[-1])
        for n, rows in by_link.items():
            link = self.rogue if n == len(self.links) else self.links[n]
            if not link.accepting:  # killed by the scenario: the gateway's devices are silent
                self.summary.not_sent += len(rows)
                continue
            link.publish([(topics[r], payloads[r].encode()) for r in rows],
                         tags=[(times[r], topics[r], payloads[r], kind_list[r]) for r in rows])
            touched.append(link)
        self._record()
        await asyncio.gather(*(link.drain() for link in touched), return_exceptions=True)

    async def _gateway_events(self, until_us: int) -> None:
        """Kill or revive gateway links whose moment has come."""
        while self.deaths and self.deaths[0][0] <= until_us:
            at, action, death = self.deaths.pop(0)
            link = self.links[self.link_of_gateway[self.gateway_names.index(death.gateway)]]
            status = f"putuo/gw/{death.gateway}/status"
            self.summary.sim_reached_us = max(self.summary.sim_reached_us, at)
            if action == "kill":
                # What the broker has not acknowledged when the power goes is of unknown fate: give
                # it a moment, so the recording and the broker agree on what was sent.
                await link.settle(KILL_SETTLE)
                self.summary.unacknowledged += link.kill()
                self.summary.gateways_killed += 1
                if self.recorder:  # the Last Will, published by the broker
                    self._unrecorded.append((at, status, "offline", STATUS))
            else:
                try:
                    await link.connect()  # announces "online" in its on_connect
                except (TimeoutError, OSError, LinkError) as exc:
                    log.warning("gateway %s could not reconnect: %s", death.gateway, exc)
                    continue
                self.summary.gateways_revived += 1

    async def _report(self, progress: Callable[[Summary], None]) -> None:
        while True:
            await asyncio.sleep(self.options.progress_every)
            progress(self.summary)


def install_signal_handlers(simulator: Simulator) -> None:
    """First SIGINT/SIGTERM: stop cleanly (flush, close links). Second: stop waiting for the broker."""
    ExitRequest(stopping="ptmon simulate: stopping (again to force)", forcing="ptmon simulate: forced exit",
                should_exit=simulator.stop, on_force=lambda: setattr(simulator, "force_exit", True)).install()
