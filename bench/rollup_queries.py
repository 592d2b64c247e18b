"""How long the rollup dashboards' panels take on a month of the whole district's data.

    python bench/rollup_queries.py [--days 30] [--repeat 5] [--workdir DIR]

Starts an InfluxDB 1.6.7 of its own on free loopback ports, writes a month of ``sla_type`` (every
contract × street × type of the generated district) and ``sla_community`` (every camera community)
points at the shipped five-minute rollup interval, with the fields and tags the collector writes
(collector/anomaly/rollup.py), and an ``anomaly`` series per blind/degraded device of the
bench/anomaly.py scenario's size; then runs every panel query that reads them, as Grafana sends it
for the month view (``$__interval`` 1h), for one street and for all, ``--repeat`` times, and prints
the median and the slowest per panel. The values are random (the query cost depends on the series
and points, not on the values); the sums' exactness is tests/test_anomaly_sinks.py's.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ptmon.grafana.boards import cameras, street
from ptmon.grafana.build import DASHBOARD_DIR
from ptmon.rules import load_rules
from ptmon.simulators.district import generate_registry
from tests.servers import InfluxServer, influxql

DATABASE = "rollups"
INTERVAL_S = 300
START_S = 1_793_462_400  # 2026-11-01 00:00 Shanghai
CAMERA_FIELDS = ("face_try", "face_ok", "plate_try", "plate_ok")
SENSOR_FIELDS = ("reads", "read_ok")
ROLLUP_MEASUREMENTS = ('"sla_type"', '"sla_community"', '"anomaly"')


def cells() -> tuple[list[tuple[str, str, str, int]], list[tuple[str, str, int]]]:
    """(contract, street, type, devices) and (street, community, cameras) of the generated district."""
    types: dict[tuple[str, str, str], int] = {}
    communities: dict[tuple[str, str], int] = {}
    for row in generate_registry(load_rules(), 1):
        types[row.contract, row.street, row.type] = types.get((row.contract, row.street, row.type), 0) + 1
        if row.contract == "cam":
            communities[row.street, row.community] = communities.get((row.street, row.community), 0) + 1
    return [(*k, n) for k, n in types.items()], [(*k, n) for k, n in communities.items()]


def month_lines(days: int, types: list, communities: list, rng: np.random.Generator):
    """Batches of line protocol, one five-minute interval of every cell at a time."""
    batch: list[str] = []
    for step in range(days * 86_400 // INTERVAL_S):
        stamp = (START_S + step * INTERVAL_S) * 1_000_000_000
        for contract, street_code, type_code, n in types:
            batch.append(_line("sla_type", f"contract={contract},street={street_code},type={type_code}", n, contract, rng)
                         + f" {stamp}")
        for street_code, community, n in communities:
            batch.append(_line("sla_community", f"contract=cam,street={street_code},community={community}", n, "cam", rng)
                         + f" {stamp}")
        if len(batch) >= 20_000:
            yield batch
            batch = []
    if batch:
        yield batch


def _line(measurement: str, tags: str, n: int, contract: str, rng: np.random.Generator) -> str:
    samples = 5 if contract == "cam" else 1
    online = int(n * samples * rng.uniform(0.95, 1.0))
    names = CAMERA_FIELDS if contract == "cam" else SENSOR_FIELDS
    tries = int(n * rng.uniform(5, 40))
    counts = [tries, int(tries * 0.95)] * (len(names) // 2)
    fields = [f"samples={samples}i", f"online={online}i", f"expected={n * samples}i"]
    fields += [f"{name}={v}i" for name, v in zip(names, counts)]
    fields += [f"{k}={int(rng.integers(0, 2))}i" for k in ("blind", "degraded", "stuck")] + ["learning=0i"]
    return f"{measurement},{tags} {','.join(fields)}"


def anomaly_lines(days: int, communities: list, rng: np.random.Generator) -> list[str]:
    """A point every interval for 100 anomalies open from the month's middle (as the collector writes them)."""
    lines = []
    for i in range(100):
        street_code, community, _ = communities[int(rng.integers(len(communities)))]
        since = START_S + days * 86_400 // 2
        tags = f"contract=cam,street={street_code},type=face_cam,kind={'blind' if i % 2 else 'degraded'},device=c{i}"
        for t in range(since, START_S + days * 86_400, INTERVAL_S):
            lines.append(f'anomaly,{tags} community="{community}",gateway="gw",since={since}i,detected={since}i,'
                         f"open=1i,attempts=3,successes=3,expected_attempts=400,expected_successes=390 {t * 10**9}")
    return lines


def write(url: str, lines: list[str]) -> None:
    request = urllib.request.Request(f"{url}/write?db={DATABASE}", data="\n".join(lines).encode())
    with urllib.request.urlopen(request, timeout=120) as response:
        assert response.status == 204


def panel_queries() -> list[tuple[str, str, str]]:
    """(board, panel title, InfluxQL) of every panel reading the rollups or the anomalies."""
    import json

    out = []
    for module in (street, cameras):
        board = json.loads((DASHBOARD_DIR / f"{module.UID.removeprefix('ptmon-')}.json").read_text(encoding="utf-8"))
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                if any(m in target["query"] for m in ROLLUP_MEASUREMENTS):
                    out.append((board["uid"], panel["title"], target["query"]))
    return out


def fill(query: str, days: int, street_value: str) -> str:
    end_ms = (START_S + days * 86_400) * 1000
    values = {"timeFilter": f"time >= {START_S * 1000}ms and time <= {end_ms}ms", "__interval": "1h",
              "street": street_value}
    return re.sub(r"\$(\w+)", lambda m: values.get(m[1], m[0]), query)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args()
    types, communities = cells()
    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory() as tmp, InfluxServer(args.workdir or Path(tmp)) as influx:
        influxql(influx.url, "", f"CREATE DATABASE {DATABASE}")
        began, points = time.perf_counter(), 0
        for batch in month_lines(args.days, types, communities, rng):
            write(influx.url, batch)
            points += len(batch)
        extra = anomaly_lines(args.days, communities, rng)
        for i in range(0, len(extra), 20_000):
            write(influx.url, extra[i:i + 20_000])
        print(f"{len(types)} type cells, {len(communities)} camera communities, {args.days} days at {INTERVAL_S} s: "
              f"{points:,} rollup points and {len(extra):,} anomaly points written in {time.perf_counter() - began:.0f} s")
        print(f"{'board':<14} {'panel':<52} {'street':<11} {'median ms':>9} {'max ms':>7}")
        slowest = 0.0
        for uid, title, query in panel_queries():
            for street_value in ("taopu", "(" + "|".join(sorted({c[1] for c in types})) + ")"):
                if "=~ /^$street$/" not in query and street_value != "taopu":  # one street only
                    continue
                sent = fill(query, args.days, street_value)
                times = []
                for _ in range(args.repeat):
                    t0 = time.perf_counter()
                    result = influxql(influx.url, DATABASE, sent)
                    times.append((time.perf_counter() - t0) * 1000)
                    assert "error" not in str(result)[:2000], (title, result)
                slowest = max(slowest, max(times))
                label = "taopu" if street_value == "taopu" else "all"
                print(f"{uid:<14} {title[:52]:<52} {label:<11} {statistics.median(times):>9.0f} {max(times):>7.0f}")
        print(f"slowest panel query on {args.days} days of the district: {slowest:.0f} ms")


if __name__ == "__main__":
    main()
