"""Alerting: rules (rules/alerts.yaml), their evaluation on the engine's samples, the email
they become, and the outbox that sends it."""
