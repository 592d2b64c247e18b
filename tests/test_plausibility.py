"""Counter plausibility through replay: no device can push a street above what it really did.

Hand-computed cases of rules/README.md "Plausible counters": successes never exceed the attempts
a device's accounting left unmatched (across messages and resets), resets beyond the type's
``max_resets_per_day`` and attempts beyond its ``max_attempt_rate`` allowance are rejected and
counted, the heartbeat itself still counts, and a month's sums stay exact at the documented bound.
"""

from __future__ import annotations

from pathlib import Path

from ptmon.plausibility import ALLOWANCE_CAP_MS
from ptmon.registry import Registry
from ptmon.rules import load_rules

from .conftest import T0, hb, make_registry, run, tick, up

H = 3600
DAY = 86_400
INT64_MAX = 2**63 - 1


def sensing(results, street: str = "changshou") -> tuple[int, int]:
    row = results.row("iot", street, "sensing")
    return row.numerator, row.denominator


def test_success_only_with_new_boots_adds_no_unmatched_successes(rules):
    """Test that a device sending only read_ok with a new boot each time leaves an honest street at 50 %
    (the issue measured 202.5 %), its messages counted unmatched_success and still online."""
    registry = make_registry(rules, "honest,iot,elevator,changshou", "liar,iot,elevator,changshou")
    records = [up(T0)]
    for k in range(12):  # every 5 minutes for an hour
        t = T0 + 300 * k
        records.append(hb(t, "honest", "iot", "changshou", seq=k, boot="h", reads=100 * k, read_ok=50 * k))
        records.append(hb(t, "liar", "iot", "changshou", seq=k, boot=f"b{k}", read_ok=1000))
    records.append(tick(T0 + H))
    results = run(registry, records, T0, T0 + H)
    assert sensing(results) == (550, 1100)
    assert results.engine_stats["unmatched_success"] == 11 and results.engine_stats["resets"] == 11
    online = results.row("iot", "changshou", "online")
    assert online.numerator == online.denominator  # both devices online all along


def test_toggling_successes_never_pass_attempts(rules):
    """Test that reads fixed at 1,000 with read_ok toggling 0 → 1000 → 0 (125 % in the issue) gains nothing:
    each drop is a reset counting its 1,000 reads, each jump 1,000 successes with at most 255 attempts left
    unmatched (the most remembered), so unmatched_success."""
    registry = make_registry(rules, "t1,iot,elevator,changshou")
    records = [up(T0)] + [hb(T0 + H * k, "t1", "iot", "changshou", seq=k, reads=1000, read_ok=1000 * (k % 2))
                          for k in range(9)]
    results = run(registry, records, T0, T0 + 9 * H)
    assert sensing(results) == (0, 4000)  # resets m2, m4, m6, m8; m1, m3, m5, m7 unmatched
    assert (results.engine_stats["unmatched_success"], results.engine_stats["resets"]) == (4, 4)
    # with 200 successes at a time (within what is remembered) the same device counts what it claims
    records = [up(T0)] + [hb(T0 + H * k, "t1", "iot", "changshou", seq=k, reads=1000, read_ok=200 * (k % 2))
                          for k in range(9)]
    assert sensing(run(registry, records, T0, T0 + 9 * H)) == (3 * 200, 4000)


def test_late_successes_match_earlier_attempts(rules):
    """Test that successes reported a message after their attempts still count (an honest capture pipeline),
    up to the attempts left unmatched, and that a reset forgets them."""
    registry = make_registry(rules, "c1,cam,face_cam,taopu")
    records = [up(T0), hb(T0, "c1", seq=1, boot="a", face_try=0, face_ok=0),
               hb(T0 + 60, "c1", seq=2, boot="a", face_try=10, face_ok=2),   # 8 pending
               hb(T0 + 120, "c1", seq=3, boot="a", face_try=12, face_ok=11),  # +2 tries, +9 ok: 8 + 2 unmatched
               hb(T0 + 180, "c1", seq=4, boot="a", face_try=12, face_ok=12),  # +1 ok: one unmatched left
               hb(T0 + 240, "c1", seq=1, boot="b", face_ok=5),               # a reset: nothing unmatched
               hb(T0 + 300, "c1", seq=2, boot="b", face_try=5, face_ok=5)]    # +5 / +0: counted
    row = run(registry, records, T0, T0 + 600).row("cam", "taopu", "face")
    assert (row.numerator, row.denominator) == (12, 17)


