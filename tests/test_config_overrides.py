"""Command-line options of ``ptmon collect`` are validated by the config's model, as a file is."""

from __future__ import annotations

from pathlib import Path

import pytest

from ptmon.cli import build_parser, main
from ptmon.errors import ConfigError
from ptmon.service import config_from_args

TOPIC_RULE = "mqtt.topics must be MQTT topic filters ('+' and '#' only as whole levels, '#' last)"


def args_of(*argv: str):  # type: ignore[no-untyped-def]
    return build_parser().parse_args(["collect", *argv])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--metrics", "localhost"], "--metrics: metrics_listen must be host:port or empty: 'localhost'"),
        (["--topic", "putuo/#/hb"], f"--topic: {TOPIC_RULE}: 'putuo/#/hb'"),
        (["--topic", "a/+", "--topic", "a/+"], "--topic: mqtt.topics must be distinct topic filters: 'a/+'"),
        (["--street", "tao#pu"], "--street: streets must be a list of distinct street codes"),
        (["--broker", "mqtt://bro ker"], "--broker: mqtt.host must be a host name or address"),
        (["--influx-url", "ftp://influx:8086"],
         "--influx-url: influx.url must be http(s)://host[:port][/path] without credentials or query: 'ftp://influx:8086'"),
        (["--influx-url", "http://influx:8086?p=hunter2"],
         ("--influx-url: influx.url must be http(s)://host[:port][/path] without credentials or query: "
          "'http://influx:8086?***'")),
        (["--influx-url", "http://influx:8086", "--influx-api", "v2"], "--influx-api: influx.org must be set with api 'v2': ''"),
    ],
    ids=["metrics", "topic", "duplicate-topic", "street", "broker-host", "influx-scheme", "influx-query", "v2-org"],
)
def test_bad_override_names_option_key_and_value(argv, message, capsys):
    """Test that a bad option fails as a bad file would, naming the option, the key and the value."""
    with pytest.raises(ConfigError) as err:
        config_from_args(args_of(*argv))
    assert str(err.value).startswith(message)
    assert "hunter2" not in str(err.value)
    assert main(["collect", *argv, "--check-config"]) == 2
    assert f"ptmon: error: {message}" in capsys.readouterr().err


def test_overrides_keep_the_file_and_its_secrets(tmp_path: Path, monkeypatch):
    """Test that options replace only their keys: the file's other keys and secrets stay as loaded."""
    monkeypatch.setenv("PTMON_MQTT_PASSWORD", "mqtt-Secret-1")
    config_file = tmp_path / "ptmon.toml"
    config_file.write_text("data_dir = 'var'\n[mqtt]\nhost = 'broker'\nusername = 'ptmon'\nkeepalive = '1m'\n"
                           "[influx]\nurl = 'http://influx:8086'\nmemory_limit = '1MB'\n", encoding="utf-8")
    config = config_from_args(args_of("--config", str(config_file), "--street", "taopu", "--metrics", "",
                                      "--influx-url", "http://writer:pw@influx2:8086/", "--data-dir", "d"))
    assert config.data_dir == Path("d")  # as given: relative to the working directory
    assert config.metrics_listen == "" and config.source == config_file.absolute()
    m, i = config.mqtt, config.influx
    assert (m.host, m.username, m.password, m.keepalive) == ("broker", "ptmon", "mqtt-Secret-1", 60)
    assert m.topics == ("putuo/+/taopu/+/hb", "putuo/gw/+/status")
    assert (i.url, i.username, i.password, i.memory_limit) == ("http://influx2:8086", "writer", "pw", 2**20)
