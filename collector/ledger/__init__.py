"""The SLA ledger: the auditable SQLite record of the month, its writers and readers."""