def test_resets_beyond_the_daily_limit_are_rejected(rules_dir: Path):
    """Test that the 3rd reset of a day (max_resets_per_day 2) counts nothing, every reset counts toward the
    limit, and a new Shanghai day starts again at zero."""
    types = rules_dir / "types.yaml"
    types.write_text(types.read_text(encoding="utf-8").replace(
        "name: 电梯运行,       heartbeat_period: 5m,  online_timeout: 15m}",
        "name: 电梯运行,       heartbeat_period: 5m,  online_timeout: 15m, max_resets_per_day: 2}"), encoding="utf-8")
    registry = make_registry(load_rules(rules_dir), "e1,iot,elevator,changshou")
    start = T0 + DAY - 4 * H  # 20:00 on the first day
    records = [up(start), hb(start, "e1", "iot", "changshou", boot="x", reads=0, read_ok=0)]
    for k in range(1, 9):  # a new boot every 30 minutes: 7 on the first day, 1 after midnight
        records.append(hb(start + 1800 * k, "e1", "iot", "changshou", boot=f"b{k}", reads=10, read_ok=9))
    records.append(tick(start + 5 * H))
    results = run(registry, records, start, start + 5 * H)
    assert results.engine_stats["resets"] == 8 and results.engine_stats["too_many_resets"] == 5
    assert sensing(results) == (3 * 9, 3 * 10)  # resets 1 and 2 of the first day, 1 of the next


def fast_rules(rules_dir: Path) -> Registry:
    """A device type at the largest attempt rate the rules accept (1,000 a second)."""
    types = rules_dir / "types.yaml"
    types.write_text(types.read_text(encoding="utf-8") + "\nfast: {contract: iot, name: 快, heartbeat_period: 1h, "
                     "online_timeout: 2h, max_attempt_rate: 1000}\n", encoding="utf-8")
    return load_rules(rules_dir)


def test_attempts_beyond_the_allowance_are_rejected(rules_dir: Path):
    """Test that the first claim one attempt above the day's allowance is rejected (too_many_attempts), keeps
    the allowance, and a later claim within it counts."""
    registry = make_registry(fast_rules(rules_dir), "f1,iot,fast,taopu")
    cap = ALLOWANCE_CAP_MS  # attempts, at 1 ms an attempt
    records = [up(T0), hb(T0, "f1", "iot", "taopu", seq=0, reads=0, read_ok=0),
               hb(T0 + H, "f1", "iot", "taopu", seq=1, boot="b1", reads=cap + 1, read_ok=cap + 1),  # a day's + 1
               hb(T0 + 2 * H, "f1", "iot", "taopu", seq=2, boot="b2", reads=cap, read_ok=cap)]  # a day's, capped
    results = run(registry, records, T0, T0 + 3 * H)
    assert results.engine_stats["too_many_attempts"] == 1
    assert sensing(results, "taopu") == (cap, cap)


def test_a_month_at_the_bound_sums_exactly_far_inside_int64(rules_dir: Path):
    """Test that 100 devices of the fastest type, each claiming every hour exactly what its allowance permits
    with a new boot (24 resets a day, the limit), sum over a month to exactly the documented bound
    max_attempt_rate × (elapsed + one day) per device, with nothing rejected and no overflow."""
    devices = [f"f{i}" for i in range(100)]
    registry = make_registry(fast_rules(rules_dir), *(f"{d},iot,fast,taopu" for d in devices))
    hours = 30 * 24  # November
    records = [up(T0)] + [hb(T0, d, "iot", "taopu", boot="b0", reads=0, read_ok=0) for d in devices]
    for k in range(1, hours):
        claim = ALLOWANCE_CAP_MS if k == 1 else 3_600_000  # a day saved up, then an hour's worth
        records += [hb(T0 + H * k, d, "iot", "taopu", boot=f"b{k}", reads=claim, read_ok=claim) for d in devices]
    results = run(registry, records, T0, T0 + hours * H)
    per_device = ALLOWANCE_CAP_MS + (hours - 2) * 3_600_000
    bound_per_device = 1000 * ((hours - 1) * H + DAY)  # attempts/s × (seconds elapsed + a day)
    assert bound_per_device == per_device + 3_600_000  # the bound, less the first hour (the allowance was full)
    assert sensing(results, "taopu") == (100 * per_device, 100 * per_device)
    assert not {"too_many_attempts", "too_many_resets", "unmatched_success"} & set(results.engine_stats)
    # the bound of rules/README.md: 3,000,000 devices of this type for 31 days stay exact in a double
    assert 3_000_000 * 1000 * (31 * DAY + DAY) < 2**53 < INT64_MAX


def test_boot_flips_at_the_counter_limit_cannot_wrap_the_sums(rules):
    """Test that 100 devices flipping boot with counters at 2^40 every second (Σ reads wrapped past int64
    before) add nothing: their first reset may spend a day's allowance, no more."""
    devices = [f"s{i}" for i in range(100)]
    registry = make_registry(rules, *(f"{d},iot,elevator,wanli" for d in devices))
    records = [up(T0)]
    for k in range(600):  # 10 minutes, one message a second per device (the decoder's default rate limit)
        records += [hb(T0 + k, d, "iot", "wanli", seq=k, boot=f"b{k}", reads=2**40, read_ok=2**40) for d in devices]
    results = run(registry, records, T0, T0 + H)
    assert sensing(results, "wanli") == (0, 0)  # 2^40 attempts exceed any allowance of 1 a second
    stats = results.engine_stats
    assert stats["too_many_resets"] == 100 * (599 - 24) and stats["too_many_attempts"] == 100 * 24
