"""The sections of ptmon.toml, a frozen dataclass each: every key declared once, with its type,
default, bounds and unit (collector/config/fields.py), in the order ``--check-config`` shows
them."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import field
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import BeforeValidator, Field
from pydantic.dataclasses import dataclass

from ..credentials import parse_broker_url, redact
from .base import SECTION, Section, credentials, secret
from .fields import (
    FileContext,
    as_seconds,
    as_text,
    choice,
    flag,
    integer,
    invalid,
    path,
    proportion,
    refused,
    seconds,
    share,
    size,
    text,
)

DEFAULT_TOPICS = ("putuo/+/+/+/hb", "putuo/gw/+/status")
MQTT_PASSWORD_ENV = "PTMON_MQTT_PASSWORD"
INFLUX_PASSWORD_ENV = "PTMON_INFLUX_PASSWORD"
INFLUX_TOKEN_ENV = "PTMON_INFLUX_TOKEN"
SMTP_PASSWORD_ENV = "PTMON_SMTP_PASSWORD"
# the largest max_payload allowed; the source archives a longer payload cut just past it (source.py)
PAYLOAD_CEILING = 2**20

Text = Annotated[str, text()]
Required = Annotated[str, text(required=True)]
User = Annotated[str | None, text(empty_is_none=True)]
Secret = Annotated[str | None, text(empty_is_none=True)]
Flag = Annotated[bool, flag()]
Port = Annotated[int, integer(1, 65_535)]
Seconds = Annotated[float, seconds()]
OptionalPath = Annotated[Path | None, path()]
# In a file a default path is relative to its directory too, so the default is validated.
RequiredPath = Annotated[Path, path(required=True), Field(validate_default=True)]
ExistingFile = Annotated[Path | None, path(existing=True)]
Size = Annotated[int, size()]


def _host(value: Any) -> str:
    host = as_text(value, required=True).strip()
    if any(c.isspace() or c in "/@[]" for c in host):
        raise invalid("a host name or address (or give mqtt.url instead)", host)
    return host


def _smtp_host(value: Any) -> str:
    """The SMTP server's host name or address; empty: emails stay queued in the ledger."""
    host = as_text(value).strip() if value is not None else ""
    if any(c.isspace() or c in "/@[]" for c in host) or (":" in host and not _ip_address(host)):
        raise invalid("a host name or address (no spaces, no port: that is email.port)", host)
    return host


def _ip_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _protocol(value: Any) -> str:
    spelled = str(value) if isinstance(value, (str, int)) else ""
    protocol = {"5": "5", "3.1.1": "3.1.1", "311": "3.1.1"}.get(spelled)
    if protocol is None:
        raise invalid("'5' or '3.1.1'", value)
    return protocol


def _topics(value: Any) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)) or not value:
        raise invalid("a non-empty list of MQTT topic filters", value)
    for topic in value:
        if not _valid_filter(topic):
            raise invalid("MQTT topic filters ('+' and '#' only as whole levels, '#' last)", topic)
    for i, topic in enumerate(value):
        if topic in value[:i]:
            raise invalid("distinct topic filters", topic)
    return tuple(value)


def _valid_filter(topic: Any) -> bool:
    if not isinstance(topic, str) or not topic or "\0" in topic or len(topic.encode()) > 65_535:
        return False
    levels = topic.split("/")
    return all(level in ("+", "#") or ("+" not in level and "#" not in level) for level in levels) \
        and "#" not in levels[:-1]


@dataclass(frozen=True, kw_only=True, config=SECTION)
class TlsConfig(Section):
    """TLS to the broker (``mqtts://``). Empty paths mean the system's CA store / no client cert."""

    table = "mqtt.tls"
    ca_file: ExistingFile = None
    cert_file: ExistingFile = None
    key_file: ExistingFile = None
    insecure: Flag = False  # skip hostname verification (test brokers only)

    def check(self, given: dict[str, Any]) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            key, missing = ("cert_file", "key_file")
            if self.cert_file is None:
                key, missing = missing, key
            expected = f"given with mqtt.tls.{missing} (the same file for a combined PEM)"
            raise self.fail(key, expected, given)


