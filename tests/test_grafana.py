"""The Grafana dashboards: valid, provisioned, up to date with the rules, and every InfluxQL query
of every panel answering with data from a real simulator → Mosquitto → collector → InfluxDB run."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from ptmon.grafana.build import DASHBOARD_DIR, stale_files
from ptmon.simulators.link import BrokerAddress
from ptmon.simulators.scenario import load_scenario
from ptmon.simulators.simulate import Options, Simulator
from ptmon.timebase import US_PER_S

from .conftest import HEADER, restored_collector
from .servers import InfluxServer, influxql
from .test_collect import SPEED, current_minute, make_config, sim_clock

REPO = Path(__file__).resolve().parent.parent
PROVISIONING = REPO / "grafana" / "provisioning"
SCENARIO = Path(__file__).parent / "data" / "grafana-scenario.yaml"
DASHBOARD_FILES = sorted(DASHBOARD_DIR.glob("*.json"))
MINUTES = 60  # simulated; 30 s of wall time at SPEED
TEST_STREETS = ("changzheng", "taopu")
PANEL_TYPES = {"row", "stat", "bargauge", "timeseries", "table"}
VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")
GRAFANA_VARIABLES = {"timeFilter", "__interval", "__interval_ms", "tag_street", "tag_contract", "tag_kpi",
                     "tag_type", "tag_instance", "tag_community", "col"}


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def all_panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, those folded into collapsed rows included."""
    out = []
    for panel in board["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def queries() -> list[tuple[str, str, str, str]]:
    """(dashboard file, panel title, refId, InfluxQL) of every target of every dashboard."""
    return [(path.name, panel["title"], t["refId"], t["query"])
            for path in DASHBOARD_FILES for panel in all_panels(load(path)) for t in panel.get("targets", [])]


def provisioned_datasources() -> dict[str, dict[str, Any]]:
    docs = [yaml.safe_load(p.read_text(encoding="utf-8")) for p in (PROVISIONING / "datasources").glob("*.yaml")]
    return {ds["uid"]: ds for doc in docs for ds in doc["datasources"]}


# --- static checks -------------------------------------------------------------------------------


def test_dashboard_files_match_the_generator():
    """Test that the committed JSON is what `python -m ptmon.grafana.build` makes from the shipped rules."""
    assert [p.name for p in DASHBOARD_FILES] == sorted(["overview.json", "street.json", "cameras.json",
                                                        "collector.json"])
    assert stale_files() == []


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: p.name)
def test_dashboard_is_valid_grafana_json(path):
    """Test that a dashboard has what Grafana needs: schema version, uid, unique panel ids, panels on the
    grid, raw InfluxQL targets on a provisioned datasource, and only variables it defines."""
    board = load(path)
    assert isinstance(board["schemaVersion"], int) and board["schemaVersion"] >= 36
    assert re.fullmatch(r"[a-z0-9-]{1,40}", board["uid"]) and board["title"]
    panels = all_panels(board)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)) and all(isinstance(i, int) and i > 0 for i in ids)
    datasources = provisioned_datasources()
    defined = {v["name"] for v in board["templating"]["list"]}
    for panel in panels:
        assert panel["type"] in PANEL_TYPES, panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["w"] > 0 and grid["x"] + grid["w"] <= 24 and grid["h"] > 0
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] in datasources, panel["title"]
        assert panel["datasource"]["type"] == datasources[panel["datasource"]["uid"]]["type"]
        assert panel["targets"], panel["title"]
        assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"])
        for t in panel["targets"]:
            assert t["datasource"]["uid"] in datasources and t["rawQuery"] is True and t["query"].startswith("SELECT")
            used = {next(g for g in m.groups() if g) for m in VARIABLE.finditer(t["query"] + t.get("alias", ""))}
            assert used <= defined | GRAFANA_VARIABLES, (panel["title"], used - defined - GRAFANA_VARIABLES)


def test_links_and_alert_emails_point_at_dashboards_that_exist():
    """Test that data links and the alert emails' dashboard_url name a provisioned dashboard uid."""
    uids = {load(p)["uid"] for p in DASHBOARD_FILES}
    assert len(uids) == len(DASHBOARD_FILES)
    linked = set()
    for path in DASHBOARD_FILES:
        for panel in all_panels(load(path)):
            for link in panel.get("fieldConfig", {}).get("defaults", {}).get("links", []):
                linked.add(re.search(r"/d/([\w-]+)", link["url"])[1])
    from ptmon.alerting import links

    linked |= {links.STREET, links.CAMERAS, links.OVERVIEW, links.COLLECTOR}  # what alert emails link to
    assert linked and linked <= uids


def test_provisioning_is_complete():
    """Test that the datasources have their uid, type and InfluxQL settings, and the dashboard provider
    reads the folder docker-compose.yml mounts the dashboards at."""
    datasources = provisioned_datasources()
    influx = datasources["ptmon-influxdb"]
    assert influx["type"] == "influxdb" and influx["jsonData"]["version"] == "InfluxQL"
    assert influx["jsonData"]["dbName"] and influx["url"]
    assert datasources["ptmon-prometheus"]["type"] == "prometheus"
    provider = yaml.safe_load((PROVISIONING / "dashboards" / "ptmon.yaml").read_text(encoding="utf-8"))
    [entry] = provider["providers"]
    assert entry["type"] == "file" and entry["options"]["path"] == "/var/lib/grafana/dashboards/ptmon"


# --- every query against a real run ---------------------------------------------------------------


