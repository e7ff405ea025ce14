"""Benchmarks of the backup and restore pipeline against the runbook's shell tools (``make bench``)."""
