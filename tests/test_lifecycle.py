"""The collector's lifecycle: cheap construction, staged start-up, orderly and forced shutdown."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ptmon.collect import Collector
from ptmon.config import CollectorConfig, InfluxConfig, MqttConfig
from ptmon.lifecycle import ExitRequest, unless_forced
from ptmon.lock import LOCK_NAME, held
from ptmon.simulators.loopback import free_port
from ptmon.sinks.spool import read_spool_file, scan_spool

from .conftest import write_two_street_registry


@pytest.fixture
def silent_influx() -> Iterator[int]:
    """A port that completes TCP handshakes and never answers: an InfluxDB that hangs every request."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(64)
        yield server.getsockname()[1]


def hanging_influx_config(tmp_path: Path, influx_port: int) -> CollectorConfig:
    return CollectorConfig(
        registry=write_two_street_registry(tmp_path / "registry.csv"), data_dir=tmp_path / "data", metrics_listen="",
        mqtt=MqttConfig(port=free_port()),  # nobody there: the source keeps retrying, harmlessly
        influx=InfluxConfig(url=f"http://127.0.0.1:{influx_port}", database="ptmon", skip_database_creation=True,
                            flush_interval=0.05, timeout=120.0))


def test_construction_reads_and_locks_nothing(tmp_path):
    """Test that constructing a Collector opens no ledger and takes no lock; restore() does both, and
    shutdown releases the locks again."""
    config = CollectorConfig(registry=write_two_street_registry(tmp_path / "registry.csv"), data_dir=tmp_path / "data",
                             metrics_listen="", mqtt=MqttConfig(port=free_port()))
    collector = Collector(config)
    assert not config.ledger_path.exists() and not held(config.data_dir / LOCK_NAME)
    assert not collector.restored and collector.notes == []
    collector.restore()
    assert config.ledger_path.exists() and held(config.data_dir / LOCK_NAME)
    assert collector.engine.clock is None  # nothing to restore from: a fresh state
    stop = asyncio.Event()
    stop.set()
    asyncio.run(collector.run(stop))
    assert not held(config.data_dir / LOCK_NAME) and config.checkpoint_path.exists()


def test_a_forced_exit_stops_waiting_for_influxdb_and_spools_its_points(tmp_path, silent_influx):
    """Test that with InfluxDB hanging, shutdown waits on it until force_exit is set, then finishes without
    writing: the points are in the spool (nothing lost), the state saved and the locks released."""
    config = hanging_influx_config(tmp_path, silent_influx)
    collector = Collector(config)
    points = [f"probe,n={i} value={i}i 1793462400000000000" for i in range(25)]

    async def main() -> tuple[bool, bool]:
        await collector.startup()
        collector.influx.submit(points)
        while collector.influx._inflight is None:  # the writer's request now hangs on the silent server
            await asyncio.sleep(0.01)
        shutdown = asyncio.create_task(collector.shutdown())
        await asyncio.wait({shutdown}, timeout=1.0)  # its close() deadline is 10 s: still waiting
        waited = not shutdown.done()
        collector.force_exit = True
        await asyncio.wait_for(shutdown, 8.0)
        return waited, collector.force_exit

    waited, forced = asyncio.run(main())
    assert waited and forced
    assert collector.influx.written_points == 0 and collector.influx.dropped_points == 0
    spooled = sorted(line for f in scan_spool(config.spool_path) for b in read_spool_file(f)
                     for line in b.body.decode().splitlines())
    assert spooled == sorted(points)
    assert config.checkpoint_path.exists() and not held(config.data_dir / LOCK_NAME)


def test_second_signal_exits_130_without_waiting(tmp_path, silent_influx):
    """Test that `ptmon collect` stuck in shutdown on a hanging InfluxDB exits with status 130 at the second
    SIGINT, saying so, and leaves its locks released (no os._exit: the orderly path ends the process)."""
    config = hanging_influx_config(tmp_path, silent_influx)
    (tmp_path / "ptmon.toml").write_text(
        f'registry = "{config.registry}"\ndata_dir = "{config.data_dir}"\nmetrics_listen = ""\n'
        f'[mqtt]\nport = {config.mqtt.port}\n'
        f'[influx]\nurl = "{config.influx.url}"\nskip_database_creation = true\nflush_interval = 0.05\ntimeout = 120\n')
    proc = subprocess.Popen([sys.executable, "-m", "ptmon.cli", "collect", "--config", str(tmp_path / "ptmon.toml")],
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not held(config.data_dir / LOCK_NAME) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(3)  # the main loop's first turn sends the collector's health point: its write hangs
        proc.send_signal(signal.SIGINT)
        time.sleep(1.5)
        assert proc.poll() is None, "the first signal's shutdown should still wait on InfluxDB"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=8)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "shutting down (again to force)" in err and "second signal, exiting at once" in err
    assert not held(config.data_dir / LOCK_NAME)


def test_exit_request_first_stops_then_forces(capsys):
    """Test that the first signal only asks for a stop and the second sets force_exit and tells the program."""
    forced: list[bool] = []
    request = ExitRequest(stopping="prog: stopping (again to force)", forcing="prog: forced exit",
                          on_force=lambda: forced.append(True))
    request.handle_exit()
    assert request.should_exit.is_set() and not request.force_exit and forced == []
    request.handle_exit()
    assert request.force_exit and forced == [True]
    assert capsys.readouterr().err.splitlines() == ["prog: stopping (again to force)", "prog: forced exit"]


def test_unless_forced_gives_up_on_a_hung_call():
    """Test that a blocking call that never returns is given up on once forced, and one that returns is awaited."""
    import threading

    never = threading.Event()

    async def main() -> tuple[bool, bool]:
        forced = asyncio.Event()
        finished = await unless_forced(lambda: None, forced)
        asyncio.get_running_loop().call_later(0.05, forced.set)
        hung = await asyncio.wait_for(unless_forced(never.wait, forced), 10)
        return finished, hung

    assert asyncio.run(main()) == (True, False)
    never.set()