def write_registry(path: Path) -> Path:
    """Two streets with face and plate cameras, elevators and noise sensors in two communities each."""
    lines = [HEADER]
    for street in TEST_STREETS:
        for kind, type_code, contract, count in (("face", "face_cam", "cam", 6), ("plate", "plate_cam", "cam", 4),
                                                 ("lift", "elevator", "iot", 8), ("noise", "noise", "iot", 4)):
            for i in range(count):
                community = f"{street}-c{i % 2 + 1}"
                lines.append(f"{street}-{kind}{i},{contract},{type_code},{street},scn,{community},"
                             f"gw-{community}-{contract},2026-01-01,")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def filled_influx(tmp_path_factory, broker_port):
    """InfluxDB after an hour of the test scenario (simulated in 30 s); yields (url, database, time range)."""
    tmp = tmp_path_factory.mktemp("grafana")
    database = "grafana_dashboards"
    registry_file = write_registry(tmp / "registry.csv")
    with InfluxServer(tmp) as influx:
        influxql(influx.url, "", f"CREATE DATABASE {database}")
        config = make_config(tmp, registry_file, broker_port, url=influx.url, database=database, flush_interval=0.2)
        clock = sim_clock(current_minute() - MINUTES * 60)
        collector = restored_collector(config, clock=clock)
        start_us = int(clock.start_s) * US_PER_S
        end_us = start_us + MINUTES * 60 * US_PER_S

        async def main() -> None:
            stop = asyncio.Event()
            task = asyncio.create_task(collector.run(stop))
            plan = load_scenario(SCENARIO, collector.registry, start_us, end_us, seed=7)
            options = Options(broker=BrokerAddress.parse(f"mqtt://127.0.0.1:{broker_port}"), start_us=start_us,
                              duration_us=end_us - start_us, speed=SPEED, qos=1, anchor_wall=clock.anchor,
                              client_prefix=f"sim-{time.monotonic_ns()}")
            await asyncio.wait_for(Simulator(collector.registry, plan, options).run(), MINUTES * 60 / SPEED + 60)
            await asyncio.sleep(2.0)
            stop.set()
            await asyncio.wait_for(task, 60)

        asyncio.run(main())
        assert collector.engine.stats["heartbeats"] > 500
        write_anomalies(influx.url, database, collector.registry, start_us, end_us)
        yield influx.url, database, (start_us // 1000, end_us // 1000 + 60_000)


def write_anomalies(url: str, database: str, registry, start_us: int, end_us: int) -> None:
    """Anomaly points as the collector writes them (device health needs a week of history before it
    judges, more than this hour): a camera blind and a sensor stuck since mid-run, still open."""
    from urllib.request import urlopen

    from ptmon.anomaly.points import anomaly_line
    from ptmon.anomaly.records import Anomaly

    lines = []
    for device, kind in (("taopu-face1", "blind"), ("taopu-lift2", "stuck")):
        row = registry.index[device]
        a = Anomaly(device=device, kind=kind, contract=registry.rules.contracts[int(registry.contract[row])].code,
                    street="taopu", type=registry.rules.types[int(registry.type[row])].code,
                    community=registry.communities[int(registry.community[row])], gateway="gw", start=start_us,
                    detected=start_us + 1800 * US_PER_S, end=None, month="", attempts=2.0, successes=2.0,
                    expected_attempts=300.0, expected_successes=290.0)
        lines += [anomaly_line(a, t, open_=True) for t in range(a.detected, end_us, 300 * US_PER_S)]
    with urlopen(f"{url}/write?db={database}&precision=u", data="\n".join(lines).encode(), timeout=10) as response:
        assert response.status == 204


def interpolate(query: str, board: dict[str, Any], time_range: tuple[int, int]) -> str:
    """The query as Grafana sends it: $timeFilter, $__interval and the dashboard's variables filled in.

    A variable takes the test's streets among its options; multi-value ones become a regex
    alternation ``(a|b)``, as Grafana's InfluxDB datasource formats them. $__interval is the
    datasource's minimum interval (60 s), what Grafana uses for a range this short.
    """
    start_ms, end_ms = time_range
    values = {"timeFilter": f"time >= {start_ms}ms and time <= {end_ms}ms", "__interval": "1m",
              "__interval_ms": "60000"}
    for variable in board["templating"]["list"]:
        options = [o["value"] for o in variable["options"]]
        chosen = [s for s in TEST_STREETS if s in options]
        assert chosen, f"variable {variable['name']} offers none of {TEST_STREETS}"
        if variable.get("multi") or variable.get("includeAll"):
            values[variable["name"]] = "(" + "|".join(re.escape(v) for v in chosen) + ")"
        else:
            values[variable["name"]] = "taopu" if "taopu" in chosen else chosen[0]

    def fill(match: re.Match[str]) -> str:
        name = next(g for g in match.groups() if g)
        return values.get(name, match[0])

    return VARIABLE.sub(fill, query)


def has_data(result: dict[str, Any]) -> bool:
    """True when some series has a row with a non-null value besides the time."""
    return any(any(v is not None for v in row[1:])
               for r in result["results"] for s in r.get("series", []) for row in s["values"])


@pytest.mark.slow
@pytest.mark.parametrize(("board_file", "title", "ref", "query"), queries(),
                         ids=[f"{b}:{t}:{r}" for b, t, r, _ in queries()])
def test_query_returns_data(filled_influx, board_file, title, ref, query):
    """Test that a panel's query runs on InfluxDB and returns data from the simulated hour."""
    url, database, time_range = filled_influx
    sent = interpolate(query, load(DASHBOARD_DIR / board_file), time_range)
    assert "$" not in sent.replace("$/", "/"), sent
    result = influxql(url, database, sent)
    hint = " (the collector writes no `collector` points: collector/health.py)" if '"collector"' in sent else ""
    assert has_data(result), f"no data{hint}: {sent}"
