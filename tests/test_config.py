"""The collector's TOML config: the sample loads, a bad file fails naming file, key and value."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from ptmon import config as config_module
from ptmon.config import (
    CollectorConfig,
    InfluxConfig,
    MqttConfig,
    TlsConfig,
    check_config,
    load_config,
)
from ptmon.errors import ConfigError

SAMPLE = Path(__file__).resolve().parent.parent / "ptmon.sample.toml"
SECRETS = {"PTMON_MQTT_PASSWORD": "mqtt-Secret-1", "PTMON_INFLUX_PASSWORD": "influx-Secret-2",
           "PTMON_INFLUX_TOKEN": "influx-Token-3", "MY_PW": "my-Secret-4"}
KEY_LINE = re.compile(r"^(?:# )?(\w+) = ")
TABLE_LINE = re.compile(r"^(?:# )?\[([\w.]+)\]")


def write(directory: Path, text: str, name: str = "ptmon.toml") -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def test_sample_loads_to_the_dataclass_defaults():
    """Test that the shipped sample loads, with its secrets' variables set, to the defaults."""
    config = load_config(SAMPLE, env=SECRETS)
    here = SAMPLE.parent
    assert config == CollectorConfig(source=SAMPLE, registry=here / "registry.csv",
                                     data_dir=here / "ptmon-data")
    assert config.archive_path == here / "ptmon-data" / "archive"
    assert config.checkpoint_interval == 60.0 and config.metrics_listen == "127.0.0.1:9464"
    m, i = config.mqtt, config.influx
    assert (m.host, m.port, m.tls, m.protocol, m.qos) == ("127.0.0.1", 1883, None, "3.1.1", 1)
    assert (m.session_expiry, m.keepalive, m.reconnect_min, m.reconnect_max) == (604_800, 30, 0.5, 30.0)
    assert m.topics == ("putuo/+/+/+/hb", "putuo/gw/+/status")
    assert (m.username, m.password) == (None, None)  # no username: the default variable is unused
    assert (i.url, i.api, i.token, i.memory_limit, i.spool_limit) == ("", "v1", None, 64 * 2**20, 10 * 2**30)


def test_sample_documents_every_key():
    """Test that the sample shows every key the loader knows, in its table, each with a comment."""
    lines = SAMPLE.read_text(encoding="utf-8").splitlines()
    shown: dict[str, set[str]] = {"": set()}
    table = ""
    for n, line in enumerate(lines):
        if match := TABLE_LINE.match(line):
            table = match[1]
            shown[table] = set()
        elif match := KEY_LINE.match(line):
            shown[table].add(match[1])
            commented = " # " in line[2:] or lines[n + 1].lstrip().startswith("#")
            assert commented, f"{match[1]} has no comment"
    sections = {"mqtt": config_module.MqttConfig, "mqtt.tls": config_module.TlsConfig,
                "influx": config_module.InfluxConfig, "alerts": config_module.AlertsConfig,
                "email": config_module.EmailConfig, "limits": config_module.LimitsConfig,
                "storage": config_module.StorageConfig, "loss": config_module.LossConfig,
                "month": config_module.MonthConfig}
    assert shown[""] == set(config_module.CollectorConfig.file_keys()) - set(sections)
    assert shown["mqtt"] == set(config_module.MqttConfig.file_keys()) - {"tls"}
    for table, section in sections.items():
        if table != "mqtt":
            assert shown[table] == set(section.file_keys()), table


