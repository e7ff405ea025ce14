"""Independent before/after checks of a Redis keyspace that stay right at any size.

A snapshot of a large keyspace takes minutes, and keys keep expiring meanwhile, so a remaining
TTL means nothing without the moment it was read. ``capture_keyspace`` reads every key in
batches and keeps, for each key, its DUMP payload, its PTTL and the wall-clock interval during
which that batch was read; ``KeyState.expires_between`` turns that into the interval in which
the key's absolute expiry must lie. ``compare_keyspaces`` then judges each key of a reference
snapshot (taken before a disaster) against a later one (taken after a restore) at the moment
that key was checked:

- a key whose expiry was more than ``tolerance_ms`` before it was checked must be gone;
- a key with more than ``tolerance_ms`` still to live when it was checked must be there, with
  the same value and an absolute expiry within ``tolerance_ms`` of the reference's;
- a key whose expiry falls within ``tolerance_ms`` of its check may or may not be there, and is
  counted apart (``expiring_at_check``), never as missing; if it is there, its value and
  expiry must still be right.

The tolerance is fixed (it covers the few milliseconds between reading a key and recording it
at backup and at restore), so it does not grow with the data set. The reads use redis-py, not
the backup's own wire code, so the check does not share the code it checks.
"""

from __future__ import annotations

import gc
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import redis

from servalsheets_backup.format.dump_payload import same_value
from servalsheets_backup.format.redis_keys import KeyMatcher, key_prefix

TTL_TOLERANCE_MS = 5000
# Verdicts that fail a comparison, and every verdict counted (each a field of KeyspaceComparison).
FAILURES = ("missing", "ttl_off", "value_different", "outlived_ttl", "unexpected")
VERDICTS = ("required", "restored", "compared", *FAILURES, "expired_before_check", "expiring_at_check")
READ_BATCH = 1000


def wall_ms() -> int:
    """Wall-clock time in epoch milliseconds (the clock Redis expiries use)."""
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class KeyState:
    """One key as read: DUMP payload, PTTL (-1: no expiry) and when its batch was read."""

    payload: bytes
    pttl: int
    read_from_ms: int
    read_to_ms: int

    @property
    def persistent(self) -> bool:
        """True when the key has no expiry."""
        return self.pttl == -1

    def expires_between(self) -> tuple[int, int]:
        """Earliest and latest wall-clock ms at which the key expires (only when it has a TTL)."""
        return self.read_from_ms + self.pttl, self.read_to_ms + self.pttl


@dataclass
class Keyspace:
    """Every key of one server at one (long) moment, and keys confirmed absent, with when."""

    keys: dict[bytes, KeyState] = field(default_factory=dict)
    absent_at_ms: dict[bytes, int] = field(default_factory=dict)
    started_ms: int = 0
    finished_ms: int = 0

    def __len__(self) -> int:
        return len(self.keys)


def _read_batch(client: redis.Redis | redis.RedisCluster, keys: list[bytes], into: Keyspace) -> None:
    """DUMP and PTTL ``keys`` in one round trip; vanished keys go to ``absent_at_ms``."""
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.dump(key)
        pipe.pttl(key)
    read_from = wall_ms()
    replies = pipe.execute()
    read_to = wall_ms()
    for i, key in enumerate(keys):
        payload, pttl = replies[2 * i], int(replies[2 * i + 1])
        if payload is None or pttl == -2:
            into.keys.pop(key, None)
            into.absent_at_ms[key] = read_to
        else:
            into.keys[key] = KeyState(bytes(payload), pttl, read_from, read_to)