@dataclass(frozen=True, kw_only=True, config=SECTION)
class MqttConfig(Section):
    table, file_only, code_only = "mqtt", ("url", "password_env"), ("password",)
    host: Annotated[str, BeforeValidator(_host)] = "127.0.0.1"
    port: Port = 1883  # in a file: 8883 with a [mqtt.tls] table
    tls: TlsConfig | None = None  # set by an mqtts:// url or a [mqtt.tls] section
    # "3.1.1" or "5". 3.1.1 by default: paho-mqtt builds a Properties object for every MQTT 5
    # PUBLISH (11 µs under the GIL), which cut the collector's rate by a third (bench/ingest.py).
    protocol: Annotated[str, BeforeValidator(_protocol)] = "3.1.1"
    client_id: Text = "ptmon-collector"
    username: User = None
    # from the variable password_env names; never shown
    password: Secret = field(default=None, repr=False)
    qos: Annotated[int, choice(0, 1)] = 1
    persistent_session: Flag = True  # clean_session=False (3.1.1) / session expiry (5)
    # seconds the broker keeps the session while we are away (MQTT 5)
    session_expiry: Annotated[int, seconds(whole=True, high=2**32 - 1)] = 7 * 86_400
    # narrow these to split the district over collectors
    topics: Annotated[tuple[str, ...], BeforeValidator(_topics)] = DEFAULT_TOPICS
    keepalive: Annotated[int, seconds(whole=True, high=65_535)] = 30
    reconnect_min: Seconds = 0.5
    reconnect_max: Seconds = 30.0
    receive_maximum: Port = 65_535  # unacknowledged QoS 1 messages the broker may send us (MQTT 5)
    # most messages decoded and applied in one batch
    batch_size: Annotated[int, integer(1)] = 16_384
    broker_stats: Flag = True  # subscribe to the broker's $SYS/broker/# statistics (brokerstats.py)

    @classmethod
    def from_file(cls, data: dict[str, Any], context: FileContext) -> dict[str, Any]:
        url = data.pop("url", None)
        if url is None:
            data.setdefault("port", 8883 if "tls" in data else 1883)
        else:
            data.update(_broker(url, data))
        credentials(data, "mqtt", MQTT_PASSWORD_ENV, context, wanted=True)
        return data

    def check(self, given: dict[str, Any]) -> None:
        if self.reconnect_min > self.reconnect_max:
            expected = f"at most mqtt.reconnect_max ({self.reconnect_max:g} s)"
            raise self.fail("reconnect_min", expected, given)
        if self.qos == 1 and self.persistent_session and not self.client_id.strip():
            # The broker keeps a session under the client id: an empty one cannot be resumed.
            raise self.fail("client_id", "non-empty with qos 1 and a persistent session", given)


def _broker(url: Any, data: dict[str, Any]) -> dict[str, Any]:
    """host, port and tls of ``mqtt.url``: it excludes host and port, and needs mqtts:// for TLS."""
    if isinstance(url, str) and "@" in _netloc(url):
        raise refused(f"holds credentials ({redact(url)}): a config file never holds a password; "
                      "give mqtt.username and put the password in the environment variable "
                      f"mqtt.password_env names ({MQTT_PASSWORD_ENV} by default)", key="url")
    try:
        broker = parse_broker_url(url) if isinstance(url, str) else None
    except ValueError:
        broker = None
    if broker is None:
        shown = redact(url) if isinstance(url, str) else url
        raise invalid("mqtt://host[:port] or mqtts://host[:port]", shown, key="url")
    if "host" in data or "port" in data:
        raise invalid("given without mqtt.host and mqtt.port", url, key="url")
    tls = data.get("tls")
    if tls is not None and not broker.secure:
        raise invalid("mqtts:// with a [mqtt.tls] table", url, key="url")
    tls = {} if tls is None and broker.secure else tls
    return {"host": broker.host, "port": broker.port, "tls": tls}


