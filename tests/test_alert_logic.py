"""Pure alerting logic: the state machine, grouping and inhibition, month-at-risk arithmetic, the
rule file, and the ledger rows of earlier versions."""

from __future__ import annotations

import json
from dataclasses import replace
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ptmon.alerting.book import AlertBook
from ptmon.alerting.group import plan
from ptmon.alerting.machine import breach_step, condition_step
from ptmon.alerting.model import AlertKey, AlertState, Cause, GroupKey, Notice, Phase, legacy_states
from ptmon.alerting.risk import month_risks, recent_levels
from ptmon.alerting.rules import AlertRule, AlertRules, Grouping, MonthRiskRule, load_alert_rules
from ptmon.errors import ConfigError
from ptmon.results import KpiRow, Results
from ptmon.timebase import US_PER_S, month_bounds

S = US_PER_S
MIN = 60 * S
RULE = AlertRule(contract="cam", kpi="online", threshold=Decimal("0.95"), window=1800, for_=600,
                 hysteresis=Decimal("0.005"), resolve_for=600)
KEY = AlertKey(cause=Cause.BREACH, contract="cam", street="taopu", kpi="online")


# --- the state machine ---------------------------------------------------------------------------

def run_breach(readings: list[float | None]) -> list[str]:
    """Phases after each reading, one a minute."""
    state, out = None, []
    for minute, value in enumerate(readings):
        below = None if value is None else value < 0.95
        recovered = value is not None and value >= 0.955
        state = breach_step(state, KEY, RULE, below=below, recovered=recovered, t=minute * MIN)
        out.append(state.phase.value if state is not None else "ok")
    return out


@pytest.mark.parametrize(("readings", "phases"), [
    ([0.9] * 11, ["pending"] * 10 + ["firing"]),
    ([0.9] * 5 + [0.96], ["pending"] * 5 + ["ok"]),
    ([0.9] * 11 + [0.952] * 3, ["pending"] * 10 + ["firing"] * 4),  # above threshold, not above the hysteresis
    ([0.9] * 11 + [0.96] * 11, ["pending"] * 10 + ["firing"] + ["resolving"] * 10 + ["ok"]),
    ([0.9] * 11 + [0.96] * 5 + [0.9], ["pending"] * 10 + ["firing"] + ["resolving"] * 5 + ["firing"]),
    ([0.9] * 3 + [None] * 20 + [0.9] * 11, ["pending"] * 3 + ["ok"] * 20 + ["pending"] * 10 + ["firing"]),
    ([0.9] * 11 + [None] * 20 + [0.96] * 11, ["pending"] * 10 + ["firing"] * 21 + ["resolving"] * 10 + ["ok"]),
    ([None] * 5, ["ok"] * 5),
], ids=["fires-after-for", "recovers-while-pending", "hysteresis", "resolves-after-resolve_for", "falls-back",
        "pending-starts-over-after-a-blind-window", "firing-holds-through-a-blind-window", "nothing-to-judge"])
def test_breach_phases(readings, phases):
    """Test that the breach machine fires after `for` observed below, resolves only above threshold +
    hysteresis for `resolve_for`, and neither fires nor resolves while the window cannot be judged."""
    assert run_breach(readings) == phases


def test_a_condition_fires_while_it_holds_and_carries_its_level():
    """Test that a condition alert fires at once, keeps its start, and changes only its level."""
    key = AlertKey(cause=Cause.MONTH_RISK, contract="cam", street="taopu", kpi="online", month="2026-11")
    a = condition_step(None, key, holds=True, since=5, t=10, level=1)
    assert (a.phase, a.since, a.fired, a.level) == (Phase.FIRING, 5, 10, 1)
    b = condition_step(a, key, holds=True, since=99, t=20, level=2)
    assert (b.since, b.level, b.changed) == (5, 2, 20)
    assert condition_step(b, key, holds=False, since=0, t=30) is None


# --- grouping and inhibition ---------------------------------------------------------------------

RULES = AlertRules(rules=(RULE,), grouping=Grouping(group_wait=60, group_interval=300, repeat_interval=3600),
                   district=("ops@x.org",), streets={"taopu": ("taopu@x.org",), "wanli": ("wanli@x.org",)})


def firing(key: AlertKey, t: int) -> AlertState:
    return AlertState(key=key, phase=Phase.FIRING, since=t, changed=t, fired=t)


