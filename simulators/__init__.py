"""Simulators: the district registry generator, synthetic heartbeat traffic and the offline demo."""
