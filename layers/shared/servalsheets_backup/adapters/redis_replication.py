"""A Redis server's RDB snapshot taken over the replication protocol, as ``redis-cli --rdb`` takes it.

``REPLCONF rdb-only 1`` (Redis 7.0+) then ``SYNC``: the server forks, a child serialises the
dataset, and the bytes arrive on this connection while the server's main thread goes on serving
clients. The snapshot is point-in-time consistent (SCAN is not). The reply is ``$<length>``
followed by that many bytes, or, from a diskless primary, ``$EOF:<40-byte mark>`` followed by
the file and the same mark; while a disk-based save runs the server sends bare newlines to keep
the connection alive.

The stream is checked as it arrives (``format.rdb.RdbValidator``: magic, version, CRC-64), and a
connection that closes early, a length that does not add up or a missing end mark raise
``InvalidRdbError``/``TransientError``; the caller never sees a short stream end normally.
Servers that refuse replication (ElastiCache, an ACL user without ``+sync``, a renamed command)
raise ``RedisBackupError`` naming the RedisMode to use instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing
from typing import Any

from servalsheets_backup.adapters import redis_client
from servalsheets_backup.errors import InvalidRdbError, RedisBackupError, TransientError
from servalsheets_backup.format.rdb import CHECK_TRUNCATED, RdbInfo, RdbValidator
from servalsheets_backup.read_ahead import read_ahead

EOF_MARK_BYTES = 40
READ_BYTES = 1 << 20
AHEAD_CHUNKS = 32  # received blocks held for the consumer: at most 32 MiB
REFUSED_HINT = (
    "use RedisMode=logical (SCAN + DUMP) for a server that does not allow replication, or "
    "RedisMode=elasticache for ElastiCache"
)


class RdbStream:
    """Iterate for the RDB file's chunks; ``info`` holds what validation found once it ends."""

    def __init__(self, url: str, *, timeout: float = 60.0, subject: str = "redis rdb stream") -> None:
        self.subject = subject
        self.info: RdbInfo | None = None
        self._client = redis_client.connect(url, socket_timeout=timeout)
        self._connection: Any = self._client.connection_pool.get_connection()
        self._buffer = b""
        self._closed = False

    def __iter__(self) -> Iterator[bytes]:
        try:
            self._request()
            header = self._reply_header()
            if header.startswith(b"EOF:"):
                chunks = self._until_mark(header[4:])
            else:
                chunks = self._exactly(_declared_length(header, self.subject))
            validator = RdbValidator(self.subject)
            # A thread receives while this one validates (and the caller compresses, encrypts
            # and uploads): waiting on the socket releases the GIL, so the two overlap.
            received = read_ahead(chunks, AHEAD_CHUNKS, name="rdb-stream-receive", interrupt=self.close)
            with closing(received):
                for chunk in received:
                    validator.update(chunk)
                    yield chunk
            self.info = validator.finish()
        finally:
            self.close()

    def close(self) -> None:
        """Drop the connection (the server stops streaming to it); idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self._connection.disconnect()
        finally:
            self._client.close()

    # -- protocol ----------------------------------------------------------------------------
    def _request(self) -> None:
        connection = self._connection
        connection.send_command("REPLCONF", "rdb-only", "1")
        reply = self._line()
        if reply.startswith(b"-") and b"unknown" not in reply.lower() and b"rdb-only" not in reply:
            raise self._refused("REPLCONF", reply)
        connection.send_packed_command([b"SYNC\r\n"])

    def _reply_header(self) -> bytes:
        while True:
            line = self._line()
            if line == b"":  # a keepalive newline while the server prepares the snapshot
                continue
            if line.startswith(b"-"):
                raise self._refused("SYNC", line)
            if not line.startswith(b"$"):
                raise InvalidRdbError(
                    self.subject, CHECK_TRUNCATED, "the server's SYNC reply is not a bulk reply"
                )
            return line[1:]

    def _refused(self, command: str, reply: bytes) -> RedisBackupError:
        message = reply[1:].decode("utf-8", "replace")[:200]
        return RedisBackupError(f"the Redis server refused {command} ({message}): {REFUSED_HINT}")

    def _line(self) -> bytes:
        while b"\n" not in self._buffer:
            self._buffer += self._receive("the server closed the connection before its SYNC reply")
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.rstrip(b"\r")

    def _receive(self, closed: str) -> bytes:
        sock = self._connection._sock
        try:
            data = sock.recv(READ_BYTES)
        except TimeoutError as exc:
            raise TransientError(f"the Redis server stopped sending its RDB stream ({exc})") from None
        except OSError as exc:
            raise TransientError(f"the RDB stream connection failed: {type(exc).__name__}") from None
        if not data:
            raise InvalidRdbError(self.subject, CHECK_TRUNCATED, closed)
        return bytes(data)

    def _exactly(self, length: int) -> Iterator[bytes]:
        left = length
        if self._buffer:
            first, self._buffer = self._buffer[:left], self._buffer[left:]
            left -= len(first)
            yield first
        while left > 0:
            data = self._receive(f"the stream ended {left} bytes before the {length} the server announced")
            yield data[:left]
            left -= min(left, len(data))

    def _until_mark(self, mark: bytes) -> Iterator[bytes]:
        if len(mark) != EOF_MARK_BYTES:
            raise InvalidRdbError(
                self.subject, CHECK_TRUNCATED, "the diskless stream's end mark is malformed"
            )
        held = self._buffer  # the last EOF_MARK_BYTES received could be the mark: held back
        self._buffer = b""
        while not held.endswith(mark):
            data = self._receive("the diskless stream ended without its end mark")
            # Pass on all but the newest EOF_MARK_BYTES at once: one copy per received block.
            if len(data) >= EOF_MARK_BYTES:
                if len(held) + len(data) > EOF_MARK_BYTES:
                    yield held + data[:-EOF_MARK_BYTES] if held else data[:-EOF_MARK_BYTES]
                held = data[-EOF_MARK_BYTES:]
            else:
                held += data
                if len(held) > EOF_MARK_BYTES:
                    yield held[:-EOF_MARK_BYTES]
                    held = held[-EOF_MARK_BYTES:]
        if len(held) > EOF_MARK_BYTES:
            yield held[:-EOF_MARK_BYTES]


def _declared_length(header: bytes, subject: str) -> int:
    if not header.isdigit():
        raise InvalidRdbError(subject, CHECK_TRUNCATED, "the server's SYNC reply has no valid length")
    return int(header)
