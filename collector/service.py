"""``ptmon collect``: the config from file and options, signals, and the collector's run."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import signal
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from .collect import Collector, write_results_csv
from .config import DEFAULT_TOPICS, CollectorConfig, TlsConfig, check_config, load_config
from .errors import UsageError
from .registry import load_registry
from .rules import DEFAULT_RULES_DIR, Rules, load_rules
from .timebase import format_instant

log = logging.getLogger(__name__)


def config_from_args(args: argparse.Namespace) -> CollectorConfig:
    """The config file (if any) with the command line's options laid over it."""
    config = load_config(args.config) if args.config else CollectorConfig()
    top: dict[str, object] = {}
    mqtt: dict[str, object] = {}
    influx: dict[str, object] = {}
    if args.registry:
        top["registry"] = Path(args.registry)
    if args.rules:
        top["rules"] = Path(args.rules)
    if args.data_dir:
        top["data_dir"] = Path(args.data_dir)
    if args.metrics is not None:
        top["metrics_listen"] = args.metrics
    if args.broker:
        mqtt.update(broker_address(args.broker))
    if args.topic or args.street:
        topics = list(args.topic or [])
        topics += [f"putuo/+/{street}/+/hb" for street in args.street or []]
        if args.street:
            topics.append(DEFAULT_TOPICS[1])  # gateway statuses are few: every collector takes them all
        mqtt["topics"] = tuple(topics)
    if args.influx_url:
        influx["url"] = args.influx_url.rstrip("/")
    if args.influx_api:
        influx["api"] = args.influx_api
    return dataclasses.replace(
        config, **top,
        mqtt=dataclasses.replace(config.mqtt, **mqtt),  # type: ignore[arg-type]
        influx=dataclasses.replace(config.influx, **influx),  # type: ignore[arg-type]
    )


def broker_address(url: str) -> dict[str, object]:
    """host, port and tls of an ``mqtt://`` / ``mqtts://`` URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise UsageError(f"--broker must be mqtt://host[:port] or mqtts://host[:port]: {url!r}")
    tls = parts.scheme == "mqtts"
    try:
        port = parts.port or (8883 if tls else 1883)
    except ValueError:
        raise UsageError(f"--broker has a bad port: {url!r}") from None
    return {"host": parts.hostname, "port": port, "tls": TlsConfig() if tls else None}


def check_alert_rules(path: Path | None, rules: Rules) -> str:
    """Load the alert rules (``path``, else alerts.yaml beside the rules) as the collector will; a line
    saying what they are. A bad file raises the ConfigError naming its key."""
    from .alerting.rules import ALERTS_FILE, load_alert_rules

    path = path or rules.directory / ALERTS_FILE
    if not path.is_file():
        return f"alert rules: none at {path} (alerting will be off)"
    alert_rules = load_alert_rules(path, rules)
    return f"alert rules: {len(alert_rules.rules)} in {path}, version {alert_rules.version}"


def run_collect(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    if args.check_config:
        rules = load_rules(config.rules or DEFAULT_RULES_DIR)
        registry = load_registry(config.registry, rules)
        for line in check_config(config):
            print(line)
        print(f"registry: {len(registry):,} devices, version {registry.version}; rules version {rules.version}")
        if config.alerts.enabled:
            print(check_alert_rules(config.alerts.rules_file, rules))
        print("config OK")
        return 0
    kpi_csv = Path(args.kpi_csv) if args.kpi_csv else None
    return asyncio.run(serve(config, kpi_csv=kpi_csv))


async def serve(config: CollectorConfig, *, kpi_csv: Path | None = None, collector: Collector | None = None) -> int:
    """Run until SIGINT/SIGTERM (a second one exits at once); print the month-to-date KPIs."""
    collector = collector or Collector(config)
    for note in collector.notes:
        log.warning("%s", note)
        print(f"ptmon collect: {note}", file=sys.stderr)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if stop.is_set():
            print("ptmon collect: second signal, exiting at once", file=sys.stderr)
            os._exit(130)
        print("ptmon collect: shutting down (again to force)", file=sys.stderr)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    if kpi_csv is not None:
        collector.on_checkpoint = lambda results: write_results_csv(results, kpi_csv)
    started = time.monotonic()
    await collector.run(stop)
    results = collector.month_results()
    if results is not None:
        if kpi_csv is not None:
            write_results_csv(results, kpi_csv)
        print(results.table(collector.registry.rules))
        for a, b in results.gaps:
            log.info("monitoring gap %s — %s", format_instant(a), format_instant(b))
    print(f"ptmon collect: {collector.archive.records:,} records archived in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return 0