def silent(street: str, contract: str = "cam") -> AlertKey:
    return AlertKey(cause=Cause.STREET_SILENT, contract=contract, street=street)


class Timeline:
    """Alert states over time, planned every minute like the evaluator does."""

    def __init__(self) -> None:
        self.states: dict[AlertKey, AlertState] = {}
        self.groups: dict[GroupKey, object] = {}
        self.sent: list[tuple[int, str, str, str, tuple[str, ...]]] = []

    def run(self, until_minute: int, start: int = 0) -> None:
        for minute in range(start, until_minute):
            changed, owed = plan(self.states, self.groups, RULES, minute * MIN)  # type: ignore[arg-type]
            for gk, g in changed.items():
                if g is None:
                    self.groups.pop(gk, None)
                else:
                    self.groups[gk] = g
            for p in owed:
                self.sent.append((minute, p.group.recipient, p.group.cause.value, p.notice.value,
                                  tuple(n.key.street or n.key.gateway for n in (p.firing or p.resolved))))


def test_alerts_of_one_cause_arriving_within_group_wait_are_one_email_per_recipient():
    """Test that two streets going silent a minute apart are one email to the district and one to each
    street's contact after group_wait, and one resolved email each, group_wait after both are back."""
    tl = Timeline()
    tl.states[silent("taopu")] = firing(silent("taopu"), 0)
    tl.run(1)
    tl.states[silent("wanli")] = firing(silent("wanli"), 1 * MIN)
    tl.run(30, 1)
    del tl.states[silent("taopu")], tl.states[silent("wanli")]
    tl.run(60, 30)
    assert tl.sent == [
        (1, "ops@x.org", "street_silent", "firing", ("taopu", "wanli")),
        (1, "taopu@x.org", "street_silent", "firing", ("taopu",)),
        (2, "wanli@x.org", "street_silent", "firing", ("wanli",)),
        (31, "ops@x.org", "street_silent", "resolved", ("taopu", "wanli")),
        (31, "taopu@x.org", "street_silent", "resolved", ("taopu",)),
        (31, "wanli@x.org", "street_silent", "resolved", ("wanli",)),
    ]


def test_changes_wait_for_group_interval_and_an_unchanged_incident_repeats():
    """Test that a street joining an incident is sent group_interval after the last email, that a
    street leaving and coming back within it sends nothing, and that repeat_interval repeats."""
    tl = Timeline()
    tl.states[silent("taopu")] = firing(silent("taopu"), 0)
    tl.run(3)
    tl.states[silent("wanli")] = firing(silent("wanli"), 3 * MIN)
    tl.run(4, 3)
    del tl.states[silent("wanli")]
    tl.run(5, 4)
    tl.states[silent("wanli")] = firing(silent("wanli"), 5 * MIN)
    tl.run(62, 5)
    district = [s for s in tl.sent if s[1] == "ops@x.org"]
    assert district == [(1, "ops@x.org", "street_silent", "firing", ("taopu",)),
                        (6, "ops@x.org", "street_silent", "update", ("taopu", "wanli"))]
    assert [s for s in tl.sent if s[1] == "wanli@x.org"] == [(6, "wanli@x.org", "street_silent", "firing", ("wanli",))]
    tl.run(70, 62)
    assert [s[0] for s in tl.sent if s[1] == "ops@x.org" and s[3] == "repeat"] == [66]


def test_a_month_at_risk_is_not_repeated():
    """Test that a month-at-risk incident, which lasts weeks, is sent once and not every repeat_interval."""
    tl = Timeline()
    key = AlertKey(cause=Cause.MONTH_RISK, contract="cam", street="taopu", kpi="online", month="2026-11")
    tl.states[key] = replace(firing(key, 0), level=1)
    tl.run(60 * 24)
    assert [(s[1], s[3]) for s in tl.sent] == [("ops@x.org", "firing"), ("taopu@x.org", "firing")]
    tl.states[key] = replace(tl.states[key], level=2)
    tl.run(60 * 24 + 10, 60 * 24)
    assert [(s[1], s[3]) for s in tl.sent[2:]] == [("ops@x.org", "update"), ("taopu@x.org", "update")]


