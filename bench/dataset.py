"""The benchmark data set: one source redis-server seeded with ServalSheets-shaped keys.

The data grows in steps (each step seeds more keys with a new seed) so one server serves every
data-set size of the scaling series. After each step every TTL under an hour is lengthened
by an hour: about 7% of the seeded keys (rate counters, stream replay) would otherwise expire
during the run, and the methods measured later would see less data than the first.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from servalsheets_backup.components.redis_logical.dump import dump_keys
from servalsheets_backup.format.redis_stream import RecordStream
from servalsheets_backup_local.testing.redis_server import RedisServer, start_redis
from servalsheets_backup_local.testing.seed import seed_servalsheets

HOUR_MS = 3_600_000
REPL_DISKLESS_SYNC_DELAY = "0"  # Debian's default of 5 s adds 5 s to every `redis-cli --rdb`
_EXTEND_TTLS = """
local reply = redis.call('SCAN', ARGV[1], 'COUNT', 20000)
for _, key in ipairs(reply[2]) do
  local ttl = redis.call('PTTL', key)
  if ttl >= 0 and ttl < tonumber(ARGV[2]) then redis.call('PEXPIRE', key, ttl + tonumber(ARGV[2])) end
end
return reply[1]
"""
_RESTORE_REPLACE = b"*5\r\n$7\r\nRESTORE\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n$7\r\nREPLACE\r\n"


@dataclass
class DataSetStats:
    """What the source holds at one size."""

    keys: int
    used_memory: int
    seed_seconds: float
    seeded_total_seconds: float

    def as_dict(self) -> dict[str, Any]:
        """JSON form."""
        return dict(self.__dict__)


def start_server() -> RedisServer:
    """A redis-server on 127.0.0.1 with ``repl-diskless-sync-delay 0`` (start_redis sets it)."""
    return start_redis(extra_args=["--repl-diskless-sync-delay", REPL_DISKLESS_SYNC_DELAY])


def client_for(server: RedisServer) -> redis.Redis:
    """A bytes client for ``server``."""
    return redis.Redis.from_url(server.url, socket_timeout=600)


class DataSet:
    """A source server grown to successive sizes."""

    def __init__(self) -> None:
        self.server = start_server()
        self.client = client_for(self.server)
        self._step = 0
        self._seed_total = 0.0

    def grow_to(self, keys: int) -> DataSetStats:
        """Seed until the server holds about ``keys`` keys; returns the stats at that size."""
        started = time.perf_counter()
        missing = keys - int(self.client.dbsize())
        if missing >= 64:
            self._step += 1
            seed_servalsheets(self.client, missing, seed=self._step)
            self._extend_short_ttls()
        seconds = time.perf_counter() - started
        self._seed_total += seconds
        info = self.client.info("memory")
        return DataSetStats(int(self.client.dbsize()), int(info["used_memory"]), seconds, self._seed_total)

    def _extend_short_ttls(self) -> None:
        script = self.client.register_script(_EXTEND_TTLS)
        cursor = b"0"
        while True:
            cursor = script(args=[cursor, HOUR_MS])
            if cursor in (b"0", 0, "0"):
                return

    def write_plain_stream(self, path: Path) -> int:
        """The unencrypted record stream of every key (input of the RESP file and of stage tests)."""
        with path.open("wb") as sink:
            result = dump_keys(self.client, sink, backup_time_ms=time.time_ns() // 1_000_000)
        return result.keys_written

    def stop(self) -> None:
        """Stop the source server."""
        self.server.stop()


def write_resp(plain: Path, resp: Path) -> int:
    """``RESTORE key ttl payload REPLACE`` for every record, as ``redis-cli --pipe`` input.

    The TTL is the one left when this file is written (the data set's TTLs are over an hour,
    so none runs out during the run); RESTORE is what our restore sends, so both sides make
    the server do the same work.
    """
    count = 0
    with plain.open("rb") as source, resp.open("wb") as out:
        stream = RecordStream(iter(lambda: source.read(1 << 20), b""))
        elapsed = time.time_ns() // 1_000_000 - stream.header.backup_time_ms
        for key, payload, ttl in stream:
            ttl_arg = b"0" if ttl < 0 else b"%d" % max(1, ttl - elapsed)
            out.write(_RESTORE_REPLACE % (len(key), key, len(ttl_arg), ttl_arg, len(payload), payload))
            count += 1
    return count


def empty_target() -> tuple[RedisServer, redis.Redis]:
    """A fresh, empty restore target (stopped by the caller)."""
    server = start_server()
    return server, client_for(server)
