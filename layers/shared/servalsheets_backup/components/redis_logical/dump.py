"""Logical Redis backup: SCAN + DUMP + PTTL into a record stream (``format.redis_stream``).

Speed: one connection, hand-packed commands and two batches in flight. Each round trip carries
the SCAN for the next batch and the DUMP+PTTL of the current one, and is sent before the
previous batch's replies are parsed (with hiredis, a whole batch at a time), so Redis
serialises one batch while this process parses and writes the other; ``WriteBehind`` moves
compression and encryption to a second thread.

TTLs: each key's absolute expiry is recorded relative to ``backup_time_ms`` (PTTL plus the
wall-clock time elapsed since ``backup_time_ms`` when its batch was sent), so a backup spread
over many invocations keeps exact expiries.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import Counter
from contextlib import nullcontext, suppress
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol

import redis

from servalsheets_backup.adapters.redis_client import DUMP_PTTL, Wire, open_wire, pack_command, redis_errors
from servalsheets_backup.errors import InvalidInputError, RedisBackupError
from servalsheets_backup.format.dump_payload import RDB_TYPES
from servalsheets_backup.format.redis_keys import key_prefix
from servalsheets_backup.format.redis_stream import (
    KEY_RECORD,
    MAX_PAYLOAD_BYTES,
    TAG_KEY,
    encode_end,
    encode_header,
)


class ByteSink(Protocol):
    """Where the plaintext record stream goes (an EnvelopeWriter, a file, a BytesIO)."""

    def write(self, data: bytes) -> Any:
        """Append ``data``."""
        ...


class WriteBehind:
    """Runs a sink's ``write`` in a worker thread, in order, a few chunks behind the caller.

    Compression and encryption in an ``EnvelopeWriter`` take about as long as parsing the
    DUMP replies; doing them in a second thread (zstd, AES-GCM and SHA-256 release the GIL)
    lets the dump keep Redis busy. ``close`` waits for every write and re-raises the first
    write failure as it was raised, so its class still drives the state machine's Retry.
    """

    def __init__(self, sink: ByteSink, max_pending: int = 4) -> None:
        self._sink = sink
        self._queue: queue.Queue[bytes | None] = queue.Queue(max_pending)
        self._error: Exception | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="write-behind", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (data := self._queue.get()) is not None:
            if self._error is None:  # keep draining after a failure so write() never blocks
                try:
                    self._sink.write(data)
                except Exception as exc:  # re-raised in the caller's thread by write/close
                    self._error = exc

    def write(self, data: bytes) -> int:
        """Queue ``data``; raises an earlier write's failure."""
        if self._error is not None:
            raise self._error
        if self._closed:
            raise ValueError("write to a closed WriteBehind")
        self._queue.put(data)
        return len(data)

    def close(self) -> None:
        """Wait for every queued write; re-raise the first failure."""
        if not self._closed:
            self._closed = True
            self._queue.put(None)
            self._thread.join()
        if self._error is not None:
            raise self._error

    def __enter__(self) -> WriteBehind:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.close()
            return
        with suppress(Exception):  # the caller's exception is the one to report
            self.close()


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class DumpResult:
    """What one ``dump_keys`` call wrote; ``next_cursor`` is 0 once the scan is complete."""

    keys_written: int
    next_cursor: int
    bytes_written: int
    keys_skipped_vanished: int
    prefix_counts: dict[str, int]
    type_counts: dict[str, int]
    start_cursor: int
    source_version: str

    @property
    def complete(self) -> bool:
        """True when the whole keyspace has been scanned."""
        return self.next_cursor == 0

    def as_dict(self) -> dict[str, Any]:
        """Manifest form."""
        return {
            "keys_written": self.keys_written,
            "next_cursor": self.next_cursor,
            "bytes_written": self.bytes_written,
            "keys_skipped_vanished": self.keys_skipped_vanished,
            "prefix_counts": dict(sorted(self.prefix_counts.items())),
            "type_counts": dict(sorted(self.type_counts.items())),
            "start_cursor": self.start_cursor,
            "source_version": self.source_version,
        }


@dataclass
class _DumpTally:
    sink: ByteSink
    keys: int = 0
    vanished: int = 0
    size: int = 0
    prefixes: Counter[str] = field(default_factory=Counter)
    types: Counter[int] = field(default_factory=Counter)

    def write(self, data: bytes) -> None:
        self.sink.write(data)
        self.size += len(data)


