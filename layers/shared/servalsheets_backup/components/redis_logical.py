"""Logical Redis backup (SCAN + DUMP + PTTL) and restore (RESTORE), as a plaintext record stream.

This module never encrypts: ``dump_keys`` writes plaintext records to any sink with
``.write(bytes)`` (in production an ``envelope.EnvelopeWriter``, which compresses and seals),
and ``restore_records`` reads plaintext chunks (in production from ``envelope.decrypt_stream``).
Only a standalone server or a primary of a non-cluster replication group is supported (one
flat keyspace, db 0 as in ServalSheets); DUMP payloads are Redis's own serialisation, so every
type (string, hash, list, set, sorted set, stream, module types) is carried unchanged.

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

TTLs: the dump records each key's absolute expiry relative to ``backup_time_ms`` (PTTL plus
the wall-clock time elapsed since ``backup_time_ms`` when the batch was sent), so a backup
spread over many invocations keeps exact expiries. Restore passes
``ttl_ms - (now_ms - backup_time_ms)`` to RESTORE and skips keys for which that is <= 0: a key
whose TTL ran out between backup and restore never comes back.

Speed: one connection, hand-packed commands and two batches in flight. Each round trip carries
the SCAN for the next batch and the DUMP+PTTL of the current one, and is sent before the
previous batch's replies are parsed (with hiredis, a whole batch at a time), so Redis
serialises one batch while this process parses and writes the other; ``WriteBehind`` moves
compression and encryption to a second thread. Restore overlaps the same way. On the
2-core reference machine this is about 85 MB/s dumping (Redis's DUMP is the limit) and
140 MB/s restoring, against 43 MB/s and 82 MB/s for plain redis-py pipelines.

Verification: a DUMP of a restored key equals the backed-up payload byte for byte, except for
sets and hashes in hash-table encoding, whose elements DUMP lists in the order of each
server's randomly seeded hash table; ``same_value`` compares those element by element.
"""

from __future__ import annotations

import queue
import random
import re
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass, field
from itertools import islice
from types import TracebackType
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis

from servalsheets_backup.errors import IntegrityError, InvalidInputError, RedisBackupError, TransientError

try:  # the marker redis-py's hiredis parser returns while a reply is incomplete
    from redis._parsers.hiredis import NOT_ENOUGH_DATA as _NO_REPLY_YET
except ImportError:  # pragma: no cover - other redis-py layouts take the slow path
    _NO_REPLY_YET = None

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
MODES = ("merge", "replace", "missing-only")
# Bound one pipelined RESTORE round by bytes too, so a few huge keys cannot balloon memory.
MAX_BATCH_BYTES = 16 << 20

_HEADER = struct.Struct(">8sHqQH")
_KEY = struct.Struct(">BIQq")
_END = struct.Struct(">BQQ")

PREFIXES = (
    "dcr:",
    "mcp_consent:",
    "auth:",
    "code:",
    "refresh:",
    "google_tokens:",
    "servalsheets:session:",
    "servalsheets:http-session:",
    "servalsheets:task:",
    "servalsheets:mcp:",
    "servalsheets:capabilities:",
    "servalsheets:etag:",
    "rate:",
    "webhook:",
    "webhooks:",
)
OTHER_PREFIX = "other"
OAUTH_KEY_PATTERNS = (
    "dcr:*",
    "mcp_consent:*",
    "refresh:*",
    "google_tokens:*",
    "webhook:*",
    "webhooks:*",
)

_SERVAL = b"servalsheets"
_TOP_PREFIX = {p[:-1].encode(): p for p in PREFIXES if not p.startswith("servalsheets:")}
_SERVAL_PREFIX = {p.split(":")[1].encode(): p for p in PREFIXES if p.startswith("servalsheets:")}

# First byte of a DUMP payload: the RDB object type (rdb.h, Redis 2.x to 8.x).
_RDB_TYPES = {
    **dict.fromkeys((0,), "string"),
    **dict.fromkeys((1, 10, 14, 18), "list"),
    **dict.fromkeys((2, 11, 20), "set"),
    **dict.fromkeys((3, 5, 12, 17), "zset"),
    **dict.fromkeys((4, 9, 13, 16, 22, 23, 24, 25), "hash"),
    **dict.fromkeys((15, 19, 21, 26, 27), "stream"),
    **dict.fromkeys((6, 7), "module"),
}

