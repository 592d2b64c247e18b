"""A break-it tester's attacks on a street's numbers, through the decoder and the engine (a replay of
archive records): each street's KPIs come out as its honest devices give them.

1. one reset on any device's topic passed or failed a street (a day of attempts saved up);
2. one forged ``seq`` (with a ``ts`` far in the future, or without ``ts``) kept a working device offline;
3. a reboot without ``boot`` on a device whose clock restarts read as offline.
"""

from __future__ import annotations

from fractions import Fraction

from ptmon.results import Results

from .conftest import T0, hb, make_registry, run, up

PERIOD = 300  # an elevator's heartbeat period (rules/types.yaml)
DAY = 86_400
N = DAY // PERIOD


def elevator(device: str, street: str, ok_per_10: int, *, boot: str | None = "h", ts: str | None = None,
             reads_at_boot: int = 100_000, offset: float = 1.0) -> list[tuple[float, str, str]]:
    """A working lift heard every 5 minutes for a day: 10 reads a heartbeat, ``ok_per_10`` of them good,
    its counters since a boot long ago; ``ts`` "clock" sends its clock (the receive time)."""
    records = []
    for k in range(1, N):
        t = T0 + PERIOD * k + offset
        payload: dict[str, object] = {"seq": k, "reads": reads_at_boot + 10 * k, "read_ok": reads_at_boot + ok_per_10 * k}
        if boot is not None:
            payload["boot"] = boot
        if ts == "clock":
            payload["ts"] = t
        records.append(hb(t, device, "iot", street, **payload))
    return records


def replayed(rules, devices: list[str], records: list[tuple[float, str, str]]) -> Results:
    registry = make_registry(rules, *devices)
    return run(registry, [up(T0), *sorted(records, key=lambda r: r[0])], T0, T0 + DAY)


def rate(results: Results, street: str, kpi: str) -> Fraction | None:
    return results.row("iot", street, kpi).value


def test_a_reset_on_another_devices_topic_cannot_pass_a_street(rules):
    """Test that one message on t5's topic claiming a day of attempts, all good, with a new boot, is refused
    (too_many_attempts) and wanli's sensing stays the honest 70 % (a fail): before, 99.5 %, a pass."""
    devices = [f"t{i},iot,elevator,wanli" for i in range(1, 6)]
    honest = [r for i in range(1, 6) for r in elevator(f"t{i}", "wanli", 7)]
    attack = hb(T0 + DAY / 2 + 150, "t5", "iot", "wanli", seq=1, boot="evil", reads=86_400, read_ok=86_400)
    before, after = replayed(rules, devices, honest), replayed(rules, devices, [*honest, attack])
    assert rate(before, "wanli", "sensing") == rate(after, "wanli", "sensing") == Fraction(7, 10)
    assert after.engine_stats["too_many_attempts"] == 2  # the claim, and t5's own boot back (its counts since boot)
    assert after.engine_stats["resets"] == 2


def test_a_reset_on_another_devices_topic_cannot_sink_a_street(rules):
    """Test that one message on v2's topic claiming a day of attempts, all failed, leaves changzheng at its
    honest 96 % (a pass): before, 3.9 %."""
    devices = [f"v{i},iot,elevator,changzheng" for i in range(1, 4)]
    honest = [r for i in range(1, 4) for r in _at_96(f"v{i}")]
    attack = hb(T0 + DAY / 2 + 150, "v2", "iot", "changzheng", seq=1, boot="evil", reads=86_400, read_ok=0)
    before, after = replayed(rules, devices, honest), replayed(rules, devices, [*honest, attack])
    assert rate(before, "changzheng", "sensing") == rate(after, "changzheng", "sensing") == Fraction(24, 25)
    assert after.engine_stats["too_many_attempts"] >= 1


def _at_96(device: str) -> list[tuple[float, str, str]]:
    """A lift with 24 good reads of every 25, heard every 5 minutes."""
    return [hb(T0 + PERIOD * k + 1, device, "iot", "changzheng", seq=k, boot="h", reads=100_000 + 25 * k,
               read_ok=100_000 + 24 * k) for k in range(1, N)]


