"""The InfluxQL the dashboards run, in one place.

They read the collector's low-cardinality measurements (docs/measurements.md: dashboards must not scan
the per-device ``heartbeat`` series): ``sla`` (per contract × street × KPI, every sample
instant), ``alert`` (every alert evaluation), ``episode`` (a device's offline episode opening and
closing), ``collector`` (the collector's own health), ``loss`` (messages lost in transit per
contract × street, every sample instant) and ``broker`` (the broker's ``$SYS`` statistics). ``where`` is InfluxQL conditions
joined by AND, e.g. ``"contract" = 'iot' AND "kpi" = 'online'``; ``by`` the GROUP BY tags.

Every statement works on InfluxDB 1.x, on 2.x through its DBRP mapping and on 3.x (subqueries,
``non_negative_difference`` and ``percentile`` are in the InfluxQL of all three).
"""

from __future__ import annotations


def _group(by: str, *, interval: bool = False) -> str:
    parts = (["time($__interval)"] if interval else []) + ([by] if by else [])
    return f" GROUP BY {', '.join(parts)}" if parts else ""


def sla_last(field: str, where: str, by: str) -> str:
    """The latest value of a ``sla`` field in the range (``value``: the month-to-date KPI)."""
    return f'SELECT last("{field}") FROM "sla" WHERE {where} AND $timeFilter{_group(by)}'


def online_now(where: str, by: str) -> str:
    """在线率 at the last sample instant: online / expected devices."""
    return (f'SELECT last("online") / last("expected") FROM "sla" WHERE "kpi" = \'online\' AND {where} '
            f"AND $timeFilter{_group(by)}")


def offline_now(where: str, by: str) -> str:
    """Devices expected but not online at the last sample instant."""
    return (f'SELECT last("expected") - last("online") FROM "sla" WHERE "kpi" = \'online\' AND {where} '
            f"AND $timeFilter{_group(by)}")


def online_rate(where: str, by: str) -> str:
    """The time-weighted 在线率 of each interval: Σ online / Σ expected over its sample instants."""
    return (f'SELECT sum("online") / sum("expected") FROM "sla" WHERE "kpi" = \'online\' AND {where} '
            f"AND $timeFilter{_group(by, interval=True)} fill(none)")


def success_rate(where: str, by: str, *, interval: str = "$__interval") -> str:
    """The success rate of each interval: increase of ``ok`` / increase of ``tries``.

    ``ok`` and ``tries`` are month-to-date sums, so an interval's attempts are the increase of
    their last values; the drop at a month start is skipped (non_negative_difference).
    """
    group = f"time({interval}), {by}" if by else f"time({interval})"
    return (f'SELECT non_negative_difference(last("ok")) / non_negative_difference(last("tries")) '
            f'FROM "sla" WHERE {where} AND $timeFilter GROUP BY {group} fill(none)')


def success_in_range(where: str, by: str) -> str:
    """The success rate over the whole selected range (Σ increases, so exact across a month start)."""
    return (f'SELECT sum("ok") / sum("tries") FROM (SELECT non_negative_difference("ok") AS "ok", '
            f'non_negative_difference("tries") AS "tries" FROM "sla" WHERE {where} AND $timeFilter '
            f"GROUP BY {by}){_group(by)}")


ALERT_SERIES = '"contract", "street", "kpi", "kind"'
_LATEST_ALERTS = (f'SELECT last("firing") AS "firing", last("value") AS "value", last("threshold") AS "threshold" '
                  f'FROM "alert" WHERE $timeFilter GROUP BY {ALERT_SERIES}')


def firing_alerts() -> str:
    """Alerts whose latest evaluation in the range is firing, one row each."""
    return f'SELECT "value", "threshold" FROM ({_LATEST_ALERTS}) WHERE "firing" = 1 GROUP BY {ALERT_SERIES}'


def firing_count() -> str:
    return f'SELECT sum("firing") FROM ({_LATEST_ALERTS})'


