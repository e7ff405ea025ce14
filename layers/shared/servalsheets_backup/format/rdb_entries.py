"""An RDB snapshot read key by key: each top-level entry as a DUMP payload, in one streaming pass.

An ElastiCache export (and, later, a self-managed server's replication stream) is an RDB file.
Seeding a new cache from it is one way to restore; this module gives the other: every entry
becomes ``(key, DUMP payload, absolute expiry)``, which ``RESTORE`` loads into any running Redis
of the same or a newer engine. ``record_stream_from_rdb`` turns the file into the logical dump's
record stream (``format/redis_stream``), so the logical restore, its plan, its key patterns and
modes, and its verification all work on RDB sets unchanged.

A DUMP payload is the RDB encoding of one value: the type byte, the value exactly as the RDB file
stores it, the file's RDB version (u16 little-endian) and a CRC-64 over those bytes. So no value
is decoded here; the parser only finds where each value ends, for every type Redis 2.x-7.2 writes
(plain, ziplist, listpack, intset and quicklist encodings, and streams with consumer groups).
Entries it cannot frame are refused by name, never skipped: modules (types 6, 7, module aux
data) and the hash-field-expiry types of Redis 7.4+ (22-25). The trailing CRC-64 of the file is
checked as it streams; bytes after it, a cut or a corrupted length are refused too.

Logical restore writes one database: keys in any database but the first are refused.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from servalsheets_backup.errors import InvalidRdbError
from servalsheets_backup.format.rdb import (
    CHECK_CHECKSUM,
    CHECK_TRUNCATED,
    CHECKSUM_BYTES,
    FIRST_CHECKSUMMED_VERSION,
    HEADER_BYTES,
    _check_magic,
    _parse_version,
    crc64,
)
from servalsheets_backup.format.redis_stream import NO_EXPIRY, encode_end, encode_header, encode_key_record

CHECK_ENTRIES = "rdb entries"
# Opcodes (rdb.h).
OP_FUNCTION_PRE_GA, OP_FUNCTION2, OP_MODULE_AUX, OP_IDLE, OP_FREQ = 0xF5, 0xF6, 0xF7, 0xF8, 0xF9
OP_AUX, OP_RESIZEDB, OP_EXPIRETIME_MS, OP_EXPIRETIME, OP_SELECTDB, OP_EOF = 0xFA, 0xFB, 0xFC, 0xFD, 0xFE, 0xFF
# Value types whose whole value is one RDB string (a ziplist, listpack, intset or zipmap blob).
BLOB_TYPES = frozenset({9, 10, 11, 12, 13, 16, 17, 20})
SEQUENCE_TYPES = {1: 1, 2: 1, 4: 2}  # list, set, hash: a length, then that many strings per item
STREAM_TYPES = frozenset({15, 19, 21})
REFUSED_TYPES = {
    6: "a module value (modules are not restored key by key)",
    7: "a module value (modules are not restored key by key)",
    22: "a hash with field expiry (Redis 7.4+)",
    23: "a hash with field expiry (Redis 7.4+)",
    24: "a hash with field expiry (Redis 7.4+)",
    25: "a hash with field expiry (Redis 7.4+)",
}
METADATA_OPCODES = frozenset(range(OP_FUNCTION_PRE_GA, OP_EOF))
BATCH_BYTES = 1 << 20


@dataclass(frozen=True)
class RdbEntry:
    """One top-level key: its name, its value as a DUMP payload, its expiry (epoch ms) or None."""

    key: bytes
    payload: bytes
    expire_ms: int | None


class RdbEntryReader:
    """Streams the entries of one RDB file fed as chunks; holds one entry plus one chunk."""

    def __init__(self, chunks: Iterable[bytes], subject: str = "rdb") -> None:
        self.subject = subject
        self._chunks = iter(chunks)
        self._buf = b""
        self._pos = 0
        self._keep: int | None = None  # where the entry being framed starts: kept across refills
        self._crc = 0
        self._tail = b""  # the last bytes seen, not yet in the CRC: the stored checksum at the end
        header = self._take(HEADER_BYTES)
        _check_magic(header, subject)
        self.version = _parse_version(header, subject)
        if self.version < FIRST_CHECKSUMMED_VERSION:
            raise self._error(CHECK_ENTRIES, f"RDB version {self.version} has no checksum; re-export it")
        self.ctime_ms = 0
        self.redis_version = ""  # the writer's, from the aux field redis-ver
        self._database: int | None = None
        self.entries = 0
        self.checksum_verified = False

    # -- buffer ----------------------------------------------------------------------------
    def _error(self, check: str, detail: str) -> InvalidRdbError:
        return InvalidRdbError(self.subject, check, detail)

    def _more(self) -> bool:
        for chunk in self._chunks:
            if not chunk:
                continue
            data = self._tail + bytes(chunk)
            split = max(0, len(data) - CHECKSUM_BYTES)
            if split:
                self._crc = crc64(data[:split], self._crc)
            self._tail = data[split:]
            cut = self._pos if self._keep is None else self._keep
            self._buf = self._buf[cut:] + bytes(chunk)
            self._pos -= cut
            if self._keep is not None:
                self._keep -= cut
            return True
        return False

    def _take(self, size: int) -> bytes:
        pos = self._pos
        end = pos + size
        if end > len(self._buf):  # the fast path (all buffered) is most calls: keep it first
            self._fill(size)
            pos, end = self._pos, self._pos + size
        self._pos = end
        return self._buf[pos:end]

    def _skip(self, size: int) -> None:
        """Move past ``size`` bytes without copying them (the entry's framing keeps them)."""
        if self._pos + size > len(self._buf):
            self._fill(size)
        self._pos += size

    def _byte(self) -> int:
        pos = self._pos
        if pos >= len(self._buf):
            self._fill(1)
            pos = self._pos
        self._pos = pos + 1
        return self._buf[pos]

    def _fill(self, size: int) -> None:
        while len(self._buf) - self._pos < size:
            if not self._more():
                raise self._error(CHECK_TRUNCATED, f"the file ends inside entry {self.entries + 1}")

    # -- RDB primitives ----------------------------------------------------------------------
    def _length(self) -> tuple[int, bool]:
        """A length, or (encoding, True) for a specially encoded string."""
        first = self._byte()
        kind = first >> 6
        if kind == 0:
            return first & 0x3F, False
        if kind == 1:
            return ((first & 0x3F) << 8) | self._byte(), False
        if first == 0x80:
            return int.from_bytes(self._take(4), "big"), False
        if first == 0x81:
            return int.from_bytes(self._take(8), "big"), False
        if kind == 3:
            return first & 0x3F, True
        raise self._error(CHECK_ENTRIES, f"invalid length byte 0x{first:02x} in entry {self.entries + 1}")

    def _plain_length(self) -> int:
        value, encoded = self._length()
        if encoded:
            raise self._error(
                CHECK_ENTRIES, f"an encoded string where a length belongs (entry {self.entries + 1})"
            )
        return value

    def _string(self) -> bytes:
        """An RDB string, decoded (integers as their decimal text, LZF decompressed)."""
        value, encoded = self._length()
        if not encoded:
            return self._take(value)
        if value in (0, 1, 2):
            size = 1 << value
            return str(int.from_bytes(self._take(size), "little", signed=True)).encode()
        if value == 3:
            compressed, plain = self._plain_length(), self._plain_length()
            return lzf_decompress(self._take(compressed), plain, self.subject)
        raise self._error(CHECK_ENTRIES, f"unknown string encoding {value} in entry {self.entries + 1}")

    def _skip_string(self) -> None:
        value, encoded = self._length()
        if not encoded:
            self._skip(value)
        elif value in (0, 1, 2):
            self._skip(1 << value)
        elif value == 3:
            compressed = self._plain_length()
            self._plain_length()
            self._skip(compressed)
        else:
            raise self._error(CHECK_ENTRIES, f"unknown string encoding {value} in entry {self.entries + 1}")

    def _skip_value(self, kind: int) -> None:
        if kind == 0 or kind in BLOB_TYPES:
            self._skip_string()
        elif kind in SEQUENCE_TYPES:
            for _ in range(self._plain_length() * SEQUENCE_TYPES[kind]):
                self._skip_string()
        elif kind in (3, 5):
            self._skip_zset(kind)
        elif kind in (14, 18):
            self._skip_quicklist(kind)
        elif kind in STREAM_TYPES:
            self._skip_stream(kind)
        elif kind in REFUSED_TYPES:
            raise self._error(CHECK_ENTRIES, f"entry {self.entries + 1} is {REFUSED_TYPES[kind]}")
        else:
            raise self._error(CHECK_ENTRIES, f"unknown value type {kind} in entry {self.entries + 1}")

    def _skip_zset(self, kind: int) -> None:
        for _ in range(self._plain_length()):
            self._skip_string()
            if kind == 5:  # binary double score
                self._skip(8)
                continue
            size = self._byte()  # score as text of this length; 253-255 are nan, +inf, -inf
            if size < 253:
                self._skip(size)

    def _skip_quicklist(self, kind: int) -> None:
        for _ in range(self._plain_length()):
            if kind == 18:  # quicklist 2: each node's container type comes first
                self._plain_length()
            self._skip_string()

    def _skip_stream(self, kind: int) -> None:
        for _ in range(self._plain_length()):  # listpack nodes: master id, then the listpack
            self._skip_string()
            self._skip_string()
        self._skip_lengths(3)  # length, last id (ms, seq)
        if kind >= 19:
            self._skip_lengths(5)  # first id, max deleted id, entries added
        for _ in range(self._plain_length()):  # consumer groups
            self._skip_string()
            self._skip_lengths(3 if kind >= 19 else 2)  # last id (+ entries read)
            for _ in range(self._plain_length()):  # pending entries: id, delivery time, count
                self._skip(16 + 8)
                self._plain_length()
            for _ in range(self._plain_length()):  # consumers
                self._skip_string()
                self._skip(16 if kind >= 21 else 8)  # seen time (+ active time)
                self._skip(16 * self._plain_length())

    def _skip_lengths(self, count: int) -> None:
        for _ in range(count):
            self._plain_length()

    # -- entries -----------------------------------------------------------------------------
    def __iter__(self) -> Iterator[RdbEntry]:
        expire_ms: int | None = None
        while True:
            opcode = self._byte()
            if opcode == OP_EOF:
                self._finish()
                return
            if opcode in METADATA_OPCODES:
                expire_ms = self._metadata(opcode, expire_ms)
            else:
                yield self._entry(opcode, expire_ms)
                expire_ms = None

    def _metadata(self, opcode: int, expire_ms: int | None) -> int | None:
        """Read one non-key opcode; returns the expiry that applies to the next key."""
        if opcode == OP_EXPIRETIME_MS:
            return int.from_bytes(self._take(8), "little", signed=True)
        if opcode == OP_EXPIRETIME:
            return int.from_bytes(self._take(4), "little", signed=True) * 1000
        if opcode == OP_SELECTDB:
            self._select(self._plain_length())
        elif opcode == OP_AUX:
            self._aux(self._string(), self._string())
        elif opcode == OP_RESIZEDB:
            self._skip_lengths(2)
        elif opcode == OP_IDLE:
            self._plain_length()
        elif opcode == OP_FREQ:
            self._skip(1)
        elif opcode == OP_FUNCTION2:
            self._skip_string()  # a function library: not part of the keyspace
        else:
            raise self._error(CHECK_ENTRIES, f"opcode 0x{opcode:02x} (module or pre-GA function data)")
        return expire_ms

    def _select(self, database: int) -> None:
        if self._database is None:
            self._database = database
        elif database != self._database:
            raise self._error(
                CHECK_ENTRIES,
                f"the file holds keys in database {database} as well as {self._database}: "
                "a key-by-key restore writes one database; seed a new cache from it instead",
            )

    def _entry(self, kind: int, expire_ms: int | None) -> RdbEntry:
        key = self._string()
        self._keep = self._pos
        self._skip_value(kind)
        body = bytes([kind]) + self._buf[self._keep : self._pos] + struct.pack("<H", self.version)
        self._keep = None
        self.entries += 1
        return RdbEntry(key, body + struct.pack("<Q", crc64(body)), expire_ms)

    def _aux(self, name: bytes, value: bytes) -> None:
        if name == b"ctime" and value.isdigit():
            self.ctime_ms = int(value) * 1000
        elif name == b"redis-ver":
            self.redis_version = value.decode("ascii", "replace")[:40]

    def _finish(self) -> None:
        while len(self._buf) - self._pos < CHECKSUM_BYTES:
            if not self._more():
                raise self._error(CHECK_TRUNCATED, "the file ends before its CRC-64")
        if len(self._buf) - self._pos > CHECKSUM_BYTES or self._more():
            raise self._error(CHECK_ENTRIES, "bytes follow the RDB checksum")
        stored = int.from_bytes(self._tail, "little")
        if stored and stored != self._crc:
            raise self._error(CHECK_CHECKSUM, "the RDB CRC-64 does not match its contents")
        self.checksum_verified = bool(stored)


def record_stream_from_rdb(chunks: Iterable[bytes], subject: str = "rdb") -> Iterator[bytes]:
    """The logical dump record stream of an RDB file, in batches of about 1 MiB.

    TTLs are relative to the file's ``ctime`` (its creation time), as a logical dump's are to its
    backup time, so the restore's expiry arithmetic is the same for both kinds of set.
    """
    reader = RdbEntryReader(chunks, subject)
    entries = iter(reader)
    first = next(entries, None)  # the aux fields, ctime among them, come before the first key
    yield encode_header(reader.ctime_ms, 0, reader.redis_version or f"unknown (RDB version {reader.version})")
    batch: list[bytes] = []
    size = 0
    for entry in itertools.chain([first] if first is not None else [], entries):
        ttl = NO_EXPIRY if entry.expire_ms is None else max(0, entry.expire_ms - reader.ctime_ms)
        record = encode_key_record(entry.key, entry.payload, ttl)
        batch.append(record)
        size += len(record)
        if size >= BATCH_BYTES:
            yield b"".join(batch)
            batch, size = [], 0
    batch.append(encode_end(reader.entries, 0))
    yield b"".join(batch)


def lzf_decompress(data: bytes, size: int, subject: str = "rdb") -> bytes:
    """LZF (liblzf, as Redis writes compressed RDB strings) back to ``size`` bytes."""
    out = bytearray()
    i = 0
    try:
        while i < len(data):
            control = data[i]
            i += 1
            if control < 32:  # a literal run of control + 1 bytes
                out += data[i : i + control + 1]
                i += control + 1
                continue
            length = control >> 5
            if length == 7:
                length += data[i]
                i += 1
            back = len(out) - ((control & 0x1F) << 8) - data[i] - 1
            i += 1
            if back < 0:
                raise IndexError
            for offset in range(length + 2):  # may overlap what it copies
                out.append(out[back + offset])
    except IndexError:
        raise InvalidRdbError(subject, CHECK_ENTRIES, "an LZF-compressed string is corrupt") from None
    if len(out) != size:
        raise InvalidRdbError(subject, CHECK_ENTRIES, "an LZF-compressed string has the wrong length")
    return bytes(out)
