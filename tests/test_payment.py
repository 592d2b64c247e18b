"""The payment rule: deductions and payable amounts to the fen, and its rule-file errors."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ptmon.errors import ConfigError
from ptmon.payment import payment_for, round_fen, total
from ptmon.results import KpiRow
from ptmon.rules import Contract, Kpi, Payment, load_rules


def kpi_row(contract: str, street: str, kpi: str, value: Fraction | None, threshold: str) -> KpiRow:
    numerator, denominator = (0, 0) if value is None else (value.numerator, value.denominator)
    return KpiRow(contract=contract, street=street, kpi=kpi, numerator=numerator, denominator=denominator,
                  threshold=Decimal(threshold), expected_device_samples=denominator, observed_seconds=2_592_000)


def iot_rows(online: Fraction | None, sensing: Fraction | None, street: str = "changshou") -> list[KpiRow]:
    return [kpi_row("iot", street, "online", online, "0.90"), kpi_row("iot", street, "sensing", sensing, "0.95")]


F = Fraction


@pytest.mark.parametrize(
    ("online", "sensing", "fraction", "deduction", "payable"),
    [
        (F("0.95"), F("0.99"), F(0), "0.00", "238958.33"),
        (F("0.90"), F("0.95"), F(0), "0.00", "238958.33"),
        # 1.5 points × 1 % = 1.5 %; 238,958.33 × 0.015 = 3,584.37495 → 3,584.37
        (F("0.885"), F("0.95"), F("0.015"), "3584.37", "235373.96"),
        # 3 + 2 points = 5 %; 238,958.33 × 0.05 = 11,947.9165 → 11,947.92
        (F("0.87"), F("0.93"), F("0.05"), "11947.92", "227010.41"),
        # 40 points → capped at 30 %; 238,958.33 × 0.3 = 71,687.499 → 71,687.50
        (F("0.50"), F("0.99"), F("0.30"), "71687.50", "167270.83"),
        # everything offline: 90 + 95 points, still 30 %
        (F(0), F(0), F("0.30"), "71687.50", "167270.83"),
        # 0.9499999995 is below 0.95 by 5e-8 points: a shortfall, a deduction that rounds to 0.00
        (F("0.95"), F(1_899_999_999, 2_000_000_000), F(5, 10**10), "0.00", "238958.33"),
    ],
    ids=["pass", "at-threshold", "online-short", "both-short", "capped", "all-offline", "hair-below"],
)
def test_iot_street_payment_to_the_fen(rules, online, sensing, fraction, deduction, payable):
    """Test that deduction fraction, deduction and payable equal the hand-computed values."""
    line = payment_for(rules.contract("iot"), "changshou", iot_rows(online, sensing))
    assert line.fee == Decimal("238958.33")
    assert (line.deduction_fraction, line.deduction, line.payable) == (fraction, Decimal(deduction), Decimal(payable))
    assert line.deduction + line.payable == line.fee
    assert line.capped == (fraction == F("0.30") and online < F("0.60"))


def test_shortfalls_are_exact_points(rules):
    """Test that each short KPI is listed with its exact shortfall in percentage points."""
    line = payment_for(rules.contract("iot"), "changshou", iot_rows(F("0.8875"), F(2, 3)))
    assert [(s.kpi, s.points) for s in line.shortfalls] == [("online", F("1.25")), ("sensing", F(95, 1) - F(200, 3))]
    assert not line.undetermined


def test_cam_counts_capture_not_face_or_plate(rules):
    """Test that informational KPIs (face, plate) deduct nothing, and capture and online do."""
    rows = [kpi_row("cam", "taopu", "online", F("0.9412"), "0.95"), kpi_row("cam", "taopu", "capture", F("0.9377"), "0.95"),
            kpi_row("cam", "taopu", "face", F("0.50"), "0.95"), kpi_row("cam", "taopu", "plate", F("0.10"), "0.95")]
    line = payment_for(rules.contract("cam"), "taopu", rows)
    # 0.88 + 1.23 = 2.11 points → 2.11 %; 358,299.76 × 0.0211 = 7,560.124936 → 7,560.12
    assert (line.fee, line.deduction, line.payable) == (Decimal("358299.76"), Decimal("7560.12"), Decimal("350739.64"))
    assert [s.kpi for s in line.shortfalls] == ["online", "capture"]


def test_rows_of_other_streets_and_contracts_are_ignored(rules):
    """Test that only the street's own rows of the contract count."""
    rows = iot_rows(F("0.95"), F("0.99")) + iot_rows(F("0.10"), F("0.10"), street="taopu")
    rows.append(kpi_row("cam", "changshou", "online", F("0.10"), "0.95"))
    assert payment_for(rules.contract("iot"), "changshou", rows).deduction == Decimal("0.00")