_DUMP_PTTL = b"*2\r\n$4\r\nDUMP\r\n$%d\r\n%b\r\n*2\r\n$4\r\nPTTL\r\n$%d\r\n%b\r\n"
_RESTORE = b"*4\r\n$7\r\nRESTORE\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n"
_RESTORE_REPLACE = b"*5\r\n$7\r\nRESTORE\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n$7\r\nREPLACE\r\n"

KeyMatcher = Callable[[bytes], object]
"""Returns something truthy when a key matches (a compiled regex's ``fullmatch``)."""

Record = tuple[bytes, bytes, int]
"""One key record: (key, DUMP payload, ttl_ms relative to the stream's backup time or -1)."""


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


# --------------------------------------------------------------------------- key classes


def key_prefix(key: bytes) -> str:
    """The ServalSheets key family of ``key`` (one of ``PREFIXES``), or ``"other"``."""
    head, sep, rest = key.partition(b":")
    if not sep:
        return OTHER_PREFIX
    if head == _SERVAL:
        sub, sep, _ = rest.partition(b":")
        return _SERVAL_PREFIX.get(sub, OTHER_PREFIX) if sep else OTHER_PREFIX
    return _TOP_PREFIX.get(head, OTHER_PREFIX)


def rdb_type_name(payload: bytes) -> str:
    """The Redis type a DUMP payload holds, read from its leading RDB type byte."""
    return _RDB_TYPES.get(payload[0], "unknown") if payload else "unknown"


def compile_patterns(patterns: Iterable[str | bytes] | None) -> KeyMatcher | None:
    """A matcher for Redis glob patterns (the semantics of KEYS/SCAN MATCH), or None for all.

    Matching is on raw key bytes, exactly like Redis's ``stringmatchlen``: ``*``, ``?``,
    ``[abc]``, ``[^abc]``, ranges ``[a-z]`` (reversed ranges allowed) and ``\\`` escapes; a
    ``[`` without its ``]`` runs to the end of the pattern. ``str`` patterns are encoded as
    UTF-8 with ``surrogateescape``. A key is kept when any pattern matches it.
    """
    if patterns is None:
        return None
    encoded = [p.encode("utf-8", "surrogateescape") if isinstance(p, str) else p for p in patterns]
    if not encoded:
        raise InvalidInputError("patterns must not be empty; pass None to keep every key")
    regex = b"|".join(b"(?:%s)" % _glob_regex(p) for p in encoded)
    return re.compile(regex, re.DOTALL).fullmatch


def _glob_regex(pattern: bytes) -> bytes:
    out: list[bytes] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == 0x2A:  # *
            out.append(b".*")
        elif c == 0x3F:  # ?
            out.append(b".")
        elif c == 0x5C and i + 1 < n:  # backslash escape
            i += 1
            out.append(b"\\x%02x" % pattern[i])
        elif c == 0x5B:  # [
            i, cls = _glob_class(pattern, i + 1)
            out.append(cls)
        else:
            out.append(b"\\x%02x" % c)
        i += 1
    return b"".join(out)


def _glob_class(pattern: bytes, i: int) -> tuple[int, bytes]:
    """Translate a ``[...]`` class starting after ``[``; returns (index of ``]``, regex)."""
    n = len(pattern)
    negate = i < n and pattern[i] == 0x5E  # ^
    i += negate
    ranges: list[bytes] = []
    while i < n and pattern[i] != 0x5D:  # ]
        if pattern[i] == 0x5C and i + 1 < n:
            i += 1
            ranges.append(b"\\x%02x" % pattern[i])
        elif i + 2 < n and pattern[i + 1] == 0x2D:  # a-z, as Redis: even when z is "]"
            lo, hi = sorted((pattern[i], pattern[i + 2]))
            ranges.append(b"\\x%02x-\\x%02x" % (lo, hi))
            i += 2
        else:
            ranges.append(b"\\x%02x" % pattern[i])
        i += 1
    if not ranges:
        return i, b"." if negate else b"(?!)"
    return i, b"[%s%s]" % (b"^" if negate else b"", b"".join(ranges))


