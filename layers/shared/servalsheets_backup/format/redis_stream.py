"""The logical Redis dump's record stream: its format, encoder helpers and reader.

A logical backup of Redis is a plaintext record stream (``components/redis_logical`` writes
and restores it; the envelope compresses and encrypts it).

Record stream format, version 1 ("servalsheets-redis-logical")
--------------------------------------------------------------
All integers are big-endian; ``u16``/``u32``/``u64`` unsigned, ``i64`` two's complement.
A stream is one header record, zero or more key records, and one end record; nothing may
follow the end record. Every record is self-delimiting, so a reader needs only the bytes of
the record it is decoding (memory is bounded by the largest record, not the stream).

Header record (28 bytes + version string)::

    magic          8 bytes  b"SSRLOGIC"
    format_version u16      1 (readers refuse any other value)
    backup_time_ms i64      epoch milliseconds all TTLs in this stream are relative to
    start_cursor   u64      the SCAN cursor this stream's dump started from (0 = first part)
    version_len    u16      length of the next field
    source_version bytes    INFO ``redis_version`` of the source, ASCII (e.g. ``7.0.15``)

Key record (21 bytes + key + payload), one per key::

    tag            u8       0x4B (``K``)
    key_len        u32      at most 512 MiB (Redis's own key size limit)
    payload_len    u64      at most 4 GiB (``MAX_PAYLOAD_BYTES``; larger is refused on both sides)
    ttl_ms         i64      -1: no expiry; else the key's expiry minus backup_time_ms, in ms
    key            key_len bytes, the key name as stored (binary safe)
    payload        payload_len bytes, the reply to ``DUMP key`` (RDB object type byte first,
                   then the value, the RDB version (u16 little-endian) and a CRC64)

End record (17 bytes)::

    tag            u8       0x45 (``E``)
    key_count      u64      number of key records in this stream (truncation check)
    next_cursor    u64      SCAN cursor to continue from; 0 when the scan was complete

A reader raises ``IntegrityError`` (check ``"redis dump stream"``) for a bad magic, an unknown
version or tag, a length over its cap, a stream that ends before the end record, an end
record whose count differs from the key records read, or bytes after the end record. The
envelope authenticates the stream as a whole; these checks also catch a plaintext that was
cut short (a dump that failed half way and was stored anyway). ``restore_records`` writes keys
as it reads, so a cut is found after the keys before it were restored: run ``plan_restore``
(which reads and checks everything, touching no server) first when that matters.

A large keyspace is dumped by several invocations, each producing one complete stream (its
own header and end record) and stored as its own object; restore reads the objects in order.
SCAN may return a key twice (while the server resizes its hash table), so a key can appear in
two records; restoring in order makes the later record win.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from servalsheets_backup.errors import IntegrityError

FORMAT_NAME = "servalsheets-redis-logical"
FORMAT_VERSION = 1
MAGIC = b"SSRLOGIC"
TAG_KEY = 0x4B
TAG_END = 0x45
NO_EXPIRY = -1
MAX_KEY_BYTES = 512 << 20
MAX_PAYLOAD_BYTES = 4 << 30
STREAM_CHECK = "redis dump stream"
DEFAULT_SUBJECT = "redis dump"


HEADER_RECORD = struct.Struct(">8sHqQH")
KEY_RECORD = struct.Struct(">BIQq")
END_RECORD = struct.Struct(">BQQ")


Record = tuple[bytes, bytes, int]
"""One key record: (key, DUMP payload, ttl_ms relative to the stream's backup time or -1)."""


def encode_header(backup_time_ms: int, start_cursor: int, source_version: str) -> bytes:
    """The header record of a stream."""
    version = source_version.encode("ascii", "replace")[:255]
    return HEADER_RECORD.pack(MAGIC, FORMAT_VERSION, backup_time_ms, start_cursor, len(version)) + version


def encode_key_record(key: bytes, payload: bytes, ttl_ms: int) -> bytes:
    """One key record (``dump_keys`` packs the same layout inline, batch by batch)."""
    return KEY_RECORD.pack(TAG_KEY, len(key), len(payload), ttl_ms) + key + payload


def encode_end(key_count: int, next_cursor: int) -> bytes:
    """The end record of a stream."""
    return END_RECORD.pack(TAG_END, key_count, next_cursor)


@dataclass(frozen=True)
class StreamHeader:
    """The header record of a stream."""

    format_version: int
    backup_time_ms: int
    start_cursor: int
    source_version: str


@dataclass(frozen=True)
class StreamEnd:
    """The end record of a stream."""

    key_count: int
    next_cursor: int


class RecordStream:
    """Incremental reader of one record stream from an iterable of plaintext chunks.

    Iterating yields ``Record`` tuples; when iteration ends normally the end record has been
    checked, ``end`` is set and the chunk iterable has been drained (so an envelope reader
    runs its own final checks). Holds at most one record plus one chunk in memory.
    """

    def __init__(self, chunks: Iterable[bytes], subject: str = DEFAULT_SUBJECT) -> None:
        self.subject = subject
        self._chunks = iter(chunks)
        self._buf = b""
        self._pos = 0
        self.records_read = 0
        self.end: StreamEnd | None = None
        self.header = self._read_header()

    def _error(self, detail: str) -> IntegrityError:
        return IntegrityError(self.subject, STREAM_CHECK, detail)

    def _fill(self, need: int) -> bool:
        """Make ``need`` bytes available at ``_pos``; False when the chunks end first."""
        have = len(self._buf) - self._pos
        if have >= need:
            return True
        parts = [self._buf[self._pos :]] if have else []
        for chunk in self._chunks:
            parts.append(chunk)
            have += len(chunk)
            if have >= need:
                break
        self._buf = b"".join(parts)
        self._pos = 0
        return have >= need

    def _take(self, size: int, what: str) -> bytes:
        if not self._fill(size):
            raise self._error(f"stream truncated inside the {what}")
        data = self._buf[self._pos : self._pos + size]
        self._pos += size
        return data

    def _read_header(self) -> StreamHeader:
        raw = self._take(HEADER_RECORD.size, "header record")
        magic, version, backup_time_ms, start_cursor, version_len = HEADER_RECORD.unpack(raw)
        if magic != MAGIC:
            raise self._error("not a redis logical dump stream (bad magic)")
        if version != FORMAT_VERSION:
            raise self._error(f"unsupported stream format version {version}")
        source = self._take(version_len, "header record").decode("ascii", "replace")
        return StreamHeader(version, backup_time_ms, start_cursor, source)

    def __iter__(self) -> Iterator[Record]:
        size = KEY_RECORD.size
        unpack = KEY_RECORD.unpack_from
        while True:
            buf, pos = self._buf, self._pos
            # Fast path: a whole key record already in the buffer.
            if len(buf) - pos >= size and buf[pos] == TAG_KEY:
                _, klen, plen, ttl = unpack(buf, pos)
                start = pos + size
                mid = start + klen
                end = mid + plen
                if end <= len(buf):
                    self._pos = end
                    self.records_read += 1
                    yield buf[start:mid], buf[mid:end], ttl
                    continue
            if not self._fill(1):
                raise self._error(f"stream ends after {self.records_read} key records without an end record")
            tag = self._buf[self._pos]
            if tag == TAG_END:
                self._read_end()
                return
            if tag != TAG_KEY:
                raise self._error(f"unknown record tag 0x{tag:02x} after {self.records_read} records")
            self._load_key_record()

    def _load_key_record(self) -> None:
        """Buffer one whole key record that straddles chunks, checking its lengths first."""
        if not self._fill(KEY_RECORD.size):
            raise self._error("stream truncated inside a key record")
        _, klen, plen, _ = KEY_RECORD.unpack_from(self._buf, self._pos)
        if klen > MAX_KEY_BYTES or plen > MAX_PAYLOAD_BYTES:
            raise self._error(f"implausible key record lengths ({klen}, {plen})")
        if not self._fill(KEY_RECORD.size + klen + plen):
            raise self._error(f"stream truncated inside key record {self.records_read + 1}")

    def _read_end(self) -> None:
        _, count, next_cursor = END_RECORD.unpack(self._take(END_RECORD.size, "end record"))
        if count != self.records_read:
            raise self._error(
                f"end record counts {count} key records but the stream holds {self.records_read}"
            )
        trailing = len(self._buf) - self._pos + sum(len(c) for c in self._chunks)
        if trailing:
            raise self._error(f"{trailing} bytes follow the end record")
        self.end = StreamEnd(count, next_cursor)


def remaining_ttl(ttl: int, elapsed_ms: int) -> int:
    """TTL to restore with: 0 for no expiry, <0 when the key has expired since the backup."""
    if ttl < 0:
        return 0
    remaining = ttl - elapsed_ms
    return remaining if remaining > 0 else -1
