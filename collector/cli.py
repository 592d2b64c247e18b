"""``ptmon``: the command line. Parsing only; the work lives in the stage modules."""

from __future__ import annotations

import argparse
import errno
import logging
import os
import select
import signal
import sys
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from .errors import PtmonError, UsageError, loader_out_of_memory, memory_limit, reason
from .ledger.commands import add_exempt_parser, cmd_exempt
from .ledger.month import add_ledger_parser, cmd_ledger
from .merge import replay_partitions, tagged_archives
from .month.commands import add_month_parser, cmd_month
from .outputs import output_dir, output_file, writing
from .registry import load_registry
from .report.commands import add_report_parser, cmd_report
from .rules import DEFAULT_RULES_DIR, load_rules
from .timebase import day_of, day_to_date, format_instant, month_bounds, parse_instant, seconds_to_us

log = logging.getLogger("ptmon")

DESCRIPTION = """\
ptmon — SLA monitor for the 智联普陀 IoT sensors and community capture cameras of Putuo.

It computes, per contract and street (街镇), the online rate (上线率/在线率) and the
sensing / capture success rates (感知成功率, 抓拍成功率) against the lease contracts'
thresholds, exactly as defined in the rule files.
"""


def _add_rules(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rules", metavar="DIR", default=str(DEFAULT_RULES_DIR),
                   help="directory of streets.yaml, types.yaml, contracts.yaml (default: the repo's rules/)")


