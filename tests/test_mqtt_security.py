"""MQTT security against a real Mosquitto running the shipped deploy/mosquitto config (on a free
loopback port, with a password file made by mosquitto_passwd): no anonymous clients, devices and
gateways publish only their own topics, the collector only subscribes; and TLS with CA
verification and client certificates, through the collector's own MQTT source."""

from __future__ import annotations

import csv
import getpass
import importlib.util
import io
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from ptmon.config import MqttConfig, TlsConfig
from ptmon.source import MqttSource

from .brokers import MosquittoServer, free_port
from .programs import program

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy" / "mosquitto"
TIMEOUT = 30.0  # generous: the suite must pass on a loaded machine
NOT_AUTHORIZED = 0x87
COLLECTOR = "ptmon-collector"
PASSWORD = "s3cret-for-tests"
# A device that connects by itself (user name = device id), and a gateway publishing for its devices.
DEVICE, OTHER_DEVICE = "taopu-face1", "taopu-face2"
GATEWAY, OTHER_GATEWAY = "gw-taopu-c1-iot", "gw-taopu-c2-iot"
REGISTRY = """\
device_id,contract,type,street,scenario,community,gateway,accepted_on,retired_on
taopu-face1,cam,face_cam,taopu,scn,taopu-c1,gw-taopu-c1-cam,2026-01-01,
taopu-face2,cam,face_cam,taopu,scn,taopu-c1,gw-taopu-c1-cam,2026-01-01,
taopu-lift1,iot,elevator,taopu,scn,taopu-c1,gw-taopu-c1-iot,2026-01-01,
taopu-lift2,iot,elevator,taopu,scn,taopu-c2,gw-taopu-c2-iot,2026-01-01,
taopu-lift3,iot,elevator,taopu,scn,taopu-c1,gw-taopu-c1-iot,2026-01-01,2026-02-01
"""


def hb(device: str, contract: str = "cam", street: str = "taopu") -> str:
    return f"putuo/{contract}/{street}/{device}/hb"