def test_a_device_toggling_its_successes_cannot_sink_its_own_street(rules):
    """Test that x2, sending reads fixed at 1,000 and read_ok toggling 0 → 1,000 → 0 every 5 minutes (each drop
    a reset claiming 1,000 failed reads), adds nothing to taopu: before, 50 % → 1.66 %."""
    devices = ["y1,iot,elevator,taopu", "x2,iot,elevator,taopu"]
    honest = elevator("y1", "taopu", 5)
    toggling = [hb(T0 + PERIOD * k + 2, "x2", "iot", "taopu", seq=k, reads=1000, read_ok=1000 * (k % 2))
                for k in range(1, N)]
    alone, with_x2 = replayed(rules, devices, honest), replayed(rules, devices, [*honest, *toggling])
    got = with_x2.row("iot", "taopu", "sensing")
    assert (got.numerator, got.denominator) == (alone.row("iot", "taopu", "sensing").numerator,
                                                alone.row("iot", "taopu", "sensing").denominator)
    assert rate(with_x2, "taopu", "sensing") == Fraction(1, 2)
    stats = with_x2.engine_stats
    assert stats["resets"] == N // 2 - 1 and stats["too_many_resets"] + stats["too_many_attempts"] == N // 2 - 1


def test_a_forged_future_ts_and_seq_does_not_hide_a_working_device(rules):
    """Test that at v1's seq 7 one message with its boot, seq 71 and ts 8,000,000,000 hides none of its real
    messages: its ts is ignored (future_ts), seqs 8-70 are heard as the jump's gap arriving, seq 71 meets the
    jump (seq_suspect), nothing is stale, the loss it claimed is all recovered, and wanli's online and sensing
    rates equal the honest ones."""
    devices = ["v1,iot,elevator,wanli", "t1,iot,elevator,wanli"]
    honest = elevator("v1", "wanli", 9, boot="v1", ts="clock") + elevator("t1", "wanli", 9)
    attack = hb(T0 + 7 * PERIOD + 10, "v1", "iot", "wanli", seq=71, boot="v1", ts=8_000_000_000)
    before, after = replayed(rules, devices, honest), replayed(rules, devices, [*honest, attack])
    for kpi in ("online", "sensing"):
        assert (after.row("iot", "wanli", kpi).numerator, after.row("iot", "wanli", kpi).denominator) == \
            (before.row("iot", "wanli", kpi).numerator, before.row("iot", "wanli", kpi).denominator), kpi
    stats = after.engine_stats
    assert (stats["future_ts"], stats["seq_suspect"], stats.get("stale", 0), stats.get("duplicate", 0)) == (1, 1, 0, 0)
    assert stats["lost"] == stats["recovered"] == 63
    assert stats["heartbeats"] == before.engine_stats["heartbeats"] + 1


def test_a_forged_seq_jump_without_ts_does_not_hide_a_working_device(rules):
    """Test that one message {"seq": 164} on the topic of a lift at seq 100 (no boot, no ts) hides none of its
    real messages: wanli's online rate stays the honest one (before, 90.8 % → 75.9 %)."""
    devices = ["v1,iot,elevator,wanli"] + [f"t{i},iot,elevator,wanli" for i in range(1, 10)]
    honest = elevator("v1", "wanli", 9, boot=None) + [r for i in range(1, 10) for r in elevator(f"t{i}", "wanli", 9)]
    attack = hb(T0 + 100 * PERIOD + 10, "v1", "iot", "wanli", seq=164)
    before, after = replayed(rules, devices, honest), replayed(rules, devices, [*honest, attack])
    for kpi in ("online", "sensing"):
        assert (after.row("iot", "wanli", kpi).numerator, after.row("iot", "wanli", kpi).denominator) == \
            (before.row("iot", "wanli", kpi).numerator, before.row("iot", "wanli", kpi).denominator), kpi
    stats = after.engine_stats
    assert (stats["seq_suspect"], stats.get("stale", 0)) == (1, 0)
    assert stats["lost"] - stats["recovered"] == 0


