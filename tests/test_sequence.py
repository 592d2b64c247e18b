"""The pure seq and counter rules (collector/sequence.py, plausibility.py), table by table."""

from __future__ import annotations

import numpy as np
import pytest

from ptmon.plausibility import ALLOWANCE_CAP_MS, PLAUSIBILITY, judge
from ptmon.sequence import advance, fill, future_ts, head_met, restarted, ts_key

NO_TS = 0


@pytest.mark.parametrize(
    ("last", "seq", "ts", "last_ts", "expected"),
    [
        (40, 1, NO_TS, NO_TS, True),  # rebooted without boot or ts: 39 behind, seq 1 < 39
        (40, 39, NO_TS, NO_TS, False),  # one behind: reordered
        (9, 4, NO_TS, NO_TS, True),  # 5 behind, seq 4 < 5: read as a restart (the rule's blind spot)
        (100, 40, NO_TS, NO_TS, True),  # 60 behind, seq 40 < 60
        (70, 64, NO_TS, NO_TS, False),  # 6 behind, seq 64: any late copy of a seq ≥ 64 is stale
        (2, 1, NO_TS, NO_TS, False),  # 1 behind: stale, even near 0
        (9, 4, 101, 500, False),  # with ts on both, an earlier clock: a copy, whatever the seq
        (40, 35, 601, 500, True),  # with ts on both, a later clock: restarted, whatever the seq
        (7, 7, 601, 500, True),  # a seq stuck at 7 with a running clock
        (7, 7, 500, 500, False),  # the same second: a duplicate
        (40, 1, 601, NO_TS, True),  # ts on one side only: the seq decides
        (10, 1, 946_684_861, 1_793_462_401, True),  # clock back to 2000-01-01 + uptime, seq back to 1
        (10, 3, 946_684_981, 1_793_462_401, True),  # the same clock, seq 3: set back by decades
        (10, 1, 61, 601, True),  # ts = seconds since boot: a little earlier, but seq back at its start
        (10, 0, 61, 601, True),  # a sequence starting at 0
        (10, 8, 61, 601, False),  # 2 behind, not at the start, clock a little earlier: a late message
        (2, 1, 61, 601, False),  # 1 behind: stale, even at the start
        (65, 30, 1_793_400_000, 1_793_462_401, False),  # 35 behind, 17 h older: a 6-hourly device's late message
        (10, 1, 1_793_459_401, 1_793_462_401, False),  # a wall clock: a late copy of seq 1, stale
    ],
    ids=["no-ts-reboot", "one-behind", "young-copy", "far-low", "late-copy-of-seq-64", "near-zero-one-behind",
         "clock-older", "clock-newer", "stuck-seq", "same-second", "ts-one-side", "clock-reset-to-2000",
         "clock-reset-seq-3", "uptime-clock", "uptime-clock-seq-0", "uptime-clock-late", "uptime-one-behind",
         "slow-device-late", "wall-clock-copy-of-seq-1"],
)
def test_restarted(last, seq, ts, last_ts, expected):
    """Test that a message 0–64 behind restarts the sequence by the device's clock, else by seq < distance."""
    behind = np.array([last - seq])
    got = restarted(np.array([seq]), behind, np.array([ts], np.uint32), np.array([last_ts], np.uint32))
    assert bool(got[0]) == expected


def test_ts_key_is_whole_seconds_plus_one_and_zero_when_absent():
    """Test that ts is kept as ⌊ts⌋ + 1, capped at 2^32 − 1, and 0 for no ts."""
    keys = ts_key(np.array([0.0, 0.99, 1793462400.5, 2.0**33, np.nan]))
    assert keys.tolist() == [1, 1, 1793462401, 2**32 - 1, 0]


@pytest.mark.parametrize(
    ("missing", "jump", "behind", "expected"),
    [
        (0, 0, -1, (0, 0, 0, False)),  # the next seq: nothing lost
        (0, 0, -4, (0b111, 4, 3, False)),  # 3 skipped: lost, missing, and remembered as a jump of 4
        (0b101, 4, -1, (0b1010, 0, 0, False)),  # the next seq continues from the jump: it is no longer one
        (0b1, 0, -1, (0b10, 0, 0, False)),  # the window moves on by one
        (0, 0, -65, (2**64 - 1, 65, 64, False)),  # a gap of 64: a jump a late message could still contradict
        (0b1, 0, -64, (2**63 - 1, 64, 63, False)),  # 63 lost; the old bit falls out
        (0b1, 0, -66, (2**64 - 1, 0, 65, False)),  # a gap of 65: lost, no jump (its oldest seq is out of reach)
        (0, 0, -65537, (2**64 - 1, 0, 65536, False)),  # the largest gap still a loss
        (0b1, 0, -65538, (0, 0, 0, True)),  # a seq_jump: a new sequence, nothing missing
        (0b111, 4, 5, (0, 0, 0, False)),  # a restarted sequence: nothing missing, no jump
    ],
    ids=["next", "gap-3", "continued", "shift", "gap-64", "gap-63", "gap-65", "largest-loss", "seq-jump", "restart"],
)
def test_advance(missing, jump, behind, expected):
    """Test that an accepted seq ahead of the last counts its gap lost, remembers a gap of at most 64 as a
    jump until a message continues from it, and moves the missing bitmap along."""
    now, jump_now, lost, big = advance(np.array([missing], np.uint64), np.array([jump], np.uint8), np.array([True]),
                                       np.array([behind]), np.array([True]), np.array([False]))
    assert (int(now[0]), int(jump_now[0]), int(lost[0]), bool(big[0])) == expected


