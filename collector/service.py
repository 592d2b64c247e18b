"""``ptmon collect``: the config from file and options, signals, and the collector's run."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from . import kernels
from .collect import Collector, write_results_csv
from .config import (
    INFLUX_PASSWORD_ENV,
    MQTT_PASSWORD_ENV,
    CollectorConfig,
    TlsConfig,
    check_config,
    load_config,
    with_overrides,
)
from .credentials import parse_broker_url, redact, split_credentials
from .errors import StorageGone, UsageError
from .ledger.access import refuse_read_only
from .lifecycle import FORCED_EXIT_STATUS, ExitRequest
from .outputs import output_dir, output_file
from .partition import partitioned_config, restrict_registry
from .registry import load_registry
from .rules import DEFAULT_RULES_DIR, Rules, load_rules
from .snapshots import month_code
from .timebase import US_PER_S, SimulatedClock, format_instant, month_bounds, parse_instant

log = logging.getLogger(__name__)


# The option that sets each key, so an override's error names what the user typed.
OPTION_OF_KEY = {"registry": "--registry", "rules": "--rules", "data_dir": "--data-dir", "metrics_listen": "--metrics",
                 "mqtt.host": "--broker", "mqtt.port": "--broker", "mqtt.tls": "--broker", "mqtt.username": "--broker",
                 "mqtt.topics": "--topic", "streets": "--street", "influx.api": "--influx-api", "influx.url": "--influx-url",
                 "influx.username": "--influx-url", "influx.org": "--influx-api"}


def config_from_args(args: argparse.Namespace) -> CollectorConfig:
    """The config file (if any) with the command line's options laid over it, validated by the
    same model as the file (an override's error names its option, the key and the value)."""
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
    if args.topic:
        mqtt["topics"] = tuple(args.topic)
    if args.street:
        top["streets"] = tuple(args.street)  # a partition: its topics, registry rows, tagged storage
    if args.influx_api:
        influx["api"] = args.influx_api
    if args.influx_url:
        influx.update(influx_address(args.influx_url, str(influx.get("api", config.influx.api))))
    return partitioned_config(with_overrides(config, {**top, "mqtt": mqtt, "influx": influx}, OPTION_OF_KEY))


def broker_address(url: str) -> dict[str, object]:
    """host, port and tls of an ``mqtt://`` / ``mqtts://`` URL, and the user and password it holds.

    ``mqtt://user:password@host`` logs in as ``user``; ``mqtt://user@host`` takes the password from
    $PTMON_MQTT_PASSWORD. The password is taken out of the URL and never shown.
    """
    try:
        broker = parse_broker_url(url)
    except ValueError as exc:
        raise UsageError(f"--broker {redact(url)!r}: {exc}") from None
    address: dict[str, object] = {"host": broker.host, "port": broker.port, "tls": TlsConfig() if broker.secure else None}
    if broker.username is not None:
        address["username"] = broker.username
        address["password"] = broker.password if broker.password is not None \
            else os.environ.get(MQTT_PASSWORD_ENV) or None
    return address


def influx_address(url: str, api: str) -> dict[str, object]:
    """The InfluxDB base URL without user info, and (v1) the user and password it held.

    ``http://user:password@host:8086`` authenticates as ``user`` with the v1 API; the v2 API takes a
    token ($PTMON_INFLUX_TOKEN), so credentials in its URL are refused rather than ignored.
    """
    creds = split_credentials(url)
    address: dict[str, object] = {"url": creds.url.rstrip("/")}
    if creds.username is None and creds.password is None:
        return address
    if api == "v2":
        raise UsageError(f"--influx-url holds credentials ({redact(url)}), but the v2 API authenticates with a "
                         "token: put it in $PTMON_INFLUX_TOKEN and give the URL without user:password@")
    if creds.username is None:
        raise UsageError(f"--influx-url has a password but no user name: {redact(url)!r}")
    address["username"] = creds.username
    address["password"] = creds.password if creds.password is not None else os.environ.get(INFLUX_PASSWORD_ENV) or None
    return address


def check_alert_rules(path: Path | None, rules: Rules) -> str:
    """Load the alert rules (``path``, else alerts.yaml beside the rules) as the collector will; a line
    saying what they are. A bad file raises the ConfigError naming its key."""
    from .alerting.rules import ALERTS_FILE, load_alert_rules

    path = path or rules.directory / ALERTS_FILE
    if not path.is_file():
        return f"alert rules: none at {path} (alerting will be off)"
    alert_rules = load_alert_rules(path, rules)
    return "\n".join([f"alert rules: {len(alert_rules.rules)} in {path}, version {alert_rules.version}",
                      *(f"  {line}" for line in alert_rules.describe()),
                      *(f"warning: {line}" for line in alert_rules.warnings())])


def check_anomaly_rules(rules: Rules) -> str:
    """Load anomaly.yaml beside the rules as the collector will; a line saying what it is. A bad
    file raises the ConfigError naming its key."""
    from .anomaly.rules import ANOMALY_FILE, rules_in

    path = rules.directory / ANOMALY_FILE
    if rules_in(rules.directory) is not None:
        return f"anomaly rules: {path}"
    return f"anomaly rules: none at {path} (device health off)"


def _month_kept(t_us: int) -> bool:
    """Whether the month holding ``t_us`` is one the archive and ledger can name."""
    try:
        month_bounds(month_code(t_us))
    except (UsageError, ValueError, OverflowError):
        return False
    return True


def run_collect(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    if args.check_config:
        rules = load_rules(config.rules or DEFAULT_RULES_DIR)
        registry = load_registry(config.registry, rules)
        if config.streets:
            registry = restrict_registry(registry, config.streets)
        for line in check_config(config):
            print(line)
        print(f"registry: {len(registry):,} devices, version {registry.version}; rules version {rules.version}")
        print(f"payload parser and archive scanner: {kernels.in_use()}")  # a stale library is said here, not at the first batch
        print(check_anomaly_rules(rules))
        if config.alerts.enabled:
            print(check_alert_rules(config.alerts.rules_file, rules))
        refuse_read_only(config.ledger_path)  # as the collector's start would
        # where it keeps what it receives: found unwritable at start, every message would wait
        # unacknowledged while the storage-fault retries ran
        output_dir(config.archive_path, "archive")
        output_dir(config.checkpoint_path.parent, "checkpoint")
        if config.influx.url:
            output_dir(config.spool_path, "spool")
        if args.kpi_csv:
            output_file(args.kpi_csv, "--kpi-csv")
        print("config OK")
        return 0
    kpi_csv = output_file(args.kpi_csv, "--kpi-csv") if args.kpi_csv else None  # written at every checkpoint
    clock = time.time
    if getattr(args, "sim_start", None):
        if args.sim_anchor is None or args.sim_speed <= 0:
            raise UsageError("--sim-start needs --sim-anchor and a --sim-speed above 0")
        start = parse_instant(args.sim_start)
        clock = SimulatedClock(start / US_PER_S, args.sim_anchor, args.sim_speed)
        # the archive and ledger name months: a simulated clock that starts, or already is, out of
        # their range (an anchor far in the past runs it on by years) is refused before anything is written
        for instant in (start, int(clock() * US_PER_S)):
            if not _month_kept(instant):
                raise UsageError(f"--sim-start {args.sim_start} --sim-anchor {args.sim_anchor:.15g} --sim-speed "
                                 f"{args.sim_speed:g}: the simulated clock is outside the months ptmon keeps "
                                 "(1970-01 to 9999-11, Shanghai time)")
    try:
        return asyncio.run(serve(config, kpi_csv=kpi_csv, clock=clock))
    except StorageGone as exc:
        print(f"ptmon collect: stopped, storage gone: {exc}. Nothing unarchived was acknowledged: the broker "
              f"keeps it for the next start (exit status {exc.exit_status})", file=sys.stderr)
        return exc.exit_status


async def serve(config: CollectorConfig, *, kpi_csv: Path | None = None, collector: Collector | None = None,
                clock: Callable[[], float] = time.time) -> int:
    """Run until SIGINT/SIGTERM (a second one cuts the waits short, exit status 130); print the
    month-to-date KPIs."""
    collector = collector or Collector(config, clock=clock)
    collector.restore()  # before the signal handlers: a long rebuild stays interruptible (KeyboardInterrupt)
    for note in collector.notes:
        log.warning("%s", note)
        print(f"ptmon collect: {note}", file=sys.stderr)
    signals = ExitRequest(stopping="ptmon collect: shutting down (again to force)",
                          forcing="ptmon collect: second signal, exiting at once",
                          on_force=lambda: setattr(collector, "force_exit", True))
    signals.install()
    if kpi_csv is not None:
        collector.on_checkpoint = lambda results: write_results_csv(results, kpi_csv)
    started = time.monotonic()
    await collector.run(signals.should_exit)
    if collector.force_exit:
        return FORCED_EXIT_STATUS
    results = collector.month_results()
    if results is not None:
        if kpi_csv is not None:
            try:
                write_results_csv(results, kpi_csv)
            except OSError as exc:  # as at each checkpoint: the month stays in the ledger and the archive
                log.error("cannot write the month-to-date KPIs to %s: %s", kpi_csv, exc.strerror or exc)
        print(results.table(collector.registry.rules))
        for a, b in results.gaps:
            log.info("monitoring gap %s — %s", format_instant(a), format_instant(b))
    print(f"ptmon collect: {collector.archive.records:,} records archived in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return 0
