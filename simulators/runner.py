"""``ptmon simulate``: command-line arguments to a running :class:`~simulators.simulate.Simulator`."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import time
from pathlib import Path

from ptmon.credentials import redact
from ptmon.errors import UsageError
from ptmon.registry import load_registry
from ptmon.rules import load_rules, parse_duration
from ptmon.timebase import US_PER_S, format_instant, parse_instant, seconds_to_us

from .link import BrokerAddress, LinkError
from .scenario import load_scenario
from .simulate import Options, Simulator, Summary, install_signal_handlers


def _options(args: argparse.Namespace) -> Options:
    m = re.fullmatch(r"(\d+)/(\d+)", args.shard)
    if not m or not 0 <= int(m.group(1)) < int(m.group(2)):
        raise UsageError(f"--shard must be I/N with 0 <= I < N, got {args.shard!r}")
    if args.speed < 0:
        raise UsageError(f"--speed must be ≥ 0 (0: as fast as possible), got {args.speed}")
    duration = None
    if args.duration is not None:
        seconds = parse_duration(args.duration)
        if not seconds or seconds <= 0:
            raise UsageError(f"--duration must be a positive duration such as 90s, 15m, 6h, 1d: {args.duration!r}")
        duration = seconds * US_PER_S
    if args.speed == 0 and duration is None:
        raise UsageError("--speed 0 (as fast as possible) needs --duration")
    try:
        broker = BrokerAddress.parse(args.broker, args.username, os.environ.get("PTMON_MQTT_PASSWORD"), args.ca)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if broker.ca_file and not broker.tls:  # TLS was meant: plain text would send the password in clear
        raise UsageError(f"--ca is for a TLS broker, and {redact(args.broker)} is not one: give mqtts://HOST:PORT")
    if broker.tls:  # the CA file read now, so that a bad one is not told as a broker out of reach
        try:
            broker.ssl_context()
        except OSError as exc:  # ssl.SSLError too: not a PEM certificate
            what = f"--ca {broker.ca_file}" if broker.ca_file else "the system's CA certificates"
            raise UsageError(f"{what}: cannot be used: {exc.strerror or exc}") from None
    start = parse_instant(args.start) if args.start else seconds_to_us(time.time()) // US_PER_S * US_PER_S
    return Options(broker=broker, start_us=start, duration_us=duration, speed=args.speed, qos=args.qos,
                   anchor_wall=_anchor(args), warm_up_us=_warm_up(args),
                   record=Path(args.record) if args.record else None, shard=(int(m.group(1)), int(m.group(2))))


def _anchor(args: argparse.Namespace) -> float | None:
    anchor = getattr(args, "anchor", None)
    if anchor is None or anchor == "-":
        return None
    try:
        return float(anchor)
    except ValueError:
        raise UsageError(f"--anchor must be a unix time or '-' (read from standard input): {anchor!r}") from None


async def anchor_from_stdin(delivered: int) -> float:
    """``--anchor -``: say ``ready N`` (messages delivered so far) on stdout, read the anchor from stdin."""
    print(f"ready {delivered}", flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    line = (await reader.readline()).decode().strip()
    try:
        return float(line)
    except ValueError:
        raise UsageError(f"--anchor -: expected a unix time on standard input, got {line!r}") from None


def _warm_up(args: argparse.Namespace) -> int:
    if not getattr(args, "warm_up", None):
        return 0
    seconds = parse_duration(args.warm_up)
    if not seconds or seconds <= 0:
        raise UsageError(f"--warm-up must be a positive duration such as 60s or 5m: {args.warm_up!r}")
    return seconds * US_PER_S


class _Progress:
    """One line every few seconds: simulated time reached, messages sent, rate, lag."""

    def __init__(self) -> None:
        self.began = time.monotonic()
        self.last_sent, self.last_at = 0, self.began

    def __call__(self, summary: Summary) -> None:
        now, sent = time.monotonic(), sum(summary.sent.values())
        rate = (sent - self.last_sent) / max(now - self.last_at, 1e-9)
        self.last_sent, self.last_at = sent, now
        print(f"simulate: at {format_instant(summary.sim_reached_us)}, sent {sent:,}, {rate:,.0f} msg/s, "
              f"max lag {summary.max_lag_s:.2f} s", file=sys.stderr, flush=True)


def run_simulation(args: argparse.Namespace) -> int:
    options = _options(args)
    rules = load_rules(args.rules)
    registry = load_registry(args.registry, rules)
    end = options.start_us + (options.duration_us or 7 * 86_400 * US_PER_S)
    plan = load_scenario(args.scenario, registry, options.start_us, end, args.seed)

    from_stdin = getattr(args, "anchor", None) == "-"

    async def main() -> Summary:
        simulator = Simulator(registry, plan, options, anchor_source=anchor_from_stdin if from_stdin else None)
        install_signal_handlers(simulator)
        return await simulator.run(_Progress())

    try:
        summary = asyncio.run(main())
    except (TimeoutError, OSError, LinkError) as exc:
        raise UsageError(f"cannot reach the broker {redact(args.broker)}: {exc}") from exc
    for line in summary.lines(plan):
        print(line, file=sys.stderr)
    if from_stdin:
        print(f"done {sum(summary.sent.values())}", flush=True)
    return 130 if summary.interrupted else 0
