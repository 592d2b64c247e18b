"""The collector's config: one TOML file, secrets from the environment.

Each table of ptmon.toml is one frozen pydantic dataclass (``sections.py``) whose fields are
its keys, each declared once with its type, default, bounds and unit (``fields.py``: durations
like '90s', sizes like '64MB', shares, ports, paths, existing files). ``load_config`` validates
the file once, at start; command-line options are laid over it by ``with_overrides`` through the
same model; code builds sections by keyword (``MqttConfig(host=...)``), validated alike. Every
error names the file (or option), the key and the bad value, e.g.
``ConfigError: ptmon.toml: mqtt.qos must be 0 or 1: 2``. Relative paths are relative to the
config file's directory. Secrets never sit in the file: it names the environment variable that
holds each one (``password_env``, ``token_env``), and they never show in a repr.

**Adding a section** (say ``[month]``): in ``sections.py`` declare
``@dataclass(frozen=True, kw_only=True, config=SECTION) class MonthConfig(Section)`` with
``table = "month"`` and one annotated field per key, e.g.
``close_grace: Annotated[int, seconds(whole=True, high=31 * 86_400)] = 86_400``; add
``month: MonthConfig = field(default_factory=MonthConfig)`` to ``CollectorConfig``; rules
across keys go in its ``check`` (raise ``self.fail(key, "expected", given)``), keys that are not
attributes (an env variable's name) in ``from_file``. Export it here, document every key in
ptmon.sample.toml (tests/test_config.py checks the sample against ``file_keys()``) and add a
line to ``check_config`` (``summary.py``). Unknown keys, wrong types and the messages come free.
"""

from __future__ import annotations

from .loading import load_config, with_overrides
from .sections import (
    DEFAULT_TOPICS,
    INFLUX_PASSWORD_ENV,
    INFLUX_TOKEN_ENV,
    MQTT_PASSWORD_ENV,
    PAYLOAD_CEILING,
    SMTP_PASSWORD_ENV,
    AlertsConfig,
    CollectorConfig,
    EmailConfig,
    InfluxConfig,
    LimitsConfig,
    LossConfig,
    MonthConfig,
    MqttConfig,
    StorageConfig,
    TlsConfig,
)
from .summary import check_config

__all__ = [
    "DEFAULT_TOPICS", "INFLUX_PASSWORD_ENV", "INFLUX_TOKEN_ENV", "MQTT_PASSWORD_ENV",
    "PAYLOAD_CEILING", "SMTP_PASSWORD_ENV",
    "AlertsConfig", "CollectorConfig", "EmailConfig", "InfluxConfig", "LimitsConfig", "LossConfig",
    "MonthConfig", "MqttConfig", "StorageConfig", "TlsConfig", "check_config", "load_config", "with_overrides",
]