def _netloc(url: str) -> str:
    try:
        return urlsplit(url).netloc
    except ValueError:  # an unclosed '[': parse_broker_url refuses it
        return ""


def _influx_url(value: Any) -> str:
    """``http(s)://host[:port][/prefix]`` without a trailing slash, or empty (no sink)."""
    url = as_text(value).strip().rstrip("/")
    if not url:
        return ""
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises on a port that is no number or out of range
    except ValueError:
        parts = None
    # Credentials belong in the environment, never in a file or in a URL that gets logged.
    if parts is not None and "@" in parts.netloc:
        raise refused(f"holds credentials ({redact(url)}): a config file never holds a password; "
                      "give influx.username and put the password in the environment variable "
                      f"influx.password_env names ({INFLUX_PASSWORD_ENV} by default), or with "
                      f"api = \"v2\" the token in {INFLUX_TOKEN_ENV}")
    if (parts is None or parts.scheme not in ("http", "https") or not parts.hostname
            or parts.query or parts.fragment):
        raise invalid("http(s)://host[:port][/path] without credentials or query", redact(url))
    return url


@dataclass(frozen=True, kw_only=True, config=SECTION)
class InfluxConfig(Section):
    table, file_only, code_only = "influx", ("password_env", "token_env"), ("password", "token")
    url: Annotated[str, BeforeValidator(_influx_url)] = ""  # empty: no InfluxDB sink
    # "v1": /write + InfluxQL (1.x, 3.x compat); "v2": influxdb-client (2.x, 1.8+, 3.x)
    api: Annotated[str, choice("v1", "v2")] = "v1"
    database: Required = "ptmon"  # v1
    retention_policy: Text = ""  # v1, empty = the database's default
    username: User = None  # v1
    password: Secret = field(default=None, repr=False)  # v1, from password_env; never shown
    org: Text = ""  # v2
    bucket: Required = "ptmon"  # v2
    token: Secret = field(default=None, repr=False)  # v2, from token_env; never shown
    # v1: do not CREATE DATABASE at start (an account without the right)
    skip_database_creation: Flag = False
    batch_size: Annotated[int, integer(1)] = 5_000  # points per write request
    flush_interval: Seconds = 1.0  # seconds a partial batch may wait
    gzip: Flag = True
    timeout: Seconds = 10.0  # seconds per request
    retry_min: Seconds = 0.5  # first backoff after a retryable failure, seconds
    retry_max: Seconds = 30.0  # backoff cap, seconds
    memory_limit: Size = 64 * 2**20  # bytes of line protocol held in memory before spilling to disk
    # bytes on disk; beyond, the oldest spilled points are dropped and counted
    spool_limit: Size = 10 * 2**30
    # write the per-device heartbeat measurement (the sla measurement is always written)
    heartbeats: Flag = True

    @classmethod
    def from_file(cls, data: dict[str, Any], context: FileContext) -> dict[str, Any]:
        url, api = data.get("url", ""), data.get("api", "v1")
        enabled = isinstance(url, str) and bool(url.strip().rstrip("/"))
        credentials(data, "influx", INFLUX_PASSWORD_ENV, context, wanted=enabled and api == "v1")
        data["token"] = secret(data.pop("token_env", None), "token_env", INFLUX_TOKEN_ENV, context,
                               wanted=enabled and api == "v2", required=True)
        return data

    def check(self, given: dict[str, Any]) -> None:
        if self.url and self.api == "v2" and not self.org.strip():
            raise self.fail("org", "set with api 'v2'", given)
        if self.retry_min > self.retry_max:
            raise self.fail("retry_min", f"at most influx.retry_max ({self.retry_max:g} s)", given)


