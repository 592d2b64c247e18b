"""Injection: device ids, community and gateway names full of metacharacters reach InfluxDB
1.6.7 as exactly the intended series.

A registry whose ids and names carry commas, spaces, ``=``, quotes, backslashes, ``<script>``,
SQL and non-ASCII (including Unicode line separators) is run through Decoder → Engine → the
collector's point builders (``HeartbeatPoints``, ``SlaPoints``, the ledger's ``episode_line``)
→ a real InfluxDB, and read back with ``SHOW MEASUREMENTS / SERIES / TAG KEYS / TAG VALUES /
FIELD KEYS`` and SELECTs: tag values come back byte-exact, and there is no series, tag, field or
measurement that was not meant. What no MQTT topic level can carry (CR, LF, ``/ + #``, other
control characters) the registry refuses, each as a counted problem naming its line. An alert
email keeps CR/LF from names and ids out of its headers. (The report's escaping is tested in
``test_report_render.py``.)
"""

from __future__ import annotations

import csv
import io
import re
from email import policy as email_policy
from email.parser import BytesParser

import pytest

from ptmon.alerting.message import compose
from ptmon.alerting.model import AlertKey, AlertView, Cause, GroupKey, Notice, Notification, Phase
from ptmon.alerting.rules import load_alert_rules
from ptmon.config import InfluxConfig
from ptmon.decode import Decoder
from ptmon.engine import Engine
from ptmon.errors import RegistryError
from ptmon.ledger.episodes import episode_line
from ptmon.ledger.records import Episode
from ptmon.live import HeartbeatPoints, MonthTallies, SlaPoints
from ptmon.registry import Registry, parse_registry
from ptmon.replay import Feed
from ptmon.rules import Rules, load_rules
from ptmon.sinks.influx_transport import V1Transport
from ptmon.sinks.lineproto import series_prefix
from ptmon.timebase import US_PER_S
from tests.servers import InfluxServer, influx_rows

T0 = 1_793_462_400  # 2026-11-01T00:00:00+08:00
HEADER = ["device_id", "contract", "type", "street", "scenario", "community", "gateway", "accepted_on", "retired_on"]
IDS = [
    "plain-1", "d,comma", "d space", "d=eq", "x=1,y=2 z=3", 'd"quote', "d'apos", "d\\back", "a\\,b", "a\\ b",
    "a\\=b", 'a\\"b', "d\\\\double", "<script>alert(1)<\\script>", "<img src=x onerror=alert(1)>",
    "'; DROP TABLE heartbeat;--", "heartbeat,device=forged f=1i", "普陀区 曹杨-01", "émoji🚀", "d\u2028ls\u2029ps",
    "d\x85nel", "\\lead", "=", ",",
]
COMMUNITIES = ["c,1 \"q\"", "c\r\nBcc: evil@example.com", "<script>x</script>", "c\\", "曹杨一村", 'c="x" y=1']
GATEWAYS = ["gw,1", 'gw "2"', "gw=3", "<b>gw<\\b>", "gw\\5", "网关 6"]
STREETS = ("taopu", "wanli")


def registry_csv(ids: list[str], communities: list[str] = COMMUNITIES, gateways: list[str] = GATEWAYS) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_ALL)  # quoted: a CR in a field stays in it
    writer.writerow(HEADER)
    for i, device_id in enumerate(ids):
        contract, type_code = ("cam", "face_cam") if i % 2 else ("iot", "elevator")
        writer.writerow([device_id, contract, type_code, STREETS[i % 2], "scn", communities[i % len(communities)],
                         gateways[i % len(gateways)], "2026-01-01", ""])
    return out.getvalue()


@pytest.fixture(scope="module")
def registry(rules: Rules) -> Registry:
    return parse_registry(registry_csv(IDS), rules)


# --- what the registry refuses ------------------------------------------------------------------

REFUSED = [
    ("lf", "a\nb"), ("cr", "a\rb"), ("crlf", "a\r\nb"), ("slash", "a/b"), ("plus", "a+b"), ("hash", "a#b"),
    ("nul", "a\x00b"), ("escape", "\x1b[31mred"), ("tab", "a\tb"), ("del", "a\x7fb"),
    ("leading-space", " a"), ("trailing-space", "a "), ("empty", ""),
]


@pytest.mark.parametrize("device_id", [r[1] for r in REFUSED], ids=[r[0] for r in REFUSED])
def test_registry_refuses_ids_no_topic_can_carry(rules: Rules, device_id: str) -> None:
    """Test that an id with CR/LF, / + #, a control character or edge spaces is one counted problem naming its line."""
    with pytest.raises(RegistryError) as caught:
        parse_registry(registry_csv(["fine-1", device_id, "fine-2"], ["c1"], ["gw"]), rules)
    assert len(caught.value.problems) == 1
    problem = caught.value.problems[0]
    # a quoted CR/LF makes the record span lines; the csv reader numbers it by its last one
    assert re.match(r"<registry>:[34]: device_id", problem), problem
    assert repr(device_id) in problem or "device_id is empty" in problem
    assert "1 problem(s); nothing was loaded" in str(caught.value)