# --------------------------------------------------------------------------- connections


def redact_url(url: str) -> str:
    """``url`` with its password (and any password-like query value) replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable redis url>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user, has_password, _ = userinfo.partition(":")
        # "redis://secret@host" is read as a password by some clients: hide it too.
        netloc = f"{user}:***@{host}" if has_password else f"***@{host}"
    query = urlencode(
        [
            (k, "***" if any(s in k.lower() for s in ("pass", "secret", "token")) else v)
            for k, v in parse_qsl(parts.query, keep_blank_values=True)
        ]
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def connect(url: str, *, socket_timeout: float = 30) -> redis.Redis:
    """Open a checked connection (PING) to ``redis://`` or ``rediss://`` (TLS) ``url``.

    AUTH and ACL users come from the URL; TLS verifies the server certificate unless the URL
    says otherwise (``?ssl_cert_reqs=none``). Replies stay bytes. Unreachable servers raise
    ``TransientError``, bad credentials ``RedisBackupError``; messages never hold the password.
    """
    try:
        scheme = urlsplit(url).scheme
    except ValueError:
        raise InvalidInputError(f"malformed Redis URL {redact_url(url)}") from None
    if scheme not in ("redis", "rediss"):
        raise InvalidInputError(f"unsupported Redis URL scheme {scheme!r}: use redis:// or rediss://")
    options: dict[str, Any] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": min(socket_timeout, 10),
        "decode_responses": False,
    }
    if scheme == "rediss":
        options["ssl_cert_reqs"] = "required"
    try:
        client = redis.Redis.from_url(url, **options)
    except ValueError:
        raise InvalidInputError(f"malformed Redis URL {redact_url(url)}") from None
    with redis_errors(client, "connect"):
        try:
            client.ping()
        except (redis.ConnectionError, redis.TimeoutError):
            # A TLS handshake with a plain-text server never completes: say so, not "unreachable".
            if scheme == "rediss" and _answers_plain_text(client):
                client.close()
                raise RedisBackupError(
                    f"connect: Redis at {server_address(client)} answers in plain text, not TLS: the URL "
                    "says rediss:// but this port has no TLS; use redis:// or the server's TLS port"
                ) from None
            raise
    return client


def _answers_plain_text(client: redis.Redis) -> bool:
    """True when the client's host and port answer a plain-text PING with a RESP reply."""
    import socket

    kwargs = client.connection_pool.connection_kwargs
    try:
        with socket.create_connection((kwargs.get("host", "localhost"), kwargs.get("port", 6379)), 2) as sock:
            sock.settimeout(2)
            sock.sendall(b"PING\r\n")
            reply = sock.recv(16)
    except OSError:
        return False
    return reply[:1] in (b"+", b"-")  # +PONG, or -NOAUTH / -ERR from a server wanting AUTH


def server_address(client: redis.Redis) -> str:
    """``host:port`` of the client's server, for messages (never the credentials)."""
    kwargs = client.connection_pool.connection_kwargs
    return f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}"


def _scrub(text: str, client: redis.Redis) -> str:
    password = client.connection_pool.connection_kwargs.get("password")
    if password:
        text = text.replace(str(password), "***")
    return text[:300]


@contextmanager
def redis_errors(client: redis.Redis, action: str) -> Iterator[None]:
    """Translate redis-py exceptions into this system's error classes, without secrets."""
    where = server_address(client)
    try:
        yield
    except redis.AuthenticationError:
        raise RedisBackupError(
            f"{action}: Redis at {where} rejected the credentials (check the user and password)"
        ) from None
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise TransientError(
            f"{action}: Redis at {where} is unreachable or timed out "
            f"({type(exc).__name__}: {_scrub(str(exc), client)})"
        ) from None
    except redis.ResponseError as exc:
        raise RedisBackupError(
            f"{action}: Redis at {where} refused a command: {_scrub(str(exc), client)}"
        ) from None


