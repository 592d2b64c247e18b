"""The InfluxDB sink against real servers (InfluxDB 1.6.7, VictoriaMetrics) and a scriptable stub."""

from __future__ import annotations

import asyncio
import gzip
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from ptmon.config import InfluxConfig
from ptmon.errors import SinkError
from ptmon.metrics import Metrics
from ptmon.sinks.influx import InfluxSink
from ptmon.sinks.influx_transport import V1Transport, V2Transport, failure_reason
from tests.brokers import free_port
from tests.fixtures_influx import (
    StubInflux,
    count_points,
    run,
    spool_points,
    wait_until,
    wait_until_sync,
)
from tests.servers import InfluxServer, influxql, vm_export

FAST = {"flush_interval": 0.05, "retry_min": 0.05, "retry_max": 0.3, "timeout": 5.0}


def config(url: str, **overrides: Any) -> InfluxConfig:
    return InfluxConfig(url=url, **{**FAST, **overrides})


def heartbeats(start: int, count: int, t0: int | None = None, series: int = 50) -> list[str]:
    """``count`` distinct points over ``series`` devices, numbered from ``start``."""
    t0 = t0 if t0 is not None else 1_700_000_000_000_000
    return [f"hb,device=d{i % series},street=taopu v={i}i {t0 + i}" for i in range(start, start + count)]


def failures(metrics: Metrics, reason: str) -> float:
    return metrics.registry.get_sample_value("ptmon_influx_failures_total", {"reason": reason}) or 0.0


def test_v1_sink_writes_every_point(influx_server: InfluxServer, influx_db: str, tmp_path: Path) -> None:
    """Test that the v1 sink writes N points to InfluxDB 1.6.7 and count(*) is N."""
    metrics = Metrics()

    async def scenario() -> InfluxSink:
        async with InfluxSink(config(influx_server.url, database=influx_db), spool_dir=tmp_path, metrics=metrics) as sink:
            for start in range(0, 20_000, 1_000):
                sink.submit(heartbeats(start, 1_000))
            await wait_until(lambda: sink.pending_points == 0, 20, "all points written")
        return sink

    sink = run(scenario())
    assert count_points(influx_server.url, influx_db, "hb") == 20_000
    assert (sink.written_points, sink.dead_letter_points, sink.dropped_points) == (20_000, 0, 0)
    assert metrics.registry.get_sample_value("ptmon_influx_points_total", {"outcome": "written"}) == 20_000
    assert not list(tmp_path.glob("*.lp.gz"))


def test_partial_batch_waits_flush_interval(tmp_path: Path) -> None:
    """Test that a few lines reach InfluxDB after flush_interval, not only when a batch fills."""
    with StubInflux() as stub:
        async def scenario() -> float:
            async with InfluxSink(config(stub.url, flush_interval=0.2), spool_dir=tmp_path) as sink:
                await asyncio.sleep(0.1)  # the writer is idle
                began = time.monotonic()
                sink.submit(heartbeats(0, 3))
                await wait_until(lambda: sink.written_points == 3, 30, "the partial batch written")
                return time.monotonic() - began

        waited = run(scenario())
    assert waited > 0.15 and len(stub.accepted) == 3  # not at once, and not only when a batch fills