def test_registry_refuses_a_trailing_backslash(rules: Rules) -> None:
    """Test that an id ending in a backslash is refused, since its heartbeat series would be another id's."""
    with pytest.raises(RegistryError, match="ends in a backslash"):
        parse_registry(registry_csv(["dev\\", "dev"]), rules)


def test_registry_refuses_gateway_ids_no_topic_can_carry(rules: Rules) -> None:
    """Test that a gateway id no status topic can carry is refused, like a device id."""
    with pytest.raises(RegistryError, match="gateway 'gw/1' contains a character not allowed"):
        parse_registry(registry_csv(["fine-1"], ["c1"], ["gw/1"]), rules)


def test_every_id_has_its_own_series(registry: Registry) -> None:
    """Test that no two registry ids map to one heartbeat series key."""
    engine = Engine(registry)
    prefixes = HeartbeatPoints(engine).prefix
    assert len(set(prefixes)) == len(registry.ids)


# --- the round trip through InfluxDB --------------------------------------------------------------


def heartbeats(registry: Registry) -> list[tuple[float, str, str]]:
    """Three heartbeats per device (seq k, bat, rssi, ts, counters) and two statuses per gateway."""
    records: list[tuple[float, str, str]] = [(T0 - 1, "$ptmon/monitor", "up")]
    streets = registry.rules.street_codes()
    for k in range(3):
        for i, device_id in enumerate(registry.ids):
            contract = registry.rules.contracts[int(registry.contract[i])].code
            street = streets[int(registry.street[i])]
            counters = ('"face_try":%d,"face_ok":%d' if contract == "cam" else '"reads":%d,"read_ok":%d') % (10 * k, 9 * k)
            payload = f'{{"seq":{k},"bat":{90 + i % 10}.5,"rssi":-{60 + i},"ts":{T0 + 60 * k},{counters}}}'
            records.append((T0 + 60 * k + i / 100, f"putuo/{contract}/{street}/{device_id}/hb", payload))
    for g in registry.gateways:
        records += [(T0 + 200, f"putuo/gw/{g}/status", "offline"), (T0 + 201, f"putuo/gw/{g}/status", "online")]
    return [*records, (T0 + 300, "$ptmon/tick", "")]


def test_points_are_exactly_the_intended_series(registry: Registry, influx_server: InfluxServer, influx_db: str) -> None:
    """Test that InfluxDB holds exactly the meant measurements, series, tags and fields, tag values byte-exact."""
    decoder, engine = Decoder(registry), Engine(registry)
    lines: list[str] = []
    SlaPoints(MonthTallies(engine), lines.extend)
    points = HeartbeatPoints(engine)
    Feed(engine, decoder, on_batch=lambda batch: lines.extend(points.lines(batch))).feed(heartbeats(registry))
    assert (decoder.accepted, dict(decoder.rejects)) == (3 * len(IDS), {})
    assert engine.gateway_online.all() and (engine.gateway_since == (T0 + 201) * 1_000_000).all()
    V1Transport(InfluxConfig(url=influx_server.url, database=influx_db)).write("\n".join(lines).encode(), gzipped=False)

    def rows(query: str) -> list[list]:
        return influx_rows(influx_server.url, influx_db, query)

    assert {r[0] for r in rows("SHOW MEASUREMENTS")} == {"heartbeat", "sla"}
    assert {r[0] for r in rows('SHOW TAG KEYS FROM "heartbeat"')} == {"contract", "device", "street", "type"}
    assert sorted(map(tuple, rows('SHOW FIELD KEYS FROM "heartbeat"'))) == [
        ("bat", "float"), ("lag", "float"), ("rssi", "float"), ("seq", "integer")]
    devices = [r[1] for r in rows('SHOW TAG VALUES FROM "heartbeat" WITH KEY = "device"')]
    assert sorted(devices) == sorted(IDS)  # byte-exact, one each
    series = {r[0] for r in rows('SHOW SERIES FROM "heartbeat"')}
    assert series == {prefix.rstrip(" ") for prefix in points.prefix}

    result = influx_rows(influx_server.url, influx_db, 'SELECT "seq", "bat", "rssi", "device", "street" FROM "heartbeat"')
    got = sorted((device, seq, bat, rssi, street) for _, seq, bat, rssi, device, street in result)
    streets = registry.rules.street_codes()
    want = sorted((device_id, k, 90 + i % 10 + 0.5, -(60 + i), streets[int(registry.street[i])])
                  for i, device_id in enumerate(registry.ids) for k in range(3))
    assert got == want

    assert {r[0] for r in rows('SHOW TAG KEYS FROM "sla"')} == {"contract", "kpi", "street"}
    assert {r[1] for r in rows('SHOW TAG VALUES FROM "sla" WITH KEY = "street"')} == {
        *registry.rules.street_codes(), "district"}
    kpis = sum(len(c.kpis) for c in registry.rules.contracts)
    assert len(rows('SHOW SERIES FROM "sla"')) == kpis * (len(registry.rules.streets) + 1)