def test_sample_commented_keys_load_once_uncommented(tmp_path):
    """Test that the sample's commented-out keys are valid once uncommented (TLS files present)."""
    text = re.sub(r"(?m)^# (\[mqtt\.tls\]|\w+ = )", r"\1", SAMPLE.read_text(encoding="utf-8"))
    text = re.sub(r"(?m)^(host|port) = .*\n", "", text)  # url replaces them
    text = text.replace('url = "mqtt://', 'url = "mqtts://').replace('username = ""', 'username = "ptmon"')
    text = text.replace('url = ""', 'url = "https://influx.example:8086/"')
    for name in ("ca.pem", "client.pem", "client.key", "smtp-ca.pem"):
        write(tmp_path, "PEM", name)
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "alerts.yaml").write_text("rules: []\n")
    config = load_config(write(tmp_path, text), env=SECRETS)
    assert config.alerts.rules_file == tmp_path / "rules" / "alerts.yaml"
    assert config.email.ca_file == tmp_path / "smtp-ca.pem" and config.email.username == "ptmon"
    m, i = config.mqtt, config.influx
    assert (m.host, m.port, m.username, m.password) == ("127.0.0.1", 1883, "ptmon", "mqtt-Secret-1")
    assert m.tls == TlsConfig(ca_file=tmp_path / "ca.pem", cert_file=tmp_path / "client.pem",
                              key_file=tmp_path / "client.key", insecure=False)
    assert (i.url, i.username, i.password, i.token) == (
        "https://influx.example:8086", "ptmon", "influx-Secret-2", None)  # v1: no token read