def gateway_acl_module() -> Any:
    spec = importlib.util.spec_from_file_location("gateway_acl", DEPLOY / "gateway_acl.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def adapted_config(text: str, *, port: int, passwd: Path, acl: Path, conf_d: Path) -> str:
    """The shipped mosquitto.conf with only where things are changed: a loopback port, the test's
    password file, ACL and include folder, no persistence, log to stderr, and no privilege drop
    (the tmp files are readable by the user running the tests only)."""
    replace = {"listener": f"listener {port} 127.0.0.1", "password_file": f"password_file {passwd}",
               "acl_file": f"acl_file {acl}", "persistence": "persistence false", "persistence_location": None,
               "include_dir": f"include_dir {conf_d}", "log_dest": "log_dest stderr"}
    out, found = [], set()
    for line in text.splitlines():
        key = line.split(None, 1)[0] if line.strip() and not line.startswith("#") else ""
        if key in replace:
            if key not in found and replace[key] is not None:
                out.append(replace[key])
            found.add(key)
            continue
        out.append(line)
    assert found == set(replace), f"the shipped config lacks {set(replace) - found}"
    return "\n".join(out) + f"\nuser {getpass.getuser()}\n"


def add_user(passwd: Path, user: str, password: str = PASSWORD) -> None:
    subprocess.run([program("mosquitto_passwd"), "-b", str(passwd), user, password], check=True, timeout=TIMEOUT)


@dataclass
class Broker:
    port: int
    root: Path
    tls_port: int = 0
    certs: dict[str, Path] = field(default_factory=dict)


@pytest.fixture(scope="module")
def broker(tmp_path_factory) -> Iterator[Broker]:
    """Mosquitto with the shipped config, ACL (+ gateway sections from a registry) and a TLS listener."""
    root = tmp_path_factory.mktemp("secure-mqtt")
    passwd, acl, conf_d = root / "passwd", root / "acl", root / "conf.d"
    conf_d.mkdir()
    passwd.touch(mode=0o600)
    for user in (COLLECTOR, DEVICE, OTHER_DEVICE, GATEWAY, OTHER_GATEWAY, "healthcheck"):
        add_user(passwd, user)
    gateways = gateway_acl_module().gateway_sections(csv.DictReader(io.StringIO(REGISTRY)), today=date(2026, 11, 1))
    acl.write_text((DEPLOY / "acl").read_text() + gateways)
    certs = make_certificates(root / "certs")
    tls_port = free_port()
    tls = (DEPLOY / "tls.conf.example").read_text()
    tls = tls.replace("listener 8883", f"listener {tls_port} 127.0.0.1")
    tls = tls.replace("/mosquitto/config/certs", str(root / "certs"))
    (conf_d / "tls.conf").write_text(tls)
    server = MosquittoServer(root)
    server.config.write_text(adapted_config((DEPLOY / "mosquitto.conf").read_text(), port=server.port,
                                            passwd=passwd, acl=acl, conf_d=conf_d))
    server.start()
    try:
        yield Broker(server.port, root, tls_port, certs)
    finally:
        server.stop()


# --- certificates -------------------------------------------------------------------------------


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run([program("openssl"), *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_certificates(folder: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate, all signed by it."""
    folder.mkdir()
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=ptmon test CA",
            "-keyout", "ca.key", "-out", "ca.pem", cwd=folder)
    (folder / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name, extension in (("server", ["-extfile", "server.ext"]), ("collector", [])):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", f"{name}.key",
                "-out", f"{name}.csr", cwd=folder)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-days", "2", "-out", f"{name}.pem", *extension, cwd=folder)
    return {name: folder / name for name in ("ca.pem", "collector.pem", "collector.key")}


# --- clients ------------------------------------------------------------------------------------


class Client:
    """A paho client (MQTT 5 unless told) that records its CONNACK, SUBACK and PUBACK reason codes and messages."""

    def __init__(self, port: int, user: str | None, password: str = PASSWORD, *, protocol: int = mqtt.MQTTv5) -> None:
        self.connected = threading.Event()
        self.connack: Any = None
        self.subacks: list[Any] = []
        self.pubacks: dict[int, Any] = {}
        self.messages: list[tuple[str, bytes]] = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"t-{user}-{time.monotonic_ns()}",
                                  protocol=protocol)
        if user is not None:
            self.client.username_pw_set(user, password)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda c, u, mid, reasons, p: self.subacks.append(reasons)
        self.client.on_publish = lambda c, u, mid, reason, p: self.pubacks.__setitem__(mid, reason)
        self.client.on_message = lambda c, u, msg: self.messages.append((msg.topic, msg.payload))
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.connected.wait(TIMEOUT)

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        self.connack = reason
        self.connected.set()

    def subscribe(self, topic: str) -> Any:
        self.client.subscribe(topic, qos=1)
        wait_until(lambda: self.subacks)
        return self.subacks[-1][0]

    def publish(self, topic: str, payload: str = '{"seq":1}') -> Any:
        """PUBLISH at QoS 1; the reason code of the broker's PUBACK."""
        mid = self.client.publish(topic, payload, qos=1).mid
        wait_until(lambda: mid in self.pubacks)
        return self.pubacks[mid]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def wait_until(condition: Any, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(0.02)


@pytest.fixture
def collector(broker) -> Iterator[Client]:
    """The collector's account, subscribed to everything under putuo/."""
    client = Client(broker.port, COLLECTOR)
    assert client.subscribe("putuo/#").value == 1  # granted QoS 1
    yield client
    client.close()


def published(port: int, user: str, topic: str, collector: Client) -> tuple[Any, bool]:
    """(PUBACK reason, whether the collector received it) of one QoS 1 publish by ``user`` on a
    connection of its own (Mosquitto 2.0 drops a connection after refusing its publish). A marker
    published after it proves the broker has routed everything before."""
    before = len(collector.messages)
    payload = f'{{"seq":{time.monotonic_ns()}}}'
    client = Client(port, user)
    reason = client.publish(topic, payload)
    client.close()
    marker = Client(port, DEVICE)
    marker.publish(hb(DEVICE), '{"marker":1}')
    marker.close()
    wait_until(lambda: any(p == b'{"marker":1}' for _, p in collector.messages[before:]))
    return reason, (topic, payload.encode()) in collector.messages[before:]


# --- the tests ------------------------------------------------------------------------------------


def test_anonymous_and_wrong_password_are_refused(broker):
    """Test that a client without credentials, or with a wrong password, is refused at CONNECT."""
    for client in (Client(broker.port, None), Client(broker.port, DEVICE, "wrong")):
        assert client.connack is not None and client.connack.is_failure, client.connack
        client.close()


def test_device_publishes_only_its_own_heartbeat(broker, collector):
    """Test that a device's own heartbeat reaches the collector, while its publish to another device's
    topic is refused (MQTT 5 PUBACK 0x87 Not authorized) and never delivered."""
    reason, delivered = published(broker.port, DEVICE, hb(DEVICE), collector)
    assert not reason.is_failure and delivered
    for topic in (hb(OTHER_DEVICE), hb(DEVICE).replace("/hb", "/cmd"), f"putuo/gw/{DEVICE}x/status"):
        reason, delivered = published(broker.port, DEVICE, topic, collector)
        assert reason.value == NOT_AUTHORIZED and not delivered, topic


def test_qos0_publish_to_another_device_is_dropped(broker, collector):
    """Test that an MQTT 3.1.1 QoS 0 publish (no acknowledgement to carry a refusal) to another device's
    topic is silently dropped, while the device's own goes through."""
    for topic, expected in ((hb(OTHER_DEVICE), False), (hb(DEVICE), True)):
        before = len(collector.messages)
        device = Client(broker.port, DEVICE, protocol=mqtt.MQTTv311)
        device.client.publish(topic, '{"qos0":1}', qos=0).wait_for_publish(TIMEOUT)
        device.close()
        _, delivered = published(broker.port, DEVICE, hb(DEVICE), collector)  # a marker after it
        assert delivered
        assert ((topic, b'{"qos0":1}') in collector.messages[before:]) is expected, topic


def test_device_cannot_listen_to_the_district(broker, collector):
    """Test that a device subscribed to putuo/# receives nothing (Mosquitto 2.0 grants the subscription
    but its ACL has no read right for the device, so nothing is delivered to it)."""
    device = Client(broker.port, OTHER_DEVICE)
    try:
        device.subscribe("putuo/#")
        _, delivered = published(broker.port, DEVICE, hb(DEVICE), collector)
        assert delivered and device.messages == []
    finally:
        device.close()


def test_gateway_publishes_its_status_and_its_own_devices_only(broker, collector):
    """Test that a gateway may publish its status and the heartbeats of the devices the registry puts
    behind it (deploy/mosquitto/gateway_acl.py), and nothing of another gateway or a retired device."""
    for topic in (f"putuo/gw/{GATEWAY}/status", hb("taopu-lift1", "iot")):
        reason, delivered = published(broker.port, GATEWAY, topic, collector)
        assert not reason.is_failure and delivered, topic
    for topic in (f"putuo/gw/{OTHER_GATEWAY}/status", hb("taopu-lift2", "iot"), hb("taopu-lift3", "iot")):
        reason, delivered = published(broker.port, GATEWAY, topic, collector)
        assert reason.value == NOT_AUTHORIZED and not delivered, topic


def test_collector_subscribes_but_cannot_publish(broker, collector):
    """Test that the collector's account is refused every publish, a heartbeat as much as a status."""
    for topic in (hb(DEVICE), "putuo/gw/gw-taopu-c1-cam/status"):
        reason, delivered = published(broker.port, COLLECTOR, topic, collector)
        assert reason.value == NOT_AUTHORIZED and not delivered, topic


def test_the_compose_health_check_works(broker):
    """Test that the health check docker-compose.yml runs (mosquitto_sub on $SYS) answers."""
    command = [program("mosquitto_sub"), "-h", "127.0.0.1", "-p", str(broker.port), "-u", "healthcheck", "-P", PASSWORD,
               "-t", "$SYS/broker/uptime", "-C", "1", "-W", "5"]
    assert subprocess.run(command, capture_output=True, timeout=TIMEOUT).returncode == 0


def tls_source(broker: Broker, *, client_certificate: bool) -> MqttSource:
    certs = broker.certs
    tls = TlsConfig(ca_file=certs["ca.pem"], cert_file=certs["collector.pem"] if client_certificate else None,
                    key_file=certs["collector.key"] if client_certificate else None)
    config = MqttConfig(host="127.0.0.1", port=broker.tls_port, tls=tls, username=COLLECTOR, password=PASSWORD,
                        client_id=f"tls-{time.monotonic_ns()}", persistent_session=False, reconnect_min=0.2,
                        reconnect_max=0.5)
    return MqttSource(config)


def test_collector_over_tls_with_a_client_certificate(broker):
    """Test that the collector's MQTT source connects over TLS (the broker verified against the CA, a
    client certificate presented) and receives a device's heartbeat."""
    source = tls_source(broker, client_certificate=True)
    source.start()
    try:
        assert source.subscribed.wait(TIMEOUT)
        device = Client(broker.port, DEVICE)
        device.publish(hb(DEVICE), '{"seq":7}')
        device.close()
        records: list[Any] = []
        wait_until(lambda: records.extend(source.take()[0]) or any(r[1] == hb(DEVICE) for r in records))
    finally:
        source.stop()


def test_tls_without_a_client_certificate_is_refused(broker):
    """Test that the TLS listener refuses a client that presents no certificate."""
    source = tls_source(broker, client_certificate=False)
    source.start()
    try:
        wait_until(lambda: source.last_error is not None)
        assert not source.connected and source.connects == 0
    finally:
        source.stop()