def test_a_district_silence_holds_back_everything_else():
    """Test that while the district is silent only its email goes out, to the district recipients."""
    tl = Timeline()
    pipeline = AlertKey(cause=Cause.PIPELINE)
    tl.states[pipeline] = firing(pipeline, 0)
    for key in (silent("taopu"), AlertKey(cause=Cause.GATEWAY, contract="cam", street="wanli", gateway="gw-1"), KEY):
        tl.states[key] = firing(key, 0)
    tl.run(10)
    assert tl.sent == [(1, "ops@x.org", "pipeline", "firing", ("",))]


def test_a_street_silence_holds_back_its_breaches_and_gateways_not_other_streets():
    """Test that a street's silence explains its own breach and gateway alerts, not another street's."""
    tl = Timeline()
    wanli_breach = replace(KEY, street="wanli")
    for key in (silent("taopu"), KEY, AlertKey(cause=Cause.GATEWAY, contract="cam", street="taopu", gateway="g"),
                wanli_breach):
        tl.states[key] = firing(key, 0)
    tl.run(3)
    assert sorted((s[1], s[2]) for s in tl.sent) == [
        ("ops@x.org", "breach"), ("ops@x.org", "street_silent"), ("taopu@x.org", "street_silent"),
        ("wanli@x.org", "breach")]


def test_an_alert_inhibited_after_it_was_sent_is_not_reported_resolved():
    """Test that a street silence sent before the district went silent is neither resolved nor
    repeated by the district silence; it resolves when it ends."""
    tl = Timeline()
    tl.states[silent("taopu")] = firing(silent("taopu"), 0)
    tl.run(5)
    pipeline = AlertKey(cause=Cause.PIPELINE)
    tl.states[pipeline] = firing(pipeline, 5 * MIN)
    tl.run(20, 5)
    assert [(s[1], s[3]) for s in tl.sent] == [("ops@x.org", "firing"), ("taopu@x.org", "firing"),
                                              ("ops@x.org", "firing")]
    del tl.states[pipeline], tl.states[silent("taopu")]
    tl.run(30, 20)
    assert sorted((s[1], s[2], s[3]) for s in tl.sent[3:]) == [
        ("ops@x.org", "pipeline", "resolved"), ("ops@x.org", "street_silent", "resolved"),
        ("taopu@x.org", "street_silent", "resolved")]


def test_an_alert_that_resolves_within_group_wait_sends_nothing():
    """Test that a blip shorter than group_wait is no email at all."""
    tl = Timeline()
    tl.states[KEY] = firing(KEY, 0)
    changed, owed = plan(tl.states, {}, RULES, 0)
    assert not owed and all(g is not None and g.due == 60 * S for g in changed.values())
    assert plan({}, {gk: g for gk, g in changed.items() if g is not None}, RULES, 60 * S) == (
        dict.fromkeys(changed), [])


def test_a_district_silence_holds_street_repeats_and_resolutions():
    """Test that a street incident sent before the district went silent is neither repeated every
    repeat_interval nor resolved while the district stays silent; it resolves after."""
    tl = Timeline()
    tl.states[KEY] = firing(KEY, 0)
    tl.run(5)
    pipeline = AlertKey(cause=Cause.PIPELINE)
    tl.states[pipeline] = firing(pipeline, 5 * MIN)
    tl.run(60 * 9, 5)  # nine hours silent: twice repeat_interval
    del tl.states[KEY]  # the breach resolves during the silence
    tl.run(60 * 10, 60 * 9)
    assert [(s[1], s[2], s[3]) for s in tl.sent if s[2] != "pipeline"] == [
        ("ops@x.org", "breach", "firing"), ("taopu@x.org", "breach", "firing")]
    del tl.states[pipeline]
    tl.run(60 * 10 + 10, 60 * 10)
    assert sorted((s[1], s[2], s[3]) for s in tl.sent if s[0] >= 60 * 10) == [
        ("ops@x.org", "breach", "resolved"), ("ops@x.org", "pipeline", "resolved"), ("taopu@x.org", "breach", "resolved")]


