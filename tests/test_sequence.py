"""The pure seq and counter rules (collector/sequence.py, plausibility.py), table by table."""

from __future__ import annotations

import numpy as np
import pytest
from ptmon.plausibility import ALLOWANCE_CAP_MS, PLAUSIBILITY, judge
from ptmon.sequence import advance, fill, restarted, ts_key

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
    ],
    ids=["no-ts-reboot", "one-behind", "young-copy", "far-low", "late-copy-of-seq-64", "near-zero-one-behind",
         "clock-older", "clock-newer", "stuck-seq", "same-second", "ts-one-side"],
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
    ("missing", "behind", "expected_missing", "gap", "lost", "jump"),
    [
        (0, -1, 0, 0, False, False),  # the next seq: nothing lost
        (0, -4, 0b111, 3, True, False),  # 3 skipped: the three seqs before the new last are missing
        (0b1, -1, 0b10, 0, False, False),  # the window moves on by one
        (0b1, -64, 2**63 - 1, 63, True, False),  # 63 lost; the old bit falls out
        (0, -65537, 2**64 - 1, 65536, True, False),  # the largest gap still a loss
        (0b1, -65538, 0, 65537, False, True),  # a seq_jump: a new sequence, nothing missing
    ],
    ids=["next", "gap-3", "shift", "gap-63", "largest-loss", "jump"],
)
def test_advance(missing, behind, expected_missing, gap, lost, jump):
    """Test that an accepted seq ahead of the last counts its gap lost and moves the missing bitmap along."""
    now, gaps, lost_rows, jumps = advance(np.array([missing], np.uint64), np.array([True]), np.array([behind]),
                                          np.array([True]), np.array([False]))
    assert (int(now[0]), int(gaps[0]), bool(lost_rows[0]), bool(jumps[0])) == (expected_missing, gap, lost, jump)


def test_fill_recovers_a_missing_seq_once():
    """Test that a stale seq counted lost is recovered and cleared, and a second copy recovers nothing."""
    missing = np.array([0b101], np.uint64)  # seqs last-1 and last-3 missing
    after, filled = fill(missing, np.array([3]))
    assert (int(after[0]), bool(filled[0])) == (0b001, True)
    again, filled = fill(after, np.array([3]))
    assert (int(again[0]), bool(filled[0])) == (0b001, False)


def judged(deltas, *, elapsed_s=3600, cost_ms=1000, allowance=ALLOWANCE_CAP_MS, unmatched=(0, 0, 0), resets=0,
           reset=False, max_resets=24, first_today=False):
    state = np.zeros(1, PLAUSIBILITY)
    state["allowance"], state["unmatched"][0], state["resets_today"] = allowance, unmatched, resets
    verdict = judge(state, np.array([deltas], np.int64), elapsed_us=np.array([elapsed_s * 1_000_000]),
                    cost_ms=np.array([cost_ms]), first=np.array([False]), first_today=np.array([first_today]),
                    reset=np.array([reset]) if reset else None, max_resets=np.array([max_resets]) if reset else None)
    kind = next((k for k, mask in verdict.by_kind() if mask[0]), None) if verdict is not None else None
    return kind, int(state["allowance"][0]), state["unmatched"][0].tolist(), int(state["resets_today"][0])


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        (dict(deltas=[10, 9, 0, 0, 0, 0]), (None, ALLOWANCE_CAP_MS - 10_000, [1, 0, 0], 0)),
        (dict(deltas=[0, 5, 0, 0, 0, 0], unmatched=(5, 0, 0)), (None, ALLOWANCE_CAP_MS, [0, 0, 0], 0)),
        (dict(deltas=[0, 6, 0, 0, 0, 0], unmatched=(5, 0, 0)), ("unmatched_success", ALLOWANCE_CAP_MS, [5, 0, 0], 0)),
        (dict(deltas=[0, 0, 300, 0, 0, 0], unmatched=(0, 250, 0)), (None, ALLOWANCE_CAP_MS - 300_000, [0, 255, 0], 0)),
        (dict(deltas=[0, 5, 0, 0, 0, 0], unmatched=(5, 0, 0), reset=True), ("unmatched_success", ALLOWANCE_CAP_MS, [0, 0, 0], 1)),
        (dict(deltas=[3, 3, 0, 0, 0, 0], reset=True, resets=24), ("too_many_resets", ALLOWANCE_CAP_MS, [0, 0, 0], 25)),
        (dict(deltas=[3, 3, 0, 0, 0, 0], reset=True, resets=24, first_today=True), (None, ALLOWANCE_CAP_MS - 3000, [0, 0, 0], 1)),
        (dict(deltas=[3601, 0, 0, 0, 0, 0], allowance=0), ("too_many_attempts", 3_600_000, [0, 0, 0], 0)),
        (dict(deltas=[3600, 0, 0, 0, 0, 0], allowance=0), (None, 0, [255, 0, 0], 0)),
        (dict(deltas=[2, 0, 2, 0, 2, 0], cost_ms=200, allowance=1000, elapsed_s=0), ("too_many_attempts", 1000, [0, 0, 0], 0)),
    ],
    ids=["honest", "late-successes", "beyond-unmatched", "saturates-at-255", "reset-forgets", "reset-limit",
         "new-day", "over-allowance", "at-allowance", "attempts-of-all-pairs"],
)
def test_judge(case, expected):
    """Test each plausibility rule, its precedence and the state it leaves (allowance, unmatched, resets)."""
    assert judged(**case) == expected
