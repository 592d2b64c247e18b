"""Real time-series servers for integration tests: InfluxDB 1.x and VictoriaMetrics.

Each runs from Debian's binary on free loopback ports with its data in a tmp dir; every
wait has a timeout. ``InfluxServer`` can be stopped and started again on the same port and
data dir, so tests can take InfluxDB away under load and bring it back.
"""

from __future__ import annotations

import json
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.brokers import free_port, wait_for_port
from tests.programs import program

START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
HTTP_TIMEOUT = 30.0


def _influx_config(root: Path, http_port: int, rpc_port: int, extra_http: str) -> str:
    # max-values-per-tag = 0: the default 100,000 turns a district's device tags into
    # "partial write" 400s. The RPC port defaults to 8088 on every instance,
    # so it must move too; monitor/CQs/subscriber off keep the server quiet and small.
    # Debian's build renamed upstream's reporting-disabled to reporting-enabled; either is ignored by the other
    return f"""\
reporting-disabled = true
reporting-enabled = false
bind-address = "127.0.0.1:{rpc_port}"
[meta]
  dir = "{root}/meta"
  logging-enabled = false
[data]
  dir = "{root}/data"
  wal-dir = "{root}/wal"
  max-values-per-tag = 0
  query-log-enabled = false
[monitor]
  store-enabled = false
[continuous_queries]
  enabled = false
[subscriber]
  enabled = false
[http]
  bind-address = "127.0.0.1:{http_port}"
  log-enabled = false
  pprof-enabled = false
{extra_http}
[logging]
  level = "error"
  suppress-logo = true
"""


def _get(url: str, timeout: float = 2.0) -> int:
    """HTTP status of a GET, 0 when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def _wait_http(proc: subprocess.Popen[bytes], url: str, status: int, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}: {log.read_text()[-2000:]}")
        if _get(url, timeout=1.0) == status:
            return
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer {status} within {timeout} s: {log.read_text()[-2000:]}")


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_TIMEOUT)


class InfluxServer:
    """Debian's ``influxd`` (1.6.7) on a free loopback port; ``stop()``/``start()`` keep port and data."""

    def __init__(self, workdir: Path, *, extra_http: str = "") -> None:
        self.root = Path(tempfile.mkdtemp(prefix="influxdb-", dir=workdir))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = self.root / "influxdb.conf"
        self.config.write_text(_influx_config(self.root, self.port, free_port(), extra_http))
        self.log = self.root / "influxd.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = START_TIMEOUT) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([program("influxd"), "run", "-config", str(self.config)],
                                         stdout=log, stderr=subprocess.STDOUT)
        _wait_http(self.proc, f"{self.url}/ping", 204, self.log, timeout)

    def stop(self) -> None:
        if self.proc is not None:
            _terminate(self.proc)
            self.proc = None

    def __enter__(self) -> InfluxServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextmanager
def influxdb(workdir: Path) -> Iterator[str]:
    """Run InfluxDB 1.6.7 until the block ends; yields its url."""
    with InfluxServer(workdir) as server:
        yield server.url


@contextmanager
def victoria_metrics(workdir: Path) -> Iterator[str]:
    """Run VictoriaMetrics (the peer for influxdb-client's v2 writes) until the block ends; yields its url."""
    port = free_port()
    root = workdir / f"victoria-metrics-{port}"
    root.mkdir(parents=True)
    log = root / "victoria-metrics.log"
    with log.open("ab") as out:
        proc = subprocess.Popen([program("victoria-metrics"), f"-httpListenAddr=127.0.0.1:{port}",
                                 f"-storageDataPath={root / 'data'}", "-loggerLevel=ERROR"],
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, START_TIMEOUT)
        _wait_http(proc, f"http://127.0.0.1:{port}/health", 200, log, START_TIMEOUT)
        yield f"http://127.0.0.1:{port}"
    finally:
        _terminate(proc)


def _request(url: str, data: bytes | None = None) -> bytes:
    with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=HTTP_TIMEOUT) as response:
        return bytes(response.read())


def influxql(url: str, db: str, query: str) -> dict[str, Any]:
    """Run an InfluxQL query (GET /query; POST for statements that change things); raises on errors."""
    params = urllib.parse.urlencode({"db": db, "q": query, "epoch": "u"})
    changes = query.lstrip().split(None, 1)[0].upper() in {"CREATE", "DROP", "ALTER", "DELETE", "GRANT", "REVOKE"}
    body = _request(f"{url}/query", params.encode()) if changes else _request(f"{url}/query?{params}")
    result: dict[str, Any] = json.loads(body)
    errors = [r["error"] for r in result.get("results", []) if "error" in r]
    if "error" in result or errors:
        raise RuntimeError(f"{query!r}: {result.get('error') or errors}")
    return result


def influx_rows(url: str, db: str, query: str) -> list[list[Any]]:
    """The value rows of every series a SELECT/SHOW returned, concatenated."""
    result = influxql(url, db, query)
    return [row for r in result["results"] for s in r.get("series", []) for row in s["values"]]


def vm_export(url: str, match: str) -> list[dict[str, Any]]:
    """Every series matching ``match``, after flushing VictoriaMetrics' in-memory parts."""
    _request(f"{url}/internal/force_flush", b"")
    query = urllib.parse.urlencode({"match[]": match})
    body = _request(f"{url}/api/v1/export", query.encode())
    return [json.loads(line) for line in body.splitlines() if line.strip()]
