"""One module per dashboard; each has ``build(names) -> dict`` (the dashboard JSON)."""