def test_fill_recovers_a_missing_seq_once():
    """Test that a seq counted lost arriving late is recovered and cleared, and a second copy recovers nothing."""
    missing = np.array([0b101], np.uint64)  # seqs last-1 and last-3 missing
    after, filled = fill(missing, np.array([3]))
    assert (int(after[0]), bool(filled[0])) == (0b001, True)
    again, filled = fill(after, np.array([3]))
    assert (int(again[0]), bool(filled[0])) == (0b001, False)


def test_head_met_only_once_its_whole_provisional_gap_arrived():
    """Test that a message equal to a provisional jump's seq contradicts it only when the gap has all arrived."""
    got = head_met(np.array([0, 0b10, 0b1000, 0], np.uint64), np.array([64, 64, 3, 0], np.uint8))
    assert got.tolist() == [True, False, True, False]  # 0b1000 lies outside a 2-seq gap; jump 0: nothing provisional


def test_a_ts_an_hour_ahead_is_believed_and_more_is_not():
    """Test that a ts up to 3,600 whole seconds after the receive time counts and one more does not."""
    t = np.array([1_793_462_400_500_000] * 3)
    keys = ts_key(np.array([1_793_466_000.9, 1_793_466_001.0, 8e9]))
    assert future_ts(keys, t).tolist() == [False, True, True]


def judged(deltas, *, elapsed_s=3600, cost_ms=1000, allowance=ALLOWANCE_CAP_MS, unmatched=(0, 0, 0), resets=0,
           reset=False, max_resets=24, first_today=False, burst_ms=ALLOWANCE_CAP_MS):
    state = np.zeros(1, PLAUSIBILITY)
    state["allowance"], state["unmatched"][0], state["resets_today"] = allowance, unmatched, resets
    verdict = judge(state, np.array([deltas], np.int64), elapsed_us=np.array([elapsed_s * 1_000_000]),
                    cost_ms=np.array([cost_ms]), burst_ms=np.array([burst_ms]), first=np.array([False]),
                    first_today=np.array([first_today]),
                    reset=np.array([reset]) if reset else None, max_resets=np.array([max_resets]) if reset else None)
    kind = next((k for k, mask in verdict.by_kind() if mask[0]), None) if verdict is not None else None
    return kind, int(state["allowance"][0]), state["unmatched"][0].tolist(), int(state["resets_today"][0])


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        (dict(deltas=[10, 9, 0, 0, 0, 0]), (None, ALLOWANCE_CAP_MS, [1, 0, 0], 0)),
        (dict(deltas=[0, 5, 0, 0, 0, 0], unmatched=(5, 0, 0)), (None, ALLOWANCE_CAP_MS, [0, 0, 0], 0)),
        (dict(deltas=[0, 6, 0, 0, 0, 0], unmatched=(5, 0, 0)), ("unmatched_success", ALLOWANCE_CAP_MS, [5, 0, 0], 0)),
        (dict(deltas=[0, 0, 300, 0, 0, 0], unmatched=(0, 250, 0)), (None, ALLOWANCE_CAP_MS, [0, 255, 0], 0)),
        (dict(deltas=[0, 5, 0, 0, 0, 0], unmatched=(5, 0, 0), reset=True), ("unmatched_success", ALLOWANCE_CAP_MS, [0, 0, 0], 1)),
        (dict(deltas=[3, 3, 0, 0, 0, 0], reset=True, resets=24), ("too_many_resets", ALLOWANCE_CAP_MS, [0, 0, 0], 25)),
        (dict(deltas=[3, 3, 0, 0, 0, 0], reset=True, resets=24, first_today=True), (None, ALLOWANCE_CAP_MS, [0, 0, 0], 1)),
        (dict(deltas=[3601, 0, 0, 0, 0, 0], allowance=0), ("too_many_attempts", 3_600_000, [0, 0, 0], 0)),
        (dict(deltas=[3600, 0, 0, 0, 0, 0], allowance=0), (None, 0, [255, 0, 0], 0)),
        (dict(deltas=[2, 0, 2, 0, 2, 0], cost_ms=200, allowance=1000, elapsed_s=0), ("too_many_attempts", 1000, [0, 0, 0], 0)),
        (dict(deltas=[961, 0, 0, 0, 0, 0], elapsed_s=660, burst_ms=300_000), ("too_many_attempts", 300_000, [0, 0, 0], 0)),
        (dict(deltas=[960, 0, 0, 0, 0, 0], elapsed_s=660, burst_ms=300_000), (None, 0, [255, 0, 0], 0)),
        (dict(deltas=[10, 0, 0, 0, 0, 0], elapsed_s=660, burst_ms=300_000, allowance=0), (None, 300_000, [10, 0, 0], 0)),
    ],
    ids=["honest", "late-successes", "beyond-unmatched", "saturates-at-255", "reset-forgets", "reset-limit",
         "new-day", "over-allowance", "at-allowance", "attempts-of-all-pairs", "a-day-saved-is-a-burst",
         "burst-and-elapsed", "saves-at-most-a-burst"],
)
def test_judge(case, expected):
    """Test each plausibility rule, its precedence and the state it leaves (allowance, unmatched, resets)."""
    assert judged(**case) == expected
