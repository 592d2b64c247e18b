"""The collector's config: one TOML file, secrets from the environment.

Each section is a frozen, keyword-only dataclass. ``load_config`` reads and validates the
file once, at start; an error names the file, the key and the bad value, e.g.
``ConfigError: ptmon.toml: mqtt.qos must be 0 or 1: 2``. Relative paths are relative to
the config file's directory. Secrets never sit in the file: it names the environment
variable that holds each one (``password_env``, ``token_env``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

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
    protocol: str = "5"  # "5" or "3.1.1"
    client_id: str = "ptmon-collector"
    username: str | None = None
    password: str | None = None  # from the environment variable named by password_env
    qos: int = 1
    persistent_session: bool = True  # clean_session=False (3.1.1) / session expiry (5)
    session_expiry: int = 7 * 86_400  # seconds the broker keeps the session while we are away (MQTT 5)
    topics: tuple[str, ...] = DEFAULT_TOPICS  # narrow these to split the district over collectors
    keepalive: int = 30
    reconnect_min: float = 0.5
    reconnect_max: float = 30.0
    receive_maximum: int = 65_535  # unacknowledged QoS 1 messages the broker may send us (MQTT 5)
    batch_size: int = 16_384  # most messages decoded and applied in one batch


@dataclass(frozen=True, kw_only=True)
class InfluxConfig:
    url: str = ""  # empty: no InfluxDB sink
    api: str = "v1"  # "v1": /write + InfluxQL (1.x, 3.x compat); "v2": influxdb-client (2.x, 1.8+, 3.x)
    database: str = "ptmon"  # v1
    retention_policy: str = ""  # v1, empty = the database's default
    username: str | None = None  # v1
    password: str | None = None  # v1, from password_env
    org: str = ""  # v2
    bucket: str = "ptmon"  # v2
    token: str | None = None  # v2, from token_env
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
    checkpoint_interval: float = 60.0
    metrics_listen: str = "127.0.0.1:9464"  # host:port of Prometheus /metrics; empty disables
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    influx: InfluxConfig = field(default_factory=InfluxConfig)

    @property
    def archive_path(self) -> Path:
        return self.archive_dir or self.data_dir / "archive"

    @property
    def spool_path(self) -> Path:
        return self.spool_dir or self.data_dir / "spool"

    @property
    def checkpoint_path(self) -> Path:
        return self.checkpoint_file or self.data_dir / "checkpoint.npz"