class _Wire:
    """One pooled connection driven with hand-packed commands, to overlap round trips.

    redis-py's pipeline waits for every reply before the next batch can be sent; here the
    next batch is sent before the previous batch's replies are read, so the server works on
    one batch while this process packs and parses the other.
    """

    def __init__(self, client: redis.Redis) -> None:
        self._pool = client.connection_pool
        self._address = server_address(client)
        self._conn: Any = self._pool.get_connection()  # connected, or released and raised
        parser = getattr(self._conn, "_parser", None)
        reader = getattr(parser, "_reader", None)
        # hiredis's Reader parses a batch without redis-py's per-reply wrappers (which cost
        # more than the parsing); anything else goes through redis-py's read_response.
        fast = _NO_REPLY_YET is not None and reader is not None
        fast = fast and hasattr(parser, "read_from_socket")
        self._parser: Any = parser if fast else None
        self._reader: Any = reader if fast else None
        self._push_type: Any = getattr(parser, "_hiredis_PushNotificationType", None)

    def send(self, data: bytes) -> None:
        self._conn.send_packed_command([data], check_health=False)

    def read_many(self, count: int) -> list[Any]:
        """The next ``count`` replies; error replies are returned as exception instances."""
        if self._reader is None:
            return [self._read_one() for _ in range(count)]
        gets, fill = self._reader.gets, self._parser.read_from_socket
        push_type, no_reply = self._push_type, _NO_REPLY_YET
        replies: list[Any] = []
        append = replies.append
        try:
            while len(replies) < count:
                reply = gets(False)
                if reply is no_reply:
                    fill()
                elif push_type is not None and type(reply) is push_type:
                    # RESP3 out-of-band message (e.g. maintenance notice): not a reply of ours.
                    self._parser.handle_push_response(reply)
                else:
                    append(reply)
        except OSError as exc:  # raw socket errors, which redis-py's read_response would wrap
            raise redis.ConnectionError(f"error reading from {self._address}: {exc}") from None
        return replies

    def _read_one(self) -> Any:
        try:
            return self._conn.read_response(disable_decoding=True)
        except redis.ResponseError as exc:
            return exc

    def close(self, clean: bool) -> None:
        # Unread replies would be handed to the next user of the pooled connection.
        if not clean:
            self._conn.disconnect()
        self._pool.release(self._conn)


@contextmanager
def _wire(client: redis.Redis) -> Iterator[_Wire]:
    wire = _Wire(client)
    clean = False
    try:
        yield wire
        clean = True
    finally:
        wire.close(clean)