@pytest.mark.parametrize("cause", [
    AlertKey(cause=Cause.STREET_SILENT, contract="cam", street="taopu"),
    AlertKey(cause=Cause.GATEWAY, contract="cam", street="taopu", gateway="gw-1"),
    AlertKey(cause=Cause.MONITOR_GAP),
    AlertKey(cause=Cause.PIPELINE),
])
def test_a_wider_cause_holds_back_a_month_at_risk_of_its_street(cause):
    """Test that a month at risk of a street is not emailed while a street silence, a dead gateway of
    the street, a monitoring gap or the district silence explains the dip it was projected from."""
    tl = Timeline()
    risk = AlertKey(cause=Cause.MONTH_RISK, contract="cam", street="taopu", kpi="online", month="2026-11")
    tl.states[cause] = firing(cause, 0)
    tl.states[risk] = replace(firing(risk, 0), level=1)
    tl.run(10)
    assert [s for s in tl.sent if s[2] == "month_risk"] == []
    other = replace(risk, street="wanli")  # another street's month at risk still goes out, unless the cause is district-wide
    tl.states[other] = replace(firing(other, 10 * MIN), level=1)
    tl.run(20, 10)
    assert bool([s for s in tl.sent if s[2] == "month_risk"]) == (cause.cause in (Cause.STREET_SILENT, Cause.GATEWAY))


# --- month at risk -------------------------------------------------------------------------------

MONTH = month_bounds("2026-11")
AS_OF = MONTH[0] + 10 * 86_400 * S  # ten days in


def so_far(numerator: int, denominator: int, observed: int, kpi: str = "online") -> Results:
    row = KpiRow(contract="cam", street="taopu", kpi=kpi, numerator=numerator, denominator=denominator,
                 threshold=Decimal("0.95"), expected_device_samples=denominator, observed_seconds=observed)
    return Results(start=MONTH[0], end=AS_OF, rows=[row], coverage={"cam": {"observed_seconds": observed}},
                   gaps=[], rules_version="", registry_version="")


def cam_only(rules):
    from ptmon.rules import Rules

    cam = rules.contract("cam")
    cam = replace(cam, kpis=tuple(k for k in cam.kpis if k.code == "online"))
    return Rules(directory=rules.directory, streets=tuple(s for s in rules.streets if s.code == "taopu"),
                 types=rules.types, contracts=(cam,), version=rules.version)


ANY_SHARE = MonthRiskRule(min_observed=Decimal(0))


def risks(rules, results: Results, expected: int, recent: Fraction | None, setting=ANY_SHARE):
    return list(month_risks(results, cam_only(rules), setting, as_of=AS_OF, month_end=MONTH[1],
                            expected_now={("cam", "taopu"): expected},
                            recent={} if recent is None else {("cam", "taopu", "online"): (recent, 1800)}))


def test_month_at_risk_levels_and_money(rules):
    """Test the levels: projected below at the recent rate (1), below even with every device back (2),
    and the amount at risk is the payment rule's deduction for the projected value."""
    remaining = (MONTH[1] - AS_OF) // (60 * S)  # 20 days of minutes
    # 100 cameras, 10 days observed at 60 %: all back now ends at (0.6·10 + 20) / 30 = 86.7 % < 95 %.
    (r,) = risks(rules, so_far(60 * 14_400, 100 * 14_400, 864_000), 100, Fraction(1))
    assert (r.level, r.remaining, r.future) == (2, remaining, 100 * remaining)
    assert r.best == Fraction(60 * 14_400 + 100 * remaining, 100 * 14_400 + 100 * remaining)
    # 10 days at 99 %, the last half hour at 50 %: best passes, at 50 % for 20 days it does not.
    (r,) = risks(rules, so_far(99 * 14_400, 100 * 14_400, 864_000), 100, Fraction(1, 2))
    assert r.level == 1 and r.best > Fraction(95, 100) > r.projected
    assert r.projected == (99 * 14_400 + Fraction(1, 2) * 100 * remaining) / (100 * 14_400 + 100 * remaining)
    # projected 199/300 = 66.33 %: 28.67 points short × 1 % a point of 358,299.76 = 102,712.598…
    assert r.projected == Fraction(199, 300)
    assert r.fee == Decimal("358299.76") and r.at_risk == Decimal("102712.60") and r.deduction_now == 0
    (r,) = risks(rules, so_far(99 * 14_400, 100 * 14_400, 864_000), 100, None)
    assert r.level == 0  # no recent level: projected at the month so far, which passes