def test_kpi_without_data_deducts_nothing_and_is_listed(rules):
    """Test that a KPI with nothing expected deducts nothing and is reported as undetermined."""
    line = payment_for(rules.contract("iot"), "changshou", iot_rows(F("0.88"), None))
    assert (line.deduction, line.undetermined) == (Decimal("4779.17"), ("sensing",))  # 2 % of 238,958.33 = 4,779.1666
    assert payment_for(rules.contract("iot"), "changshou", []).undetermined == ("online", "sensing")


def contract(fee: str, rate: str = "0.01", cap: str = "0.30") -> Contract:
    return Contract(code="t", name="t", online_method="time_weighted", sample_interval=60,
                    kpis=(Kpi(code="online", name="在线率", threshold=Decimal("0.90")),),
                    payment=Payment(rate_per_point=Decimal(rate), cap=Decimal(cap), fees=(("s", Decimal(fee)),)))


def online_row(value: Fraction) -> list[KpiRow]:
    return [kpi_row("t", "s", "online", value, "0.90")]


@pytest.mark.parametrize(
    ("fee", "value", "deduction"),
    [
        ("100.00", F("0.89995"), "0.01"),  # 0.005 points → 0.005 % of 100 = 0.005 yuan: half rounds up
        ("100.00", F("0.89995") + F(1, 10**12), "0.00"),  # a hair less than half a fen rounds down
        ("0.10", F("0.85"), "0.01"),  # 5 % of 0.10 = 0.005: half up, never to even
        ("0.30", F("0.85"), "0.02"),  # 0.015 → 0.02 (half-even would agree; float would give 0.01)
        ("1.00", F("0.885"), "0.02"),  # 1.5 % of 1.00 = 0.015 → 0.02
        ("0", F("0.10"), "0.00"),
    ],
    ids=["half-fen-up", "below-half", "half-up-not-even", "float-trap", "small-fee", "zero-fee"],
)
def test_rounding_edges(fee, value, deduction):
    """Test that the deduction is rounded half-up to the fen from the exact product, and payable is the rest."""
    line = payment_for(contract(fee), "s", online_row(value))
    assert line.deduction == Decimal(deduction)
    assert line.payable == Decimal(fee) - Decimal(deduction)
    assert str(line.deduction) == deduction  # two places, always


def test_rate_and_cap_are_configurable():
    """Test that rate_per_point and cap come from the contract's rule."""
    line = payment_for(contract("1000.00", rate="0.02", cap="0.05"), "s", online_row(F("0.88")))
    assert (line.deduction_fraction, line.deduction, line.capped) == (F("0.04"), Decimal("40.00"), False)
    line = payment_for(contract("1000.00", rate="0.02", cap="0.05"), "s", online_row(F("0.80")))
    assert (line.deduction_fraction, line.deduction, line.capped) == (F("0.05"), Decimal("50.00"), True)
    assert line.deduction_percent_text() == "5.0000"


def test_total_adds_lines_exactly(rules):
    """Test that the district total is the sum of the street lines and still adds up to the fee."""
    iot = rules.contract("iot")
    values = [F("0.885"), F("0.87"), F("0.95"), F("0.50")] + [F("0.99")] * 6
    lines = [payment_for(iot, s.code, iot_rows(v, F("0.96"), s.code)) for s, v in zip(rules.streets, values)]
    district = total(lines, contract="iot")
    assert district.fee == Decimal("2389583.30")
    # 1.5 % + 3 % + 0 + 30 %: 3,584.37 + 7,168.75 (7,168.7499) + 0 + 71,687.50
    assert district.deduction == Decimal("82440.62")
    assert district.payable == Decimal("2307142.68")
    assert district.deduction_fraction == F(Decimal("82440.62")) / F(Decimal("2389583.30"))


@given(st.fractions(min_value=0, max_value=1), st.fractions(min_value=0, max_value=1),
       st.decimals(min_value=0, max_value=10**9, places=2))
def test_deduction_plus_payable_is_fee(online, sensing, fee):
    """Test that deduction + payable = fee exactly and the deduction never exceeds the cap."""
    c = Contract(code="iot", name="iot", online_method="time_weighted", sample_interval=60,
                 kpis=(Kpi(code="online", name="o", threshold=Decimal("0.90")),
                       Kpi(code="sensing", name="s", threshold=Decimal("0.95"))),
                 payment=Payment(rate_per_point=Decimal("0.01"), cap=Decimal("0.30"), fees=(("changshou", fee),)))
    line = payment_for(c, "changshou", iot_rows(online, sensing))
    assert line.deduction + line.payable == fee
    assert Decimal(0) <= line.deduction <= round_fen(F(fee) * F("0.30"))