TOPIC_RULE = "mqtt.topics must be MQTT topic filters ('+' and '#' only as whole levels, '#' last)"
DURATION = "must be a positive duration (seconds, or '90s', '15m', '6h', '1d')"
# (id, config text, environment, the start of the message after "<file>: ")
BAD_CONFIGS = [
    ("top-typo", "registy = 'r.csv'", {}, "registy is not a known key; known: alerts, archive_compresslevel, archive_dir,"),
    ("mqtt-typo", "[mqtt]\nqso = 1", {}, "mqtt.qso is not a known key; known: batch_size, broker_stats, client_id,"),
    ("tls-typo", "[mqtt.tls]\ncafile = 'ca.pem'", {}, "mqtt.tls.cafile is not a known key; known: ca_file,"),
    ("not-a-table", "mqtt = 3", {}, "mqtt must be a table: 3"),
    ("toml", "[mqtt\nqos = 1", {}, "not valid TOML: "),
    ("empty-registry", "registry = ''", {}, "registry must be a non-empty path: ''"),
    ("compresslevel", "archive_compresslevel = 10", {}, "archive_compresslevel must be an integer from 0 to 9: 10"),
    ("checkpoint-interval", "checkpoint_interval = 'soon'", {},
     f"checkpoint_interval {DURATION} or a number of seconds like 0.5: 'soon'"),
    ("listen-no-host", "metrics_listen = '9464'", {}, "metrics_listen must be host:port or empty: '9464'"),
    ("listen-port-name", "metrics_listen = 'localhost:http'", {}, "metrics_listen must be host:port or empty: 'localhost:http'"),
    ("qos", "[mqtt]\nqos = 2", {}, "mqtt.qos must be 0 or 1: 2"),
    ("qos-bool", "[mqtt]\nqos = true", {}, "mqtt.qos must be 0 or 1: True"),
    ("protocol", "[mqtt]\nprotocol = '4'", {}, "mqtt.protocol must be '5' or '3.1.1': '4'"),
    ("url-scheme", "[mqtt]\nurl = 'tcp://broker:1883'", {}, "mqtt.url must be mqtt://host[:port] or mqtts://host[:port]: 'tcp://broker:1883'"),
    ("url-port", "[mqtt]\nurl = 'mqtt://broker:99999'", {}, "mqtt.url must be mqtt://host[:port] or mqtts://host[:port]: 'mqtt://broker:99999'"),
    ("url-credentials", "[mqtt]\nurl = 'mqtt://u:hunter2@broker'", {},
     "mqtt.url holds credentials (mqtt://***@broker): a config file never holds a password; give mqtt.username and put the "
     "password in the environment variable mqtt.password_env names (PTMON_MQTT_PASSWORD by default)"),
    ("url-and-port", "[mqtt]\nurl = 'mqtt://broker'\nport = 1884", {}, "mqtt.url must be given without mqtt.host and mqtt.port: 'mqtt://broker'"),
    ("host-url", "[mqtt]\nhost = 'mqtt://broker'", {}, "mqtt.host must be a host name or address (or give mqtt.url instead): 'mqtt://broker'"),
    ("port", "[mqtt]\nport = 0", {}, "mqtt.port must be an integer from 1 to 65535: 0"),
    ("tls-plain-url", "[mqtt]\nurl = 'mqtt://broker'\n[mqtt.tls]", {}, "mqtt.url must be mqtts:// with a [mqtt.tls] table: 'mqtt://broker'"),
    ("ca-missing", "[mqtt.tls]\nca_file = 'missing.pem'", {}, "mqtt.tls.ca_file must be an existing file: 'missing.pem'"),
    ("cert-no-key", "[mqtt.tls]\ncert_file = 'ca.pem'", {},
     "mqtt.tls.cert_file must be given with mqtt.tls.key_file (the same file for a combined PEM): 'ca.pem'"),
    ("insecure", "[mqtt.tls]\ninsecure = 'yes'", {}, "mqtt.tls.insecure must be true or false: 'yes'"),
    ("topics-string", "[mqtt]\ntopics = 'putuo/#'", {}, "mqtt.topics must be a non-empty list of MQTT topic filters: 'putuo/#'"),
    ("topics-empty", "[mqtt]\ntopics = []", {}, "mqtt.topics must be a non-empty list of MQTT topic filters: []"),
    ("hash-not-last", "[mqtt]\ntopics = ['putuo/#/hb']", {}, f"{TOPIC_RULE}: 'putuo/#/hb'"),
    ("plus-in-level", "[mqtt]\ntopics = ['putuo/cam+/x']", {}, f"{TOPIC_RULE}: 'putuo/cam+/x'"),
    ("empty-topic", "[mqtt]\ntopics = ['']", {}, f"{TOPIC_RULE}: ''"),
    ("nul-topic", '[mqtt]\ntopics = ["a\\u0000b"]', {}, f"{TOPIC_RULE}: 'a\\x00b'"),
    ("duplicate-topic", "[mqtt]\ntopics = ['a/+', 'a/+']", {}, "mqtt.topics must be distinct topic filters: 'a/+'"),
    ("session-expiry", "[mqtt]\nsession_expiry = '7 days'", {},
     f"mqtt.session_expiry {DURATION}, at most 4294967295 s: '7 days'"),
    ("keepalive", "[mqtt]\nkeepalive = 0.5", {}, f"mqtt.keepalive {DURATION}, at most 65535 s: 0.5"),
    ("reconnect-order", "[mqtt]\nreconnect_min = '1m'", {}, "mqtt.reconnect_min must be at most mqtt.reconnect_max (30 s): '1m'"),
    ("receive-maximum", "[mqtt]\nreceive_maximum = 70000", {}, "mqtt.receive_maximum must be an integer from 1 to 65535: 70000"),
    ("mqtt-batch", "[mqtt]\nbatch_size = 0", {}, "mqtt.batch_size must be an integer at least 1: 0"),
    ("empty-client-id", "[mqtt]\nclient_id = ''", {}, "mqtt.client_id must be non-empty with qos 1 and a persistent session: ''"),
    ("password-no-user", "[mqtt]\npassword_env = 'MY_PW'", SECRETS,
     "mqtt.password_env must be given with mqtt.username: 'MY_PW'"),
    ("password-unset", "[mqtt]\nusername = 'u'\npassword_env = 'UNSET_PW'", SECRETS,
     "mqtt.password_env must be the name of a set, non-empty environment variable: 'UNSET_PW'"),
    ("password-empty", "[mqtt]\nusername = 'u'\npassword_env = 'MY_PW'", {"MY_PW": ""},
     "mqtt.password_env must be the name of a set, non-empty environment variable: 'MY_PW'"),
    ("password-env-name", "[mqtt]\nusername = 'u'\npassword_env = '$PW'", SECRETS,
     "mqtt.password_env must be an environment variable name: '$PW'"),
    ("influx-scheme", "[influx]\nurl = 'ftp://influx:8086'", {},
     "influx.url must be http(s)://host[:port][/path] without credentials or query: 'ftp://influx:8086'"),
    ("influx-credentials", "[influx]\nurl = 'http://admin:hunter2@influx:8086'", {},
     "influx.url holds credentials (http://***@influx:8086): a config file never holds a password; give influx.username and put "
     "the password in the environment variable influx.password_env names (PTMON_INFLUX_PASSWORD by default), "
     "or with api = \"v2\" the token in PTMON_INFLUX_TOKEN"),
    ("influx-api", "[influx]\napi = 'v3'", {}, "influx.api must be 'v1' or 'v2': 'v3'"),
    ("v2-token", "[influx]\nurl = 'http://influx:8086'\napi = 'v2'\norg = 'putuo'", {},
     "influx.token_env must be the name of a set, non-empty environment variable: 'PTMON_INFLUX_TOKEN'"),
    ("v2-org", "[influx]\nurl = 'http://influx:8086'\napi = 'v2'", SECRETS, "influx.org must be set with api 'v2': ''"),
    ("v1-password-unset", "[influx]\nurl = 'http://influx:8086'\nusername = 'u'\npassword_env = 'UNSET_PW'", {},
     "influx.password_env must be the name of a set, non-empty environment variable: 'UNSET_PW'"),
    ("database", "[influx]\ndatabase = ''", {}, "influx.database must be a non-empty string: ''"),
    ("memory-limit", "[influx]\nmemory_limit = 'lots'", {},
     "influx.memory_limit must be a positive size (bytes, or like '64MB', '10GB'): 'lots'"),
    ("spool-limit", "[influx]\nspool_limit = 0", {},
     "influx.spool_limit must be a positive size (bytes, or like '64MB', '10GB'): 0"),
    ("sub-second-unit", "[influx]\nflush_interval = '0.5s'", {},
     f"influx.flush_interval {DURATION} or a number of seconds like 0.5: '0.5s'"),
    ("timeout", "[influx]\ntimeout = -1", {}, f"influx.timeout {DURATION} or a number of seconds like 0.5: -1"),
    ("retry-order", "[influx]\nretry_min = 60", {}, "influx.retry_min must be at most influx.retry_max (30 s): 60"),
    ("gzip", "[influx]\ngzip = 1", {}, "influx.gzip must be true or false: 1"),
    ("password-in-file", "[mqtt]\nusername = 'u'\npassword = 'hunter2'", {}, "mqtt.password is not a known key; known: "),
    ("token-in-file", "[influx]\ntoken = 'hunter2'", {}, "influx.token is not a known key; known: "),
    ("source-in-file", "source = 'other.toml'", {}, "source is not a known key; known: "),
    ("email-sender", "[email]\nsender = 'ptmon'", {}, "email.sender must be one e-mail address: 'ptmon'"),
    ("email-port-bool", "[email]\nport = true", {}, "email.port must be an integer from 1 to 65535: True"),
    ("email-host-space", "[email]\nhost = 'smtp host'", {},
     "email.host must be a host name or address (no spaces, no port: that is email.port): 'smtp host'"),
    ("email-host-port", "[email]\nhost = 'smtp.example:25'", {},
     "email.host must be a host name or address (no spaces, no port: that is email.port): 'smtp.example:25'"),
    ("loss-share", "[loss]\nstreet_rate = 2", {}, "loss.street_rate must be a fraction between 0 and 1 (0.02 for 2 %): 2"),
    ("storage-order", "[storage]\nretry_min = '1m'", {}, "storage.retry_min must be at most storage.retry_max (30 s): '1m'"),
    ("alerts-rules-missing", "[alerts]\nrules_file = 'none.yaml'", {}, "alerts.rules_file must be an existing file: 'none.yaml'"),
]