def test_month_at_risk_projects_from_a_whole_day_not_a_night_hour(rules):
    """Test that the recent level is the ledger's last 24 hours (a night hour at 92 % in a day at
    99 % raises nothing), and falls back to the month so far when under 18 of them were observed."""
    def day(numerator: int, observed: int) -> Results:
        row = KpiRow(contract="cam", street="taopu", kpi="online", numerator=numerator, denominator=100 * 1440,
                     threshold=Decimal("0.95"), expected_device_samples=100 * 1440, observed_seconds=observed)
        return Results(start=AS_OF - 86_400 * S, end=AS_OF, rows=[row], coverage={}, gaps=[],
                       rules_version="", registry_version="")

    month = so_far(99 * 14_400, 100 * 14_400, 864_000)
    recent = recent_levels(day(99 * 1440 - 7 * 60, 86_400))  # 23 hours at 99 %, one at 92 %
    assert recent == {("cam", "taopu", "online"): (Fraction(99 * 1440 - 420, 144_000), 86_400)}
    (r,) = month_risks(month, cam_only(rules), ANY_SHARE, as_of=AS_OF, month_end=MONTH[1],
                       expected_now={("cam", "taopu"): 100}, recent=recent)
    assert r.level == 0 and r.recent_window == 86_400 and r.projected > Fraction(95, 100)
    assert recent_levels(day(50 * 1440, 17 * 3600)) == {}  # too little of the day observed
    (r,) = month_risks(so_far(94 * 14_400, 100 * 14_400, 864_000), cam_only(rules), ANY_SHARE, as_of=AS_OF,
                       month_end=MONTH[1], expected_now={("cam", "taopu"): 100}, recent={})
    assert r.level == 1 and r.projected == Fraction(94, 100) and r.recent is None  # at the month's own level


def test_no_month_at_risk_before_enough_of_the_month_was_observed(rules):
    """Test that 20 minutes of observation (a month started days ago) is not enough to say anything."""
    setting = MonthRiskRule(min_observed=Decimal("0.2"), min_elapsed=86_400)
    assert risks(rules, so_far(0, 100 * 20, 1200), 100, Fraction(0), setting) == []


@settings(max_examples=300, deadline=None)
@given(online=st.integers(0, 10**7), extra=st.integers(0, 10**7), expected=st.integers(1, 5000),
       recent=st.fractions(0, 1))
