"""docker-compose.partitions.yml: two partition collectors laid over docker-compose.yml. Checked as
tests/test_compose.py checks the base file (no container engine runs here): valid by the Compose
Specification, every mounted file present, volumes declared, no secret, and partitions that a
merged report accepts (disjoint, covering every street of the shipped rules, own client ids)."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
import yaml

from ptmon.config import load_config
from ptmon.partition import Partition, check_partitions
from ptmon.rules import load_rules

from .test_compose import REPO, SCHEMA, VARIABLE, env_example

OVERRIDE = REPO / "docker-compose.partitions.yml"
PARTITIONS = ("collector-p1", "collector-p2")


@pytest.fixture(scope="module")
def override() -> dict[str, Any]:
    return yaml.safe_load(OVERRIDE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def merged(override) -> dict[str, Any]:
    """The base file with the override laid over it, as `docker compose -f A -f B` merges services
    (mappings merged, a service's volumes replaced by target path)."""
    base = yaml.safe_load((REPO / "docker-compose.yml").read_text(encoding="utf-8"))
    for name, service in override["services"].items():
        target = base["services"].setdefault(name, {})
        for key, value in service.items():
            if key == "volumes" and "volumes" in target:
                by_target = {v.split(":")[1]: v for v in target["volumes"]}
                by_target.update({v.split(":")[1]: v for v in value})
                target["volumes"] = list(by_target.values())
            else:
                target[key] = value
    base["volumes"] = {**base["volumes"], **override["volumes"]}
    return base


def _errors(doc: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text(encoding="utf-8")))
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]


def test_override_and_merged_file_are_valid_compose(override, merged):
    """Test that the override alone and laid over the base validate against the Compose Specification."""
    assert _errors(override) == []
    assert _errors(merged) == []
    assert merged["services"]["collector"]["profiles"] == ["whole-district"]
    assert merged["services"]["report"]["profiles"] == ["report"]


def test_mounts_volumes_and_variables(merged):
    """Test that every bind mount is in the repository, every named volume is declared, and every
    variable is in .env.example with no secret written in the file."""
    used = set()
    for name, service in merged["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (REPO / source).exists(), f"{name}: {source} is not in the repository"
            else:
                used.add(source)
        for key, value in (service.get("environment") or {}).items():
            if "PASSWORD" in key or "TOKEN" in key:
                assert str(value).startswith("${"), f"{name}: {key} is set in the file"
    assert used == set(merged["volumes"])
    text = OVERRIDE.read_text(encoding="utf-8").replace("$$", "")
    assert set(VARIABLE.findall(text)) <= set(env_example())


def test_partition_configs_make_one_district(merged):
    """Test that the partition collectors' configs load, own disjoint streets covering the shipped
    rules, keep their own client ids and data volumes, and are scraped by Prometheus."""
    rules = load_rules()
    configs, data_volumes = [], set()
    for name in PARTITIONS:
        service = merged["services"][name]
        path = service["command"][service["command"].index("--config") + 1].replace("/etc/ptmon", "deploy/collector")
        config = load_config(REPO / path, env=dict.fromkeys(service["environment"], "secret"))
        assert config.mqtt.password == "secret" and config.streets
        configs.append((name, config))
        data_volumes |= {v.split(":")[0] for v in service["volumes"] if v.endswith(":/var/lib/ptmon")}
        assert service["healthcheck"]["test"] and service["restart"] == "unless-stopped"
    check_partitions(rules, [(name, Partition(c.streets, rules.version, "r")) for name, c in configs])
    base = load_config(REPO / "deploy/collector/ptmon.toml", env=dict.fromkeys(service["environment"], "secret"))
    assert len({c.mqtt.client_id for _, c in configs} | {base.mqtt.client_id}) == len(configs) + 1
    assert len(data_volumes) == len(configs)
    prometheus = yaml.safe_load((REPO / "deploy/prometheus/prometheus.partitions.yml").read_text(encoding="utf-8"))
    targets = {t for job in prometheus["scrape_configs"] for c in job["static_configs"] for t in c["targets"]}
    for name, config in configs:
        assert f"{name}:{config.metrics_listen.rpartition(':')[2]}" in targets