def _sender(value: Any) -> str:
    sender = as_text(value)
    if "@" not in sender or any(ch in sender for ch in "\r\n<>,;"):
        raise invalid("one e-mail address", sender)
    return sender


@dataclass(frozen=True, kw_only=True, config=SECTION)
class EmailConfig(Section):
    """SMTP for alert emails. An empty host keeps emails queued in the ledger, unsent."""

    table, file_only, code_only = "email", ("password_env",), ("password",)
    host: Annotated[str, BeforeValidator(_smtp_host)] = ""
    port: Port = 587  # in a file: 465 with security "tls"
    # "tls": implicit, usually port 465
    security: Annotated[str, choice("starttls", "tls", "none")] = "starttls"
    username: User = None
    # from the variable password_env names; never shown
    password: Secret = field(default=None, repr=False)
    sender: Annotated[str, BeforeValidator(_sender)] = "ptmon@localhost"
    ca_file: ExistingFile = None  # empty: the system's CA store
    timeout: Seconds = 30.0
    poll_interval: Seconds = 2.0  # seconds between looks at the outbox
    retry_min: Seconds = 30.0  # first wait after a failed send, doubling ...
    retry_max: Seconds = 3600.0  # ... up to this
    max_attempts: Annotated[int, integer(0)] = 0  # 0: keep trying

    @classmethod
    def from_file(cls, data: dict[str, Any], context: FileContext) -> dict[str, Any]:
        if data.get("security") == "tls":
            data.setdefault("port", 465)
        credentials(data, "email", SMTP_PASSWORD_ENV, context, wanted=bool(data.get("host")))
        return data


@dataclass(frozen=True, kw_only=True, config=SECTION)
class AlertsConfig(Section):
    table = "alerts"
    enabled: Flag = True
    rules_file: ExistingFile = None  # None: alerts.yaml of the rules directory


def _window(value: Any) -> int:
    """The rate window: whole seconds dividing a day, so every day (and archive file) starts one."""
    window = as_seconds(value, whole=True, high=86_400)
    if 86_400 % window:
        raise invalid("a divisor of a day (e.g. '10s', '60s', '5m', '1h')", value)
    return int(window)


@dataclass(frozen=True, kw_only=True, config=SECTION)
class LimitsConfig(Section):
    """Bounds on what devices and anyone else on the broker can make the decoder do (README
    "Limits")."""

    table = "limits"
    # larger is rejected as oversize
    max_payload: Annotated[int, size(64, PAYLOAD_CEILING, "a size from 64 bytes to 1MB")] = 4096
    # messages per device (and per gateway) per window; more are rate_limited; 0: no limit
    device_rate: Annotated[int, integer(0)] = 600
    # seconds, the fixed window device_rate counts in
    window: Annotated[int, BeforeValidator(_window)] = 60
    # distinct unknown device topics tracked for the report; the rest only counted
    unknown_limit: Annotated[int, integer(0, 10_000_000)] = 10_000


@dataclass(frozen=True, kw_only=True, config=SECTION)
class StorageConfig(Section):
    """What the collector does while its disk is full or its ledger locked (collector/faults.py)."""

    table = "storage"
    retry_min: Seconds = 0.5  # first wait before trying a failed write again, seconds, doubling ...
    retry_max: Seconds = 30.0  # ... up to this
    # an alert email when a fault lasts this long; 0: never
    alert_after: Annotated[float, seconds(zero=True)] = 600.0

    def check(self, given: dict[str, Any]) -> None:
        if self.retry_min > self.retry_max:
            raise self.fail("retry_min", f"at most storage.retry_max ({self.retry_max:g} s)", given)