def test_never_unreachable_while_all_devices_back_now_would_pass(rules, online, extra, expected, recent):
    """Test against a direct computation that level 2 is said exactly when every expected device
    online for every remaining sample instant still ends the month below the threshold."""
    denominator = online + extra
    if denominator == 0:
        return
    (r,) = risks(rules, so_far(online, denominator, 864_000), expected, recent)
    left = expected * ((MONTH[1] - AS_OF) // (60 * S))
    all_back = Fraction(online + left, denominator + left)
    assert (r.level == 2) == (all_back < Fraction(95, 100))


# --- the digest's words --------------------------------------------------------------------------

def digest_of(rules, observed: int, open_alerts=()):
    from ptmon.alerting.digest import Digest
    from ptmon.alerting.evaluate import DigestRequest
    from ptmon.timebase import day_of

    month = Results(start=MONTH[0], end=AS_OF, rows=[], gaps=[], rules_version="", registry_version="",
                    coverage={c.code: {"observed_seconds": observed, "period_seconds": 2 * observed} for c in rules.contracts})
    request = DigestRequest(day=day_of(AS_OF) - 1, at=AS_OF, street="", since=None, quality={}, open=tuple(open_alerts))
    return Digest(request=request, yesterday=month, month=month, payments=(), loss={})


@pytest.mark.parametrize(("observed", "said", "unsaid"), [
    (5 * 86_400, "未达本月的 20%", "未满"),  # five days: over a day, under a fifth of the month
    (7 * 86_400, "", "暂不估算"),  # judged
])
def test_the_digest_says_which_guard_a_month_misses(rules, observed, said, unsaid):
    """Test that the digest's withheld estimate names the condition that fails (not "below 20 % or
    24 hours" when the month has 50 % coverage and days of data)."""
    from ptmon.alerting.digest import _money
    from ptmon.alerting.sections import Names

    alert_rules = AlertRules(rules=(RULE,), month_risk=MonthRiskRule())
    digest = digest_of(rules, observed)
    registry = type("R", (), {"rules": rules})()
    judged = {c.code for c in rules.contracts} if not said else set()
    text = "\n".join(_money(digest, Names(rules), registry, judged, alert_rules))
    assert said in text and unsaid not in text and " 或 " not in text


def test_the_digest_counts_what_it_tells_and_says_how_many_it_leaves_out(rules):
    """Test that the digest's headline counts the open alerts emailed (not those a wider cause holds
    back), and that a list cut at 30 says how many more there are."""
    from ptmon.alerting.digest import _headline, _incidents
    from ptmon.alerting.model import AlertView
    from ptmon.alerting.sections import Names

    pipeline = AlertKey(cause=Cause.PIPELINE)
    held = [AlertView(key=AlertKey(cause=Cause.GATEWAY, contract="cam", street="taopu", gateway=f"gw-{i}"),
                      phase=Phase.FIRING, since=AS_OF, fired=AS_OF, details={"inhibited_by": pipeline}) for i in range(40)]
    told = [AlertView(key=pipeline, phase=Phase.FIRING, since=AS_OF, fired=AS_OF, details={"inhibited_by": None})]
    digest = digest_of(rules, 7 * 86_400, told + held)
    registry = type("R", (), {"rules": rules})()
    assert _headline(digest, registry, {c.code for c in rules.contracts}).endswith("，1 项告警未恢复")
    lines = _incidents(digest.request, Names(rules))
    assert lines[0] == "未恢复的告警 (open alerts)：1 项；另有 40 项由上级原因引起、未单独发送 (held back by their cause)"
    assert len(lines) == 1 + 30 + 1 and lines[-1] == "  …… 另有 11 项 (and 11 more)"


# --- the rule file -------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "message"), [
    ("pipeline: {for: 20m}", "pipeline.for must not exceed street_silent.for and gateway.for (the wider cause must "
                             "be known first, so it can hold back the alerts it explains): 20m (street_silent.for "
                             "10m, gateway.for 5m)"),
    ("grouping: {group_wait: -1}", "grouping.group_wait must be a non-negative duration"),
    ("grouping: {repeat_interval: 0}", "grouping.repeat_interval must be a positive duration"),
    ("month_risk: {min_observed: 120%}", "month_risk.min_observed must be a share in [0, 1]"),
    ("month_risk: {every: 90m}", "month_risk.every must be whole hours"),
    ('digest: {at: "25:00"}', 'digest.at must be a Shanghai time of day "HH:MM"'),
    ("rules: [{contract: cam, kpi: online, repeat: 1h}]", "rules[0].repeat is set once for all alerts now"),
    ("grafana_url: grafana.example", "grafana_url must be an http(s) URL"),
    ("street_silent: {min_messages: 0}", "street_silent.min_messages must be a whole number"),
    ("groupng: {}", "groupng is not a known key; known: dashboard_url, defaults, devices, digest"),
    ("rules: [{contract: cam, kpi: sensing}]", "rules[0].kpi must be one of online, capture, face, plate: 'sensing'"),
    ("rules: [{contract: cam, kpi: online}, {contract: cam, kpi: online}]",
     "rules[1].kpi has a second rule for contract cam: 'online'"),
    ("rules: [{contract: cam, kpi: online, for: soon}]", "rules[0].for must be a positive duration"),
    ("rules: {cam: online}", "rules must be a list: {'cam': 'online'}"),
    ("recipients: {streets: {pudong: [ops@example.org]}}", "recipients.streets.pudong is not a street of streets.yaml"),
    ("devices: {for: -3}", "devices.for must be a non-negative duration"),
    ("digest: {at: 30600}", 'digest.at must be a Shanghai time of day "HH:MM": 30600'),
    ("pipeline:", "pipeline must be a mapping: None"),
], ids=["pipeline-after-street", "negative-wait", "zero-repeat", "share", "every", "digest-at", "rule-repeat",
        "url", "messages", "typo", "kpi-of-contract", "second-rule", "rule-for", "rules-not-list", "street",
        "device-for", "digest-seconds", "null-section"])
def test_bad_alert_rules_name_the_key(rules, tmp_path, text, message):
    """Test that a bad alerts.yaml is refused with the file, the key and the value."""
    path = tmp_path / "alerts.yaml"
    path.write_text(text + "\n")
    with pytest.raises(ConfigError, match=f"alerts.yaml: {message}".replace("[", r"\[").replace("]", r"\]")
                       .replace("(", r"\(").replace(")", r"\)")):
        load_alert_rules(path, rules)


