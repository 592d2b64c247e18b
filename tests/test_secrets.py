"""No secret leaks: passwords given by URL, by environment variable or by a variable the config names
are used (real Mosquitto with a password file, InfluxDB 1.6.7 with authentication, an SMTP server
requiring a login) and never appear in a log line, an error, the archive, the ledger, the checkpoint,
the KPI CSV, the report, /metrics, InfluxDB's points or an email, right or wrong."""

from __future__ import annotations

import base64
import getpass
import gzip
import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from ptmon.simulators.loopback import free_port

from .brokers import MosquittoServer
from .conftest import HEADER
from .servers import InfluxServer, influxql
from .smtp import SmtpServer
from .storage import ledger_locked, wait_until

MQTT_SECRET = "mqtt-Secret-in-URL-1"
INFLUX_SECRET = "influx-Secret-in-ENV-2"
SMTP_SECRET = "smtp-Secret-in-NAMED-ENV-3"
TOKEN_SECRET = "token-Secret-unused-4"
WRONG_MQTT = "wrong-mqtt-Secret-5"
WRONG_INFLUX = "wrong-influx-Secret-6"
SIMULATOR_SECRET = "simulate-Secret-7"
SECRETS = (MQTT_SECRET, INFLUX_SECRET, SMTP_SECRET, TOKEN_SECRET, WRONG_MQTT, WRONG_INFLUX, SIMULATOR_SECRET)
CAMERAS = [f"taopu-cam{i}" for i in range(3)]
PTMON = [sys.executable, "-m", "ptmon.cli"]


@pytest.fixture
def servers(tmp_path):  # type: ignore[no-untyped-def]
    passwd = tmp_path / "passwd"
    passwd.touch(mode=0o600)
    for user, password in (("ptmon", MQTT_SECRET), ("device", "device-pw")):
        subprocess.run(["mosquitto_passwd", "-b", str(passwd), user, password], check=True, timeout=30)
    # no privilege drop: the tmp files are readable by the user running the tests only
    broker = MosquittoServer(tmp_path, f"password_file {passwd}\nuser {getpass.getuser()}\n", anonymous=False)
    broker.start()
    influx = InfluxServer(tmp_path, extra_http="  auth-enabled = true\n")
    influx.start()
    influxql(influx.url, "", f"CREATE USER admin WITH PASSWORD '{INFLUX_SECRET}' WITH ALL PRIVILEGES")
    smtp = SmtpServer(login=("ptmon-mail", SMTP_SECRET)).start()
    try:
        yield broker, influx, smtp
    finally:
        smtp.stop()
        influx.stop()
        broker.stop()


def write_files(tmp_path: Path, smtp_port: int, metrics_port: int) -> Path:
    registry = tmp_path / "registry.csv"
    registry.write_text("\n".join([HEADER] + [f"{d},cam,face_cam,taopu,scn,taopu-c1,gw-1,2026-01-01," for d in CAMERAS]) + "\n")
    config = tmp_path / "ptmon.toml"
    config.write_text(
        f'registry = "{registry}"\ndata_dir = "{tmp_path / "data"}"\ncheckpoint_interval = 1\n'
        f'metrics_listen = "127.0.0.1:{metrics_port}"\n'
        '[mqtt]\nclient_id = "secret-test"\nqos = 1\nreconnect_min = 0.2\nreconnect_max = 1\n'
        '[influx]\ndatabase = "secrets"\nflush_interval = 0.2\nretry_min = 0.1\nretry_max = 0.5\n'
        f'[email]\nhost = "127.0.0.1"\nport = {smtp_port}\nsecurity = "none"\nusername = "ptmon-mail"\n'
        'password_env = "MY_SMTP_PW"\npoll_interval = 0.2\n'
        '[storage]\nretry_min = 0.05\nretry_max = 0.5\nalert_after = 1\n')
    return config


def environment(influx_password: str) -> dict[str, str]:
    return {**os.environ, "PTMON_INFLUX_PASSWORD": influx_password, "MY_SMTP_PW": SMTP_SECRET,
            "PTMON_INFLUX_TOKEN": TOKEN_SECRET}


def collect(config: Path, log: Path, *, mqtt_password: str, influx_password: str, broker: int,
            influx_url: str) -> subprocess.Popen[bytes]:
    host = urllib.parse.urlsplit(influx_url).netloc
    args = [*PTMON, "-v", "collect", "--config", str(config), "--kpi-csv", str(config.parent / "kpis.csv"),
            "--broker", f"mqtt://ptmon:{urllib.parse.quote(mqtt_password)}@127.0.0.1:{broker}",
            "--influx-url", f"http://admin@{host}"]  # the password from $PTMON_INFLUX_PASSWORD
    with log.open("ab") as out:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=environment(influx_password))


def stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(60)