@dataclass(frozen=True, kw_only=True, config=SECTION)
class LossConfig(Section):
    """Alerts on messages lost in transit between devices and collector (collector/loss.py)."""

    table = "loss"
    enabled: Flag = True
    # seconds the loss rate is taken over
    window: Annotated[int, seconds(whole=True, high=7 * 86_400)] = 3600
    # a contract × street losing more than this share alerts
    street_rate: Annotated[float, share()] = 0.02
    # the district (everything through the broker) above this alerts
    broker_rate: Annotated[float, share()] = 0.01
    # no rate alert on fewer messages (received + lost) in the window
    min_messages: Annotated[int, integer(1)] = 100
    broker_drops: Flag = True  # alert when the broker's $SYS says it dropped messages


@dataclass(frozen=True, kw_only=True, config=SECTION)
class MonthConfig(Section):
    """Closing the month (`ptmon month close`, docs/month-close.md)."""

    table = "month"
    # a month can be closed this long after its end, not before; 0: right after its end
    close_grace: Annotated[float, seconds(zero=True)] = 3 * 86_400.0
    # late heartbeats are looked for in the archive this long after the month
    late_horizon: Seconds = 3 * 86_400.0
    # a month observed less than this share of its time is never closed, even with --accept-gaps
    # (0: only a month with no observed time at all is refused)
    min_coverage: Annotated[float, proportion()] = 0.0


def _streets(value: Any) -> tuple[str, ...]:
    """``streets``: the partition's street codes (checked against the rules when the collector starts)."""
    if isinstance(value, tuple):
        value = list(value)
    if not isinstance(value, list) or len(set(value)) != len(value) \
            or not all(isinstance(v, str) and v and not any(c in v for c in "+#/\0") for v in value):
        raise invalid("a list of distinct street codes (a partition; empty: the whole district)", value)
    return tuple(value)


_LISTEN = re.compile(r"([^\s\[\]/]*):(\d+)")


def _listen(value: Any) -> str:
    """``host:port`` for /metrics (an empty host listens on every interface), or empty."""
    address = as_text(value).strip()
    match = _LISTEN.fullmatch(address)
    if address and not (match and 0 < int(match[2]) < 65_536):
        raise invalid("host:port or empty", address)
    return address


@dataclass(frozen=True, kw_only=True, config=SECTION)
class CollectorConfig(Section):
    """The whole config. ``data_dir`` holds the archive, the spool and the checkpoint by default."""

    code_only = ("source",)
    source: Path | None = None  # the file it was read from
    registry: RequiredPath = Path("registry.csv")
    rules: OptionalPath = None  # None: the rules shipped with ptmon
    data_dir: RequiredPath = Path("ptmon-data")
    archive_dir: OptionalPath = None  # default data_dir/archive
    archive_compresslevel: Annotated[int, integer(0, 9)] = 3
    spool_dir: OptionalPath = None  # default data_dir/spool
    checkpoint_file: OptionalPath = None  # default data_dir/checkpoint.npz
    ledger_file: OptionalPath = None  # default data_dir/ledger.sqlite
    checkpoint_interval: Seconds = 60.0
    # the main loop stopped this long (process frozen, host suspended): a monitoring gap
    stall_gap: Seconds = 30.0
    # Prometheus /metrics; empty disables
    metrics_listen: Annotated[str, BeforeValidator(_listen)] = "127.0.0.1:9464"
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    influx: InfluxConfig = field(default_factory=InfluxConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    email: EmailConfig = field(default_factory=EmailConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    month: MonthConfig = field(default_factory=MonthConfig)
    # a partition: only these streets (empty: the whole district)
    streets: Annotated[tuple[str, ...], BeforeValidator(_streets)] = ()

    @property
    def ledger_path(self) -> Path:
        return self.ledger_file or self.data_dir / "ledger.sqlite"

    @property
    def archive_path(self) -> Path:
        return self.archive_dir or self.data_dir / "archive"

    @property
    def spool_path(self) -> Path:
        return self.spool_dir or self.data_dir / "spool"

    @property
    def checkpoint_path(self) -> Path:
        return self.checkpoint_file or self.data_dir / "checkpoint.npz"
