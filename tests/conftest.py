"""Shared helpers: tiny registries, heartbeat records and one-call replays."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from ptmon.collect import Collector
from ptmon.registry import Registry, parse_registry
from ptmon.replay import Replayer
from ptmon.results import Results
from ptmon.rules import DEFAULT_RULES_DIR, Rules, load_rules
from tests.servers import InfluxServer, influxql, victoria_metrics


def _devnull_is_a_device() -> bool:
    try:
        return stat.S_ISCHR(os.stat(os.devnull).st_mode)
    except FileNotFoundError:
        return False


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Put /dev/null back (as root) when something on the machine removed it: git, and subprocess's
    DEVNULL, fail without it, which would fail unrelated tests. The warning names where it was found gone."""
    if _devnull_is_a_device() or os.geteuid() != 0:
        return
    Path(os.devnull).unlink(missing_ok=True)
    os.mknod(os.devnull, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    os.chmod(os.devnull, 0o666)
    warnings.warn(f"{os.devnull} was gone or not a device before {item.nodeid}; made again", stacklevel=1)

T0 = 1_793_462_400  # 2026-11-01T00:00:00+08:00, a Shanghai month start
HEADER = "device_id,contract,type,street,scenario,community,gateway,accepted_on,retired_on"


@pytest.fixture(autouse=True)
def simulated_wall_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """The months of the tests are simulated (`--now`), so the clock a `--now` is checked against
    is set after them: the tests do not depend on the date the machine's clock shows."""
    import ptmon.month.context as month_context

    monkeypatch.setattr(month_context, "wall_clock", lambda: T0 * 1_000_000 + 10 * 365 * 86_400 * 1_000_000)


def use_numpy_scanner(monkeypatch: pytest.MonkeyPatch) -> None:
    """Have ptmon scan archives and parse payloads with the numpy code, as without the compiled library."""
    from ptmon import kernels

    kernels.available()  # loaded now, so the library is not loaded over the patch
    monkeypatch.setattr(kernels, "_lib", None)
    monkeypatch.setattr(kernels, "_why", "chosen by the test")


@pytest.fixture(params=["compiled", "numpy"])
def scanner(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test using it runs with the compiled archive scanner (kernels.c) and with its numpy
    reference, which is the fallback where the compiler was missing at install."""
    from ptmon import kernels

    if request.param == "numpy":
        use_numpy_scanner(monkeypatch)
    elif not kernels.available():
        pytest.skip("the compiled scanner is not built (tests/test_kernels.py fails on that)")
    return str(request.param)


@pytest.fixture(scope="session")
def rules() -> Rules:
    return load_rules()


TWO_STREETS = ("changzheng", "taopu")


def restored_collector(*args: object, **kwargs: object) -> Collector:
    """A collector past the first stage of its start-up (state restored, ledger open, locks held), as
    tests that feed it records or step it by hand need it; ``run`` goes on from there."""
    collector = Collector(*args, **kwargs)  # type: ignore[arg-type]
    collector.restore()
    return collector


def write_two_street_registry(path: Path) -> Path:
    """Cameras (60 s heartbeats) and elevators (5 min) in two streets, two gateways per street."""
    lines = [HEADER]
    for s in TWO_STREETS:
        for i in range(12):
            lines.append(f"{s}-cam{i},cam,face_cam,{s},scn,{s}-c1,gw-{s}-cam-{i % 2},2026-01-01,")
            lines.append(f"{s}-lift{i},iot,elevator,{s},scn,{s}-c1,gw-{s}-iot-{i % 2},2026-01-01,")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def broker_port(tmp_path_factory):  # type: ignore[no-untyped-def]
    """A Mosquitto for the test module; yields its port."""
    from .brokers import mosquitto

    with mosquitto(tmp_path_factory.mktemp("mqtt")) as port:
        yield port


def make_registry(rules: Rules, *rows: str) -> Registry:
    """Registry from short rows ``id,contract,type,street[,accepted_on[,retired_on]]``."""
    lines = [HEADER]
    for row in rows:
        device_id, contract, type_code, street, *dates = row.split(",")
        accepted = dates[0] if dates else "2026-01-01"
        retired = dates[1] if len(dates) > 1 else ""
        lines.append(f"{device_id},{contract},{type_code},{street},scn,{street}-c1,gw-{street},{accepted},{retired}")
    return parse_registry("\n".join(lines) + "\n", rules)


def hb(t: float, device: str, contract: str = "cam", street: str = "taopu", **payload: object) -> tuple[float, str, str]:
    """A heartbeat record received at ``t`` (unix seconds)."""
    return (t, f"putuo/{contract}/{street}/{device}/hb", json.dumps(payload))


def raw(t: float, topic: str, payload: str) -> tuple[float, str, str]:
    return (t, topic, payload)


def up(t: float) -> tuple[float, str, str]:
    return (t, "$ptmon/monitor", "up")


def down(t: float) -> tuple[float, str, str]:
    return (t, "$ptmon/monitor", "down")


def tick(t: float) -> tuple[float, str, str]:
    return (t, "$ptmon/tick", "")


def run(registry: Registry, records: list[tuple[float, str, str]], start: float, end: float) -> Results:
    """Replay records (in the given order) over [start, end) unix seconds."""
    replayer = Replayer(registry, int(start * 1_000_000), int(end * 1_000_000))
    replayer.feed(records)
    return replayer.results()


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    """A writable copy of the shipped rules, for tests that change them."""
    target = tmp_path / "rules"
    shutil.copytree(DEFAULT_RULES_DIR, target)
    return target


# --- real InfluxDB 1.x and VictoriaMetrics servers ------------------------------------------

@pytest.fixture(scope="module")
def influx_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxServer]:
    with InfluxServer(tmp_path_factory.mktemp("influxdb")) as server:
        yield server


@pytest.fixture
def influx_db(influx_server: InfluxServer, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh database named after the test, dropped afterwards (influxd grows per database)."""
    name = re.sub(r"\W", "_", request.node.name)[:60]
    influxql(influx_server.url, name, f'CREATE DATABASE "{name}"')
    yield name
    if influx_server.proc is not None:
        influxql(influx_server.url, name, f'DROP DATABASE "{name}"')


@pytest.fixture(scope="module")
def vm_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with victoria_metrics(tmp_path_factory.mktemp("vm")) as url:
        yield url


@pytest.fixture(scope="session")
def collected(tmp_path_factory):  # type: ignore[no-untyped-def]
    """Two partition collectors (two streets and one) and a whole-district one over the same traffic
    (tests/partition_data.py), run once: the tests copy what they change."""
    from tests import partition_data as pd

    return pd.collect(tmp_path_factory.mktemp("partitions"))


@pytest.fixture(scope="session")
def pristine(tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    """A month of generated district data with its rules (5-minute samples: a month is 8,640 of them), built
    once: the month tests copy it before they touch it."""
    from tests import month_data as md

    root = tmp_path_factory.mktemp("month")
    shutil.copytree(DEFAULT_RULES_DIR, root / "rules", ignore=shutil.ignore_patterns("*.py", "__pycache__", "*.md"))
    contracts = root / "rules" / "contracts.yaml"
    contracts.write_text(contracts.read_text().replace("sample_interval: 60", "sample_interval: 300"))
    md.build(root, load_rules(root / "rules"), root / "rules")
    return root


@pytest.fixture
def closed(pristine: Path, tmp_path: Path, capsys):  # type: ignore[no-untyped-def]
    """A copy of the generated month closed (第 1 版 of every contract, by 张三) through the command line."""
    from ptmon.cli import main
    from tests import month_data as md
    from tests.test_month_close import _copy

    m = _copy(pristine, tmp_path / "m")
    assert main(m.month("close", md.MONTH, "--by", "张三")) == 0
    capsys.readouterr()
    return m