def publish(port: int, seq: int) -> None:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"device-{time.monotonic_ns()}")
    client.username_pw_set("device", "device-pw")
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        for device in CAMERAS:
            payload = {"seq": seq, "boot": "b", "face_try": 10 * seq, "face_ok": 9 * seq, "plate_try": 0, "plate_ok": 0}
            client.publish(f"putuo/cam/taopu/{device}/hb", json.dumps(payload), qos=1).wait_for_publish(10)
    finally:
        client.loop_stop()
        client.disconnect()


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return response.read().decode()


def influx_dump(url: str) -> str:
    """Every point of every measurement in the collector's database, as the admin reads it."""
    token = base64.b64encode(f"admin:{INFLUX_SECRET}".encode()).decode()
    query = urllib.parse.urlencode({"db": "secrets", "q": "SELECT * FROM /.*/"})
    request = urllib.request.Request(f"{url}/query?{query}", headers={"Authorization": f"Basic {token}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.read().decode()


def everything_written(root: Path) -> bytes:
    """Every file under ``root``, gzip ones decompressed (a cut-short stream up to its cut)."""
    out = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        if data[:2] == b"\x1f\x8b":
            try:
                data = gzip.decompress(data)
            except (EOFError, OSError):
                import zlib

                data = zlib.decompressobj(31).decompress(data)
        out.append(data)
    return b"\n".join(out)


def test_no_secret_appears_anywhere(tmp_path: Path, servers: Any) -> None:
    """Test that secrets by URL, environment and config-named variable are used, and that none of them,
    nor wrong ones, appears in any log line, error, file, report, metric, InfluxDB point or email."""
    broker, influx, smtp = servers
    metrics_port = free_port()
    config = write_files(tmp_path, smtp.port, metrics_port)
    log = tmp_path / "collector.log"
    texts: list[str] = []

    wrong = collect(config, log, mqtt_password=WRONG_MQTT, influx_password=WRONG_INFLUX, broker=broker.port,
                    influx_url=influx.url)
    wait_until(lambda: "broker refused the connection" in log.read_text() and "refused the credentials" in log.read_text(),
               timeout=60, what="the refusals logged")
    texts.append(scrape(metrics_port))
    assert stop(wrong) == 0

    right = collect(config, log, mqtt_password=MQTT_SECRET, influx_password=INFLUX_SECRET, broker=broker.port,
                    influx_url=influx.url)
    try:
        wait_until(lambda: log.read_text().count("subscribed to") >= 1, timeout=60, what="subscribed")
        for seq in (1, 2, 3):
            publish(broker.port, seq)
        wait_until(lambda: '"heartbeat"' in influx_dump(influx.url), timeout=60, what="points in InfluxDB")
        with ledger_locked(tmp_path / "data" / "ledger.sqlite", 3.0):  # a storage alert, sent with the SMTP login
            publish(broker.port, 4)
            wait_until(lambda: any("存储故障" in m["Subject"] for m in smtp.inbox.messages), what="the alert email")
        wait_until(lambda: any("存储恢复" in m["Subject"] for m in smtp.inbox.messages), what="the all-clear email")
        texts.append(scrape(metrics_port))
    finally:
        assert stop(right) == 0
    assert smtp.logins and set(smtp.logins) == {"ptmon-mail"}  # the named variable's password was used

    month = time.strftime("%Y-%m", time.localtime())
    report = subprocess.run([*PTMON, "report", "--month", month, "--config", str(config), "--out", str(tmp_path / "report"),
                             "--format", "csv,html"],
                            capture_output=True, text=True, timeout=300, env=environment(""), check=False)
    assert report.returncode == 0, report.stderr
    check = subprocess.run([*PTMON, "collect", "--config", str(config), "--check-config", "--broker",
                            f"mqtt://ptmon:{MQTT_SECRET}@127.0.0.1:1", "--influx-url", f"http://admin:{INFLUX_SECRET}@h:1"],
                           capture_output=True, text=True, timeout=120, env=environment(INFLUX_SECRET), check=False)
    assert check.returncode == 0 and "mqtt auth: username 'ptmon', password set" in check.stdout, check.stderr
    simulate = subprocess.run([*PTMON, "simulate", "--registry", str(tmp_path / "registry.csv"), "--broker",
                               f"mqtt://u:{SIMULATOR_SECRET}@127.0.0.1:1"],
                              capture_output=True, text=True, timeout=120, check=False)
    assert simulate.returncode == 2 and "cannot reach the broker mqtt://***@127.0.0.1:1" in simulate.stderr
    texts += [log.read_text(), report.stdout, report.stderr, check.stdout, check.stderr, simulate.stdout,
              simulate.stderr, influx_dump(influx.url)]
    texts += [m.as_string() for m in smtp.inbox.messages]
    written = everything_written(tmp_path / "data") + everything_written(tmp_path / "report")
    written += (tmp_path / "kpis.csv").read_bytes()
    assert b"heartbeat" in everything_written(tmp_path / "data") and "process_resident_memory_bytes" in texts[0]
    for secret in SECRETS:
        assert not any(secret in text for text in texts), secret
        assert secret.encode() not in written, secret
