"""Redis connections: checked connect (TLS, AUTH), error translation without secrets, and a
wire that pipelines hand-packed commands with two batches in flight."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis

from servalsheets_backup.errors import InvalidInputError, RedisBackupError, TransientError

try:  # the marker redis-py's hiredis parser returns while a reply is incomplete
    from redis._parsers.hiredis import NOT_ENOUGH_DATA as _NO_REPLY_YET
except ImportError:  # pragma: no cover - other redis-py layouts take the slow path
    _NO_REPLY_YET = None

DUMP_PTTL = b"*2\r\n$4\r\nDUMP\r\n$%d\r\n%b\r\n*2\r\n$4\r\nPTTL\r\n$%d\r\n%b\r\n"
RESTORE_COMMAND = b"*4\r\n$7\r\nRESTORE\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n"
RESTORE_REPLACE_COMMAND = b"*5\r\n$7\r\nRESTORE\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n$7\r\nREPLACE\r\n"


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
def redis_errors(
    client: redis.Redis, action: str, node: Callable[[], redis.Redis] | None = None
) -> Iterator[None]:
    """Translate redis-py exceptions into this system's error classes, without secrets.

    ``node``, when given, names the server the failing command went to (one of several
    primaries of a cluster); otherwise the error names ``client``'s server.
    """
    try:
        yield
    except redis.RedisError as exc:
        translated = _translated(exc, node() if node is not None else client, action)
        if translated is exc:
            raise
        raise translated from None


def _translated(error: redis.RedisError, client: redis.Redis, action: str) -> Exception:
    """This system's error for a redis-py error (the error itself when there is none)."""
    where = server_address(client)
    if isinstance(error, redis.AuthenticationError):  # a ConnectionError subclass: test it first
        return RedisBackupError(
            f"{action}: Redis at {where} rejected the credentials (check the user and password)"
        )
    if isinstance(error, redis.ConnectionError | redis.TimeoutError):
        return TransientError(
            f"{action}: Redis at {where} is unreachable or timed out "
            f"({type(error).__name__}: {_scrub(str(error), client)})"
        )
    if isinstance(error, redis.ResponseError):
        return RedisBackupError(f"{action}: Redis at {where} refused a command: {_scrub(str(error), client)}")
    return error


class Wire:
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
def open_wire(client: redis.Redis) -> Iterator[Wire]:
    """A Wire on one pooled connection, released (disconnected if replies are left unread) on exit."""
    wire = Wire(client)
    clean = False
    try:
        yield wire
        clean = True
    finally:
        wire.close(clean)


def pack_command(*args: bytes) -> bytes:
    """One RESP command from its arguments."""
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%b\r\n" % (len(a), a) for a in args)