def _period(p: argparse.ArgumentParser) -> None:
    p.add_argument("--start", metavar="T", help="period start (ISO 8601, Shanghai time unless an offset is given)")
    p.add_argument("--end", metavar="T", help="period end, exclusive")
    p.add_argument("--month", metavar="YYYY-MM", help="instead of --start/--end: a calendar month in Asia/Shanghai")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ptmon", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"ptmon {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress and details to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    rp = sub.add_parser("replay", help="recompute the KPIs of a period from message archives",
                        description="Read message archives (gzip JSON Lines: t, topic, payload), run them through the "
                        "SLA engine and print the KPI table of the period. The same archives and registry always give "
                        "byte-identical CSV. Records before the period set the devices' baselines and last heartbeats: "
                        "with --month and the collector's archive directory, replay starts from the month-start snapshot "
                        "there (the state as the month began) and reads the files after it; files named one by one are "
                        "read from their beginning, so name every file before the month too.")
    rp.add_argument("archives", nargs="+", metavar="ARCHIVE",
                    help="archive files (.jsonl.gz or plain .jsonl), or directories of them (the collector's archive_dir); "
                    "partition collectors' archive directories (tagged partition.json) are replayed each with its "
                    "streets' registry rows and merged into one district, once checked to be disjoint, to cover every "
                    "street and to have run with the same rules and registry")
    _period(rp)
    rp.add_argument("--registry", required=True, metavar="FILE", help="device registry CSV (the contract inventory)")
    _add_rules(rp)
    rp.add_argument("--ledger", metavar="FILE", nargs="+", help="apply the exemptions recorded in this ledger (revoked ones "
                    "excluded), as the report does; several: each partition's; default: no exemptions")
    rp.add_argument("--csv", metavar="FILE", help="also write the KPIs as CSV ('-' for stdout)")
    rp.add_argument("--quiet", action="store_true", help="print neither the table nor progress nor the first rejected "
                    "messages of each kind: only the CSV asked for, what was read (one line per source), errors, and "
                    "one line counting the rejects")

    reg = sub.add_parser("registry", help="generate or check a device registry")
    reg_sub = reg.add_subparsers(dest="registry_command", metavar="ACTION", required=True)
    gen = reg_sub.add_parser("generate", help="write a deterministic registry of the whole district",
                             description="Write the district's registry: 110,325 sensors of 33 types and the community "
                             "cameras, over the 10 streets, with communities and gateways. Same seed, same file.")
    gen.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    gen.add_argument("--out", metavar="FILE", default="-", help="output CSV (default: stdout)")
    _add_rules(gen)
    chk = reg_sub.add_parser("check", help="validate a registry CSV and summarise it",
                             description="Validate a registry CSV (columns device_id, contract, type, street, "
                             "scenario, community, gateway, accepted_on, retired_on: see the README) against the rule "
                             "files and print how many devices of each contract are under lease today. An error names "
                             "the line and the column; the exit status is then 2.")
    chk.add_argument("file", metavar="FILE", help="the registry CSV")
    _add_rules(chk)

    rules = sub.add_parser("rules", help="validate the rule files",
                           description="`ptmon rules check [DIR]`: validate the rule files of DIR (streets.yaml, "
                           "types.yaml, contracts.yaml, and anomaly.yaml and alerts.yaml as the collector loads them) "
                           "and print their "
                           "version. An error names the file and the key; the exit status is then 2.")
    rules.add_argument("action", choices=["check"], help="check: validate the rule files")
    rules.add_argument("dir", nargs="?", default=str(DEFAULT_RULES_DIR), metavar="DIR",
                       help="the rule files' directory (default: the rules shipped with ptmon)")

    sim = sub.add_parser("simulate", help="act as the district's sensors, cameras and gateways over MQTT",
                         description="Publish heartbeats for every registry device at its type's period over MQTT, "
                         "one connection per gateway with 'offline' as its Last Will, in simulated time (--speed). "
                         "A scenario file adds outages, dying gateways, churn, flapping, degraded success and bad "
                         "traffic; the same --seed gives the same run. --record writes what was sent as an archive "
                         "that `ptmon replay` reads.")
    sim.add_argument("--registry", required=True, metavar="FILE", help="device registry CSV")
    sim.add_argument("--broker", default="mqtt://127.0.0.1:1883", metavar="URL",
                     help="mqtt://host:port or mqtts://host:port (default mqtt://127.0.0.1:1883)")
    _add_rules(sim)
    sim.add_argument("--scenario", metavar="FILE", help="scenario YAML (see simulators/scenarios/); default: normal operation")
    sim.add_argument("--seed", type=int, default=1, help="random seed of the traffic and the scenario (default 1)")
    sim.add_argument("--speed", type=float, default=1.0, metavar="K",
                     help="simulated time runs K times faster than wall time; 0: as fast as possible (default 1)")
    sim.add_argument("--start", metavar="T", help="simulated start instant (default: now)")
    sim.add_argument("--duration", metavar="D", help="simulated duration, e.g. 6h or 1d (default: until interrupted)")
    sim.add_argument("--record", metavar="FILE", help="also write what is sent as a gzip JSON Lines archive")
    sim.add_argument("--shard", default="0/1", metavar="I/N",
                     help="run only gateways with index %% N == I (split the district over processes)")
    sim.add_argument("--qos", type=int, choices=[0, 1], default=0, help="MQTT QoS of heartbeats (default 0)")
    sim.add_argument("--username", help="MQTT user name; the password comes from $PTMON_MQTT_PASSWORD")
    sim.add_argument("--ca", metavar="FILE", help="CA certificate for mqtts://")
    sim.add_argument("--anchor", metavar="UNIX_TIME",
                     help="wall-clock unix time at which simulated time is --start (default: when sending begins); "
                     "lets a collector share the simulated clock. '-': send the warm-up at once, print 'ready N' "
                     "(messages delivered so far) on stdout, read the unix time from stdin, and print 'done N' at the end")
    sim.add_argument("--warm-up", metavar="D", help="as if the district had been running: every device's last heartbeat "
                     "before --start is sent first, spread evenly over the D before it (e.g. 60s)")

    col = sub.add_parser("collect", help="the live collector: MQTT in; archive, InfluxDB and Prometheus out",
                         epilog=COLLECT_EXIT_STATUSES, formatter_class=argparse.RawDescriptionHelpFormatter,
                         description=textwrap.fill("Subscribe to the district's heartbeats and gateway statuses, "
                         "archive every message (gzip JSON Lines, one file per Shanghai day), keep the SLA engine's state "
                         "(checkpointed, so a restart continues the month), write heartbeat and sla points to InfluxDB "
                         "and serve Prometheus /metrics. Settings come from --config (see ptmon.sample.toml); "
                         "the options below override it. Ctrl-C or SIGTERM shuts down in order; a second one exits at once.", 78))
    col.add_argument("--config", metavar="FILE", help="TOML config file (secrets come from the environment variables it names)")
    col.add_argument("--check-config", action="store_true",
                     help="validate the config and the registry, print the effective settings, exit")
    col.add_argument("--broker", metavar="URL", help="mqtt://[user[:password]@]host:port or mqtts://...; a user without "
                     "password takes it from $PTMON_MQTT_PASSWORD (never printed; prefer it: a password on the command line is "
                     "visible to other users in ps)")
    col.add_argument("--registry", metavar="FILE", help="device registry CSV")
    col.add_argument("--rules", metavar="DIR", help="rule files directory (default: the config's, else the repo's rules/)")
    col.add_argument("--data-dir", metavar="DIR", help="where the archive, the InfluxDB spool and the checkpoint go")
    col.add_argument("--topic", action="append", metavar="FILTER",
                     help="MQTT topic filter, repeatable (default putuo/+/+/+/hb and putuo/gw/+/status)")
    col.add_argument("--street", action="append", metavar="CODE",
                     help="only these streets' devices (repeatable): a way to split the district over collectors")
    col.add_argument("--influx-url", metavar="URL", help="InfluxDB base URL (http://[user[:password]@]host:8086; credentials "
                     "for the v1 API only); default: no InfluxDB")
    col.add_argument("--influx-api", choices=["v1", "v2"], help="v1: /write (InfluxDB 1.x, 3.x); v2: influxdb-client (2.x, 3.x)")
    col.add_argument("--metrics", metavar="HOST:PORT", help="serve Prometheus /metrics here ('' disables)")
    col.add_argument("--kpi-csv", metavar="FILE", help="keep the month-to-date KPIs in this CSV (rewritten at every checkpoint)")
    sim_clock = col.add_argument_group("simulated clock", "for simulations and tests: the collector stamps receive times "
                                       "on the clock `ptmon simulate --start T --anchor A --speed K` runs on")
    sim_clock.add_argument("--sim-start", metavar="T", help="the simulated instant at wall time --sim-anchor")
    sim_clock.add_argument("--sim-anchor", type=float, metavar="UNIX_TIME",
                           help="wall-clock unix time at which it is --sim-start")
    sim_clock.add_argument("--sim-speed", type=float, default=1.0, metavar="K",
                           help="simulated time runs K times faster (default 1)")

    add_exempt_parser(sub)
    add_ledger_parser(sub)
    add_month_parser(sub)
    add_report_parser(sub)

    demo = sub.add_parser("demo", help="the whole pipeline on a generated district, nothing external needed",
                          description="Generate the district registry, start an embedded MQTT broker (Mosquitto if "
                          "installed, else the pure-Python amqtt of the [demo] extra), run the simulator against it "
                          "with the demo scenario (a street's power cut, dying gateways, worse capture and sensing on "
                          "two streets, bad traffic), collect with the live collector (archive, SLA engine, ledger, "
                          "optional InfluxDB) showing a live line, and print the KPI table of the simulated window, "
                          "why each failing street fails, and the replay command that recomputes the same CSV from "
                          "the archive. The window is 09:00 Shanghai time of yesterday onwards. On amqtt the "
                          "district is a quarter of Putuo's communities (amqtt is slow to connect the district's "
                          "1,290 gateways). --offline instead synthesises a day straight into an archive and replays "
                          "it (no broker).")
    demo.add_argument("--hours", type=float, help="simulated hours (default 0.5, at least 0.25; --offline: 24)")
    demo.add_argument("--speed", type=float, default=30.0, metavar="K",
                      help="simulated time runs K times faster than wall time (default 30: half an hour in a minute)")
    demo.add_argument("--influx-url", metavar="URL", help="also write points to this InfluxDB (v1 API, database ptmon)")
    demo.add_argument("--broker", choices=["auto", "mosquitto", "amqtt"],
                      help="embedded broker (default: $PTMON_DEMO_BROKER, else auto: Mosquitto if installed, else amqtt)")
    demo.add_argument("--scale", type=float, metavar="F",
                      help="share of every gateway's devices to simulate, in (0, 1] (default 1 on Mosquitto, 0.25 on amqtt)")
    demo.add_argument("--offline", action="store_true", help="no broker: synthetic archive → replay (a day in about 80 s)")
    demo.add_argument("--seed", type=int, default=1, help="random seed of the district and its traffic (default 1)")
    demo.add_argument("--workdir", metavar="DIR", default="ptmon-demo",
                      help="where the registry and archive go (default ./ptmon-demo)")
    return parser


COLLECT_EXIT_STATUSES = """\
A full disk, a locked ledger or a failing write do not stop the collector: it waits, says what it
waits for (log once a minute, ptmon_storage_waiting_seconds, an email after [storage] alert_after),
acknowledges nothing it could not archive, and resumes by itself.

exit status:
  0    stopped by SIGINT or SIGTERM, in order (archive closed, checkpoint saved)
  1    an unexpected error (a bug: please report the traceback)
  2    bad options, config, registry or rule files, or a ledger/checkpoint that cannot be used (nothing started)
  3    its storage vanished while running (data directory, archive file or ledger deleted): unrecoverable
  130  a second SIGINT/SIGTERM forced it out at once (a restart continues from the checkpoint)
"""


def _resolve_period(args: argparse.Namespace) -> tuple[int, int]:
    if args.month and (args.start or args.end):
        raise UsageError("give either --month or --start/--end, not both")
    if args.month:
        return month_bounds(args.month)
    if not (args.start and args.end):
        raise UsageError("give the period: --start T --end T, or --month YYYY-MM")
    start, end = parse_instant(args.start), parse_instant(args.end)
    if end <= start:
        raise UsageError(f"--end {args.end} is not after --start {args.start}")
    return start, end


def _progress_printer():
    def show(p) -> None:
        at = format_instant(p.clock) if p.clock is not None else "-"
        print(f"replay: {p.records:,} records, {p.records / max(p.elapsed, 1e-9):,.0f}/s, at {at}", file=sys.stderr, flush=True)
    return show


def cmd_replay(args: argparse.Namespace) -> int:
    if not args.quiet:
        return _replay(args)
    decoder_log = logging.getLogger("ptmon.decode")  # the first rejects of each kind, at WARNING
    level = decoder_log.level
    decoder_log.setLevel(logging.ERROR)
    try:
        return _replay(args)
    finally:
        decoder_log.setLevel(level)


def _replay(args: argparse.Namespace) -> int:
    from .replay import replay
    from .sinks.archive import archive_paths

    def say(text: str) -> None:  # what is read, one line per source: also when quiet
        print(f"replay: {text}", file=sys.stderr)

    progress = None if args.quiet else _progress_printer()
    start, end = _resolve_period(args)
    if args.csv and args.csv != "-":
        output_file(args.csv, "--csv")  # before the replay, not after it
    rules = load_rules(args.rules)
    registry = load_registry(args.registry, rules)
    exemptions = _replay_exemptions(args.ledger, start, end)
    if (partitions := tagged_archives([Path(a) for a in args.archives])) is not None:
        results = replay_partitions(partitions, registry, start, end, month=args.month, exemptions=exemptions,
                                    progress=progress, say=say)
        return _show_replay(args, results, rules)
    paths = archive_paths(args.archives)
    state = None
    if args.month and all(Path(a).is_dir() for a in args.archives):
        from .snapshots import load_snapshot, month_sources

        sources = month_sources([Path(a) for a in args.archives], args.month)
        paths, state = sources.read(), load_snapshot(sources.snapshot, registry) if sources.snapshot else None
        say(sources.describe())
    results = replay(paths, registry, start, end, progress=progress, exemptions=exemptions, state=state)
    return _show_replay(args, results, rules)


def _replay_exemptions(ledgers: list[str] | None, start: int, end: int) -> list:
    """The active exemptions of the period in the ledgers named (each once), none without one."""
    from .ledger.store import Ledger

    found = []
    for path in ledgers or []:
        with Ledger(path, readonly=True) as ledger:
            found += [e for e in ledger.exemptions(start=start, end=end) if e.active]
    unique = {(e.scope, e.target, e.start, e.end, e.reason, e.approver): e for e in found}
    return list(unique.values())


def _show_replay(args: argparse.Namespace, results, rules) -> int:
    if args.csv == "-":
        results.write_csv(sys.stdout)
    elif args.csv:
        with writing(Path(args.csv), "w", encoding="utf-8", newline="") as out:
            results.write_csv(out)
    if not args.quiet:
        print(results.table(rules))
    elif results.rejects:
        print(f"replay: {sum(results.rejects.values()):,} messages rejected ("
              + ", ".join(f"{k} {v:,}" for k, v in sorted(results.rejects.items())) + ")", file=sys.stderr)
    return 0


def cmd_registry(args: argparse.Namespace) -> int:
    rules = load_rules(args.rules)
    if args.registry_command == "generate":
        from ptmon.simulators.district import write_registry

        if args.out == "-":
            summary = write_registry(sys.stdout, rules, args.seed)
        else:
            with writing(output_file(args.out, "--out"), "w", encoding="utf-8", newline="") as out:
                summary = write_registry(out, rules, args.seed)
        for line in summary.lines():
            print(line, file=sys.stderr)
        return 0
    if args.registry_command == "check":
        registry = load_registry(args.file, rules)
        today = day_of(seconds_to_us(time.time()))
        print(f"{args.file}: {len(registry):,} rows, version {registry.version}; under lease on {day_to_date(today)}:")
        for c in rules.contracts:
            sl = registry.contract_slices[c.code]
            active = int(registry.expected_mask(today, sl).sum())
            print(f"  {c.code}: {active:,} devices ({sl.stop - sl.start - active:,} other rows: retired or not yet accepted)")
        return 0
    raise UsageError("registry needs an action: generate or check (see ptmon registry --help)")


def cmd_rules(args: argparse.Namespace) -> int:
    from .service import check_alert_rules, check_anomaly_rules

    rules = load_rules(args.dir)
    anomaly = check_anomaly_rules(rules)  # exactly what `collect --check-config` loads
    alerts = check_alert_rules(None, rules)
    print(f"{args.dir}: {len(rules.streets)} streets, {len(rules.types)} device types, "
          f"{len(rules.contracts)} contracts; version {rules.version}")
    print(anomaly)
    print(alerts)
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from ptmon.simulators.runner import run_simulation

    if args.record:
        output_file(args.record, "--record")
    return run_simulation(args)


def cmd_demo(args: argparse.Namespace) -> int:
    output_dir(args.workdir, "--workdir")
    if args.offline:
        from ptmon.simulators.demo import run_offline_demo

        return run_offline_demo(Path(args.workdir), hours=args.hours or 24.0, seed=args.seed)
    from ptmon.simulators.live_demo import run_live_demo

    return run_live_demo(Path(args.workdir), hours=args.hours or 0.5, speed=args.speed, seed=args.seed,
                         influx_url=args.influx_url, broker=args.broker, scale=args.scale)


def cmd_collect(args: argparse.Namespace) -> int:
    from .service import run_collect

    return run_collect(args)


COMMANDS = {"collect": cmd_collect, "replay": cmd_replay, "registry": cmd_registry, "rules": cmd_rules, "simulate": cmd_simulate,
            "demo": cmd_demo, "exempt": cmd_exempt, "ledger": cmd_ledger, "month": cmd_month, "report": cmd_report}


def main(argv: Sequence[str] | None = None) -> int:
    if sys.stdout is None:  # started with stdout closed (`ptmon ... >&-`): what it prints goes nowhere
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (the process's stdout, open until exit)
    try:
        # stdout's buffer is written out here, not at exit, where Python would only report a
        # failure ("Exception ignored") and keep the status: a CSV lost to a closed pipe or a full
        # disk would end with status 0
        try:
            status = _run(argv)
        except SystemExit:  # argparse's, after --help or a usage error
            _flush_stdout()
            raise
        _flush_stdout()
        return status
    except PtmonError as exc:
        print(f"ptmon: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ptmon: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print(f"ptmon: error: out of memory{memory_limit()}: the command stopped", file=sys.stderr)
        return 2
    except ImportError as exc:  # a module a command imports when it runs, under the same limit
        if not loader_out_of_memory(exc):
            raise
        print(f"ptmon: error: out of memory{memory_limit()}: the command stopped: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        if not _stdout_gone():
            raise
        # Whatever read our output has stopped reading (`ptmon replay --csv - | head`): stop as
        # quietly as a command killed by SIGPIPE; Python ignores that signal and raises instead.
        _discard_stdout()
        return 128 + signal.SIGPIPE
    except OSError as exc:
        if exc.errno in _NO_SPACE:  # (files written by name say so themselves: outputs.writing)
            _discard_stdout()
            print(f"ptmon: error: cannot write the output: {reason(exc)}", file=sys.stderr)
            return 2
        if exc.errno in _NOT_ALLOWED and exc.filename is not None:
            # A path ptmon may not look at: a directory on the way it cannot search (mode 000,
            # another user's home), which Path.exists() reports by raising. Nothing to debug.
            print(f"ptmon: error: {exc.filename}: {reason(exc)}", file=sys.stderr)
            return 2
        raise


def _run(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="ptmon: %(levelname)s: %(message)s")
    if args.command is None:
        parser.print_help()
        return 2
    return COMMANDS[args.command](args)


_NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_NOT_ALLOWED = (errno.EACCES, errno.EPERM)


def _flush_stdout() -> None:
    if sys.stdout is not None:  # (None when started with stdout closed: `ptmon ... >&-`)
        sys.stdout.flush()


def _discard_stdout() -> None:
    """Point stdout at /dev/null, so that what is left in its buffer does not fail again at exit."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _stdout_gone() -> bool:
    """Whether standard output is a pipe or socket nobody reads any more (poll reports an error)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no fileno (a captured stream), no poll
        return False


if __name__ == "__main__":
    sys.exit(main())