@pytest.mark.parametrize(("text", "env", "message"), [case[1:] for case in BAD_CONFIGS],
                         ids=[case[0] for case in BAD_CONFIGS])
def test_bad_config_names_file_key_and_value(tmp_path, text, env, message):
    """Test that a bad config fails at load with the file, the key and the bad value."""
    write(tmp_path, "PEM", "ca.pem")
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path, env=env)
    assert str(err.value).startswith(f"{path}: {message}")
    assert "hunter2" not in str(err.value)


def test_missing_file_is_named(tmp_path):
    """Test that a config file that cannot be read is named in the error."""
    with pytest.raises(ConfigError, match=r"none\.toml: cannot read config file"):
        load_config(tmp_path / "none.toml", env={})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[mqtt]\nurl = 'mqtts://broker.example'", ("broker.example", 8883, TlsConfig())),
        ("[mqtt]\nurl = 'mqtt://[::1]:1884/'", ("::1", 1884, None)),
        ("[mqtt]\nhost = 'broker'\n[mqtt.tls]\ninsecure = true", ("broker", 8883, TlsConfig(insecure=True))),
        ("[mqtt]\nhost = 'broker'\nport = 8884\n[mqtt.tls]", ("broker", 8884, TlsConfig())),
        ("[mqtt]\nhost = 'broker'", ("broker", 1883, None)),
    ],
    ids=["mqtts-default-port", "ipv6", "tls-table", "tls-table-port", "host"],
)
def test_broker_address_and_tls(tmp_path, text, expected):
    """Test that url, or host and port with a [mqtt.tls] table, give host, port and TLS."""
    mqtt = load_config(write(tmp_path, text), env={}).mqtt
    assert (mqtt.host, mqtt.port, mqtt.tls) == expected


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("mqtt.protocol", "5", "5"), ("mqtt.protocol", "311", "3.1.1"), ("mqtt.protocol", "'3.1.1'", "3.1.1"),
        ("mqtt.protocol", "'311'", "3.1.1"), ("mqtt.session_expiry", "'1d'", 86_400),
        ("mqtt.keepalive", "'1m'", 60), ("mqtt.reconnect_min", "0.25", 0.25), ("mqtt.qos", "0", 0),
        ("influx.memory_limit", "'64MB'", 64 * 2**20), ("influx.memory_limit", "'512KiB'", 512 * 2**10),
        ("influx.spool_limit", "'1.5GB'", 3 * 2**29), ("influx.spool_limit", "4096", 4096),
        ("influx.flush_interval", "'2s'", 2.0), ("influx.timeout", "2.5", 2.5),
    ],
    ids=["protocol-int", "protocol-311-int", "protocol-str", "protocol-311", "expiry-days",
         "keepalive-minutes", "sub-second", "qos0", "megabytes", "kibibytes", "fractional-gigabytes",
         "bytes", "flush-seconds", "timeout-float"],
)
def test_value_forms(tmp_path, key, value, expected):
    """Test that each accepted spelling of a protocol, duration or size loads to its value."""
    table, name = key.split(".")
    config = load_config(write(tmp_path, f"[{table}]\n{name} = {value}"), env={})
    assert getattr(getattr(config, table), name) == expected


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("[mqtt]\nusername = 'u'", SECRETS, ("mqtt-Secret-1", None, None)),
        ("[mqtt]\nusername = 'u'", {}, (None, None, None)),
        ("[mqtt]\nusername = 'u'\npassword_env = 'MY_PW'", SECRETS, ("my-Secret-4", None, None)),
        ("[influx]\nurl = 'http://i:8086'\nusername = 'u'", SECRETS, (None, "influx-Secret-2", None)),
        ("[influx]\nurl = 'http://i:8086'\nusername = 'u'", {}, (None, None, None)),
        ("[influx]\nurl = 'http://i:8086'\napi = 'v2'\norg = 'o'", SECRETS, (None, None, "influx-Token-3")),
        ("[influx]\nurl = 'http://i:8086'\napi = 'v2'\norg = 'o'\ntoken_env = 'MY_PW'", SECRETS, (None, None, "my-Secret-4")),
        ("[influx]\napi = 'v2'", {}, (None, None, None)),
        ("[influx]\nurl = 'http://i:8086'\napi = 'v2'\norg = 'o'\nusername = 'u'", SECRETS, (None, None, "influx-Token-3")),
    ],
    ids=["mqtt-default-var", "mqtt-default-unset", "mqtt-named-var", "v1-default-var", "v1-default-unset",
         "v2-default-token", "v2-named-token", "v2-disabled-needs-no-token", "v2-ignores-v1-password"],
)
def test_secrets_come_from_the_environment(tmp_path, text, env, expected):
    """Test that passwords and tokens come from the named or default variable, only where used."""
    config = load_config(write(tmp_path, text), env=env)
    assert (config.mqtt.password, config.influx.password, config.influx.token) == expected


