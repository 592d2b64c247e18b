"""Sinks: where decoded heartbeats and KPI samples go (archive, InfluxDB)."""