def test_shipped_fees_are_the_assumed_split(rules):
    """Test that the shipped fees split the 2022 payments over 10 streets × 12 months, to the fen."""
    for code, yearly in (("iot", 28_675_000), ("cam", 42_995_971)):
        payment = rules.contract(code).payment
        assert payment is not None and (payment.rate_per_point, payment.cap) == (Decimal("0.01"), Decimal("0.30"))
        assert [s for s, _ in payment.fees] == rules.street_codes()
        assert all(fee == round_fen(F(yearly, 120)) for _, fee in payment.fees)
        assert rules.contract(code).response_time == 86_400


def test_contract_without_payment_rule(rules_dir):
    """Test that a contract file without payment sections loads, and payment_for says what is missing."""
    path = rules_dir / "contracts.yaml"
    text = path.read_text(encoding="utf-8")
    path.write_text(text[: text.index("  response_time: 24h")] + text[text.index("\ncam:"):], encoding="utf-8")
    iot = load_rules(rules_dir).contract("iot")
    assert iot.payment is None and iot.response_time == 86_400
    with pytest.raises(ConfigError, match=r"iot\.payment is missing"):
        payment_for(iot, "changshou", iot_rows(F(1), F(1)))


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('cap: "0.30"', 'cap: "1.5"', "contracts.yaml: iot.payment.cap must be a decimal number [0, 1]: '1.5'"),
        ('rate_per_point: "0.01"', "rate_per_point: 1%", "iot.payment.rate_per_point must be a decimal number [0, 1]: '1%'"),
        ('rate_per_point: "0.01"', "rate: 0.01", "iot.payment.rate is not a known key"),
        ('changshou:  "238958.33"', 'changshou:  "238958.333"',
         "iot.payment.fees.changshou must be an amount in yuan >= 0 with at most 2 decimals (write it as a string): "
         "'238958.333'"),
        ('changshou:  "238958.33"', 'changshou:  "-1"', "iot.payment.fees.changshou must be an amount in yuan"),
        ('changshou:  "238958.33"', "changshou:  lots",
         "iot.payment.fees.changshou must be an amount in yuan >= 0 with at most 2 decimals (write it as a string): 'lots'"),
        ('changshou:  "238958.33"', 'changshou:  "238958.33"\n      pudong: "1.00"',
         "iot.payment.fees.pudong is not a street of streets.yaml"),
        ('      taopu:      "238958.33"\n', "", "iot.payment.fees.taopu is missing (every street needs its monthly fee"),
        ("  response_time: 24h\n  payment:\n    rate_per_point: \"0.01\"\n    cap: \"0.30\"\n"
         "    fees:   # 每街镇月租赁费 (元) — assumption: 28",
         "  response_time: soon\n  payment:\n    rate_per_point: \"0.01\"\n    cap: \"0.30\"\n"
         "    fees:   # 每街镇月租赁费 (元) — assumption: 28",
         "iot.response_time must be a positive duration (seconds, or '90s', '15m', '6h', '1d'): 'soon'"),
        ("    fees:   # 每街镇月租赁费 (元) — assumption: 28", "    fees: 238958.33\n    old_fees:   # 28",
         "iot.payment.old_fees is not a known key; known: cap, fees, rate_per_point"),
    ],
    ids=["cap-range", "rate-percent", "unknown-key", "fee-3-decimals", "fee-negative", "fee-text", "fee-unknown-street",
         "fee-missing-street", "response-time", "unknown-key-before-values"],
)
def test_bad_payment_rule_names_file_key_and_value(rules_dir, old, new, message):
    """Test that a broken payment section fails at load with the file, the key and the value."""
    path = rules_dir / "contracts.yaml"
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_rules(rules_dir)
    assert message in str(err.value)
    assert str(path) in str(err.value)


def test_fees_that_are_not_a_mapping_are_named(rules_dir):
    """Test that payment.fees given as a single number fails naming the key and the value."""
    import yaml

    path = rules_dir / "contracts.yaml"
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    doc["iot"]["payment"]["fees"] = 238958.33
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"contracts\.yaml: iot\.payment\.fees must be a mapping: 238958\.33$"):
        load_rules(rules_dir)
