"""Backup and restore workflows, the steps the state machines call."""
