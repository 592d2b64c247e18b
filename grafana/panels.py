"""Grafana panel JSON, built from a few plain functions (stat, bar gauge, time series, table, row).

Each returns the panel as Grafana stores it (schema of Grafana 11); :func:`dashboard` lays the
panels out on the 24-column grid, numbers them and wraps them in a dashboard. Every query is raw
InfluxQL against the one provisioned InfluxDB datasource (uid :data:`DATASOURCE_UID`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

Panel = dict[str, Any]

DATASOURCE_UID = "ptmon-influxdb"  # grafana/provisioning/datasources/ptmon.yaml
DATASOURCE = {"type": "influxdb", "uid": DATASOURCE_UID}
SCHEMA_VERSION = 39  # Grafana 11.0; later versions migrate it on load
GRID_WIDTH = 24


def target(query: str, *, alias: str = "", table: bool = False, ref: str = "A") -> dict[str, Any]:
    """A raw InfluxQL query; ``alias`` names its series (``$tag_street``, ``$col``)."""
    out: dict[str, Any] = {"refId": ref, "datasource": DATASOURCE, "rawQuery": True, "query": query,
                           "resultFormat": "table" if table else "time_series"}
    if alias:
        out["alias"] = alias
    return out


def thresholds(minimum: float | None = None, *, below: str = "red", above: str = "green") -> dict[str, Any]:
    """Colour ``below`` under ``minimum``, ``above`` from it on (no minimum: ``above`` throughout)."""
    steps: list[dict[str, Any]] = [{"color": below if minimum is not None else above, "value": None}]
    if minimum is not None:
        steps.append({"color": above, "value": minimum})
    return {"mode": "absolute", "steps": steps}


def display_names(names: Mapping[str, str]) -> list[dict[str, Any]]:
    """Overrides showing series named by a code (an alias such as ``$tag_street``) by their Chinese name."""
    return [{"matcher": {"id": "byName", "options": code},
             "properties": [{"id": "displayName", "value": name}]} for code, name in names.items()]


def series_thresholds(code: str, minimum: float, *, line: bool = False) -> dict[str, Any]:
    """An override giving one series (by name) its own threshold, e.g. each contract's."""
    properties: list[dict[str, Any]] = [{"id": "thresholds", "value": thresholds(minimum)}]
    if line:
        properties.append({"id": "custom.thresholdsStyle", "value": {"mode": "line+area"}})
    return {"matcher": {"id": "byName", "options": code}, "properties": properties}


def value_names(column: str, names: Mapping[str, str]) -> dict[str, Any]:
    """An override mapping the codes in a table column to names (街镇, 设备类型 ...)."""
    options = {code: {"text": name, "index": i} for i, (code, name) in enumerate(names.items())}
    return {"matcher": {"id": "byName", "options": column},
            "properties": [{"id": "mappings", "value": [{"type": "value", "options": options}]}]}


def column_unit(column: str, unit: str) -> dict[str, Any]:
    """An override giving one column (or series) its own unit."""
    return {"matcher": {"id": "byName", "options": column}, "properties": [{"id": "unit", "value": unit}]}


def _base(kind: str, title: str, targets: Sequence[dict[str, Any]], *, w: int, h: int,
          description: str, defaults: dict[str, Any], overrides: Iterable[dict[str, Any]]) -> Panel:
    return {
        "type": kind, "title": title, "description": description, "datasource": DATASOURCE,
        "gridPos": {"h": h, "w": w, "x": 0, "y": 0},
        "targets": [dict(t, refId=chr(ord("A") + i)) for i, t in enumerate(targets)],
        "fieldConfig": {"defaults": defaults, "overrides": list(overrides)},
    }


def stat(title: str, targets: Sequence[dict[str, Any]], *, w: int = 24, h: int = 4, description: str = "",
         unit: str = "percentunit", decimals: int | None = 1, colours: dict[str, Any] | None = None,
         overrides: Iterable[dict[str, Any]] = (), links: Sequence[dict[str, Any]] = (),
         mappings: Sequence[dict[str, Any]] = ()) -> Panel:
    """One big number per series, coloured by ``colours`` (see :func:`thresholds`)."""
    defaults: dict[str, Any] = {"unit": unit, "color": {"mode": "thresholds"},
                                "thresholds": colours or thresholds(), "mappings": list(mappings),
                                "links": list(links)}
    if decimals is not None:
        defaults["decimals"] = decimals
    panel = _base("stat", title, targets, w=w, h=h, description=description, defaults=defaults,
                  overrides=overrides)
    panel["options"] = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                        "colorMode": "background", "graphMode": "none", "textMode": "value_and_name",
                        "justifyMode": "auto", "orientation": "auto", "wideLayout": True}
    return panel


def bar_gauge(title: str, targets: Sequence[dict[str, Any]], *, w: int = 8, h: int = 9,
              description: str = "", unit: str = "percentunit", minimum: float = 0.8,
              maximum: float = 1.0, colours: dict[str, Any] | None = None,
              overrides: Iterable[dict[str, Any]] = ()) -> Panel:
    """Horizontal bars, one per series, from ``minimum`` (rates near 100 % need a zoomed scale)."""
    defaults = {"unit": unit, "decimals": 1, "min": minimum, "max": maximum,
                "color": {"mode": "thresholds"}, "thresholds": colours or thresholds()}
    panel = _base("bargauge", title, targets, w=w, h=h, description=description, defaults=defaults,
                  overrides=overrides)
    panel["options"] = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                        "orientation": "horizontal", "displayMode": "basic", "showUnfilled": True,
                        "valueMode": "color", "namePlacement": "left", "sizing": "auto"}
    return panel