def test_v2_sink_writes_to_victoria_metrics(vm_url: str, tmp_path: Path) -> None:
    """Test that the v2 sink (influxdb-client, gzip) delivers exactly the points to VictoriaMetrics."""
    t0 = time.time_ns() // 1000 // 1000 * 1000 - 60_000_000  # a minute ago, whole ms (VM keeps ms)
    lines = [f"vmtest,device=d{i % 20} v={i}i {t0 + i * 1000}" for i in range(3_000)]
    cfg = config(vm_url, api="v2", org="ptmon", bucket="ptmon", token="unused", gzip=True, batch_size=1_000)

    async def scenario() -> InfluxSink:
        async with InfluxSink(cfg, spool_dir=tmp_path) as sink:
            sink.submit(lines)
            await wait_until(lambda: sink.pending_points == 0, 20, "all points written")
        return sink

    sink = run(scenario())
    assert sink.written_points == 3_000

    def exported() -> set[tuple[str, int, float]]:
        series = vm_export(vm_url, '{__name__="vmtest_v"}')
        return {(s["metric"]["device"], t, v) for s in series for t, v in zip(s["timestamps"], s["values"])}

    expected = {(f"d{i % 20}", (t0 + i * 1000) // 1000, float(i)) for i in range(3_000)}
    wait_until_sync(lambda: len(exported()) >= len(expected), 30, "VictoriaMetrics has every point")
    assert exported() == expected


def test_outage_spills_and_every_point_arrives(tmp_path: Path) -> None:
    """Test that points submitted while InfluxDB is down spill to disk and all arrive after its restart."""
    server = InfluxServer(tmp_path)
    server.start()
    influxql(server.url, "outage", "CREATE DATABASE outage")
    cfg = config(server.url, database="outage", batch_size=500, memory_limit=256 * 1024)
    spool = tmp_path / "spool"

    async def submit(sink: InfluxSink, start: int, count: int, pause: float = 0.002) -> None:
        for offset in range(start, start + count, 250):
            sink.submit(heartbeats(offset, 250))
            await asyncio.sleep(pause)

    async def scenario() -> InfluxSink:
        async with InfluxSink(cfg, spool_dir=spool) as sink:
            await submit(sink, 0, 5_000)
            stopping = asyncio.create_task(asyncio.to_thread(server.stop))
            await submit(sink, 5_000, 10_000)  # while InfluxDB shuts down
            await stopping
            await submit(sink, 15_000, 10_000, pause=0.025)  # while it is down, for a second
            await wait_until(lambda: len(list(spool.glob("*.lp.gz"))) >= 2, 10, "spills to disk")
            assert sink.last_error is not None and sink.pending_points > 0
            await asyncio.to_thread(server.start)
            await submit(sink, 25_000, 5_000)
            await wait_until(lambda: sink.pending_points == 0, 30, "the backlog written")
            return sink

    try:
        sink = run(scenario())
        assert count_points(server.url, "outage", "hb") == 30_000
        assert (sink.dead_letter_points, sink.dropped_points, sink.spilled_bytes) == (0, 0, 0)
        assert not list(spool.glob("*.lp.gz"))
    finally:
        server.stop()


def test_spool_outlives_the_process(influx_server: InfluxServer, influx_db: str, tmp_path: Path) -> None:
    """Test that points persisted or left at close while InfluxDB is away are written by the next sink."""
    nobody = f"http://127.0.0.1:{free_port()}"  # InfluxDB away: nothing listens there
    down = config(nobody, database=influx_db, batch_size=400)

    async def crash_after_persist() -> None:
        sink = InfluxSink(down, spool_dir=tmp_path)
        await sink.start()
        sink.submit(heartbeats(0, 1_000))
        await sink.persist()
        assert spool_points(tmp_path) >= 1_000
        # no close(): asyncio.run cancels the writer like a SIGKILL would end it

    async def close_while_down() -> None:
        sink = InfluxSink(down, spool_dir=tmp_path)
        await sink.start()
        sink.submit(heartbeats(1_000, 1_500))
        began = time.monotonic()
        await sink.close(deadline=60)
        assert time.monotonic() - began < 30  # a server known to be down is not waited for (the deadline is 60 s)
        assert sink.pending_points == 2_500 and sink.written_points == 0

    async def restart() -> InfluxSink:
        async with InfluxSink(config(influx_server.url, database=influx_db), spool_dir=tmp_path) as sink:
            assert sink.pending_points == 2_500
            await wait_until(lambda: sink.pending_points == 0, 20, "the spool written")
        return sink

    run(crash_after_persist())
    run(close_while_down())
    assert spool_points(tmp_path) == 2_500
    sink = run(restart())
    assert count_points(influx_server.url, influx_db, "hb") == 2_500
    assert sink.written_points == 2_500 and not list(tmp_path.glob("*.lp.gz"))


def test_rejected_batch_goes_to_dead_letter(influx_server: InfluxServer, influx_db: str, tmp_path: Path) -> None:
    """Test that a batch InfluxDB rejects (type conflict, parse error) is dead-lettered once, not retried."""
    metrics = Metrics()
    good = ["m,d=a v=1i 1000", "m,d=b v=2i 1000"]
    conflict = ['m,d=c v="text" 2000', "m,d=d v=4i 2000"]
    broken = ["m,d=e v= 3000", "m,d=f v=6i 3000"]

    async def scenario() -> InfluxSink:
        cfg = config(influx_server.url, database=influx_db, batch_size=2)
        async with InfluxSink(cfg, spool_dir=tmp_path, metrics=metrics) as sink:
            for batch in (good, conflict, broken):
                sink.submit(batch)
            await wait_until(lambda: sink.pending_points == 0, 10, "every batch settled")
            await asyncio.sleep(0.3)  # time for a (wrong) retry
        return sink

    sink = run(scenario())
    assert (sink.written_points, sink.dead_letter_points) == (2, 4)
    assert failures(metrics, "rejected") == 2
    letters = sorted((tmp_path / "dead-letter").glob("*.lp"))
    assert len(letters) == 2
    first = letters[0].read_text()
    assert first.startswith("# status 400: ") and "conflict" in first and first.endswith("\n".join(conflict) + "\n")


def test_missing_database_is_retried_until_created(influx_server: InfluxServer, tmp_path: Path) -> None:
    """Test that a 404 (database not yet created) keeps the points and retries until it exists."""
    metrics = Metrics()

    async def scenario() -> InfluxSink:
        async with InfluxSink(config(influx_server.url, database="late", skip_database_creation=True), spool_dir=tmp_path,
                              metrics=metrics) as sink:
            sink.submit(heartbeats(0, 100))
            await wait_until(lambda: failures(metrics, "config") >= 2, 10, "404s")
            await asyncio.to_thread(influxql, influx_server.url, "late", "CREATE DATABASE late")
            await wait_until(lambda: sink.pending_points == 0, 10, "points written")
        return sink

    try:
        sink = run(scenario())
        assert count_points(influx_server.url, "late", "hb") == 100 and sink.dead_letter_points == 0
    finally:
        influxql(influx_server.url, "late", "DROP DATABASE late")


def test_too_large_batch_is_split(tmp_path: Path) -> None:
    """Test that a 413 splits the batch until the halves fit, every line sent once."""
    lines = heartbeats(0, 1_000) + [f'hb,device=x s="line\nbreak {i}" {i}' for i in range(24)]
    metrics = Metrics()
    with StubInflux(lambda n, got: (413, {}) if len(got) > 100 else (204, {})) as stub:
        async def scenario() -> InfluxSink:
            cfg = config(stub.url, batch_size=2_000)
            async with InfluxSink(cfg, spool_dir=tmp_path, metrics=metrics) as sink:
                sink.submit(lines)
                await wait_until(lambda: sink.pending_points == 0, 10, "every half written")
            return sink

        sink = run(scenario())
    assert sorted(stub.accepted) == sorted(text.encode() for text in lines)
    assert sink.written_points == len(lines) and failures(metrics, "too_large") >= 7


def test_single_point_too_large_is_dead_lettered(tmp_path: Path) -> None:
    """Test that a point the server finds too large on its own is dead-lettered."""
    with StubInflux(lambda n, got: (413, {})) as stub:
        async def scenario() -> InfluxSink:
            async with InfluxSink(config(stub.url, batch_size=4), spool_dir=tmp_path) as sink:
                sink.submit(heartbeats(0, 4))
                await wait_until(lambda: sink.pending_points == 0, 10, "all dead-lettered")
            return sink

        sink = run(scenario())
    assert (sink.written_points, sink.dead_letter_points) == (0, 4)
    assert len(list((tmp_path / "dead-letter").glob("*.lp"))) == 4


@pytest.mark.parametrize("status", [429, 503], ids=["throttled", "unavailable"])
def test_retry_after_is_honoured(status: int, tmp_path: Path) -> None:
    """Test that 429/503 with Retry-After keep the batch and wait that long before retrying."""
    with StubInflux(lambda n, got: (status, {"Retry-After": "1"}) if n == 0 else (204, {})) as stub:
        async def scenario() -> InfluxSink:
            async with InfluxSink(config(stub.url, retry_min=0.01), spool_dir=tmp_path) as sink:
                sink.submit(heartbeats(0, 10))
                await wait_until(lambda: sink.pending_points == 0, 10, "the retry")
            return sink

        sink = run(scenario())
    (first, _), (second, lines) = stub.requests
    assert second - first >= 0.9 and len(lines) == 10 and sink.written_points == 10


CLASSES = [  # (id, status, retryable, too_large, reason)
    ("bad-request", 400, False, False, "rejected"),
    ("unprocessable", 422, False, False, "rejected"),
    ("too-large", 413, False, True, "too_large"),
    ("unauthorized", 401, True, False, "config"),
    ("forbidden", 403, True, False, "config"),
    ("not-found", 404, True, False, "config"),
    ("throttled", 429, True, False, "throttled"),
    ("server-error", 500, True, False, "server_error"),
    ("unavailable", 503, True, False, "server_error"),
]


@pytest.mark.parametrize("api", ["v1", "v2"])
@pytest.mark.parametrize(("status", "retryable", "too_large", "reason"), [c[1:] for c in CLASSES], ids=[c[0] for c in CLASSES])
def test_failure_classification(api: str, status: int, retryable: bool, too_large: bool, reason: str) -> None:
    """Test that each HTTP answer becomes a SinkError saying what the sink should do."""
    with StubInflux(lambda n, got: (status, {"Retry-After": "7"})) as stub:
        cfg = InfluxConfig(url=stub.url, api=api, org="o", token="t", timeout=5)
        transport = V2Transport(cfg) if api == "v2" else V1Transport(cfg)
        with pytest.raises(SinkError) as caught:
            transport.write(b"m v=1i 1", gzipped=False)
    error = caught.value
    assert (error.status, error.retryable, error.too_large, failure_reason(error)) == (status, retryable, too_large, reason)
    assert error.retry_after == (7.0 if status in (429, 500, 503) else None)
    assert error.__cause__ is not None


@pytest.mark.parametrize("api", ["v1", "v2"])
def test_unreachable_server_is_retryable(api: str) -> None:
    """Test that a refused connection is a retryable network failure."""
    cfg = InfluxConfig(url=f"http://127.0.0.1:{free_port()}", api=api, org="o", token="t", timeout=2)
    transport = V2Transport(cfg) if api == "v2" else V1Transport(cfg)
    with pytest.raises(SinkError) as caught:
        transport.write(b"m v=1i 1", gzipped=False)
    assert caught.value.retryable and caught.value.status is None and failure_reason(caught.value) == "network"


class AlwaysDown:
    """A transport for an InfluxDB that never answers."""

    def __init__(self) -> None:
        self.calls = 0

    def write(self, body: bytes, *, gzipped: bool) -> None:
        self.calls += 1
        raise SinkError("down", retryable=True)


def test_spool_limit_drops_oldest(tmp_path: Path) -> None:
    """Test that beyond spool_limit the oldest spilled points are dropped and counted, memory stays bounded."""
    cfg = config("http://unused", batch_size=100, memory_limit=20_000, spool_limit=12_000, retry_max=5)
    transport = AlwaysDown()

    async def scenario() -> InfluxSink:
        sink = InfluxSink(cfg, spool_dir=tmp_path, transport=transport)
        await sink.start()
        for start in range(0, 20_000, 500):
            sink.submit(heartbeats(start, 500, series=20_000))
            await asyncio.sleep(0.005)
            assert sink._memory_bytes <= 2 * cfg.memory_limit
        await sink.close(deadline=1)
        return sink

    sink = run(scenario())
    assert sink.dropped_points > 0 and transport.calls >= 1
    assert sink.spilled_bytes <= cfg.spool_limit
    assert sink.pending_points + sink.dropped_points == 20_000
    assert spool_points(tmp_path) == sink.pending_points


class Gate:
    """A transport that holds every write until released."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.holding = False  # a write is waiting at the gate
        self.bodies: list[bytes] = []

    def write(self, body: bytes, *, gzipped: bool) -> None:
        self.entered.set()
        self.holding = True
        try:
            if not self.release.wait(10):
                raise SinkError("gate never opened", retryable=True)
        finally:
            self.holding = False
        self.bodies.append(gzip.decompress(body) if gzipped else body)


def test_persist_covers_the_batch_in_flight(tmp_path: Path) -> None:
    """Test that persist() also saves the batch being written, and that copy goes once it is written."""
    gate = Gate()

    async def scenario() -> InfluxSink:
        sink = InfluxSink(config("http://unused", batch_size=400), spool_dir=tmp_path, transport=gate)
        await sink.start()
        sink.submit(heartbeats(0, 1_000))
        assert await asyncio.to_thread(gate.entered.wait, 5)
        await sink.persist()
        assert spool_points(tmp_path) == 1_000 and sink.buffered_points == 400  # the one in flight
        gate.release.set()
        await wait_until(lambda: sink.pending_points == 0, 10, "everything written")
        await sink.close()
        return sink

    sink = run(scenario())
    assert sink.written_points == 1_000 and sum(b.count(b"\n") + 1 for b in gate.bodies) == 1_000
    assert not list(tmp_path.glob("*.lp.gz")) and sink.spilled_bytes == 0


def test_close_gives_up_on_a_hanging_request(tmp_path: Path) -> None:
    """Test that close() keeps its deadline when a request hangs, and that batch stays on disk once."""
    gate = Gate()

    async def scenario() -> InfluxSink:
        sink = InfluxSink(config("http://unused", batch_size=400), spool_dir=tmp_path, transport=gate)
        await sink.start()
        sink.submit(heartbeats(0, 1_000))
        assert await asyncio.to_thread(gate.entered.wait, 30)
        sink.submit(heartbeats(1_000, 5_000))
        assert gate.holding  # intake never waits for InfluxDB: submit() returned while a write hangs
        await sink.persist()  # copies the batch in flight: close() must not spill it twice
        began = time.monotonic()
        await sink.close(deadline=1.0)
        assert time.monotonic() - began < 8  # kept its deadline: the hanging write lasts 10 s
        gate.release.set()  # the abandoned request ends; its batch was spilled all the same
        return sink

    sink = run(scenario())
    assert spool_points(tmp_path) == 6_000 == sink.pending_points


def test_damaged_spool_file_is_set_aside(tmp_path: Path) -> None:
    """Test that a spool file that is not gzip line protocol is moved aside and counted, the rest written."""
    (tmp_path / "0000000000000001-7.lp.gz").write_bytes(b"not gzip at all")
    with StubInflux() as stub:
        async def scenario() -> InfluxSink:
            async with InfluxSink(config(stub.url), spool_dir=tmp_path) as sink:
                sink.submit(heartbeats(0, 5))
                await wait_until(lambda: sink.pending_points == 0, 10, "everything settled")
            return sink

        sink = run(scenario())
    assert (sink.written_points, sink.dropped_points) == (5, 7)
    assert (tmp_path / "dead-letter" / "0000000000000001-7.lp.gz.damaged").exists()