def dump_keys(
    client: redis.Redis,
    sink: ByteSink,
    *,
    backup_time_ms: int,
    cursor: int = 0,
    deadline: float | None = None,
    scan_count: int = 1000,
    batch: int = 1000,
    match: str | bytes | None = None,
    write_behind: bool = True,
) -> DumpResult:
    """Write one complete record stream of the keys SCAN yields from ``cursor``.

    Parameters
    ----------
    backup_time_ms
        Epoch ms the whole backup is pinned to; every part of one backup should pass the same.
    cursor
        SCAN cursor to start from: 0, or the ``next_cursor`` of the previous part.
    deadline
        A ``time.monotonic()`` value; no new SCAN is issued after it. Keys already scanned are
        still dumped, and at least one SCAN runs per call, so every call makes progress.
    scan_count, batch
        SCAN COUNT hint and the number of keys DUMPed per round trip.
    match
        Optional SCAN MATCH pattern (Redis glob).
    write_behind
        Call ``sink.write`` from a worker thread (``WriteBehind``) so compression and
        encryption overlap the next batch. Either way, every write has completed, in order,
        when this returns.

    If this raises, the sink holds a partial stream: discard it and retry from ``cursor``.
    """
    if scan_count < 1 or batch < 1:
        raise InvalidInputError("scan_count and batch must be positive")
    with WriteBehind(sink) if write_behind else nullcontext(sink) as out:
        tally = _DumpTally(out)
        with redis_errors(client, "redis dump"):
            source_version = _source_version(client)
            tally.write(encode_header(backup_time_ms, cursor, source_version))
            with open_wire(client) as wire:
                next_cursor = _dump_loop(
                    wire, tally, backup_time_ms, cursor, deadline, scan_count, batch, match
                )
        tally.write(encode_end(tally.keys, next_cursor))
    return DumpResult(
        keys_written=tally.keys,
        next_cursor=next_cursor,
        bytes_written=tally.size,
        keys_skipped_vanished=tally.vanished,
        prefix_counts=dict(tally.prefixes),
        type_counts=_type_names(tally.types),
        start_cursor=cursor,
        source_version=source_version,
    )


def _source_version(client: redis.Redis) -> str:
    try:
        info = client.info("server")
    except redis.ResponseError:  # INFO may be denied to a narrowly scoped ACL user
        return "unknown"
    return str(info.get("redis_version", "unknown"))


def _type_names(codes: Counter[int]) -> dict[str, int]:
    names: Counter[str] = Counter()
    for code, count in codes.items():
        names[RDB_TYPES.get(code, "unknown")] += count
    return dict(names)


def _dump_loop(
    wire: Wire,
    tally: _DumpTally,
    backup_time_ms: int,
    cursor: int,
    deadline: float | None,
    scan_count: int,
    batch: int,
    match: str | bytes | None,
) -> int:
    """Round i carries SCAN for round i+1's keys and the DUMPs of round i's keys.

    Round i is sent before round i-1's DUMP replies are parsed, so parsing overlaps the
    server's work. Returns the cursor to continue from (0 when the scan finished).
    """
    scan_tail = [b"COUNT", b"%d" % scan_count]
    if match is not None:
        scan_tail += [b"MATCH", match.encode() if isinstance(match, str) else match]
    pending: list[bytes] = []
    inflight: tuple[list[bytes], int] | None = None
    scan_done = scanned_once = False
    while True:
        out_of_time = scanned_once and deadline is not None and time.monotonic() >= deadline
        scan_now = not scan_done and not out_of_time and len(pending) < batch
        keys, pending = pending[:batch], pending[batch:]
        if not scan_now and not keys:
            if inflight is not None:
                _collect_dumps(wire, tally, inflight[0], inflight[1] - backup_time_ms)
            return 0 if scan_done else cursor
        sent_at = _wall_ms()
        request = [pack_command(b"SCAN", b"%d" % cursor, *scan_tail)] if scan_now else []
        request += [DUMP_PTTL % (len(k), k, len(k), k) for k in keys]
        wire.send(b"".join(request))
        if inflight is not None:
            _collect_dumps(wire, tally, inflight[0], inflight[1] - backup_time_ms)
        inflight = (keys, sent_at) if keys else None
        if scan_now:
            (reply,) = wire.read_many(1)
            if isinstance(reply, Exception):
                raise reply
            cursor, scanned_once = int(reply[0]), True
            scan_done = cursor == 0
            pending += reply[1]


def _collect_dumps(wire: Wire, tally: _DumpTally, keys: list[bytes], offset_ms: int) -> None:
    """Read the DUMP/PTTL replies for ``keys`` and write their records as one chunk."""
    replies = wire.read_many(2 * len(keys))
    pack = KEY_RECORD.pack
    offset = max(0, offset_ms)
    parts: list[bytes] = []
    written: list[bytes] = []
    types = tally.types
    for key, payload, ttl in zip(keys, replies[0::2], replies[1::2], strict=True):
        if type(payload) is not bytes or type(ttl) is not int or ttl == -2:
            if isinstance(payload, Exception) or isinstance(ttl, Exception):
                raise payload if isinstance(payload, Exception) else ttl
            # Deleted or expired between SCAN and DUMP, or between DUMP and PTTL.
            tally.vanished += 1
            continue
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise RedisBackupError(f"a DUMP payload exceeds {MAX_PAYLOAD_BYTES} bytes")
        parts += (
            pack(TAG_KEY, len(key), len(payload), ttl + offset if ttl >= 0 else -1),
            key,
            payload,
        )
        types[payload[0]] += 1
        written.append(key)
    if parts:
        tally.write(b"".join(parts))
    tally.keys += len(written)
    tally.prefixes.update(map(key_prefix, written))
