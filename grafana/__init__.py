"""ptmon's Grafana dashboards, generated from the rule files (``python -m grafana.build``)."""
