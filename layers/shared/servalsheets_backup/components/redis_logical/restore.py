"""Logical Redis restore: RESTORE each record of a stream, keeping its remaining TTL.

Restore passes ``ttl_ms - (now_ms - backup_time_ms)`` to RESTORE, with ``now_ms`` advanced
batch by batch, and skips keys for which that is <= 0: a key whose TTL ran out between backup
and restore never comes back. ``plan_restore`` is the same pass without a server.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import redis

from servalsheets_backup.adapters.redis_client import (
    RESTORE_COMMAND,
    RESTORE_REPLACE_COMMAND,
    Wire,
    open_wire,
    redis_errors,
)
from servalsheets_backup.errors import InvalidInputError, RedisBackupError
from servalsheets_backup.format.redis_keys import KeyMatcher, compile_patterns, key_prefix
from servalsheets_backup.format.redis_stream import DEFAULT_SUBJECT, Record, RecordStream, remaining_ttl

MODES = ("merge", "replace", "missing-only")
# Bound one pipelined RESTORE round by bytes too, so a few huge keys cannot balloon memory.
MAX_BATCH_BYTES = 16 << 20


@dataclass
class RestoreResult:
    """What one ``restore_records`` call did (counts cover this call only).

    ``records_processed`` is cumulative over the stream (it includes ``skip_records``): pass it
    back as ``skip_records`` to continue. ``complete`` means the end record was reached and
    its key count matched.
    """

    restored: int = 0
    skipped_expired: int = 0
    skipped_pattern: int = 0
    kept_existing: int = 0
    records_processed: int = 0
    complete: bool = False
    prefix_counts: dict[str, int] = field(default_factory=dict)
    backup_time_ms: int = 0
    source_version: str = ""

    def as_dict(self) -> dict[str, Any]:
        """Manifest / state machine form."""
        return {
            "restored": self.restored,
            "skipped_expired": self.skipped_expired,
            "skipped_pattern": self.skipped_pattern,
            "kept_existing": self.kept_existing,
            "records_processed": self.records_processed,
            "complete": self.complete,
            "prefix_counts": dict(sorted(self.prefix_counts.items())),
            "backup_time_ms": self.backup_time_ms,
            "source_version": self.source_version,
        }


def _batches(records: Iterator[Record], size: int) -> Iterator[list[Record]]:
    current: list[Record] = []
    total = 0
    for record in records:
        current.append(record)
        total += len(record[1])
        if len(current) >= size or total >= MAX_BATCH_BYTES:
            yield current
            current, total = [], 0
    if current:
        yield current


class _Restorer:
    """Packs RESTORE commands for one batch and accounts for their replies."""

    def __init__(self, mode: str, matcher: KeyMatcher | None, source: str) -> None:
        self.template = RESTORE_COMMAND if mode == "missing-only" else RESTORE_REPLACE_COMMAND
        self.matcher = matcher
        self.source = source
        self.result = RestoreResult()
        self.prefixes: Counter[str] = Counter()

    def pack(self, records: list[Record], elapsed_ms: int) -> tuple[bytes, list[bytes]]:
        """RESTORE commands for the records to write, and their keys in order."""
        template, matcher, result = self.template, self.matcher, self.result
        parts: list[bytes] = []
        keys: list[bytes] = []
        for key, payload, ttl in records:
            if matcher is not None and not matcher(key):
                result.skipped_pattern += 1
                continue
            remaining = remaining_ttl(ttl, elapsed_ms)
            if remaining < 0:
                result.skipped_expired += 1
                continue
            ttl_arg = b"%d" % remaining
            parts.append(template % (len(key), key, len(ttl_arg), ttl_arg, len(payload), payload))
            keys.append(key)
        return b"".join(parts), keys

    def collect(self, wire: Wire, keys: list[bytes]) -> None:
        """Read one reply per RESTORE; BUSYKEY means the target kept its own value."""
        restored: list[bytes] = []
        for key, reply in zip(keys, wire.read_many(len(keys)), strict=True):
            if isinstance(reply, Exception):
                self._refused(reply)
                self.result.kept_existing += 1
            else:
                restored.append(key)
        self.result.restored += len(restored)
        self.prefixes.update(map(key_prefix, restored))

    def _refused(self, error: Exception) -> None:
        message = str(error)
        if message.startswith("BUSYKEY"):
            return
        if "payload version or checksum" in message:
            raise RedisBackupError(
                "the target Redis cannot load these DUMP payloads (payload version or checksum "
                f"rejected): the target engine is older than or incompatible with the source "
                f"(redis {self.source}); restore into the same or a newer Redis version"
            )
        if not isinstance(error, redis.ResponseError):
            raise error
        raise RedisBackupError(f"RESTORE refused by the target: {message[:200]}")


@dataclass(frozen=True)
class Targets:
    """The primaries one restore writes to, and which of them owns a key.

    A single server is ``Targets([client])``; a cluster (``cluster.ClusterTargets``) lists one
    client per primary and routes each key by its hash slot.
    """

    clients: Sequence[redis.Redis]
    owner: Callable[[bytes], int] | None = None


def restore_records(
    client: redis.Redis | Targets,
    chunks: Iterable[bytes],
    *,
    now_ms: int,
    mode: str,
    patterns: Sequence[str | bytes] | None = None,
    skip_records: int = 0,
    deadline: float | None = None,
    batch: int = 1000,
    subject: str = DEFAULT_SUBJECT,
) -> RestoreResult:
    """RESTORE the keys of one record stream into ``client``, keeping their remaining TTLs.

    Parameters
    ----------
    now_ms
        Wall-clock epoch ms at the start of the call (the caller's clock, injectable for
        tests). Each batch adds the monotonic time elapsed since, so a long restore does not
        stretch TTLs. Keys whose TTL ran out by then are skipped (``skipped_expired``).
    mode
        ``"merge"``: RESTORE ... REPLACE, the backup wins over keys already on the target.
        ``"replace"``: the same command; the caller must have flushed the target first (this
        function never deletes). ``"missing-only"``: RESTORE without REPLACE; keys already on
        the target are kept and counted in ``kept_existing``.
    patterns
        Redis glob patterns (see ``compile_patterns``); other keys count as ``skipped_pattern``.
        ``OAUTH_KEY_PATTERNS`` selects the long-lived OAuth and webhook keys.
    skip_records, deadline
        Resume support: skip the first ``skip_records`` key records (done by an earlier call),
        and stop after the batch during which ``time.monotonic()`` passes ``deadline``.

    Raises ``IntegrityError`` for a malformed or truncated stream (possibly after earlier
    batches were written: the stream is checked as it is read), ``RedisBackupError`` when the
    target refuses a payload, ``TransientError`` for connection failures.
    """
    if mode not in MODES:
        raise InvalidInputError(f"mode must be one of {', '.join(MODES)}")
    if batch < 1 or skip_records < 0:
        raise InvalidInputError("batch must be positive and skip_records not negative")
    # now_ms was read by the caller just before this call: the clock runs from here, so the
    # time spent fetching and decrypting the stream's first chunk counts as elapsed too.
    started = time.monotonic()
    targets = client if isinstance(client, Targets) else Targets([client])
    stream = RecordStream(chunks, subject)
    restorer = _Restorer(mode, compile_patterns(patterns), stream.header.source_version)
    records = iter(stream)
    skipped = sum(1 for _ in islice(records, skip_records))
    processed = skipped
    node = [0]  # the primary being talked to, so an error names it
    with (
        redis_errors(targets.clients[0], "redis restore", lambda: targets.clients[node[0]]),
        ExitStack() as stack,
    ):
        wires = []
        for node[0], client in enumerate(targets.clients):
            wires.append(stack.enter_context(open_wire(client)))
        inflight: list[list[bytes]] = [[] for _ in wires]
        for group in _batches(records, batch):
            processed += len(group)
            elapsed = now_ms + int((time.monotonic() - started) * 1000) - stream.header.backup_time_ms
            sent: list[list[bytes]] = [[] for _ in wires]
            for node[0], records_of_node in _route(group, targets.owner, len(wires)):
                data, sent[node[0]] = restorer.pack(records_of_node, elapsed)
                if sent[node[0]]:
                    wires[node[0]].send(data)
            _collect_all(restorer, wires, inflight, node)
            inflight = sent
            if deadline is not None and time.monotonic() >= deadline:
                break
        _collect_all(restorer, wires, inflight, node)
    if stream.end is not None and skipped < skip_records:
        raise InvalidInputError(f"skip_records {skip_records} is beyond the stream's {skipped} records")
    result = restorer.result
    result.records_processed = processed
    result.complete = stream.end is not None
    result.prefix_counts = dict(restorer.prefixes)
    result.backup_time_ms = stream.header.backup_time_ms
    result.source_version = stream.header.source_version
    return result


def _route(
    records: list[Record], owner: Callable[[bytes], int] | None, nodes: int
) -> Iterator[tuple[int, list[Record]]]:
    """The records of one batch grouped by the target node that owns each key."""
    if owner is None or nodes == 1:
        yield 0, records
        return
    groups: list[list[Record]] = [[] for _ in range(nodes)]
    for record in records:
        groups[owner(record[0])].append(record)
    yield from ((index, group) for index, group in enumerate(groups) if group)


def _collect_all(
    restorer: _Restorer, wires: Sequence[Wire], inflight: Sequence[list[bytes]], node: list[int]
) -> None:
    for node[0], (wire, keys) in enumerate(zip(wires, inflight, strict=True)):
        if keys:
            restorer.collect(wire, keys)


def plan_restore(
    chunks: Iterable[bytes],
    *,
    now_ms: int,
    patterns: Sequence[str | bytes] | None = None,
    subject: str = DEFAULT_SUBJECT,
    later_ms: int | None = None,
    count_each_pattern: bool = False,
) -> dict[str, Any]:
    """Dry run: what ``restore_records`` would write from one stream, touching no server.

    Returns ``records``, ``would_restore`` (per prefix), ``would_restore_total``,
    ``would_restore_bytes`` (DUMP payload bytes), ``skipped_expired``, ``skipped_pattern``,
    ``backup_time_ms``, ``source_version`` and ``next_cursor``; with ``later_ms`` also
    ``still_alive_later`` (per prefix: the restorable keys still alive at ``later_ms``); with
    ``count_each_pattern`` also ``keys_per_pattern`` (pattern -> keys it matches, expired ones
    included). The whole stream is read and checked, so a truncated stream raises
    ``IntegrityError`` here as on restore.
    """
    stream = RecordStream(chunks, subject)
    each = _pattern_counter(patterns) if count_each_pattern else None
    matcher = compile_patterns(patterns)
    elapsed = now_ms - stream.header.backup_time_ms
    elapsed_later = (later_ms if later_ms is not None else now_ms) - stream.header.backup_time_ms
    prefixes: Counter[str] = Counter()
    later: Counter[str] = Counter()
    expired = excluded = payload_bytes = 0
    for key, payload, ttl in stream:
        if each is not None:
            each.add(key)
        if matcher is not None and not matcher(key):
            excluded += 1
        elif remaining_ttl(ttl, elapsed) < 0:
            expired += 1
        else:
            prefix = key_prefix(key)
            prefixes[prefix] += 1
            payload_bytes += len(payload)
            if later_ms is not None and remaining_ttl(ttl, elapsed_later) >= 0:
                later[prefix] += 1
    extra: dict[str, Any] = {"still_alive_later": dict(sorted(later.items()))} if later_ms is not None else {}
    if each is not None:
        extra["keys_per_pattern"] = each.counts
    return {
        **extra,
        "records": stream.records_read,
        "would_restore": dict(sorted(prefixes.items())),
        "would_restore_total": sum(prefixes.values()),
        "would_restore_bytes": payload_bytes,
        "skipped_expired": expired,
        "skipped_pattern": excluded,
        "backup_time_ms": stream.header.backup_time_ms,
        "source_version": stream.header.source_version,
        "next_cursor": stream.end.next_cursor if stream.end else 0,
    }


class _PatternCounter:
    """Counts, for each pattern on its own, the keys it matches."""

    def __init__(self, patterns: Sequence[str | bytes]) -> None:
        self.counts = {_pattern_text(p): 0 for p in patterns}
        self._matchers = [(_pattern_text(p), compile_patterns([p])) for p in patterns]

    def add(self, key: bytes) -> None:
        for text, matcher in self._matchers:
            if matcher is not None and matcher(key):
                self.counts[text] += 1


def _pattern_counter(patterns: Sequence[str | bytes] | None) -> _PatternCounter | None:
    return _PatternCounter(patterns) if patterns else None


def _pattern_text(pattern: str | bytes) -> str:
    return pattern if isinstance(pattern, str) else pattern.decode("utf-8", "replace")