def test_env_defaults_to_os_environ(tmp_path, monkeypatch):
    """Test that without an env mapping the secrets come from os.environ."""
    monkeypatch.setenv("PTMON_MQTT_PASSWORD", "from-os-environ")
    config = load_config(write(tmp_path, "[mqtt]\nusername = 'u'"))
    assert config.mqtt.password == "from-os-environ"


def test_relative_paths_resolve_against_the_config_directory(tmp_path, monkeypatch):
    """Test that relative paths are relative to the config file's directory, not the cwd."""
    conf = tmp_path / "etc"
    conf.mkdir()
    write(conf, "PEM", "ca.pem")
    text = ("registry = 'devices.csv'\nrules = 'rules'\ndata_dir = '../var'\n"
            f"spool_dir = '{tmp_path / 'spool'}'\n[mqtt.tls]\nca_file = 'ca.pem'")
    write(conf, text)
    monkeypatch.chdir(tmp_path)
    config = load_config(Path("etc/ptmon.toml"), env={})
    assert config.source == conf / "ptmon.toml"
    assert (config.registry, config.rules, config.data_dir) == (conf / "devices.csv", conf / "rules", conf / ".." / "var")
    assert config.archive_path == conf / ".." / "var" / "archive"
    assert config.spool_path == tmp_path / "spool"  # absolute stays as it is
    assert config.mqtt.tls == TlsConfig(ca_file=conf / "ca.pem")


