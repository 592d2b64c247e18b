"""The contract rules: streets, device types, contracts and alerts (YAML), read as package data."""
