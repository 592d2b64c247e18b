"""``ptmon collect --check-config``: the effective config in a line per subject, secrets masked."""

from __future__ import annotations

from pathlib import Path

from ..credentials import redact
from .sections import CollectorConfig, EmailConfig, InfluxConfig, LossConfig, TlsConfig


def check_config(config: CollectorConfig) -> list[str]:
    """The effective config, a line per subject, for ``ptmon collect --check-config``.

    Secrets show only as set / not set; URLs are masked all the same (user info and query),
    though validation keeps credentials out of them.
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
        f"registry: {config.registry}" + (f" (partition: streets {', '.join(config.streets)} only)" if config.streets else ""),
        f"rules: {config.rules or 'shipped with ptmon'}",
        f"archive: {config.archive_path} (gzip level {config.archive_compresslevel})",
        (f"checkpoint: {config.checkpoint_path}, every {config.checkpoint_interval:g} s; "
         f"a main loop stalled over {config.stall_gap:g} s is a monitoring gap"),
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
