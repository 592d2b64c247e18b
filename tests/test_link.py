"""The simulator's gateway link against a real Mosquitto."""

from __future__ import annotations

import asyncio

import pytest

from simulators.link import BrokerAddress, Link, LinkError

from .brokers import Subscriber, mosquitto


@pytest.fixture(scope="module")
def broker_port(tmp_path_factory):
    with mosquitto(tmp_path_factory.mktemp("mqtt")) as port:
        yield port


@pytest.mark.parametrize("qos", [0, 1])
def test_link_publishes_every_message(broker_port, qos):
    """Test that a batch published over a link reaches a subscriber complete, QoS 0 and 1."""
    sub = Subscriber(broker_port, f"putuo/t{qos}/#")

    async def publish() -> Link:
        link = Link(BrokerAddress.parse(f"mqtt://127.0.0.1:{broker_port}"), f"gw-q{qos}", qos=qos)
        await link.connect()
        for batch in range(10):
            link.publish([(f"putuo/t{qos}/d{i}/hb", b'{"seq":%d}' % batch) for i in range(500)])
            await link.drain()
        for _ in range(200):
            if not qos or link.acked == link.sent:
                break
            await asyncio.sleep(0.05)
        await link.close()
        return link

    link = asyncio.run(publish())
    got = sub.wait_for(5000)
    sub.close()
    assert len(got) == 5000 and link.sent == 5000
    assert link.acked == (5000 if qos else 0)


def test_killed_link_fires_last_will_and_closed_one_does_not(broker_port):
    """Test that kill() makes the broker publish the gateway's Will, and a clean close() does not."""
    sub = Subscriber(broker_port, "putuo/gw/+/status")

    async def run() -> None:
        address = BrokerAddress.parse(f"mqtt://127.0.0.1:{broker_port}")
        links = {}
        for name in ("gw-dies", "gw-leaves"):
            links[name] = Link(address, name, will=(f"putuo/gw/{name}/status", b"offline", 1, True))
            await links[name].connect()
            links[name].publish([(f"putuo/gw/{name}/status", b"online")], retain=True)
            await links[name].drain()
        await asyncio.sleep(0.2)
        links["gw-dies"].kill()
        await links["gw-leaves"].close()
        await asyncio.sleep(0.5)

    asyncio.run(run())
    got = sub.quiet(0.5)
    sub.close()
    assert ("putuo/gw/gw-dies/status", b"offline", False) in got
    assert [m for m in got if m[0] == "putuo/gw/gw-leaves/status"] == [("putuo/gw/gw-leaves/status", b"online", False)]


def test_refused_connection_says_why(tmp_path):
    """Test that a broker refusing the client gives a LinkError naming the reason."""
    with mosquitto(tmp_path, anonymous=False) as port:
        async def run() -> None:
            await Link(BrokerAddress.parse(f"mqtt://nobody:wrong@127.0.0.1:{port}"), "gw-x").connect()

        with pytest.raises(LinkError, match="not authorised|bad user name"):
            asyncio.run(run())


def test_broker_url_parsing():
    """Test that broker URLs parse, with TLS implied by mqtts and a clear error otherwise."""
    a = BrokerAddress.parse("mqtts://u:p@example:8884")
    assert (a.host, a.port, a.tls, a.username, a.password) == ("example", 8884, True, "u", "p")
    assert BrokerAddress.parse("localhost").port == 1883
    with pytest.raises(ValueError, match="mqtt://host:port"):
        BrokerAddress.parse("http://x")
