"""Rule files: the shipped ones load; a bad one fails naming file, key and value."""

from __future__ import annotations

from decimal import Decimal

import pytest

from ptmon.errors import ConfigError
from ptmon.rules import KNOWN_KPIS, RATIO_KPIS, load_rules, parse_duration


def test_shipped_rules_load_with_contract_thresholds(rules):
    """Test that the shipped rules carry the contracts' thresholds and 33 + 3 device types."""
    iot, cam = rules.contract("iot"), rules.contract("cam")
    assert (iot.kpi("online").threshold, iot.kpi("sensing").threshold) == (Decimal("0.90"), Decimal("0.95"))
    assert (cam.kpi("online").threshold, cam.kpi("capture").threshold) == (Decimal("0.95"), Decimal("0.95"))
    assert cam.kpi("face").informational and not cam.kpi("capture").informational
    kinds = [t.kind for t in rules.types if t.contract == "iot"]
    assert (kinds.count("common"), kinds.count("custom")) == (24, 9)
    assert len(rules.streets) == 10 and iot.sample_interval == 60


@pytest.mark.parametrize(
    ("file", "old", "new", "message"),
    [
        ("contracts.yaml", "监控点位在线率,       threshold: 0.95}", "监控点位在线率, threshold: 95}", "contracts.yaml: cam.kpis.online.threshold must be a fraction in (0, 1]: 95"),
        ("contracts.yaml", "sample_interval: 60\n  kpis:\n    online:  {name: 物联", "sample_interval: 7\n  kpis:\n    online:  {name: 物联", "iot.sample_interval must divide a day (86400 s): 7"),
        ("contracts.yaml", "\n  online_method: time_weighted", "\n  online_method: hourly", "iot.online_method must be one of time_weighted, daily: 'hourly'"),
        ("contracts.yaml", "sensing: {", "smelling: {", "iot.kpis.smelling is not a known KPI"),
        ("contracts.yaml", "online:  {name: 监控点位在线率,       threshold: 0.95}", "online:  {name: 监控点位在线率, threshold: 0.95, colour: red}", "cam.kpis.online.colour is not a known key"),
        ("types.yaml", "online_timeout: 180s,", "online_timeout: 30s,", "types.yaml: face_cam.online_timeout must be at least heartbeat_period (60 s): '30s'"),
        ("types.yaml", "max_attempt_rate: 5}", "max_attempt_rate: 5000}", "types.yaml: face_cam.max_attempt_rate must be a decimal number [0.001, 1000]: 5000"),
        ("types.yaml", "max_attempt_rate: 5}", "max_attempt_rate: 0}", "face_cam.max_attempt_rate must be a decimal number [0.001, 1000]: 0"),
        ("types.yaml", "online_timeout: 13h}", "online_timeout: 13h, max_resets_per_day: 255}", "smoke.max_resets_per_day must be a whole number in [0, 254]: 255"),
        ("types.yaml", "online_timeout: 13h}", "online_timeout: 13h, max_resets_per_day: 2.5}", "smoke.max_resets_per_day must be a whole number in [0, 254]: 2.5"),
        ("types.yaml", "heartbeat_period: 6h,  online_timeout: 13h}", "heartbeat_period: soon,  online_timeout: 13h}", "smoke.heartbeat_period must be a positive duration"),
        ("types.yaml", "{contract: iot, kind: common, name: 烟感", "{contract: lora, kind: common, name: 烟感", "smoke.contract must be one of iot, cam: 'lora'"),
        ("streets.yaml", "taopu:      {name: 桃浦镇,", "taopu:      {nom: 桃浦镇,", "streets.yaml: taopu.nom is not a known key; known: name, supervisor"),
        ("streets.yaml", "taopu:      {name: 桃浦镇,", "taopu:      {", "streets.yaml: taopu.name is missing"),
        ("contracts.yaml", "online:  {name: 物联感知终端上线率,     threshold: 0.90}\n", "", "contracts.yaml: iot.kpis must include online"),
        ("contracts.yaml", "物联感知设施租赁服务项目\n  online_method: time_weighted\n",
         "物联感知设施租赁服务项目\n  online_method: daily\n  late_heartbeats: {count: true}\n",
         "iot.late_heartbeats.count can be true only with online_method time_weighted: True"),
        ("contracts.yaml", '      taopu:      "238958.33"', '      Taopu:      "238958.33"', "contracts.yaml: iot.payment.fees.Taopu is not a valid code"),
        ("contracts.yaml", '      taopu:      "238958.33"\n', "", "iot.payment.fees.taopu is missing (every street needs its monthly fee"),
        ("contracts.yaml", "    cap: \"0.30\"", "    cap: \"3\"", "contracts.yaml: iot.payment.cap must be a decimal number [0, 1]: '3'"),
        ("streets.yaml", "changshou:", "Changshou:", "streets.yaml: Changshou is not a valid code"),
        ("streets.yaml", "{name: 长寿路街道,", "{name: [长寿路街道,", "streets.yaml: not valid YAML"),
    ],
    ids=["percent-threshold", "interval", "method", "unknown-kpi", "unknown-key", "timeout", "attempt-rate-high",
         "attempt-rate-zero", "resets-high", "resets-fraction", "duration", "type-contract", "misspelt-name", "missing-name",
         "no-online", "late-daily", "fee-code", "fee-missing", "cap", "code", "yaml"],
)
def test_bad_rule_file_names_file_key_and_value(rules_dir, file, old, new, message):
    """Test that a broken rule file fails at load with the file, the key and what was expected."""
    path = rules_dir / file
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_rules(rules_dir)
    assert message in str(err.value)


def test_plausibility_limits_default_and_override(rules):
    """Test that a type without plausibility limits gets the defaults and cameras their own attempt rate."""
    smoke, face = rules.device_type("smoke"), rules.device_type("face_cam")
    assert (smoke.max_attempt_rate, smoke.max_resets_per_day, smoke.attempt_cost_ms) == (Decimal(1), 24, 1000)
    assert (face.max_attempt_rate, face.attempt_cost_ms) == (Decimal(5), 200)


def test_missing_directory_and_file(tmp_path, rules_dir):
    """Test that a missing rules directory or file is named in the error."""
    with pytest.raises(ConfigError, match="rules directory not found"):
        load_rules(tmp_path / "none")
    (rules_dir / "types.yaml").unlink()
    with pytest.raises(ConfigError, match=r"types\.yaml: cannot read rule file"):
        load_rules(rules_dir)


def test_version_changes_with_content(rules_dir, rules):
    """Test that the rules version is a hash of the files' content."""
    assert load_rules(rules_dir).version == rules.version
    (rules_dir / "streets.yaml").write_text((rules_dir / "streets.yaml").read_text() + "\n# note\n")
    assert load_rules(rules_dir).version != rules.version


@pytest.mark.parametrize(("text", "seconds"), [(90, 90), ("90s", 90), ("15m", 900), ("6h", 21600), ("1d", 86400), ("x", None), (True, None)])
def test_parse_duration(text, seconds):
    """Test that durations parse from numbers and unit strings only."""
    assert parse_duration(text) == seconds


def test_the_kpis_a_contract_may_name_are_online_and_the_success_rates():
    """Test that the KPI codes contracts.yaml accepts are online and every success-rate KPI the engine computes."""
    assert ("online", *RATIO_KPIS) == KNOWN_KPIS