# Episodes: a device's latest episode point says whether it is offline now (open = 1). No time
# filter: a device offline for weeks opened its episode long before any dashboard range.
_EPISODE_SERIES = '"contract", "street", "type", "device"'


def offline_devices(where: str) -> str:
    """Devices offline now, one row each: community and since when (ms, for Grafana's time units)."""
    latest = (f'SELECT last("open") AS "open", last("community") AS "community", last("start") * 1000 AS "since" '
              f'FROM "episode" WHERE {where} GROUP BY {_EPISODE_SERIES}')
    return (f'SELECT "community", "since", "since" AS "offline_for" FROM ({latest}) WHERE "open" = 1 '
            f"GROUP BY {_EPISODE_SERIES}")


def offline_by(where: str, by: str) -> str:
    """How many devices are offline now, by ``by`` (a tag of ``episode``, e.g. ``"type"``)."""
    latest = f'SELECT last("open") AS "open" FROM "episode" WHERE {where} GROUP BY {_EPISODE_SERIES}'
    return f'SELECT sum("open") AS "offline" FROM ({latest}){_group(by)}'


def restore_times(where: str, by: str) -> str:
    """Episodes restored in the range (ended by a heartbeat, not by retirement or an exemption):
    count and mean / 90th percentile / longest duration (s)."""
    return (f'SELECT count("seconds") AS "episodes", mean("seconds") AS "mean", '
            f'percentile("seconds", 90) AS "p90", max("seconds") AS "longest" FROM "episode" '
            f'WHERE "open" = 0 AND "restored" = 1 AND {where} AND $timeFilter{_group(by)}')


def restore_time_trend(where: str, by: str) -> str:
    return (f'SELECT mean("seconds") FROM "episode" WHERE "open" = 0 AND "restored" = 1 AND {where} AND $timeFilter'
            f"{_group(by, interval=True)} fill(none)")


def episodes_opened(where: str, by: str) -> str:
    """Offline episodes that began in each interval."""
    return (f'SELECT count("start") FROM "episode" WHERE "open" = 1 AND {where} AND $timeFilter'
            f"{_group(by, interval=True)} fill(none)")


def collector_rates(*fields: str) -> str:
    """Per-second rates of ``collector`` counters (a restart's drop to zero is skipped)."""
    columns = ", ".join(f'non_negative_derivative(last("{f}"), 1s) AS "{f}"' for f in fields)
    return f'SELECT {columns} FROM "collector" WHERE $timeFilter GROUP BY time($__interval), "instance" fill(none)'


def collector_ratio(numerator: str, denominator: str) -> str:
    """The ratio of two counters' increases per interval (mean latency, mean batch size)."""
    return (f'SELECT non_negative_difference(last("{numerator}")) / non_negative_difference(last("{denominator}")) '
            f'FROM "collector" WHERE $timeFilter GROUP BY time($__interval), "instance" fill(none)')


def collector_gauges(aggregate: str, *fields: str) -> str:
    columns = ", ".join(f'{aggregate}("{f}") AS "{f}"' for f in fields)
    return f'SELECT {columns} FROM "collector" WHERE $timeFilter GROUP BY time($__interval), "instance" fill(none)'


def collector_last(field: str) -> str:
    return f'SELECT last("{field}") FROM "collector" WHERE $timeFilter GROUP BY "instance"'


def _hourly(where: str) -> str:
    return (f'SELECT non_negative_difference(last("ok")) AS "ok", non_negative_difference(last("tries")) AS "tries" '
            f'FROM "sla" WHERE {where} AND $timeFilter GROUP BY time(1h), "street", "kpi"')


def hourly_attempts(where: str) -> str:
    """Attempts per hour by KPI, summed over the streets ``where`` selects."""
    return f'SELECT sum("tries") FROM ({_hourly(where)}) WHERE $timeFilter GROUP BY time(1h), "kpi" fill(none)'


def hourly_success(where: str) -> str:
    """The success rate of each hour by KPI over the streets ``where`` selects (Σ ok / Σ tries)."""
    return (f'SELECT sum("ok") / sum("tries") FROM ({_hourly(where)}) WHERE $timeFilter '
            f'GROUP BY time(1h), "kpi" fill(none)')


