"""Deterministic ServalSheets-shaped Redis data for tests, the drill and the benchmarks.

The key mix follows the key inventory in the facts file (OAuth clients and tokens, sessions,
task hashes, stream-replay sorted sets, rate counters, webhook sets and queues), with values
built from random ids, base64 tokens and timestamps around fixed JSON shapes so they compress
about as well as production data (2.2-2.4x with zstd). Every value is fake: nothing here is
a real secret, but the shapes are the ones a backup must carry.
"""

from __future__ import annotations

import base64
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis

from servalsheets_backup.format.redis_keys import key_prefix

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
PIPELINE_COMMANDS = 4000
MIN_KEYS = 64
SHORT_TTL_MS = 1_500  # one key lives this long so tests can watch expiry skipping
_DCR_FRACTION = 0.045

_SCOPES = b"https://www.googleapis.com/auth/spreadsheets https://www.googleapis.com/auth/drive.file"
_TOOLS = (b"sheets_data", b"sheets_format", b"sheets_core", b"sheets_analyze", b"sheets_dimensions")
_ISSUER = b"https://servalsheets.example.com"


@dataclass(frozen=True)
class SeedSummary:
    """What ``seed_servalsheets`` wrote: key counts per prefix and in total."""

    total: int
    prefix_counts: dict[str, int]
    type_counts: dict[str, int]
    now_ms: int
    short_ttl_keys: list[bytes] = field(default_factory=list)


class _Writer:
    """A pipeline that flushes itself every ``PIPELINE_COMMANDS`` commands."""

    def __init__(self, client: redis.Redis | redis.RedisCluster) -> None:
        self._pipe = client.pipeline(transaction=False)
        self._queued = 0
        self.prefixes: Counter[str] = Counter()
        self.types: Counter[str] = Counter()

    def key(self, key: bytes, kind: str) -> None:
        self.prefixes[key_prefix(key)] += 1
        self.types[kind] += 1

    def call(self, command: bytes | str, *args: Any) -> None:
        # redis-py's cluster pipeline looks command names up as str
        self._pipe.execute_command(command.decode() if isinstance(command, bytes) else command, *args)
        self._queued += 1
        if self._queued >= PIPELINE_COMMANDS:
            self.flush()

    def flush(self) -> None:
        if self._queued:
            self._pipe.execute()
            self._queued = 0