def rebooting(device: str, clock: str) -> list[tuple[float, str, str]]:
    """A lift that reboots after seq 10 without a boot id: seq starts again at 1 and its counters at 0. Its
    ``ts`` is the real time before the reboot, then ("y2k") 2000-01-01 plus uptime, or ("uptime") seconds
    since boot all along; ("boot") the same device sending a boot id and its real time, for comparison."""
    records = []
    for k in range(1, N):
        t = T0 + PERIOD * k + 3
        rebooted = k > 10
        seq = k - 10 if rebooted else k
        uptime = PERIOD * seq
        payload: dict[str, object] = {"seq": seq, "reads": 10 * seq, "read_ok": 9 * seq}
        if clock == "y2k":
            payload["ts"] = 946_684_800 + uptime if rebooted else t
        elif clock == "uptime":
            payload["ts"] = uptime
        else:
            payload.update(ts=t, boot="b2" if rebooted else "b1")
        records.append(hb(t, device, "iot", "wanli", **payload))
    return records


def test_a_reboot_that_resets_the_clock_is_a_restart_not_offline(rules):
    """Test that lifts rebooting without a boot id, whose clock restarts at 2000-01-01 (t2) or at 0 (t3), are
    online and counted exactly as the same lift sending a boot id: nothing stale, one reset each; and that
    copies of a message are still stale or duplicate."""
    devices = ["t2,iot,elevator,wanli", "t3,iot,elevator,wanli"]
    with_boot = replayed(rules, devices, rebooting("t2", "boot") + rebooting("t3", "boot"))
    copy = hb(T0 + 12 * PERIOD + 30, "t2", "iot", "wanli", seq=1, reads=10, read_ok=9, ts=946_684_800 + PERIOD)
    late = hb(T0 + 25 * PERIOD + 30, "t3", "iot", "wanli", seq=15, reads=150, read_ok=135, ts=15 * PERIOD)
    clocks = replayed(rules, devices, rebooting("t2", "y2k") + rebooting("t3", "uptime") + [copy, late])
    for kpi in ("online", "sensing"):
        got, want = clocks.row("iot", "wanli", kpi), with_boot.row("iot", "wanli", kpi)
        assert (got.numerator, got.denominator) == (want.numerator, want.denominator), kpi
    assert rate(clocks, "wanli", "online") > Fraction(99, 100)  # offline only before the first heartbeat
    stats = clocks.engine_stats
    assert (stats["resets"], stats["stale"], stats["duplicate"]) == (2, 1, 1)


def test_an_old_message_of_the_same_boot_is_stale_not_a_reset(rules):
    """Test that a backlog of a lift's earlier messages delivered after newer ones (a late archive part: the same
    boot, more than 64 behind, counters below the last) is stale and adds nothing to wanli: taken for resets,
    each would have counted the lift's running totals again."""
    devices = ["w1,iot,elevator,wanli"]
    honest = elevator("w1", "wanli", 7)
    backlog = [hb(T0 + DAY / 2 + 10 * k, "w1", "iot", "wanli", seq=k, boot="h", reads=100_000 + 10 * k,
                  read_ok=100_000 + 7 * k) for k in range(1, 6)]
    before, after = replayed(rules, devices, honest), replayed(rules, devices, [*honest, *backlog])
    assert rate(before, "wanli", "sensing") == rate(after, "wanli", "sensing") == Fraction(7, 10)
    assert after.row("iot", "wanli", "sensing").denominator == before.row("iot", "wanli", "sensing").denominator
    assert after.engine_stats["stale"] - before.engine_stats["stale"] == 5
    assert after.engine_stats["resets"] == before.engine_stats["resets"]


def test_a_restart_that_keeps_its_boot_id_is_heard_by_its_clock(rules):
    """Test that a lift whose firmware keeps its ``boot`` id across a restart (seq and counters from the start
    again, its clock going on) is a reset, not an old message of that boot: taken for stale, the lift would be
    offline from the restart on and its reads lost."""
    devices = ["w1,iot,elevator,wanli"]
    half = N // 2
    before = elevator("w1", "wanli", 7, ts="clock")[:half]
    restart = T0 + PERIOD * half
    after = [hb(restart + PERIOD * k + 1.0, "w1", "iot", "wanli", seq=k, boot="h", ts=restart + PERIOD * k + 1.0,
                reads=10 * k, read_ok=7 * k) for k in range(1, N - half)]
    run = replayed(rules, devices, [*before, *after])
    assert run.engine_stats["stale"] == 0 and run.engine_stats["resets"] == 1
    assert rate(run, "wanli", "online") > Fraction(99, 100)
    assert rate(run, "wanli", "sensing") == Fraction(7, 10)
