"""docker-compose.yml: valid by the Compose Specification's JSON schema, every mounted file in the
repository, no secret in it, and consistent with the collector, Mosquitto, Prometheus and Grafana
files it mounts. No container engine runs here: these are the checks that need none."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from ptmon.config import load_config

REPO = Path(__file__).resolve().parent.parent
SCHEMA = Path(__file__).parent / "data" / "compose-spec.json"
SERVICES = {"mosquitto", "influxdb", "collector", "prometheus", "grafana", "simulator"}
VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")
SECRET_NAME = re.compile(r"PASSWORD|TOKEN|SECRET", re.IGNORECASE)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text(encoding="utf-8"))


def raw_text() -> str:
    """The compose file with ``$$`` (a literal dollar for the container) taken out."""
    return (REPO / "docker-compose.yml").read_text(encoding="utf-8").replace("$$", "")


def env_example() -> dict[str, str]:
    lines = (REPO / ".env.example").read_text(encoding="utf-8").splitlines()
    return dict(line.split("=", 1) for line in lines if line.strip() and not line.lstrip().startswith("#"))


def bind_mounts(compose: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(service, host path, container path) of every bind mount (short syntax, relative path)."""
    out = []
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source, target = volume.split(":")[:2]
            if source.startswith((".", "/")):
                out.append((name, source, target))
    return out


def test_valid_by_the_compose_specification(compose):
    """Test that the file validates against the Compose Specification's JSON schema."""
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    validator = jsonschema.Draft202012Validator(schema)
    validator.check_schema(schema)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(compose)]
    assert errors == []


def test_the_schema_catches_mistakes():
    """Test that the vendored schema is strict enough to matter (unknown keys, wrong types)."""
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text(encoding="utf-8")))
    assert not validator.is_valid({"services": {"a": {"image": "x", "helthcheck": {}}}})
    assert not validator.is_valid({"services": {"a": {"image": "x", "depends_on": {"b": {"condition": "ready"}}}}})
    assert not validator.is_valid({"servces": {}})


def test_services_profiles_healthchecks_and_restarts(compose):
    """Test that every service is there, the simulator only in the demo profile, and every long-running
    service has a health check, a restart policy and log rotation."""
    services = compose["services"]
    assert set(services) == SERVICES
    for name, service in services.items():
        assert service.get("profiles", []) == (["demo"] if name == "simulator" else []), name
        assert service.get("restart") in ("unless-stopped", "always", "on-failure"), name
        assert service.get("logging", {}).get("options", {}).get("max-size"), name
        if name != "simulator":
            assert service["healthcheck"]["test"], name
    assert services["collector"]["build"]["dockerfile"] == "Dockerfile"
    assert services["collector"]["depends_on"]["mosquitto"]["condition"] == "service_healthy"


def test_every_mounted_file_exists(compose):
    """Test that every bind mount's source is in the repository (a folder for a folder, a file for a file)."""
    mounts = bind_mounts(compose)
    assert len(mounts) >= 6
    for service, source, target in mounts:
        path = REPO / source
        assert path.exists(), f"{service}: {source} is not in the repository"
        if Path(target).suffix:  # mounted onto a file name
            assert path.is_file(), f"{service}: {source} should be a file"


def test_named_volumes_are_declared_and_used(compose):
    """Test that the data lives in named volumes, each declared once and used."""
    used = {v.split(":")[0] for s in compose["services"].values() for v in s.get("volumes", [])
            if not v.startswith((".", "/"))}
    assert used == set(compose["volumes"])
    assert {"ptmon-data", "influxdb-data", "mosquitto-data", "grafana-data", "prometheus-data"} <= used


def test_no_secret_in_the_file_and_every_variable_in_env_example(compose):
    """Test that every password or token comes from a variable, and .env.example names every variable."""
    for name, service in compose["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if SECRET_NAME.search(key) and "USER" not in key:
                assert str(value).startswith("${"), f"{name}: {key} is set in the file"
    example = env_example()
    assert set(VARIABLE.findall(raw_text())) <= set(example)
    assert not (REPO / ".env").exists() or ".env" in (REPO / ".gitignore").read_text()
    assert ".env" in (REPO / ".dockerignore").read_text().split()


def test_dockerfile_copies_what_exists():
    """Test that every file the Dockerfile copies is in the repository."""
    text = (REPO / "Dockerfile").read_text(encoding="utf-8")
    sources = [s for line in re.findall(r"^COPY (.+)$", text, re.MULTILINE) for s in line.split()[:-1]]
    assert sources and all((REPO / s).exists() for s in sources)


def test_collector_config_loads_with_the_environment_compose_gives(compose):
    """Test that deploy/collector/ptmon.toml is a valid config once compose has set its secrets, and that
    Prometheus scrapes the port it serves /metrics on."""
    environment = compose["services"]["collector"]["environment"]
    config = load_config(REPO / "deploy/collector/ptmon.toml", env=dict.fromkeys(environment, "secret"))
    assert config.mqtt.password == "secret" and config.influx.token == "secret"
    assert config.mqtt.host == "mosquitto" and config.influx.url == "http://influxdb:8086"
    port = config.metrics_listen.rpartition(":")[2]
    prometheus = yaml.safe_load((REPO / "deploy/prometheus/prometheus.yml").read_text(encoding="utf-8"))
    targets = [t for job in prometheus["scrape_configs"] for c in job["static_configs"] for t in c["targets"]]
    assert f"collector:{port}" in targets
    acl = (REPO / "deploy/mosquitto/acl").read_text(encoding="utf-8")
    assert f"user {config.mqtt.username}\ntopic read putuo/#\n" in acl


def test_grafana_gets_what_its_provisioning_reads(compose):
    """Test that every $VAR in Grafana's provisioning files is set in the grafana service."""
    environment = compose["services"]["grafana"]["environment"]
    wanted = set()
    for path in (REPO / "grafana/provisioning").rglob("*.yaml"):
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if not line.lstrip().startswith("#")]
        wanted |= set(re.findall(r"\$\{?([A-Z_][A-Z0-9_]*)", "\n".join(lines)))
    assert wanted and wanted <= set(environment)
    assert environment["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert str(environment["GF_SECURITY_ADMIN_PASSWORD"]).startswith("${GRAFANA_ADMIN_PASSWORD")