class _Gen:
    """Random material from one seeded generator, so the same seed gives the same data."""

    def __init__(self, seed: int, now_ms: int) -> None:
        # bandit B311: deterministic test data from a seed; nothing here protects anything.
        self.rng = random.Random(seed)  # nosec B311
        self.now_ms = now_ms

    def uuid(self) -> bytes:
        h = b"%032x" % self.rng.getrandbits(128)
        return b"%s-%s-%s-%s-%s" % (h[:8], h[8:12], h[12:16], h[16:20], h[20:])

    def hex(self, nbytes: int) -> bytes:
        return self.rng.randbytes(nbytes).hex().encode()

    def b64(self, nbytes: int) -> bytes:
        return base64.urlsafe_b64encode(self.rng.randbytes(nbytes)).rstrip(b"=")

    def ts(self, max_age_ms: int) -> int:
        return self.now_ms - self.rng.randrange(max_age_ms)

    def ttl(self, max_ms: int) -> int:
        """A remaining TTL between half of ``max_ms`` and ``max_ms``, as keys age in place."""
        return self.rng.randrange(max_ms // 2, max_ms)

    def pick(self, items: list[bytes]) -> bytes:
        return items[self.rng.randrange(len(items))]


@dataclass
class _Ctx:
    gen: _Gen
    out: _Writer
    clients: list[bytes]
    users: list[bytes]
    spreadsheets: list[bytes]
    next_client: Counter[str] = field(default_factory=Counter)

    def client_in_turn(self, purpose: str) -> bytes:
        """Each registered client once per purpose, so dcr: and mcp_consent: keys never collide."""
        index = self.next_client[purpose]
        self.next_client[purpose] += 1
        return self.clients[index % len(self.clients)]


def _refresh(c: _Ctx) -> None:
    g = c.gen
    key = b"refresh:" + g.uuid()
    created = g.ts(DAY_MS)
    value = (
        b'{"token":"%s","clientId":"%s","userId":"%s","scope":"%s","resource":"%s/mcp",'
        b'"createdAt":%d,"expiresAt":%d,"familyId":"%s","rotated":false,"generation":%d}'
        % (g.b64(36), g.pick(c.clients), g.pick(c.users), _SCOPES, _ISSUER, created,
           created + 30 * DAY_MS, g.uuid(), g.rng.randrange(1, 40))
    )  # fmt: skip
    c.out.call(b"SET", key, value, b"PX", g.ttl(30 * DAY_MS))
    c.out.key(key, "string")


def _google_tokens(c: _Ctx) -> None:
    g = c.gen
    key = b"google_tokens:user:%s:%s" % (g.pick(c.clients), g.uuid())
    value = (
        b'{"access_token":"ya29.%s","refresh_token":"1//0%s","expiry_date":%d,'
        b'"token_type":"Bearer","scope":"%s","id_token":"eyJhbGciOiJSUzI1NiIsImtpZCI6IjEifQ.%s.%s",'
        b'"userId":"%s","email":"user-%s@example.com","storedAt":%d,"updatedAt":%d}'
        % (g.b64(120), g.b64(72), g.now_ms + HOUR_MS, _SCOPES, g.b64(160), g.b64(64),
           g.pick(c.users), g.hex(6), g.ts(DAY_MS), g.ts(HOUR_MS))
    )  # fmt: skip
    c.out.call(b"SET", key, value, b"PX", g.ttl(30 * DAY_MS))
    c.out.key(key, "string")


def _session_value(c: _Ctx) -> bytes:
    g = c.gen
    history = b",".join(
        b'{"tool":"%s","action":"read","spreadsheetId":"%s","range":"Sheet%d!A1:%s%d",'
        b'"at":%d,"ok":true,"cells":%d,"durationMs":%d}'
        % (g.pick(list(_TOOLS)), g.pick(c.spreadsheets), g.rng.randrange(1, 5),
           b"ABCDEFGH"[g.rng.randrange(8):][:1], g.rng.randrange(2, 500), g.ts(DAY_MS),
           g.rng.randrange(1, 5000), g.rng.randrange(20, 900))
        for _ in range(9)
    )  # fmt: skip
    return (
        b'{"sessionId":"%s","userId":"%s","activeSpreadsheetId":"%s","preferences":'
        b'{"locale":"en-US","timezone":"UTC","valueRenderOption":"FORMATTED_VALUE"},'
        b'"history":[%s],"cursor":"%s","updatedAt":%d}'
        % (g.hex(16), g.pick(c.users), g.pick(c.spreadsheets), history, g.b64(24), g.ts(HOUR_MS))
    )


def _session(c: _Ctx) -> None:
    key = b"servalsheets:session:%s:state" % c.gen.hex(16)
    c.out.call(b"SET", key, _session_value(c), b"PX", c.gen.ttl(DAY_MS))
    c.out.key(key, "string")


def _http_session(c: _Ctx) -> None:
    key = b"servalsheets:http-session:%s:state" % c.gen.uuid()
    c.out.call(b"SET", key, _session_value(c), b"PX", c.gen.ttl(DAY_MS))
    c.out.key(key, "string")


def _task(c: _Ctx) -> None:
    g = c.gen
    task_id = b"task_" + g.uuid()
    key = b"servalsheets:task:" + task_id
    rows = b",".join(b'["%s",%d,"%s"]' % (g.hex(4), g.rng.randrange(10**6), g.b64(12)) for _ in range(5))
    request = (
        b'{"method":"tools/call","params":{"name":"%s","arguments":{"spreadsheetId":"%s",'
        b'"range":"Data!A1:Z%d","valueInputOption":"USER_ENTERED","values":[%s]}},'
        b'"requestId":"%s"}'
        % (g.pick(list(_TOOLS)), g.pick(c.spreadsheets), g.rng.randrange(10, 9999), rows,
           g.hex(8))
    )  # fmt: skip
    fields = [
        b"taskId", task_id, b"status", b"working", b"toolName", g.pick(list(_TOOLS)),
        b"createdAt", b"%d" % g.ts(HOUR_MS), b"lastUpdatedAt", b"%d" % g.ts(MINUTE_MS),
        b"ttl", b"3600000", b"pollInterval", b"1000", b"request", request,
    ]  # fmt: skip
    c.out.call(b"HSET", key, *fields)
    c.out.call(b"PEXPIRE", key, g.ttl(HOUR_MS))
    c.out.key(key, "hash")


def _task_marker(kind: bytes) -> Callable[[_Ctx], None]:
    def write(c: _Ctx) -> None:
        key = b"servalsheets:task:%s:task_%s" % (kind, c.gen.uuid())
        value = b'{"status":"%s","at":%d,"result":{"content":[{"type":"text","text":"%s"}]}}' % (
            kind, c.gen.ts(HOUR_MS), c.gen.b64(60)
        )  # fmt: skip
        c.out.call(b"SET", key, value, b"PX", c.gen.ttl(HOUR_MS))
        c.out.key(key, "string")

    return write


def _dcr(c: _Ctx) -> None:
    g = c.gen
    client_id = c.client_in_turn("dcr")
    key = b"dcr:" + client_id
    value = (
        b'{"client_id":"%s","client_secret":"%s","client_id_issued_at":%d,'
        b'"client_secret_expires_at":0,"client_name":"MCP Client %s","redirect_uris":'
        b'["http://127.0.0.1:%d/callback","https://claude.ai/api/mcp/auth_callback"],'
        b'"grant_types":["authorization_code","refresh_token"],"response_types":["code"],'
        b'"token_endpoint_auth_method":"client_secret_post","scope":"%s","software_id":"%s",'
        b'"logo_uri":"https://cdn.example.com/logos/%s.png","contacts":["ops-%s@example.com"]}'
        % (client_id, g.b64(32), g.ts(300 * DAY_MS) // 1000, g.hex(4),
           g.rng.randrange(1024, 65535), _SCOPES, g.uuid(), g.hex(8), g.hex(3))
    )  # fmt: skip
    c.out.call(b"SET", key, value, b"PX", g.ttl(365 * DAY_MS))
    c.out.key(key, "string")


def _consent(c: _Ctx) -> None:
    g = c.gen
    client_id = c.client_in_turn("consent")
    key = b"mcp_consent:" + client_id
    value = b'{"clientId":"%s","userId":"%s","scopes":"%s","grantedAt":%d}' % (
        client_id, g.pick(c.users), _SCOPES, g.ts(30 * DAY_MS)
    )  # fmt: skip
    c.out.call(b"SET", key, value, b"PX", g.ttl(365 * DAY_MS))
    c.out.key(key, "string")


def _pending_auth(prefix: bytes) -> Callable[[_Ctx], None]:
    def write(c: _Ctx) -> None:
        g = c.gen
        key = prefix + g.uuid()
        value = (
            b'{"clientId":"%s","redirectUri":"http://127.0.0.1:%d/callback",'
            b'"codeChallenge":"%s","codeChallengeMethod":"S256","state":"%s","createdAt":%d}'
            % (g.pick(c.clients), g.rng.randrange(1024, 65535), g.b64(32), g.hex(16), g.now_ms)
        )  # fmt: skip
        c.out.call(b"SET", key, value, b"PX", g.rng.randrange(300_000, 600_000))
        c.out.key(key, "string")

    return write


def _rate(window: bytes, ttl_ms: int) -> Callable[[_Ctx], None]:
    def write(c: _Ctx) -> None:
        g = c.gen
        key = b"rate:%s:%s:%d" % (g.pick(c.users), window, g.rng.randrange(29_000_000))
        c.out.call(b"SET", key, b"%d" % g.rng.randrange(1, 120), b"PX", g.ttl(ttl_ms))
        c.out.key(key, "string")

    return write


def _mcp_events(c: _Ctx) -> None:
    g = c.gen
    stream = g.hex(8)
    key = b"servalsheets:mcp:%s:events" % stream
    args: list[bytes | int] = []
    for n in range(50):
        member = (
            b'{"id":"%s:%d","event":"message","ts":%d,"data":{"jsonrpc":"2.0","method":'
            b'"notifications/progress","params":{"progressToken":"%s","progress":%d}}}'
            % (stream, n, g.ts(MINUTE_MS), g.hex(8), n)
        )
        args += [n, member]
    c.out.call(b"ZADD", key, *args)
    c.out.call(b"PEXPIRE", key, g.ttl(5 * MINUTE_MS))
    c.out.key(key, "zset")


def _mcp_event(c: _Ctx) -> None:
    g = c.gen
    key = b"servalsheets:mcp:%s:event:%d" % (g.hex(8), g.rng.randrange(1000))
    value = b'{"jsonrpc":"2.0","method":"notifications/message","params":{"data":"%s"}}' % g.b64(90)
    c.out.call(b"SET", key, value, b"PX", g.ttl(5 * MINUTE_MS))
    c.out.key(key, "string")


def _mcp_seq(c: _Ctx) -> None:
    key = b"servalsheets:mcp:%s:seq" % c.gen.hex(8)
    c.out.call(b"SET", key, b"%d" % c.gen.rng.randrange(1, 500), b"PX", c.gen.ttl(5 * MINUTE_MS))
    c.out.key(key, "string")


def _capabilities(c: _Ctx) -> None:
    key = b"servalsheets:capabilities:%s" % c.gen.hex(16)
    value = b'{"sampling":{},"elicitation":{},"roots":{"listChanged":true},"client":"%s"}' % (c.gen.hex(6))
    c.out.call(b"SET", key, value, b"PX", c.gen.ttl(HOUR_MS))
    c.out.key(key, "string")


def _etag(c: _Ctx) -> None:
    g = c.gen
    key = b"servalsheets:etag:%s:%s:Sheet1!A1:F40" % (g.pick(c.spreadsheets), g.hex(4))
    rows = b",".join(b'["%s",%d,"%s"]' % (g.hex(5), g.rng.randrange(10**6), g.b64(9)) for _ in range(12))
    value = b'{"etag":"W/\\"%s\\"","values":[%s]}' % (g.hex(10), rows)
    c.out.call(b"SET", key, value, b"PX", g.rng.randrange(5 * MINUTE_MS, 10 * MINUTE_MS))
    c.out.key(key, "string")


def _webhook_index(c: _Ctx) -> None:
    g = c.gen
    key = b"webhooks:spreadsheet:" + g.pick(c.spreadsheets) + b":" + g.hex(3)
    members = [b"wh_" + g.hex(10) for _ in range(g.rng.randrange(1, 5))]
    c.out.call(b"SADD", key, *members)
    c.out.key(key, "set")


def _webhook(c: _Ctx) -> None:
    g = c.gen
    key = b"webhook:wh_" + g.hex(10)
    value = (
        b'{"id":"%s","spreadsheetId":"%s","url":"https://hooks.example.com/%s","secret":"%s",'
        b'"events":["cell.updated","sheet.added"],"createdAt":%d}'
        % (key[8:], g.pick(c.spreadsheets), g.hex(8), g.b64(32), g.ts(DAY_MS))
    )  # fmt: skip
    # The application registers webhooks with an absolute expiry (EXAT), not a relative TTL.
    c.out.call(b"SET", key, value, b"PXAT", g.now_ms + 7 * DAY_MS + g.rng.randrange(DAY_MS))
    c.out.key(key, "string")


def _fixed_keys(c: _Ctx, keys: int) -> list[bytes]:
    """Singletons: queues, a stream, a key of unknown prefix and one very short TTL."""
    g = c.gen
    item = b'{"webhookId":"wh_%s","event":"cell.updated","attempt":0,"at":%d}'
    pending = [item % (g.hex(10), g.ts(MINUTE_MS)) for _ in range(min(1000, max(10, keys // 100)))]
    c.out.call(b"RPUSH", b"webhook:queue:pending", *pending)
    c.out.key(b"webhook:queue:pending", "list")
    c.out.call(b"RPUSH", b"webhook:queue:dlq", *pending[:5])
    c.out.key(b"webhook:queue:dlq", "list")
    stream = b"servalsheets:mcp:%s:journal" % g.hex(8)
    for n in range(20):
        c.out.call(b"XADD", stream, b"%d-1" % (g.now_ms - 20 + n), b"event", b"progress", b"n", n)
    c.out.key(stream, "stream")
    c.out.call(b"SET", b"servalsheets-legacy:settings", b'{"schema":3}')
    c.out.key(b"servalsheets-legacy:settings", "string")
    short = b"code:" + g.uuid()
    c.out.call(b"SET", short, b'{"short":true}', b"PX", SHORT_TTL_MS)
    c.out.key(short, "string")
    return [short]


# (fraction of all keys, writer); refresh tokens take whatever the fractions leave.
_MIX: tuple[tuple[float, Callable[[_Ctx], None]], ...] = (
    (0.15, _google_tokens),
    (0.19, _session),
    (0.01, _http_session),
    (0.095, _task),
    (0.003, _task_marker(b"result")),
    (0.002, _task_marker(b"cancelled")),
    (_DCR_FRACTION, _dcr),
    (0.005, _consent),
    (0.04, _rate(b"minute", 120_000)),
    (0.01, _rate(b"hour", 7_200_000)),
    (0.025, _mcp_events),
    (0.004, _mcp_event),
    (0.001, _mcp_seq),
    (0.002, _capabilities),
    (0.002, _etag),
    (0.018, _webhook_index),
    (0.002, _webhook),
    (0.001, _pending_auth(b"auth:")),
    (0.001, _pending_auth(b"code:")),
)
_FIXED_KEYS = 5


def seed_servalsheets(
    client: redis.Redis | redis.RedisCluster, keys: int, *, seed: int = 0, now_ms: int | None = None
) -> SeedSummary:
    """Write ``keys`` ServalSheets-shaped keys, pipelined; the same seed gives the same keys.

    Keys are drawn from random ids, so seeding twice with the same seed overwrites the same
    keys; counts in the summary are what this call wrote (a rare id collision, e.g. two
    consent records for one client, makes the database hold slightly fewer keys).
    """
    if keys < MIN_KEYS:
        raise ValueError(f"keys must be at least {MIN_KEYS}")
    now = now_ms if now_ms is not None else time.time_ns() // 1_000_000
    gen = _Gen(seed, now)
    ctx = _Ctx(
        gen=gen,
        out=_Writer(client),
        clients=[b"dcr_" + gen.uuid() for _ in range(max(1, int(keys * _DCR_FRACTION)))],
        users=[gen.hex(12) for _ in range(max(4, keys // 50))],
        spreadsheets=[gen.b64(33) for _ in range(max(4, keys // 100))],
    )
    counts = [max(1, int(keys * fraction)) for fraction, _ in _MIX]
    refresh = keys - sum(counts) - _FIXED_KEYS
    for count, (_, write) in zip(counts, _MIX, strict=True):
        for _ in range(count):
            write(ctx)
    for _ in range(refresh):
        _refresh(ctx)
    short = _fixed_keys(ctx, keys)
    ctx.out.flush()
    return SeedSummary(
        total=sum(ctx.out.prefixes.values()),
        prefix_counts=dict(ctx.out.prefixes),
        type_counts=dict(ctx.out.types),
        now_ms=now,
        short_ttl_keys=short,
    )