def test_check_config_summarises_without_secrets(tmp_path):
    """Test that check_config names broker, topics, paths and InfluxDB but shows secrets only as set."""
    text = ("[mqtt]\nurl = 'mqtts://broker.example'\nusername = 'ptmon'\n"
            "[influx]\nurl = 'http://influx:8086'\nusername = 'writer'")
    config = load_config(write(tmp_path, text), env=SECRETS)
    v2 = dataclasses.replace(config.influx, api="v2", org="putuo", token=SECRETS["PTMON_INFLUX_TOKEN"])
    lines = check_config(config) + check_config(dataclasses.replace(config, influx=v2))
    text = "\n".join(lines)
    for secret in SECRETS.values():
        assert secret not in text
    assert "broker: mqtts://broker.example:8883 (TLS: CA system store)" in lines
    assert "mqtt auth: username 'ptmon', password set" in lines
    assert f"registry: {tmp_path / 'registry.csv'}" in lines
    assert "topics: putuo/+/+/+/hb, putuo/gw/+/status (and $SYS/broker/# for the broker's statistics)" in lines
    assert any(line.startswith("influx: http://influx:8086 api v1, database 'ptmon'") and "password set" in line
               for line in lines)
    assert any(line.startswith("influx: http://influx:8086 api v2") and "token set" in line for line in lines)
    assert "metrics: http://127.0.0.1:9464/metrics" in lines


def test_sections_built_in_code_are_validated_without_showing_secrets():
    """Test that a section built or replaced in code is checked like a file: a URL holding a
    password is refused, and the error shows neither it nor the query."""
    influx = InfluxConfig(url="http://influx:8086/")
    assert influx.url == "http://influx:8086"
    with pytest.raises(ValidationError) as err:
        dataclasses.replace(influx, url="http://u:cli-Secret-5@influx:8086?p=cli-Secret-6")
    assert "holds credentials (http://***@influx:8086?***)" in str(err.value)
    assert "cli-Secret" not in str(err.value)
    with pytest.raises(ValidationError, match="must be 0 or 1"):
        MqttConfig(qos=2)
    with pytest.raises(ValidationError, match=r"mqtt\.reconnect_max"):
        MqttConfig(reconnect_min=60)
    assert "hunter2" not in repr(MqttConfig(username="u", password="hunter2"))


def test_check_config_of_defaults_says_what_is_off():
    """Test that check_config of the built-in defaults reports no file, no auth and no InfluxDB."""
    lines = check_config(CollectorConfig())
    assert lines[0] == "config: none (built-in defaults)"
    assert "mqtt auth: anonymous" in lines and "influx: disabled (no influx.url)" in lines


@pytest.mark.parametrize(("security", "shown"), [("none", "no TLS"), ("starttls", "STARTTLS"), ("tls", "TLS")])
def test_check_config_email_line_reads_plainly(tmp_path, security, shown):
    """Test that the email line says host:port and the transport security in words."""
    config = load_config(write(tmp_path, f"[email]\nhost = '127.0.0.1'\nport = 28282\nsecurity = '{security}'\n"))
    (line,) = [line for line in check_config(config) if line.startswith("email:")]
    assert line.startswith(f"email: 127.0.0.1:28282, {shown}, from ")
