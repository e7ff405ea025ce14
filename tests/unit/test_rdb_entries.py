"""An RDB file read key by key (format/rdb_entries.py), against snapshots real redis-servers wrote:
every entry RESTOREs into another server and DUMPs back to the same value; cuts, corruption and
what cannot be framed are refused by name."""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator

import pytest
import redis

from servalsheets_backup.errors import InvalidRdbError
from servalsheets_backup.format.dump_payload import same_value
from servalsheets_backup.format.rdb import crc64
from servalsheets_backup.format.rdb_entries import RdbEntryReader, lzf_decompress, record_stream_from_rdb
from servalsheets_backup.format.redis_stream import NO_EXPIRY, RecordStream
from servalsheets_backup_local.testing.redis_server import RedisServer, start_redis

from .test_rdb import save_snapshot

pytestmark = pytest.mark.unit


def seed_every_encoding(client: redis.Redis) -> None:
    """One key per RDB type and encoding Redis 7 writes, some with TTLs, some compressible."""
    client.set("string:int", 12345)
    client.set("string:negative", -70000)
    client.set("string:embstr", "short")
    client.set("string:raw:compressible", "refresh-token-" * 200, px=3_600_000)  # LZF in the file
    client.set("string:raw:random", os.urandom(50_000))
    client.set(b"bin\x00\xffkey" + b"k" * 40, b"\x00\x01")  # a long binary key, LZF-compressed
    client.rpush("list:small", *[f"job-{i}" for i in range(10)])  # quicklist of one listpack
    client.rpush("list:big", *[f"job-{i}-{'x' * 90}" for i in range(3000)])  # many nodes
    client.sadd("set:intset", 1, 2, 3, 99999)
    client.sadd("set:listpack", "a", "b", "c")
    client.sadd("set:hashtable", *[f"member-{i}" for i in range(600)])
    client.zadd("zset:listpack", {f"e{i}": i / 3 for i in range(20)})
    client.zadd("zset:skiplist", {f"e{i}-{'y' * 70}": i * 1.5 for i in range(300)})
    client.zadd("zset:inf", {"low": float("-inf"), "high": float("inf")})
    client.hset("hash:listpack", mapping={"status": "working", "n": "1"})
    client.hset("hash:hashtable", mapping={f"f{i}": "v" * 100 for i in range(600)})
    client.expire("hash:listpack", 7200)
    for i in range(5):
        client.xadd("stream:groups", {"event": f"e{i}", "payload": "p" * 20})
    client.xgroup_create("stream:groups", "workers", id="0")
    client.xreadgroup("workers", "alice", {"stream:groups": ">"}, count=2)
    client.xreadgroup("workers", "bob", {"stream:groups": ">"}, count=1)
    client.xadd("stream:plain", {"a": "1"})


@pytest.fixture(scope="module")
def source() -> Iterator[tuple[RedisServer, bytes]]:
    server = start_redis(extra_args=["--rdbcompression", "yes"])
    try:
        yield server, save_snapshot(server, seed_every_encoding)
    finally:
        server.stop()


def chunked(data: bytes, size: int) -> Iterator[bytes]:
    return (data[i : i + size] for i in range(0, len(data), size))


@pytest.mark.parametrize("chunk", [1, 7, 4096, 1 << 20])
def test_every_entry_restores_to_the_same_value_whatever_the_chunking(
    source: tuple[RedisServer, bytes], redis_target: RedisServer, chunk: int
) -> None:
    server, rdb = source
    live = redis.Redis.from_url(server.url)
    target = redis.Redis.from_url(redis_target.url)
    try:
        target.flushdb()
        reader = RdbEntryReader(chunked(rdb, chunk), "dump.rdb")
        entries = list(reader)
        assert reader.checksum_verified and reader.version >= 10
        assert sorted(entry.key for entry in entries) == sorted(live.keys("*"))
        for entry in entries:
            ttl = 0 if entry.expire_ms is None else max(1, entry.expire_ms - int(live.time()[0] * 1000))
            target.restore(entry.key, ttl, entry.payload)
            assert same_value(live.dump(entry.key), target.dump(entry.key)), entry.key
            assert (entry.expire_ms is None) == (live.pttl(entry.key) == -1), entry.key
    finally:
        live.close()
        target.close()


def test_the_record_stream_carries_expiries_relative_to_the_file_time(
    source: tuple[RedisServer, bytes],
) -> None:
    _server, rdb = source
    stream = RecordStream(record_stream_from_rdb(chunked(rdb, 1000), "dump.rdb"), "dump.rdb")
    records = {key: ttl for key, _payload, ttl in stream}
    assert stream.end is not None and stream.end.key_count == len(records)
    assert records[b"list:small"] == NO_EXPIRY
    assert stream.header.backup_time_ms > 0  # the file's ctime
    assert stream.header.source_version.startswith("7.")  # its redis-ver
    assert 3_590_000 <= records[b"string:raw:compressible"] <= 3_600_000 + 2000


def test_a_cut_or_corrupted_file_is_refused(source: tuple[RedisServer, bytes]) -> None:
    _server, rdb = source
    for broken, check in (
        (rdb[: len(rdb) // 2], "rdb truncated"),
        (rdb[:-3], "rdb truncated"),
        (rdb + b"junk", "rdb entries"),
        (rdb[:200] + bytes([rdb[200] ^ 0x01]) + rdb[201:], None),  # a flipped bit anywhere
    ):
        with pytest.raises(InvalidRdbError) as refused:
            list(RdbEntryReader(chunked(broken, 4096), "dump.rdb"))
        if check:
            assert refused.value.check == check
    with pytest.raises(InvalidRdbError, match="does not start with the RDB magic"):
        list(RdbEntryReader([b"*1\r\n$4\r\nPING\r\n"], "dump.rdb"))


def test_keys_in_a_second_database_are_refused_with_the_way_out(redis_target: RedisServer) -> None:
    client = redis.Redis.from_url(redis_target.url)
    try:
        client.set("a", "1")
        redis.Redis.from_url(redis_target.url.replace("/0", "/3")).set("b", "2")
        client.save()
    finally:
        client.close()
    rdb = (redis_target.workdir / "dump.rdb").read_bytes()
    with pytest.raises(InvalidRdbError, match="database 3 as well as 0: .* seed a new cache"):
        list(RdbEntryReader([rdb], "dump.rdb"))


def test_a_type_it_cannot_frame_is_refused_by_name() -> None:
    body = b"REDIS0010" + bytes([0xFE, 0x00, 22, 0x01]) + b"k" + bytes([0xFF])
    rdb = body + struct.pack("<Q", crc64(body))
    with pytest.raises(InvalidRdbError, match="hash with field expiry"):
        list(RdbEntryReader([rdb], "dump.rdb"))


def test_lzf_round_trip_of_what_redis_compresses() -> None:
    # A literal run of 3 bytes, then a back reference copying 6 bytes from 3 back (overlapping).
    assert lzf_decompress(bytes([2]) + b"abc" + bytes([0x80, 0x02]), 9) == b"abcabcabc"
    with pytest.raises(InvalidRdbError, match="corrupt"):
        lzf_decompress(bytes([0x80, 0x10]), 9)