def _pack(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%b\r\n" % (len(a), a) for a in args)


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


# --------------------------------------------------------------------------- dump


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


def encode_header(backup_time_ms: int, start_cursor: int, source_version: str) -> bytes:
    """The header record of a stream."""
    version = source_version.encode("ascii", "replace")[:255]
    return _HEADER.pack(MAGIC, FORMAT_VERSION, backup_time_ms, start_cursor, len(version)) + version


def encode_key_record(key: bytes, payload: bytes, ttl_ms: int) -> bytes:
    """One key record (``dump_keys`` packs the same layout inline, batch by batch)."""
    return _KEY.pack(TAG_KEY, len(key), len(payload), ttl_ms) + key + payload


def encode_end(key_count: int, next_cursor: int) -> bytes:
    """The end record of a stream."""
    return _END.pack(TAG_END, key_count, next_cursor)


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
            with _wire(client) as wire:
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
        names[_RDB_TYPES.get(code, "unknown")] += count
    return dict(names)


def _dump_loop(
    wire: _Wire,
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
        request = [_pack(b"SCAN", b"%d" % cursor, *scan_tail)] if scan_now else []
        request += [_DUMP_PTTL % (len(k), k, len(k), k) for k in keys]
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


def _collect_dumps(wire: _Wire, tally: _DumpTally, keys: list[bytes], offset_ms: int) -> None:
    """Read the DUMP/PTTL replies for ``keys`` and write their records as one chunk."""
    replies = wire.read_many(2 * len(keys))
    pack = _KEY.pack
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


# --------------------------------------------------------------------------- reading streams


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
        raw = self._take(_HEADER.size, "header record")
        magic, version, backup_time_ms, start_cursor, version_len = _HEADER.unpack(raw)
        if magic != MAGIC:
            raise self._error("not a redis logical dump stream (bad magic)")
        if version != FORMAT_VERSION:
            raise self._error(f"unsupported stream format version {version}")
        source = self._take(version_len, "header record").decode("ascii", "replace")
        return StreamHeader(version, backup_time_ms, start_cursor, source)

    def __iter__(self) -> Iterator[Record]:
        size = _KEY.size
        unpack = _KEY.unpack_from
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
        if not self._fill(_KEY.size):
            raise self._error("stream truncated inside a key record")
        _, klen, plen, _ = _KEY.unpack_from(self._buf, self._pos)
        if klen > MAX_KEY_BYTES or plen > MAX_PAYLOAD_BYTES:
            raise self._error(f"implausible key record lengths ({klen}, {plen})")
        if not self._fill(_KEY.size + klen + plen):
            raise self._error(f"stream truncated inside key record {self.records_read + 1}")

    def _read_end(self) -> None:
        _, count, next_cursor = _END.unpack(self._take(_END.size, "end record"))
        if count != self.records_read:
            raise self._error(
                f"end record counts {count} key records but the stream holds {self.records_read}"
            )
        trailing = len(self._buf) - self._pos + sum(len(c) for c in self._chunks)
        if trailing:
            raise self._error(f"{trailing} bytes follow the end record")
        self.end = StreamEnd(count, next_cursor)


def _remaining_ttl(ttl: int, elapsed_ms: int) -> int:
    """TTL to restore with: 0 for no expiry, <0 when the key has expired since the backup."""
    if ttl < 0:
        return 0
    remaining = ttl - elapsed_ms
    return remaining if remaining > 0 else -1


# --------------------------------------------------------------------------- restore


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
        self.template = _RESTORE if mode == "missing-only" else _RESTORE_REPLACE
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
            remaining = _remaining_ttl(ttl, elapsed_ms)
            if remaining < 0:
                result.skipped_expired += 1
                continue
            ttl_arg = b"%d" % remaining
            parts.append(template % (len(key), key, len(ttl_arg), ttl_arg, len(payload), payload))
            keys.append(key)
        return b"".join(parts), keys

    def collect(self, wire: _Wire, keys: list[bytes]) -> None:
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


def restore_records(
    client: redis.Redis,
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
    stream = RecordStream(chunks, subject)
    restorer = _Restorer(mode, compile_patterns(patterns), stream.header.source_version)
    records = iter(stream)
    skipped = sum(1 for _ in islice(records, skip_records))
    processed = skipped
    with redis_errors(client, "redis restore"), _wire(client) as wire:
        inflight: list[bytes] | None = None
        for group in _batches(records, batch):
            processed += len(group)
            elapsed = now_ms + int((time.monotonic() - started) * 1000) - stream.header.backup_time_ms
            data, keys = restorer.pack(group, elapsed)
            if keys:
                wire.send(data)
            if inflight is not None:
                restorer.collect(wire, inflight)
            inflight = keys or None
            if deadline is not None and time.monotonic() >= deadline:
                break
        if inflight is not None:
            restorer.collect(wire, inflight)
    if stream.end is not None and skipped < skip_records:
        raise InvalidInputError(f"skip_records {skip_records} is beyond the stream's {skipped} records")
    result = restorer.result
    result.records_processed = processed
    result.complete = stream.end is not None
    result.prefix_counts = dict(restorer.prefixes)
    result.backup_time_ms = stream.header.backup_time_ms
    result.source_version = stream.header.source_version
    return result


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
        elif _remaining_ttl(ttl, elapsed) < 0:
            expired += 1
        else:
            prefix = key_prefix(key)
            prefixes[prefix] += 1
            payload_bytes += len(payload)
            if later_ms is not None and _remaining_ttl(ttl, elapsed_later) >= 0:
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


# --------------------------------------------------------------------------- verification


def count_keys_by_prefix(
    client: redis.Redis, *, match: str | None = None, scan_count: int = 1000
) -> dict[str, int]:
    """Count the keys of a live server per ServalSheets prefix with SCAN (never KEYS).

    SCAN can report a key twice while the server resizes its tables, so on a busy server
    the counts are approximate; on a quiet restore target they are exact.
    """
    counts: Counter[str] = Counter()
    with redis_errors(client, "count keys"):
        for key in client.scan_iter(match=match, count=scan_count):
            counts[key_prefix(key if isinstance(key, bytes) else str(key).encode())] += 1
    return dict(counts)


# RDB types whose DUMP lists elements in hash-table order, which depends on each server's
# random hash seed: a faithful copy can serialise the same elements in another order.
_UNORDERED_TYPES = {2: 1, 4: 2}  # RDB_TYPE_SET: 1 string per element, RDB_TYPE_HASH: 2
_DUMP_TRAILER = 10  # u16 RDB version + CRC64


def same_value(expected: bytes, actual: bytes) -> bool:
    """True when two DUMP payloads hold the same value.

    Byte for byte, except hash-table encoded sets and hashes (RDB types 2 and 4): those are
    compared as multisets of their serialised elements (and the same RDB version), since the
    element order in their DUMP follows the server's randomly seeded hash table.
    """
    if expected == actual:
        return True
    if not expected or not actual or expected[0] != actual[0]:
        return False
    per_item = _UNORDERED_TYPES.get(expected[0])
    if per_item is None or expected[-_DUMP_TRAILER:-8] != actual[-_DUMP_TRAILER:-8]:
        return False
    try:
        mine, theirs = _elements(expected, per_item), _elements(actual, per_item)
    except (IndexError, ValueError):
        return False
    return mine is not None and mine == theirs


def _elements(payload: bytes, per_item: int) -> list[bytes] | None:
    """The serialised elements of a type 2/4 payload, sorted; None if it does not parse."""
    count, i, encoded = _rdb_length(payload, 1)
    if encoded:
        return None
    items: list[bytes] = []
    for _ in range(count):
        start = i
        for _ in range(per_item):
            i = _rdb_string_end(payload, i)
        items.append(payload[start:i])
    return sorted(items) if i == len(payload) - _DUMP_TRAILER else None


def _rdb_length(buf: bytes, i: int) -> tuple[int, int, bool]:
    """An RDB length at ``i``: (value, next index, is a special string encoding)."""
    first = buf[i]
    kind = first >> 6
    if kind == 0:
        return first & 0x3F, i + 1, False
    if kind == 1:
        return ((first & 0x3F) << 8) | buf[i + 1], i + 2, False
    if kind == 3:
        return first & 0x3F, i + 1, True
    if first in (0x80, 0x81):
        width = 4 if first == 0x80 else 8
        return int.from_bytes(buf[i + 1 : i + 1 + width], "big"), i + 1 + width, False
    raise ValueError("bad RDB length")


def _rdb_string_end(buf: bytes, i: int) -> int:
    """Index just past the RDB string (raw, integer or LZF) starting at ``i``."""
    length, i, encoded = _rdb_length(buf, i)
    if not encoded:
        return i + length
    if length in (0, 1, 2):  # int8, int16, int32
        return i + (1, 2, 4)[length]
    if length == 3:  # LZF: compressed length, original length, data
        compressed, i, _ = _rdb_length(buf, i)
        _, i, _ = _rdb_length(buf, i)
        return i + compressed
    raise ValueError("unknown RDB string encoding")


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
    target: redis.Redis,
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
        remaining = _remaining_ttl(record[2], elapsed)
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
    with redis_errors(target, "compare sample"), _wire(target) as wire:
        wire.send(b"".join(_DUMP_PTTL % (len(k), k, len(k), k) for k, _, _ in sample))
        flat = wire.read_many(2 * len(sample))
    replies = list(zip(flat[0::2], flat[1::2], strict=True))
    drift = int((time.monotonic() - started) * 1000)
    _judge_sample(report, sample, replies, elapsed + drift, ttl_tolerance_ms)
    return report


def _judge_sample(
    report: SampleComparison,
    sample: list[Record],
    replies: list[tuple[Any, Any]],
    elapsed_ms: int,
    tolerance_ms: int,
) -> None:
    mismatches: Counter[str] = Counter()
    for (key, payload, ttl), (actual, pttl) in zip(sample, replies, strict=True):
        expected = _remaining_ttl(ttl, elapsed_ms)
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