def timeseries(title: str, targets: Sequence[dict[str, Any]], *, w: int = 12, h: int = 8,
               description: str = "", unit: str = "percentunit", decimals: int | None = None,
               minimum: float | None = None, threshold_line: float | None = None, bars: bool = False,
               overrides: Iterable[dict[str, Any]] = ()) -> Panel:
    """Lines (or bars) over time; ``threshold_line`` draws the contract threshold across the graph."""
    custom: dict[str, Any] = {"drawStyle": "bars" if bars else "line", "lineWidth": 1,
                              "fillOpacity": 60 if bars else 0, "showPoints": "never", "spanNulls": False,
                              "thresholdsStyle": {"mode": "line+area" if threshold_line is not None else "off"}}
    if bars:
        custom["stacking"] = {"mode": "normal", "group": "A"}
    defaults: dict[str, Any] = {"unit": unit, "custom": custom, "color": {"mode": "palette-classic"},
                                "thresholds": thresholds(threshold_line)}
    if decimals is not None:
        defaults["decimals"] = decimals
    if minimum is not None:
        defaults["min"] = minimum
    panel = _base("timeseries", title, targets, w=w, h=h, description=description, defaults=defaults,
                  overrides=overrides)
    panel["options"] = {"legend": {"displayMode": "table", "placement": "right", "showLegend": True,
                                   "calcs": ["lastNotNull", "min"]},
                        "tooltip": {"mode": "multi", "sort": "desc"}}
    return panel


def table(title: str, targets: Sequence[dict[str, Any]], *, columns: Mapping[str, str], w: int = 24,
          h: int = 10, description: str = "", overrides: Iterable[dict[str, Any]] = (),
          sort_by: str | None = None, descending: bool = False, hidden: Sequence[str] = ()) -> Panel:
    """The queries' rows, merged into one table; ``columns`` orders and names (in Chinese) what is
    shown, ``hidden`` names columns left out (besides the time, which these tables never show)."""
    panel = _base("table", title, targets, w=w, h=h, description=description,
                  defaults={"custom": {"align": "auto", "filterable": True}, "mappings": []},
                  overrides=overrides)
    order = list(columns)
    panel["transformations"] = [
        {"id": "merge", "options": {}},
        {"id": "organize", "options": {"excludeByName": {"Time": True, **dict.fromkeys(hidden, True)},
                                       "renameByName": dict(columns),
                                       "indexByName": {name: i for i, name in enumerate(order)}}},
    ]
    panel["options"] = {"showHeader": True, "cellHeight": "sm", "footer": {"show": False}}
    if sort_by is not None:
        panel["options"]["sortBy"] = [{"displayName": columns.get(sort_by, sort_by), "desc": descending}]
    return panel


def row(title: str) -> Panel:
    return {"type": "row", "title": title, "collapsed": False, "panels": [],
            "gridPos": {"h": 1, "w": GRID_WIDTH, "x": 0, "y": 0}}


def dashboard(uid: str, title: str, panels: Sequence[Panel], *, description: str,
              variables: Sequence[dict[str, Any]] = (), time_from: str = "now-24h",
              tags: Sequence[str] = ("ptmon",)) -> dict[str, Any]:
    """The dashboard, its panels flowed left to right over the grid (a row starts a new line)."""
    placed = []
    x = y = line_height = 0
    for number, source in enumerate(panels, start=1):
        panel = {"id": number, **source}
        grid = dict(panel["gridPos"])
        if panel["type"] == "row" or x + grid["w"] > GRID_WIDTH:
            x, y, line_height = 0, y + line_height, 0
        grid["x"], grid["y"] = x, y
        panel["gridPos"] = grid
        x += grid["w"]
        line_height = max(line_height, grid["h"])
        placed.append(panel)
    return {
        "uid": uid, "title": title, "description": description, "tags": list(tags),
        "schemaVersion": SCHEMA_VERSION, "version": 1, "editable": False,
        "graphTooltip": 1, "timezone": "Asia/Shanghai", "weekStart": "monday",
        "time": {"from": time_from, "to": "now"}, "refresh": "1m",
        "timepicker": {"refresh_intervals": ["30s", "1m", "5m", "15m", "1h"]},
        "links": [{"type": "dashboards", "tags": ["ptmon"], "asDropdown": True, "title": "ptmon 仪表盘",
                   "includeVars": False, "keepTime": True, "targetBlank": False, "icon": "external link",
                   "tooltip": "", "url": ""}],
        "annotations": {"list": [{"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                                  "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
                                  "name": "Annotations & Alerts", "type": "dashboard"}]},
        "templating": {"list": list(variables)},
        "panels": placed,
    }


def choice_variable(name: str, label: str, options: Mapping[str, str], *, current: str | None = None,
                    multi: bool = False) -> dict[str, Any]:
    """A custom variable whose values are codes shown by name (``长寿路街道 : changshou``)."""
    values = list(options)
    selected = [current or values[0]] if not multi else ["$__all"]
    text = [options[v] for v in selected] if not multi else ["All"]
    return {
        "type": "custom", "name": name, "label": label, "hide": 0, "skipUrlSync": False,
        "query": ",".join(f"{options[code]} : {code}" for code in values),
        "multi": multi, "includeAll": multi,
        "current": {"selected": True, "text": text if multi else text[0], "value": selected if multi else selected[0]},
        "options": [{"selected": code in selected, "text": options[code], "value": code} for code in values],
    }
