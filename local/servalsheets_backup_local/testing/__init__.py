"""Helpers for tests, the drill and the benchmarks: local servers on 127.0.0.1 only."""