def collector_rates_matching(prefix: str) -> str:
    """Per-second rates of every ``collector`` counter named ``<prefix>_…`` (one series per field)."""
    return (f'SELECT non_negative_derivative(last(/^{prefix}_/), 1s) FROM "collector" WHERE $timeFilter '
            f'GROUP BY time($__interval), "instance" fill(none)')


# Loss in transit (collector/loss.py): month-to-date counts and the window's rate per contract × street.


def loss_rate(where: str, by: str) -> str:
    """The loss rate over the collector's [loss] window, as of each interval's last sample instant."""
    return (f'SELECT last("rate") FROM "loss" WHERE {where} AND $timeFilter'
            f"{_group(by, interval=True)} fill(none)")


def loss_now(where: str, by: str) -> str:
    return f'SELECT last("rate") FROM "loss" WHERE {where} AND $timeFilter{_group(by)}'


def lost_per_interval(where: str, by: str) -> str:
    """Messages counted lost and recovered in each interval (increases of the month-to-date counts)."""
    return (f'SELECT non_negative_difference(last("lost")) AS "lost", non_negative_difference(last("recovered")) '
            f'AS "recovered" FROM "loss" WHERE {where} AND $timeFilter{_group(by, interval=True)} fill(none)')


def broker_drops() -> str:
    """Messages the broker dropped per second, and what it holds (the ``broker`` measurement)."""
    return ('SELECT non_negative_derivative(last("dropped_seen"), 1s) AS "dropped", max("stored_messages") AS "stored" '
            'FROM "broker" WHERE $timeFilter GROUP BY time($__interval), "instance" fill(none)')


# Rollups (``sla_type``, ``sla_community``): exact interval sums, so any range's rate is Σ / Σ and
# no panel reads a per-device series.
_CAPTURE = '(sum("face_ok") + sum("plate_ok")) / (sum("face_try") + sum("plate_try"))'


def rollup_rates(measurement: str, where: str, by: str) -> str:
    """Online, sensing and capture rates over the range per ``by`` cell, with the devices whose
    anomaly is open (and those still learning) at the range's last rollup point."""
    return (f'SELECT sum("online") / sum("expected") AS "online", sum("read_ok") / sum("reads") AS "sensing", '
            f'{_CAPTURE} AS "capture", last("blind") AS "blind", last("degraded") AS "degraded", '
            f'last("stuck") AS "stuck", last("learning") AS "learning" '
            f'FROM "{measurement}" WHERE {where} AND $timeFilter{_group(by)}')


def rollup_trend(measurement: str, where: str, by: str) -> str:
    """The capture (cameras) or sensing (sensors) success rate of each interval per ``by`` cell."""
    rate = _CAPTURE if measurement == "sla_community" else 'sum("read_ok") / sum("reads")'
    return f"SELECT {rate} FROM \"{measurement}\" WHERE {where} AND $timeFilter{_group(by, interval=True)} fill(none)"


# Anomalies: a point when one opens or closes and one per open anomaly every rollup interval, so
# the latest point of a device × kind in the range says whether it is open at the range's end.
_ANOMALY_SERIES = '"contract", "street", "type", "kind", "device"'


def open_anomalies(where: str) -> str:
    """Devices with an anomaly open (blind, degraded, stuck), one row each, since when (ms) and the
    month's attempts (reads) against what its baseline expected."""
    latest = (f'SELECT last("open") AS "open", last("community") AS "community", last("since") * 1000 AS "since", '
              f'last("detected") * 1000 AS "detected", last("attempts") AS "attempts", '
              f'last("expected_attempts") AS "expected" FROM "anomaly" WHERE {where} AND $timeFilter '
              f"GROUP BY {_ANOMALY_SERIES}")
    return (f'SELECT "community", "since", "detected", "attempts", "expected" FROM ({latest}) WHERE "open" = 1 '
            f"GROUP BY {_ANOMALY_SERIES}")
