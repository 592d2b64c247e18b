"""The collector's config: one TOML file, secrets from the environment.

Each section is a frozen, keyword-only dataclass. ``load_config`` reads and validates the
file once, at start; an error names the file, the key and the bad value, e.g.
``ConfigError: ptmon.toml: mqtt.qos must be 0 or 1: 2``. Relative paths are relative to
the config file's directory. Secrets never sit in the file: it names the environment
variable that holds each one (``password_env``, ``token_env``).
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, urlsplit

from .credentials import redact
from .errors import ConfigError
from .rules import parse_duration

DEFAULT_TOPICS = ("putuo/+/+/+/hb", "putuo/gw/+/status")


@dataclass(frozen=True, kw_only=True)
class TlsConfig:
    """TLS to the broker (``mqtts://``). Empty paths mean the system's CA store / no client cert."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure: bool = False  # skip hostname verification (test brokers only)


@dataclass(frozen=True, kw_only=True)
class MqttConfig:
    host: str = "127.0.0.1"
    port: int = 1883
    tls: TlsConfig | None = None  # set by an mqtts:// url or a [mqtt.tls] section
    # "3.1.1" or "5". 3.1.1 by default: paho-mqtt builds a Properties object for every MQTT 5
    # PUBLISH (11 µs under the GIL), which cut the collector's rate by a third (bench/ingest.py).
    protocol: str = "3.1.1"
    client_id: str = "ptmon-collector"
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # from the variable password_env names; never shown
    qos: int = 1
    persistent_session: bool = True  # clean_session=False (3.1.1) / session expiry (5)
    session_expiry: int = 7 * 86_400  # seconds the broker keeps the session while we are away (MQTT 5)
    topics: tuple[str, ...] = DEFAULT_TOPICS  # narrow these to split the district over collectors
    keepalive: int = 30
    reconnect_min: float = 0.5
    reconnect_max: float = 30.0
    receive_maximum: int = 65_535  # unacknowledged QoS 1 messages the broker may send us (MQTT 5)
    batch_size: int = 16_384  # most messages decoded and applied in one batch
    broker_stats: bool = True  # subscribe to the broker's $SYS/broker/# statistics (brokerstats.py)


@dataclass(frozen=True, kw_only=True)
class InfluxConfig:
    url: str = ""  # empty: no InfluxDB sink
    api: str = "v1"  # "v1": /write + InfluxQL (1.x, 3.x compat); "v2": influxdb-client (2.x, 1.8+, 3.x)
    database: str = "ptmon"  # v1
    retention_policy: str = ""  # v1, empty = the database's default
    username: str | None = None  # v1
    password: str | None = field(default=None, repr=False)  # v1, from password_env; never shown
    org: str = ""  # v2
    bucket: str = "ptmon"  # v2
    token: str | None = field(default=None, repr=False)  # v2, from token_env; never shown
    skip_database_creation: bool = False  # v1: do not CREATE DATABASE at start (an account without the right)
    batch_size: int = 5_000  # points per write request
    flush_interval: float = 1.0  # seconds a partial batch may wait
    gzip: bool = True
    timeout: float = 10.0  # seconds per request
    retry_min: float = 0.5  # first backoff after a retryable failure, seconds
    retry_max: float = 30.0  # backoff cap, seconds
    memory_limit: int = 64 * 2**20  # bytes of line protocol held in memory before spilling to disk
    spool_limit: int = 10 * 2**30  # bytes on disk; beyond, the oldest spilled points are dropped and counted
    heartbeats: bool = True  # write the per-device heartbeat measurement (the sla measurement is always written)


@dataclass(frozen=True, kw_only=True)
class EmailConfig:
    """SMTP for alert emails. An empty host keeps emails queued in the ledger, unsent."""

    host: str = ""
    port: int = 587
    security: str = "starttls"  # "starttls", "tls" (implicit, usually port 465) or "none"
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # from the variable password_env names; never shown
    sender: str = "ptmon@localhost"
    ca_file: Path | None = None  # empty: the system's CA store
    timeout: float = 30.0
    poll_interval: float = 2.0  # seconds between looks at the outbox
    retry_min: float = 30.0  # first wait after a failed send, doubling ...
    retry_max: float = 3600.0  # ... up to this
    max_attempts: int = 0  # 0: keep trying


@dataclass(frozen=True, kw_only=True)
class AlertsConfig:
    enabled: bool = True
    rules_file: Path | None = None  # None: alerts.yaml of the rules directory


@dataclass(frozen=True, kw_only=True)
class LimitsConfig:
    """Bounds on what devices and anyone else on the broker can make the decoder do (README "Limits")."""

    max_payload: int = 4096  # bytes; a larger payload is rejected as oversize
    device_rate: int = 600  # messages per device (and per gateway) per window; more are rate_limited; 0: no limit
    window: int = 60  # seconds, the fixed window device_rate counts in
    unknown_limit: int = 10_000  # distinct unknown device topics tracked for the report; the rest only counted


@dataclass(frozen=True, kw_only=True)
class StorageConfig:
    """What the collector does while its disk is full or its ledger locked (collector/faults.py)."""

    retry_min: float = 0.5  # first wait before trying a failed write again, seconds, doubling ...
    retry_max: float = 30.0  # ... up to this
    alert_after: float = 600.0  # an alert email when a storage fault lasts this long; 0: never


@dataclass(frozen=True, kw_only=True)
class LossConfig:
    """Alerts on messages lost in transit between devices and collector (collector/loss.py)."""

    enabled: bool = True
    window: int = 3600  # seconds of receive time the loss rate is taken over
    street_rate: float = 0.02  # a contract × street losing more than this share of its messages alerts
    broker_rate: float = 0.01  # the district (everything through the broker) losing more than this alerts
    min_messages: int = 100  # no rate alert on fewer messages (received + lost) in the window
    broker_drops: bool = True  # alert when the broker's $SYS says it dropped messages


@dataclass(frozen=True, kw_only=True)
class CollectorConfig:
    """The whole config. ``data_dir`` holds the archive, the spool and the checkpoint by default."""

    source: Path | None = None  # the file it was read from
    registry: Path = Path("registry.csv")
    rules: Path | None = None  # None: the rules shipped with ptmon
    data_dir: Path = Path("ptmon-data")
    archive_dir: Path | None = None  # default data_dir/archive
    archive_compresslevel: int = 3
    spool_dir: Path | None = None  # default data_dir/spool
    checkpoint_file: Path | None = None  # default data_dir/checkpoint.npz
    ledger_file: Path | None = None  # default data_dir/ledger.sqlite
    checkpoint_interval: float = 60.0
    stall_gap: float = 30.0  # the main loop stopped this long (process frozen, host suspended): a monitoring gap
    metrics_listen: str = "127.0.0.1:9464"  # host:port of Prometheus /metrics; empty disables
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    influx: InfluxConfig = field(default_factory=InfluxConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    email: EmailConfig = field(default_factory=EmailConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    loss: LossConfig = field(default_factory=LossConfig)

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


# --- loading -----------------------------------------------------------------------------------

MQTT_PASSWORD_ENV = "PTMON_MQTT_PASSWORD"
INFLUX_PASSWORD_ENV = "PTMON_INFLUX_PASSWORD"
INFLUX_TOKEN_ENV = "PTMON_INFLUX_TOKEN"
SMTP_PASSWORD_ENV = "PTMON_SMTP_PASSWORD"

# The keys each table may hold, so a typo fails before any value is read.
_TOP_KEYS = ("registry", "rules", "data_dir", "archive_dir", "archive_compresslevel", "spool_dir",
             "checkpoint_file", "checkpoint_interval", "stall_gap", "metrics_listen", "mqtt", "influx",
             "ledger_file", "alerts", "email", "limits", "storage", "loss")
_MQTT_KEYS = ("url", "host", "port", "tls", "protocol", "client_id", "username", "password_env",
              "qos", "persistent_session", "session_expiry", "topics", "keepalive", "reconnect_min",
              "reconnect_max", "receive_maximum", "batch_size", "broker_stats")
_ALERTS_KEYS = ("enabled", "rules_file")
_EMAIL_KEYS = ("host", "port", "security", "username", "password_env", "sender", "ca_file", "timeout",
               "poll_interval", "retry_min", "retry_max", "max_attempts")
_LIMITS_KEYS = ("max_payload", "device_rate", "window", "unknown_limit")
_STORAGE_KEYS = ("retry_min", "retry_max", "alert_after")
_LOSS_KEYS = ("enabled", "window", "street_rate", "broker_rate", "min_messages", "broker_drops")
_TLS_KEYS = ("ca_file", "cert_file", "key_file", "insecure")
_INFLUX_KEYS = ("url", "api", "database", "retention_policy", "username", "password_env", "org",
                "bucket", "token_env", "batch_size", "flush_interval", "gzip", "timeout",
                "retry_min", "retry_max", "memory_limit", "spool_limit", "heartbeats",
                "skip_database_creation")

_PROTOCOLS = {"5": "5", "3.1.1": "3.1.1", "311": "3.1.1"}
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(?:([kmgt])i?)?b?\s*", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}
_DURATION = "a positive duration (seconds, or '90s', '15m', '6h', '1d')"
# The dataclasses' defaults, so that a key left out gets exactly what the code declares.
_TOP, _MQTT, _INFLUX, _EMAIL = CollectorConfig(), MqttConfig(), InfluxConfig(), EmailConfig()
_STORAGE = StorageConfig()


class _Table:
    """One TOML table, read key by key; every error names the file, the key and the value."""

    def __init__(self, file: str, where: str, data: dict[str, Any], base: Path,
                 known: tuple[str, ...]) -> None:
        self.file, self.where, self.data, self.base, self.known = file, where, data, base, known
        unknown = sorted(key for key in data if key not in known)
        if unknown:
            raise ConfigError(f"{file}: {self.key(unknown[0])} is not a known key; "
                              f"known: {', '.join(sorted(known))}")

    def key(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def fail(self, key: str, what: str, value: Any) -> ConfigError:
        return ConfigError(f"{self.file}: {self.key(key)} must be {what}: {value!r}")

    def get(self, key: str, default: Any = None) -> Any:
        assert key in self.known, key  # a key read but not declared would be refused as unknown
        return self.data.get(key, default)

    def table(self, key: str, known: tuple[str, ...]) -> _Table:
        value = self.get(key, {})
        if not isinstance(value, dict):
            raise self.fail(key, "a table", value)
        return _Table(self.file, self.key(key), value, self.base, known)

    def text(self, key: str, default: str, *, required: bool = False) -> str:
        value = self.get(key, default)
        if not isinstance(value, str) or "\0" in value or (required and not value.strip()):
            raise self.fail(key, "a non-empty string" if required else "a string", value)
        return value

    def optional_text(self, key: str) -> str | None:
        """The string, or None when absent or empty."""
        return self.text(key, "") or None

    def flag(self, key: str, default: bool) -> bool:
        value = self.get(key, default)
        if not isinstance(value, bool):
            raise self.fail(key, "true or false", value)
        return value

    def choice(self, key: str, options: tuple[Any, ...], default: Any) -> Any:
        value = self.get(key, default)
        if not any(value == option and type(value) is type(option) for option in options):
            *rest, last = (repr(option) for option in options)
            raise self.fail(key, f"{', '.join(rest)} or {last}", value)
        return value

    def integer(self, key: str, default: int, low: int, high: int | None = None) -> int:
        value = self.get(key, default)
        if (isinstance(value, bool) or not isinstance(value, int) or value < low
                or (high is not None and value > high)):
            span = f"from {low} to {high}" if high is not None else f"at least {low}"
            raise self.fail(key, f"an integer {span}", value)
        return value

    def seconds(self, key: str, default: float, *, whole: bool = False,
                high: float = math.inf) -> float:
        """A duration as in the rule files; a plain non-integer number too unless ``whole``."""
        value = self.get(key, default)
        seconds: float | None = parse_duration(value)
        if seconds is None and not whole and isinstance(value, float):
            seconds = value
        if seconds is None or not 0 < seconds <= high or math.isinf(seconds):
            span = f", at most {high:.0f} s" if high < math.inf else ""
            what = _DURATION if whole else _DURATION + " or a number of seconds like 0.5"
            raise self.fail(key, what + span, value)
        return seconds

    def size(self, key: str, default: int) -> int:
        """Bytes from an integer or ``"64MB"``, ``"10GB"``, ``"512KiB"`` (units of 1024)."""
        value = self.get(key, default)
        size = None
        if isinstance(value, int) and not isinstance(value, bool):
            size = value
        elif isinstance(value, str) and (match := _SIZE.fullmatch(value)):
            size = int(float(match[1]) * _SIZE_UNITS[(match[2] or "").lower()])
        if size is None or size <= 0:
            raise self.fail(key, "a positive size (bytes, or like '64MB', '10GB')", value)
        return size

    def path(self, key: str, default: str) -> Path | None:
        """A path relative to the config file's directory; None when empty."""
        value = self.text(key, default)
        return self.base / Path(value).expanduser() if value else None

    def required_path(self, key: str, default: str) -> Path:
        path = self.path(key, default)
        if path is None:
            raise self.fail(key, "a non-empty path", "")
        return path

    def existing_file(self, key: str) -> Path | None:
        path = self.path(key, "")
        if path is not None and not path.is_file():
            raise self.fail(key, "an existing file", self.data[key])
        return path


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> CollectorConfig:
    """The collector's config from the TOML file at ``path``; secrets from ``env`` (os.environ)."""
    environ = os.environ if env is None else env
    file = Path(path)
    top = _Table(str(path), "", _read_toml(file), file.absolute().parent, _TOP_KEYS)
    return CollectorConfig(
        source=file.absolute(),
        registry=top.required_path("registry", str(_TOP.registry)),
        rules=top.path("rules", ""),
        data_dir=top.required_path("data_dir", str(_TOP.data_dir)),
        archive_dir=top.path("archive_dir", ""),
        archive_compresslevel=top.integer("archive_compresslevel", _TOP.archive_compresslevel,
                                          0, 9),
        spool_dir=top.path("spool_dir", ""),
        checkpoint_file=top.path("checkpoint_file", ""),
        checkpoint_interval=float(top.seconds("checkpoint_interval", _TOP.checkpoint_interval)),
        stall_gap=float(top.seconds("stall_gap", _TOP.stall_gap)),
        metrics_listen=_listen_address(top),
        mqtt=_mqtt(top.table("mqtt", _MQTT_KEYS), environ),
        influx=_influx(top.table("influx", _INFLUX_KEYS), environ),
        limits=_limits(top.table("limits", _LIMITS_KEYS)),
        ledger_file=top.path("ledger_file", ""),
        alerts=_alerts(top.table("alerts", _ALERTS_KEYS)),
        email=_email(top.table("email", _EMAIL_KEYS), environ),
        storage=_storage(top.table("storage", _STORAGE_KEYS)),
        loss=_loss(top.table("loss", _LOSS_KEYS)),
    )


def _storage(t: _Table) -> StorageConfig:
    config = StorageConfig(
        retry_min=float(t.seconds("retry_min", _STORAGE.retry_min)),
        retry_max=float(t.seconds("retry_max", _STORAGE.retry_max)),
        alert_after=0.0 if t.get("alert_after") == 0 else float(t.seconds("alert_after", _STORAGE.alert_after)),
    )
    if config.retry_min > config.retry_max:
        raise t.fail("retry_min", f"at most storage.retry_max ({config.retry_max:g} s)", t.get("retry_min"))
    return config


def _alerts(t: _Table) -> AlertsConfig:
    return AlertsConfig(enabled=t.flag("enabled", True), rules_file=t.existing_file("rules_file"))


def _email(t: _Table, env: Mapping[str, str]) -> EmailConfig:
    security = t.choice("security", ("starttls", "tls", "none"), _EMAIL.security)
    username, password = _credentials(t, SMTP_PASSWORD_ENV, env, wanted=bool(t.get("host")))
    sender = t.text("sender", _EMAIL.sender)
    if "@" not in sender or any(ch in sender for ch in "\r\n<>,;"):
        raise t.fail("sender", "must be one e-mail address", sender)
    return EmailConfig(
        host=t.text("host", ""),
        port=t.integer("port", 465 if security == "tls" else _EMAIL.port, 1, 65535),
        security=security,
        username=username,
        password=password,
        sender=sender,
        ca_file=t.existing_file("ca_file"),
        timeout=float(t.seconds("timeout", _EMAIL.timeout)),
        poll_interval=float(t.seconds("poll_interval", _EMAIL.poll_interval)),
        retry_min=float(t.seconds("retry_min", _EMAIL.retry_min)),
        retry_max=float(t.seconds("retry_max", _EMAIL.retry_max)),
        max_attempts=t.integer("max_attempts", _EMAIL.max_attempts, 0),
    )


def _limits(t: _Table) -> LimitsConfig:
    default = LimitsConfig()
    max_payload = t.size("max_payload", default.max_payload)
    if not 64 <= max_payload <= 2**20:
        raise t.fail("max_payload", "a size from 64 bytes to 1MB", t.get("max_payload"))
    return LimitsConfig(
        max_payload=max_payload,
        device_rate=t.integer("device_rate", default.device_rate, 0),
        window=_window(t),
        unknown_limit=t.integer("unknown_limit", default.unknown_limit, 0, 10_000_000),
    )


def _loss(t: _Table) -> LossConfig:
    default = LossConfig()
    return LossConfig(
        enabled=t.flag("enabled", default.enabled),
        window=int(t.seconds("window", default.window, whole=True, high=7 * 86_400)),
        street_rate=_share(t, "street_rate", default.street_rate),
        broker_rate=_share(t, "broker_rate", default.broker_rate),
        min_messages=t.integer("min_messages", default.min_messages, 1),
        broker_drops=t.flag("broker_drops", default.broker_drops),
    )


def _share(t: _Table, key: str, default: float) -> float:
    """A fraction in (0, 1): write 0.02 for 2 %."""
    value = t.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise t.fail(key, "a fraction between 0 and 1 (0.02 for 2 %)", value)
    return float(value)


def _window(t: _Table) -> int:
    """The rate window: whole seconds dividing a day, so every day (and archive file) starts one."""
    window = int(t.seconds("window", LimitsConfig().window, whole=True, high=86_400))
    if 86_400 % window:
        raise t.fail("window", "a divisor of a day (e.g. '10s', '60s', '5m', '1h')", t.get("window"))
    return window


def _read_toml(file: Path) -> dict[str, Any]:
    try:
        with file.open("rb") as stream:
            return tomllib.load(stream)
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read config file: {exc.strerror}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file}: not valid TOML: {exc}") from exc


def _listen_address(top: _Table) -> str:
    """``host:port`` for /metrics (an empty host listens on every interface), or empty."""
    value = top.text("metrics_listen", _TOP.metrics_listen).strip()
    host, colon, port = value.rpartition(":")
    if value and not (colon and port.isdigit() and 0 < int(port) < 65_536
                      and not any(c.isspace() or c in "[]/" for c in host)):
        raise top.fail("metrics_listen", "host:port or empty", value)
    return value


def _mqtt(t: _Table, env: Mapping[str, str]) -> MqttConfig:
    host, port, tls = _broker(t)
    raw_protocol = t.get("protocol", _MQTT.protocol)
    protocol = _PROTOCOLS.get(str(raw_protocol) if isinstance(raw_protocol, (str, int)) else "")
    if protocol is None:
        raise t.fail("protocol", "'5' or '3.1.1'", raw_protocol)
    username, password = _credentials(t, MQTT_PASSWORD_ENV, env, wanted=True)
    config = MqttConfig(
        host=host, port=port, tls=tls, protocol=protocol,
        client_id=t.text("client_id", _MQTT.client_id),
        username=username, password=password,
        qos=t.choice("qos", (0, 1), _MQTT.qos),
        persistent_session=t.flag("persistent_session", _MQTT.persistent_session),
        session_expiry=int(t.seconds("session_expiry", _MQTT.session_expiry, whole=True,
                                     high=2**32 - 1)),
        topics=_topics(t),
        keepalive=int(t.seconds("keepalive", _MQTT.keepalive, whole=True, high=65_535)),
        reconnect_min=float(t.seconds("reconnect_min", _MQTT.reconnect_min)),
        reconnect_max=float(t.seconds("reconnect_max", _MQTT.reconnect_max)),
        receive_maximum=t.integer("receive_maximum", _MQTT.receive_maximum, 1, 65_535),
        batch_size=t.integer("batch_size", _MQTT.batch_size, 1),
        broker_stats=t.flag("broker_stats", _MQTT.broker_stats),
    )
    if config.reconnect_min > config.reconnect_max:
        raise t.fail("reconnect_min", f"at most mqtt.reconnect_max ({config.reconnect_max:g} s)",
                     t.get("reconnect_min", config.reconnect_min))
    if config.qos == 1 and config.persistent_session and not config.client_id.strip():
        # The broker keeps a session under the client id: an empty one cannot be resumed.
        raise t.fail("client_id", "non-empty with qos 1 and a persistent session",
                     config.client_id)
    return config


def _broker(t: _Table) -> tuple[str, int, TlsConfig | None]:
    """host, port and TLS from ``url`` or from ``host``/``port`` and a ``[mqtt.tls]`` table."""
    tls = _tls(t.table("tls", _TLS_KEYS)) if "tls" in t.data else None
    url = t.get("url")
    if url is None:
        host = t.text("host", _MQTT.host, required=True).strip()
        if any(c.isspace() or c in "/@[]" for c in host):
            raise t.fail("host", "a host name or address (or give mqtt.url instead)", host)
        return host, t.integer("port", 8883 if tls else 1883, 1, 65_535), tls
    parts = _split_url(url)
    if parts is not None and "@" in parts.netloc:
        raise ConfigError(f"{t.file}: {t.key('url')} holds credentials ({redact(url)}): a config file never "
                          f"holds a password; give {t.key('username')} and put the password in the environment "
                          f"variable {t.key('password_env')} names ({MQTT_PASSWORD_ENV} by default)")
    if (parts is None or parts.scheme not in ("mqtt", "mqtts") or not parts.hostname
            or parts.path not in ("", "/") or parts.query or parts.fragment):
        shown = redact(url) if isinstance(url, str) else url
        raise t.fail("url", "mqtt://host[:port] or mqtts://host[:port]", shown)
    if "host" in t.data or "port" in t.data:
        raise t.fail("url", "given without mqtt.host and mqtt.port", url)
    if tls is not None and parts.scheme != "mqtts":
        raise t.fail("url", "mqtts:// with a [mqtt.tls] table", url)
    secure = parts.scheme == "mqtts"
    port = parts.port or (8883 if secure else 1883)
    return parts.hostname, port, tls or (TlsConfig() if secure else None)


def _split_url(url: Any) -> SplitResult | None:
    """The parts of a URL, None when it is no string or its port is no number."""
    if not isinstance(url, str):
        return None
    parts = urlsplit(url)
    try:
        _ = parts.port  # raises on a port that is no number or out of range
    except ValueError:
        return None
    return parts


def _tls(t: _Table) -> TlsConfig:
    config = TlsConfig(ca_file=t.existing_file("ca_file"), cert_file=t.existing_file("cert_file"),
                       key_file=t.existing_file("key_file"), insecure=t.flag("insecure", False))
    if (config.cert_file is None) != (config.key_file is None):
        given = "key_file" if config.cert_file is None else "cert_file"
        missing = "cert_file" if given == "key_file" else "key_file"
        raise t.fail(given, f"given with mqtt.tls.{missing} (the same file for a combined PEM)",
                     t.data[given])
    return config


def _topics(t: _Table) -> tuple[str, ...]:
    value = t.get("topics", list(_MQTT.topics))
    if not isinstance(value, list) or not value:
        raise t.fail("topics", "a non-empty list of MQTT topic filters", value)
    for topic in value:
        if not _valid_filter(topic):
            raise t.fail("topics", "MQTT topic filters ('+' and '#' only as whole levels, "
                         "'#' last)", topic)
    for i, topic in enumerate(value):
        if topic in value[:i]:
            raise t.fail("topics", "distinct topic filters", topic)
    return tuple(value)


def _valid_filter(topic: Any) -> bool:
    if not isinstance(topic, str) or not topic or "\0" in topic or len(topic.encode()) > 65_535:
        return False
    levels = topic.split("/")
    return all(
        level in ("+", "#") or ("+" not in level and "#" not in level) for level in levels
    ) and "#" not in levels[:-1]


def _credentials(t: _Table, default_env: str, env: Mapping[str, str], *,
                 wanted: bool) -> tuple[str | None, str | None]:
    """``username`` and the password from the environment variable ``password_env`` names.

    Without ``password_env`` the password comes from ``default_env`` when that is set.
    """
    username = t.optional_text("username")
    if username is None and "password_env" in t.data:
        raise t.fail("password_env", f"given with {t.key('username')}", t.data["password_env"])
    password = _secret(t, "password_env", default_env, env, wanted=wanted and username is not None)
    return username, password


def _secret(t: _Table, key: str, default_env: str, env: Mapping[str, str], *,
            wanted: bool, required: bool = False) -> str | None:
    """The value of the environment variable ``key`` names (``default_env`` when absent).

    A variable named explicitly must be set, as must the default one when ``required``.
    """
    named = t.get(key)
    if named is not None and (not isinstance(named, str) or not _ENV_NAME.fullmatch(named)):
        raise t.fail(key, "an environment variable name", named)
    if not wanted:
        return None
    value = env.get(named or default_env) or None
    if value is None and (required or named is not None):
        raise t.fail(key, "the name of a set, non-empty environment variable", named or default_env)
    return value


def _influx(t: _Table, env: Mapping[str, str]) -> InfluxConfig:
    url = _influx_url(t)
    api = t.choice("api", ("v1", "v2"), _INFLUX.api)
    username, password = _credentials(t, INFLUX_PASSWORD_ENV, env, wanted=bool(url) and api == "v1")
    config = InfluxConfig(
        url=url, api=api,
        database=t.text("database", _INFLUX.database, required=True),
        retention_policy=t.text("retention_policy", _INFLUX.retention_policy),
        username=username, password=password,
        org=t.text("org", _INFLUX.org),
        bucket=t.text("bucket", _INFLUX.bucket, required=True),
        token=_secret(t, "token_env", INFLUX_TOKEN_ENV, env, wanted=bool(url) and api == "v2",
                      required=True),
        batch_size=t.integer("batch_size", _INFLUX.batch_size, 1),
        flush_interval=float(t.seconds("flush_interval", _INFLUX.flush_interval)),
        gzip=t.flag("gzip", _INFLUX.gzip),
        timeout=float(t.seconds("timeout", _INFLUX.timeout)),
        retry_min=float(t.seconds("retry_min", _INFLUX.retry_min)),
        retry_max=float(t.seconds("retry_max", _INFLUX.retry_max)),
        memory_limit=t.size("memory_limit", _INFLUX.memory_limit),
        spool_limit=t.size("spool_limit", _INFLUX.spool_limit),
        heartbeats=t.flag("heartbeats", _INFLUX.heartbeats),
        skip_database_creation=t.flag("skip_database_creation", _INFLUX.skip_database_creation),
    )
    if url and api == "v2" and not config.org.strip():
        raise t.fail("org", "set with api 'v2'", config.org)
    if config.retry_min > config.retry_max:
        raise t.fail("retry_min", f"at most influx.retry_max ({config.retry_max:g} s)",
                     t.get("retry_min", config.retry_min))
    return config


def _influx_url(t: _Table) -> str:
    """``http(s)://host[:port][/prefix]`` without a trailing slash, or empty (no sink)."""
    url = t.text("url", "").strip().rstrip("/")
    if not url:
        return ""
    parts = _split_url(url)
    # Credentials belong in the environment, never in a file or in a URL that gets logged.
    if parts is not None and "@" in parts.netloc:
        raise ConfigError(f"{t.file}: {t.key('url')} holds credentials ({redact(url)}): a config file never "
                          f"holds a password; give {t.key('username')} and put the password in the environment "
                          f"variable {t.key('password_env')} names ({INFLUX_PASSWORD_ENV} by default), or with "
                          f"api = \"v2\" the token in {INFLUX_TOKEN_ENV}")
    if (parts is None or parts.scheme not in ("http", "https") or not parts.hostname
            or parts.query or parts.fragment):
        raise t.fail("url", "http(s)://host[:port][/path] without credentials or query",
                     redact(url))
    return url


# --- --check-config --------------------------------------------------------------------------


def check_config(config: CollectorConfig) -> list[str]:
    """The effective config, a line per subject, for ``ptmon collect --check-config``.

    Secrets show only as set / not set; credentials or a query in a URL (possible in
    command-line overrides, which are not validated) are masked.
    """
    m = config.mqtt
    if m.persistent_session:
        session = (f"persistent session (expiry {_span(m.session_expiry)})" if m.protocol == "5"
                   else "persistent session (clean_session false)")
    else:
        session = "clean session"
    flow = f"receive_maximum {m.receive_maximum}, " if m.protocol == "5" else ""
    mqtt = (f"mqtt: protocol {m.protocol}, client_id {m.client_id!r}, qos {m.qos}, {session}, "
            f"keepalive {m.keepalive} s, {flow}batch {m.batch_size:,}, "
            f"reconnect {m.reconnect_min:g}–{m.reconnect_max:g} s")
    return [
        f"config: {config.source or 'none (built-in defaults)'}",
        f"broker: {'mqtts' if m.tls else 'mqtt'}://{_host_port(m.host, m.port)}{_tls_note(m.tls)}",
        mqtt,
        f"mqtt auth: {_auth(m.username, m.password)}",
        f"topics: {', '.join(m.topics)}" + (" (and $SYS/broker/# for the broker's statistics)" if m.broker_stats else ""),
        f"registry: {config.registry}",
        f"rules: {config.rules or 'shipped with ptmon'}",
        f"archive: {config.archive_path} (gzip level {config.archive_compresslevel})",
        f"checkpoint: {config.checkpoint_path}, every {config.checkpoint_interval:g} s; a main loop stalled over "
        f"{config.stall_gap:g} s is a monitoring gap",
        *_influx_lines(config.influx, config.spool_path),
        f"metrics: http://{config.metrics_listen}/metrics" if config.metrics_listen
        else "metrics: disabled",
        f"ledger: {config.ledger_path}",
        f"alerts: {(config.alerts.rules_file or 'alerts.yaml of the rules') if config.alerts.enabled else 'disabled'}",
        _email_line(config.email),
        f"storage faults: retry {config.storage.retry_min:g}–{config.storage.retry_max:g} s, alert email after "
        + (_span(config.storage.alert_after) if config.storage.alert_after else "never"),
        _loss_line(config.loss),
    ]


def _loss_line(loss: LossConfig) -> str:
    if not loss.enabled:
        return "loss alerts: disabled"
    drops = ", broker drops ($SYS)" if loss.broker_drops else ""
    return (f"loss alerts: a street above {loss.street_rate:.2%}, the broker above {loss.broker_rate:.2%} of its "
            f"messages lost over {_span(loss.window)} (at least {loss.min_messages} messages){drops}")


def _email_line(e: EmailConfig) -> str:
    if not e.host:
        return "email: no SMTP host (alert emails stay queued in the ledger)"
    security = {"starttls": "STARTTLS", "tls": "TLS", "none": "no TLS"}.get(e.security, e.security)
    return (f"email: {_host_port(e.host, e.port)}, {security}, from {e.sender}, "
            f"login {_auth(e.username, e.password)}, retry {e.retry_min:g}–{e.retry_max:g} s")


def _influx_lines(i: InfluxConfig, spool: Path) -> list[str]:
    if not i.url:
        return ["influx: disabled (no influx.url)", f"spool: {spool} (unused)"]
    if i.api == "v1":
        creation = "not created by ptmon" if i.skip_database_creation else "created at start if missing"
        target = (f"database {i.database!r} ({creation}), retention policy {i.retention_policy or 'default'!r}, "
                  f"auth: {_auth(i.username, i.password)}")
    else:
        target = f"org {i.org!r}, bucket {i.bucket!r}, token {'set' if i.token else 'not set'}"
    writes = (f"influx writes: batch {i.batch_size:,} points, flush every {i.flush_interval:g} s, "
              f"gzip {'on' if i.gzip else 'off'}, timeout {i.timeout:g} s, "
              f"retry {i.retry_min:g}–{i.retry_max:g} s, "
              f"heartbeats {'on' if i.heartbeats else 'off'}")
    limits = f"memory limit {_bytes(i.memory_limit)}, disk limit {_bytes(i.spool_limit)}"
    return [f"influx: {redact(i.url)} api {i.api}, {target}", writes, f"spool: {spool} ({limits})"]


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _tls_note(tls: TlsConfig | None) -> str:
    if tls is None:
        return ""
    notes = [f"CA {tls.ca_file or 'system store'}"]
    if tls.cert_file:
        notes.append(f"client cert {tls.cert_file}")
    if tls.insecure:
        notes.append("hostname NOT verified")
    return f" (TLS: {', '.join(notes)})"


def _auth(username: str | None, password: str | None) -> str:
    if username is None:
        return "anonymous"
    return f"username {username!r}, password {'set' if password else 'not set'}"


def _span(seconds: float) -> str:
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size:g}{unit}"
    return f"{seconds:g}s"


def _bytes(size: int) -> str:
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            return f"{size / scale:g} {unit}"
    return f"{size} B"