@contextmanager
def _no_gc_pauses() -> Iterator[None]:
    """A full collection over a million KeyStates takes about a second: keep it out of a read."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def capture_keyspace(url: str, *, batch: int = READ_BATCH) -> Keyspace:
    """Read every key (SCAN, then DUMP + PTTL in batches), each with the time it was read."""
    with redis.Redis.from_url(url) as client:
        return capture_with(client, batch=batch)


def capture_after(url: str, reference: Keyspace, *, batch: int = READ_BATCH) -> Keyspace:
    """Capture ``url``, then probe each reference key the scan did not see, to time its absence."""
    with redis.Redis.from_url(url) as client:
        return capture_with(client, reference, batch=batch)


def capture_with(
    client: redis.Redis | redis.RedisCluster, reference: Keyspace | None = None, *, batch: int = READ_BATCH
) -> Keyspace:
    """``capture_keyspace`` (with ``reference``: ``capture_after``) through an open client.

    A ``redis.RedisCluster`` client scans every primary and sends each DUMP to its slot's owner,
    so a cluster is read as one keyspace, by redis-py's routing rather than the backup's own.
    """
    with _no_gc_pauses():
        snapshot = Keyspace(started_ms=wall_ms())
        keys = list(dict.fromkeys(client.scan_iter(count=1000)))  # SCAN may repeat a key
        for start in range(0, len(keys), batch):
            _read_batch(client, keys[start : start + batch], snapshot)
        if reference is not None:
            unseen = [k for k in reference.keys if k not in snapshot.keys and k not in snapshot.absent_at_ms]
            for start in range(0, len(unseen), batch):
                _read_batch(client, unseen[start : start + batch], snapshot)
        snapshot.finished_ms = wall_ms()
        return snapshot


@dataclass
class KeyspaceComparison:
    """The verdict on every key of the reference, with counts per ServalSheets key prefix."""

    tolerance_ms: int
    required: Counter[str] = field(default_factory=Counter)
    restored: Counter[str] = field(default_factory=Counter)
    compared: Counter[str] = field(default_factory=Counter)
    missing: Counter[str] = field(default_factory=Counter)
    ttl_off: Counter[str] = field(default_factory=Counter)
    value_different: Counter[str] = field(default_factory=Counter)
    outlived_ttl: Counter[str] = field(default_factory=Counter)
    unexpected: Counter[str] = field(default_factory=Counter)
    expired_before_check: Counter[str] = field(default_factory=Counter)
    expiring_at_check: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[bytes]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when no key is missing, off, different, outlived or unexpected."""
        return not any(self.total(name) for name in FAILURES)

    def note(self, verdict: str, key: bytes) -> None:
        """Count ``key`` under ``verdict`` (keep the first few key names of each failure)."""
        counter: Counter[str] = getattr(self, verdict)
        counter[key_prefix(key)] += 1
        if verdict in FAILURES:
            examples = self.examples.setdefault(verdict, [])
            if len(examples) < 5:
                examples.append(key)

    def total(self, verdict: str) -> int:
        """Keys counted under ``verdict``, all prefixes together."""
        counter: Counter[str] = getattr(self, verdict)
        return sum(counter.values())

    def as_dict(self) -> dict[str, Any]:
        """Report form: counts per prefix (key names never leave the process)."""
        return {
            "tolerance_ms": self.tolerance_ms,
            **{name: dict(sorted(getattr(self, name).items())) for name in VERDICTS},
        }


def compare_keyspaces(
    reference: Keyspace,
    actual: Keyspace,
    *,
    matcher: KeyMatcher | None = None,
    tolerance_ms: int = TTL_TOLERANCE_MS,
) -> KeyspaceComparison:
    """Judge every reference key (those ``matcher`` selects) at the moment ``actual`` checked it."""
    result = KeyspaceComparison(tolerance_ms)
    for key, before in reference.keys.items():
        if matcher is None or matcher(key):
            _judge(result, key, before, actual, tolerance_ms)
    for key in actual.keys:
        if key not in reference.keys or (matcher is not None and not matcher(key)):
            result.note("unexpected", key)
    return result


def _judge(result: KeyspaceComparison, key: bytes, before: KeyState, actual: Keyspace, tol: int) -> None:
    after = actual.keys.get(key)
    checked_at = (after.read_from_ms, after.read_to_ms) if after else _absent_time(key, actual)
    if not before.persistent:
        earliest, latest = before.expires_between()
        if latest + tol < checked_at[0]:
            # It had to be gone by then: present means the restore stretched its TTL.
            result.note("outlived_ttl" if after else "expired_before_check", key)
            return
        if earliest - tol <= checked_at[1]:
            result.note("expiring_at_check", key)
            if after is not None:
                _judge_present(result, key, before, after, tol, required=False)
            return
    result.note("required", key)
    if after is None:
        result.note("missing", key)
    else:
        _judge_present(result, key, before, after, tol, required=True)


def _absent_time(key: bytes, actual: Keyspace) -> tuple[int, int]:
    # Probed absent at that moment; never probed means absent for the whole capture.
    at = actual.absent_at_ms.get(key, actual.finished_ms)
    return at, at


def _judge_present(
    result: KeyspaceComparison, key: bytes, before: KeyState, after: KeyState, tol: int, *, required: bool
) -> None:
    result.note("compared", key)
    if not same_value(before.payload, after.payload):
        result.note("value_different", key)
    elif not _same_expiry(before, after, tol):
        result.note("ttl_off", key)
    elif required:
        result.note("restored", key)


def _same_expiry(before: KeyState, after: KeyState, tol: int) -> bool:
    if before.persistent or after.persistent:
        return before.persistent == after.persistent
    low, high = before.expires_between()
    after_low, after_high = after.expires_between()
    return after_low <= high + tol and after_high >= low - tol


def prefixes(counter: Counter[str], limit: int = 4) -> str:
    """``"refresh: 3, rate: 1"``: the largest counts first, for a check's detail line."""
    return ", ".join(f"{prefix} {count}" for prefix, count in counter.most_common(limit))