def test_the_shipped_alert_rules_load_with_their_documented_defaults(rules):
    """Test that rules/alerts.yaml loads, and that an earlier file's defaults.repeat still means repeat_interval."""
    from ptmon.rules import DEFAULT_RULES_DIR

    shipped = load_alert_rules(DEFAULT_RULES_DIR / "alerts.yaml", rules)
    assert shipped.grouping == Grouping(group_wait=60, group_interval=300, repeat_interval=14_400, send_resolved=True)
    assert shipped.month_risk.min_observed == Decimal("0.2") and shipped.digest.at == 8 * 3600 + 1800
    assert shipped.digest.streets is False and shipped.district_always is True
    assert shipped.recipients("taopu") == ("taopu@ptcenter.example", "ops@ptcenter.example")
    assert shipped.digest_recipients() == [("ops@ptcenter.example", "")]
    assert shipped.describe()[0] == "grouping: wait 60 s, interval 300 s, repeat 14400 s, resolved emails on"
    assert "digest: at 08:30" in shipped.describe()


def test_an_earlier_versions_file_still_loads(rules, tmp_path):
    """Test that an alerts.yaml of the previous version (defaults.repeat, dashboard_url) loads."""
    path = tmp_path / "alerts.yaml"
    path.write_text("defaults: {repeat: 2h}\nmonth_risk: {enabled: true, every: 1h, min_elapsed: 1d}\n"
                    'dashboard_url: "http://g.example/d/ptmon-street?var-street={street}"\n')
    loaded = load_alert_rules(path, rules)
    assert loaded.grouping.repeat_interval == 7200 and loaded.dashboard_url.endswith("{street}")


# --- ledger rows -------------------------------------------------------------------------------

def test_earlier_versions_rows_are_typed_states():
    """Test that legacy keys split on ':' become typed keys, a gateway id keeping its own colons."""
    since = 1_793_462_400 * S
    rows = {
        "breach:cam:taopu:online": json.dumps({"state": "firing", "since": since, "fired": since + 600 * S,
                                               "last_sent": since + 600 * S}),
        "gateway:gw:taopu:7": json.dumps({"state": "firing", "since": since, "fired": since}),
        "month_risk:iot:wanli:sensing:1793462400000000": json.dumps({"state": "firing", "level": 2, "since": since}),
        "street_silent:cam:wanli:online": json.dumps({"state": "ok"}),
        "$watermark": str(since),
    }
    states, notified, keys = legacy_states(rows)
    assert sorted(s.key for s in states) == sorted([
        AlertKey(cause=Cause.BREACH, contract="cam", street="taopu", kpi="online"),
        AlertKey(cause=Cause.GATEWAY, gateway="gw:taopu:7"),
        AlertKey(cause=Cause.MONTH_RISK, contract="iot", street="wanli", kpi="sensing", month="2026-11")])
    assert len(notified) == 3 and sorted(keys) == sorted(k for k in rows if k != "$watermark")
    book = AlertBook(rows)
    assert book.adopt_legacy(RULES, lambda g: ("cam", "taopu")) == 3
    assert book.watermark == since
    gateway = next(k for k in book.alerts if k.cause is Cause.GATEWAY)
    assert (gateway.street, gateway.gateway) == ("taopu", "gw:taopu:7")
    changes = book.take(since + 1)
    assert {k for k, v in changes.items() if v is None} == {k for k in rows if k != "$watermark"}
    assert all(json.loads(v) for k, v in changes.items() if v is not None and k != "$watermark")
    assert sum(1 for g in book.groups.values() if g.sent == 1) == len(book.groups) > 0


def test_the_book_reads_back_what_it_wrote():
    """Test that alert and group rows written by the book load into equal states."""
    book = AlertBook()
    state = firing(AlertKey(cause=Cause.GATEWAY, contract="cam", street="taopu", gateway="gw|1:2"), 5)
    book.set_alert(state.key, state)
    changed, _ = plan(book.alerts, {}, RULES, 10)
    for gk, g in changed.items():
        book.set_group(gk, g)
    again = AlertBook({k: v for k, v in book.take(10).items() if v is not None})
    assert again.alerts == book.alerts and again.groups == book.groups and again.watermark == 10
    assert Notice.FIRING.value == "firing"