def test_episode_names_round_trip(registry: Registry, influx_server: InfluxServer, influx_db: str) -> None:
    """Test that community and gateway names with quotes, CR/LF and markup come back from the episode point exactly."""
    episodes = [Episode(device=registry.ids[i], contract="cam", street="taopu", type="face_cam",
                        community=registry.communities[int(registry.community[i])],
                        gateway=registry.gateways[int(registry.gateway[i])], start=(T0 + i) * 1_000_000)
                for i in range(len(registry.ids))]
    lines = [episode_line(e) for e in episodes]
    V1Transport(InfluxConfig(url=influx_server.url, database=influx_db)).write(
        "\n".join(line for line in lines if line).encode(), gzipped=False)
    result = influx_rows(influx_server.url, influx_db, 'SELECT "device", "community", "gateway" FROM "episode"')
    assert sorted((d, c, g) for _, d, c, g in result) == sorted((e.device, e.community, e.gateway) for e in episodes)
    assert {r[0] for r in influx_rows(influx_server.url, influx_db, "SHOW MEASUREMENTS")} == {"episode"}


def test_series_prefix_of_every_id_is_one_series_key(registry: Registry) -> None:
    """Test that each id's prefix holds exactly four tags and one unescaped space (no forged tags or fields)."""
    for device_id in registry.ids:
        prefix = series_prefix("heartbeat", {"contract": "cam", "street": "taopu", "type": "face_cam", "device": device_id})
        # InfluxDB 1.x takes a delimiter as escaped when the byte before it is a backslash
        delimiters = re.findall(r"(?<!\\)[, =]", prefix)
        assert delimiters == [",", "=", ",", "=", ",", "=", ",", "=", " "], device_id


# --- email headers ------------------------------------------------------------------------------


def test_alert_email_headers_cannot_be_injected(rules_dir) -> None:
    """Test that CR/LF and header text in a street name, a gateway id and a device's community
    stay inside the subject and body: the message parses to exactly the headers compose set."""
    streets = rules_dir / "streets.yaml"
    streets.write_text(streets.read_text(encoding="utf-8").replace(
        "name: 桃浦镇", 'name: "桃浦镇\\r\\nBcc: spy@example.com\\r\\n\\r\\n伪造正文"', 1), encoding="utf-8")
    rules = load_rules(rules_dir)
    alert_rules = load_alert_rules(rules_dir / "alerts.yaml", rules)
    evil_gateway = "gw-1\r\nBcc: spy@example.com\nX-Evil: 1"
    key = AlertKey(cause=Cause.GATEWAY, contract="cam", street="taopu", gateway=evil_gateway)
    device = {"device": "c1", "community": "=HYPERLINK(\"x\")\r\nBcc: a@b", "type": "t", "gateway": evil_gateway,
              "street": "taopu", "last_heartbeat": None, "offline_since": None, "online": False}
    view = AlertView(key=key, phase=Phase.FIRING, since=(T0 - 600) * US_PER_S, fired=T0 * US_PER_S,
                     details={"table": [device]})
    event = Notification(recipient="taopu@example.com", notice=Notice.FIRING, at=T0 * US_PER_S,
                         group=GroupKey(recipient="taopu@example.com", cause=Cause.GATEWAY, contract="cam"),
                         opened=T0 * US_PER_S, first_seen=(T0 - 600) * US_PER_S, last_change=T0 * US_PER_S,
                         firing=(view,))
    row = compose(event, rules, alert_rules, "ptmon@example.com")
    message = BytesParser(policy=email_policy.default).parsebytes(row["message"])
    assert sorted(message.keys()) == ["Content-Type", "Date", "From", "MIME-Version", "Message-ID", "Subject",
                                      "To", "X-Ptmon-Event"]
    assert "\n" not in message["Subject"] and "桃浦镇 Bcc: spy@example.com 伪造正文" in message["Subject"]
    assert "gw-1 Bcc: spy@example.com X-Evil: 1" in message["Subject"]
    body, attachment = (part.get_content() for part in message.iter_parts())
    assert "网关 gw-1 Bcc: spy@example.com X-Evil: 1 离线" in body
    assert "\nBcc" not in body and "\nX-Evil" not in body
    assert attachment.splitlines()[1].startswith("taopu,,c1,") and "'=HYPERLINK" in attachment
