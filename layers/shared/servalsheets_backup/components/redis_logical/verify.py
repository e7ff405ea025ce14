"""Checks of a restored Redis: key counts per prefix, and a sampled DUMP/TTL comparison."""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from servalsheets_backup.adapters.redis_client import DUMP_PTTL, open_wire, redis_errors
from servalsheets_backup.components.redis_logical.restore import Targets
from servalsheets_backup.errors import InvalidInputError
from servalsheets_backup.format.dump_payload import same_value
from servalsheets_backup.format.redis_keys import compile_patterns, key_prefix
from servalsheets_backup.format.redis_stream import DEFAULT_SUBJECT, Record, RecordStream, remaining_ttl


def count_keys_by_prefix(
    client: redis.Redis | Targets, *, match: str | None = None, scan_count: int = 1000
) -> dict[str, int]:
    """Count the keys of a live server (or of every primary of ``Targets``) per ServalSheets
    prefix with SCAN (never KEYS).

    SCAN can report a key twice while the server resizes its tables, so on a busy server
    the counts are approximate; on a quiet restore target they are exact.
    """
    counts: Counter[str] = Counter()
    for node in client.clients if isinstance(client, Targets) else [client]:
        with redis_errors(node, "count keys"):
            for key in node.scan_iter(match=match, count=scan_count):
                counts[key_prefix(key if isinstance(key, bytes) else str(key).encode())] += 1
    return dict(counts)


@dataclass
class SampleComparison:
    """Result of ``compare_sample``; ``ok`` when every sampled key matched."""

    eligible: int = 0
    sampled: int = 0
    matched: int = 0
    missing: int = 0
    payload_mismatch: int = 0
    ttl_mismatch: int = 0
    expired_while_checked: int = 0
    mismatch_prefixes: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when every sampled key is on the target, byte for byte, with its TTL."""
        return self.matched == self.sampled

    def as_dict(self) -> dict[str, Any]:
        """Report form."""
        return {
            "eligible": self.eligible,
            "sampled": self.sampled,
            "matched": self.matched,
            "missing": self.missing,
            "payload_mismatch": self.payload_mismatch,
            "ttl_mismatch": self.ttl_mismatch,
            "expired_while_checked": self.expired_while_checked,
            "mismatch_prefixes": dict(sorted(self.mismatch_prefixes.items())),
            "ok": self.ok,
        }


def compare_sample(
    chunks: Iterable[bytes],
    target: redis.Redis | Targets,
    *,
    now_ms: int,
    sample_size: int = 200,
    patterns: Sequence[str | bytes] | None = None,
    ttl_tolerance_ms: int = 1000,
    seed: int | None = None,
    subject: str = DEFAULT_SUBJECT,
) -> SampleComparison:
    """Check a random sample of a stream's records against a restored target.

    Samples (reservoir, bounded memory) the records a restore with ``patterns`` would have
    written and that still have more than ``ttl_tolerance_ms`` to live at ``now_ms``; for
    each, ``DUMP`` on the target must hold the backed-up value (``same_value``: byte for byte,
    but for the element order of hash-table sets and hashes; same engine version and encoding
    settings) and ``PTTL`` must be within ``ttl_tolerance_ms`` of the remaining TTL (or -1
    for both). Meant for "merge" and "replace" restores: after a
    "missing-only" restore, kept keys legitimately differ. Reports counts, never key names.
    """
    if sample_size < 1:
        raise InvalidInputError("sample_size must be positive")
    started = time.monotonic()  # reading the stream takes time too: TTLs run down meanwhile
    stream = RecordStream(chunks, subject)
    matcher = compile_patterns(patterns)
    elapsed = now_ms - stream.header.backup_time_ms
    # bandit B311: picks which keys to sample for verification; nothing secret depends on it.
    rng = random.Random(seed)  # nosec B311
    sample: list[Record] = []
    report = SampleComparison()
    for record in stream:
        if matcher is not None and not matcher(record[0]):
            continue
        remaining = remaining_ttl(record[2], elapsed)
        # Keys about to expire may legitimately vanish while they are being checked.
        if remaining < 0 or 0 < remaining <= ttl_tolerance_ms:
            continue
        report.eligible += 1
        if len(sample) < sample_size:
            sample.append(record)
        else:
            slot = rng.randrange(report.eligible)
            if slot < sample_size:
                sample[slot] = record
    replies = _dump_sample(target if isinstance(target, Targets) else Targets([target]), sample)
    drift = int((time.monotonic() - started) * 1000)
    _judge_sample(report, sample, replies, elapsed + drift, ttl_tolerance_ms)
    return report


def _dump_sample(targets: Targets, sample: list[Record]) -> list[tuple[Any, Any]]:
    """DUMP and PTTL of each sampled key, asked of the primary that owns it."""
    by_node: dict[int, list[int]] = {}
    for position, (key, _, _) in enumerate(sample):
        by_node.setdefault(targets.owner(key) if targets.owner else 0, []).append(position)
    replies: list[tuple[Any, Any]] = [(None, None)] * len(sample)
    for node, positions in by_node.items():
        client = targets.clients[node]
        with redis_errors(client, "compare sample"), open_wire(client) as wire:
            wire.send(b"".join(DUMP_PTTL % (len(k), k, len(k), k) for k in (sample[p][0] for p in positions)))
            flat = wire.read_many(2 * len(positions))
        for position, payload, ttl in zip(positions, flat[0::2], flat[1::2], strict=True):
            replies[position] = (payload, ttl)
    return replies


def _judge_sample(
    report: SampleComparison,
    sample: list[Record],
    replies: list[tuple[Any, Any]],
    elapsed_ms: int,
    tolerance_ms: int,
) -> None:
    mismatches: Counter[str] = Counter()
    for (key, payload, ttl), (actual, pttl) in zip(sample, replies, strict=True):
        expected = remaining_ttl(ttl, elapsed_ms)
        if ttl >= 0 and expected <= tolerance_ms:
            # Sampled while it still had time to live, but reading a large stream took long
            # enough for it to run out before its DUMP: neither a match nor a mismatch.
            report.expired_while_checked += 1
            continue
        report.sampled += 1
        if actual is None:
            report.missing += 1
        elif not same_value(payload, actual):
            report.payload_mismatch += 1
        elif (pttl == -1) != (ttl < 0) or (ttl >= 0 and abs(pttl - expected) > tolerance_ms):
            report.ttl_mismatch += 1
        else:
            report.matched += 1
            continue
        mismatches[key_prefix(key)] += 1
    report.mismatch_prefixes = dict(mismatches)
