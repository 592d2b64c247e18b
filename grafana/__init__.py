"""ptmon's Grafana dashboards, generated from the rule files (``python -m ptmon.grafana.build``)."""
