"""Drivers: one per orchestrator, behind the interface in `base`."""
