"""RDB validation against real redis-server snapshots: every kind of damage fails with its check."""

from __future__ import annotations

import gzip
import io
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from servalsheets_backup.errors import IntegrityError, InvalidRdbError
from servalsheets_backup.format.rdb import (
    MAX_RDB_VERSION,
    RdbValidator,
    crc64,
    crc64_python,
    validate_rdb_file,
    validate_rdb_stream,
)
from servalsheets_backup_local.testing.redis_server import RedisServer, start_redis

pytestmark = pytest.mark.unit

MIB = 1 << 20
CRC_BLOCK = 16 * 1024  # the validator's internal block size; chunkings straddle it
JONES_POLY = 0xAD93D23594C935A9


def seed_every_type(client: redis.Redis) -> None:
    """Keys shaped like ServalSheets' own, one of each Redis type, some with a TTL."""
    client.set("dcr:dcr_0b7e", '{"client_secret":"s3cret"}', ex=3600)
    client.set("rate:user:minute:1", 12345)  # stored int-encoded
    client.set("servalsheets:etag:big", os.urandom(200_000))  # incompressible, spans blocks
    client.set(b"bin\x00\xffkey", b"\x00\x01\x02")
    client.rpush("webhook:queue:pending", *[f"job-{i}" for i in range(300)])
    client.sadd("webhooks:spreadsheet:1", "a", "b", "c")
    client.sadd("intset", 1, 2, 3)
    client.zadd("servalsheets:mcp:s1:events", {f"e{i}": i for i in range(200)})
    client.hset("servalsheets:task:task_1", mapping={"status": "working", "n": "1"})
    client.hset("bighash", mapping={f"f{i}": "x" * 100 for i in range(600)})
    client.xadd("stream", {"field": "value"})
    client.expire("servalsheets:task:task_1", 3600)


def save_snapshot(server: RedisServer, seed: Callable[[redis.Redis], None] = seed_every_type) -> bytes:
    """SAVE after ``seed`` wrote its keys; the server's dump.rdb."""
    client = redis.Redis.from_url(server.url)
    try:
        seed(client)
        client.save()
    finally:
        client.close()
    return (server.workdir / "dump.rdb").read_bytes()


@pytest.fixture(scope="module")
def snapshot() -> Iterator[bytes]:
    """One real snapshot shared by the many chunkings and the hypothesis examples."""
    server = start_redis()
    try:
        yield save_snapshot(server)
    finally:
        server.stop()


def chunked(data: bytes, size: int) -> Iterator[bytes]:
    return (data[i : i + size] for i in range(0, len(data), size))


def check_of(data: bytes, chunk: int = MIB, **kwargs: bool) -> str:
    with pytest.raises(InvalidRdbError) as caught:
        validate_rdb_stream(chunked(data, chunk), "dump.rdb", **kwargs)
    assert isinstance(caught.value, IntegrityError)
    assert caught.value.subject == "dump.rdb"
    return caught.value.check


def test_real_snapshot_is_accepted(redis_server: RedisServer) -> None:
    data = save_snapshot(redis_server)
    info = validate_rdb_stream(chunked(data, MIB), "dump.rdb")
    assert info.version == int(data[5:9])
    assert 10 <= info.version <= MAX_RDB_VERSION  # redis-server 7.0 writes 10
    assert info.size == len(data) > 200_000
    assert info.checksum == data[-8:][::-1].hex()
    assert info.checksum_verified is True


@pytest.mark.parametrize(
    "chunk", [1, 7, CRC_BLOCK - 1, CRC_BLOCK, CRC_BLOCK + 1, CRC_BLOCK + 9, MIB, 8 * MIB]
)
def test_any_chunking_gives_the_same_result(snapshot: bytes, chunk: int) -> None:
    info = validate_rdb_stream(chunked(snapshot, chunk), "dump.rdb")
    assert info.checksum_verified
    assert info.size == len(snapshot)


def test_memoryview_and_bytearray_chunks(snapshot: bytes) -> None:
    view = memoryview(snapshot)
    chunks: list[bytes | bytearray | memoryview] = [
        view[:5],
        bytearray(snapshot[5 : 5 * CRC_BLOCK]),
        view[5 * CRC_BLOCK :],
    ]
    assert validate_rdb_stream(chunks, "dump.rdb").checksum_verified


def test_validating_while_copying_in_one_pass(snapshot: bytes) -> None:
    validator = RdbValidator("dump.rdb")
    copy = io.BytesIO()
    for chunk in chunked(snapshot, 3 * MIB // 7):
        copy.write(chunk)
        validator.update(chunk)
    assert validator.version == int(snapshot[5:9])
    assert validator.finish().checksum_verified
    assert copy.getvalue() == snapshot


def test_file_helper(snapshot: bytes, tmp_path: Path) -> None:
    path = tmp_path / "export.rdb"
    path.write_bytes(snapshot)
    assert validate_rdb_file(path, chunk_bytes=CRC_BLOCK + 3).size == len(snapshot)
    path.write_bytes(snapshot[:-1])
    with pytest.raises(InvalidRdbError) as caught:
        validate_rdb_file(path)
    assert caught.value.subject == "export.rdb"


def test_wrong_magic_fails_on_the_first_chunk() -> None:
    validator = RdbValidator("dump.rdb")
    with pytest.raises(InvalidRdbError) as caught:
        validator.update(b"RADIS0011")
    assert caught.value.check == "rdb magic"
    assert "REDIS" in str(caught.value)


def test_compressed_snapshot_says_so(snapshot: bytes) -> None:
    with pytest.raises(InvalidRdbError, match="gzip-compressed") as caught:
        validate_rdb_stream([gzip.compress(snapshot)], "dump.rdb")
    assert caught.value.check == "rdb magic"


def test_other_file_kinds_fail_the_magic(snapshot: bytes) -> None:
    assert check_of(b"*2\r\n$6\r\nSELECT\r\n$1\r\n0\r\n" + snapshot) == "rdb magic"
    assert check_of(b'{"version": 1}') == "rdb magic"
    assert check_of(b"\x00" + snapshot[1:]) == "rdb magic"


@pytest.mark.parametrize("version", [b"0000", b"0013", b"0099", b"9999"])
def test_unsupported_version(snapshot: bytes, version: bytes) -> None:
    data = b"REDIS" + version + snapshot[9:]
    with pytest.raises(InvalidRdbError, match=f"unsupported RDB version {int(version)}") as caught:
        validate_rdb_stream([data], "dump.rdb")
    assert caught.value.check == "rdb version"


def test_version_that_is_not_digits(snapshot: bytes) -> None:
    assert check_of(b"REDIS00a1" + snapshot[9:]) == "rdb version"
    assert check_of(b"REDIS 011" + snapshot[9:]) == "rdb version"


def test_valkey_9_magic_is_refused_by_name(snapshot: bytes) -> None:
    with pytest.raises(InvalidRdbError, match="unsupported RDB version 80.*Valkey") as caught:
        validate_rdb_stream([b"VALKEY080" + snapshot[9:]], "dump.rdb")
    assert caught.value.check == "rdb version"


@pytest.mark.parametrize("chunk", [1, 7, MIB])
def test_flipped_byte_in_the_content_fails_the_checksum(snapshot: bytes, chunk: int) -> None:
    for position in (9, 100, len(snapshot) // 2, len(snapshot) - 10):
        damaged = bytearray(snapshot)
        damaged[position] ^= 0x40
        assert check_of(bytes(damaged), chunk) == "rdb checksum"


def test_flipped_checksum_or_eof_opcode(snapshot: bytes) -> None:
    damaged = bytearray(snapshot)
    damaged[-1] ^= 0x01
    assert check_of(bytes(damaged)) == "rdb checksum"
    damaged = bytearray(snapshot)
    damaged[-9] ^= 0x01
    assert check_of(bytes(damaged)) == "rdb truncated"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    fraction=st.floats(0, 1, exclude_max=True),
    mask=st.integers(1, 255),
    chunk=st.integers(1, 3 * CRC_BLOCK),
)
def test_any_single_byte_change_is_detected(snapshot: bytes, fraction: float, mask: int, chunk: int) -> None:
    position = int(fraction * len(snapshot))
    damaged = bytearray(snapshot)
    damaged[position] ^= mask
    check = check_of(bytes(damaged), chunk)
    if position < 9:
        assert check in {"rdb magic", "rdb version", "rdb checksum"}
    elif position == len(snapshot) - 9:
        assert check == "rdb truncated"
    else:
        assert check == "rdb checksum"


def test_truncation_anywhere_is_detected(snapshot: bytes) -> None:
    size = len(snapshot)
    for cut in (0, 3, 5, 8, 9, 10, 17, CRC_BLOCK + 8, size // 2, size - 10, size - 9, size - 8):
        check = check_of(snapshot[:cut], chunk=4096)
        if cut < 18:
            assert check == "rdb truncated", cut
        else:
            assert check in {"rdb truncated", "rdb checksum"}, cut
    for cut in range(size - 8, size):
        assert check_of(snapshot[:cut]) in {"rdb truncated", "rdb checksum"}


def test_short_files_name_their_size() -> None:
    with pytest.raises(InvalidRdbError, match="0 bytes, shorter than the 9-byte RDB header"):
        validate_rdb_stream([], "dump.rdb")
    with pytest.raises(InvalidRdbError, match="12 bytes; an RDB file is at least 18 bytes"):
        validate_rdb_stream([b"REDIS0010\xff\x00\x00"], "dump.rdb")


def test_checksum_disabled_is_accepted_but_not_verified() -> None:
    # rdbchecksum is immutable at run time since Redis 7 (CONFIG SET refuses it): set it at start.
    server = start_redis(extra_args=["--rdbchecksum", "no"])
    try:
        data = save_snapshot(server)
    finally:
        server.stop()
    assert data[-8:] == bytes(8)

    info = validate_rdb_stream(chunked(data, 7), "dump.rdb")
    assert info.checksum_verified is False
    assert info.checksum == "0" * 16
    with pytest.raises(InvalidRdbError, match="checksums disabled") as caught:
        validate_rdb_stream([data], "dump.rdb", require_checksum=True)
    assert caught.value.check == "rdb checksum"


def test_pre_checksum_versions_end_at_the_eof_opcode() -> None:
    info = validate_rdb_stream([b"REDIS0004\xfe\x00\xff"], "old.rdb")
    assert (info.version, info.checksum, info.checksum_verified) == (4, None, False)
    assert check_of(b"REDIS0004\xfe\x00") == "rdb truncated"
    assert check_of(b"REDIS0004\xff", require_checksum=True) == "rdb checksum"


def test_validator_refuses_use_after_finish(snapshot: bytes) -> None:
    validator = RdbValidator("dump.rdb")
    validator.update(snapshot)
    validator.finish()
    with pytest.raises(RuntimeError):
        validator.update(b"x")
    with pytest.raises(RuntimeError):
        validator.finish()


# --- CRC-64 -----------------------------------------------------------------------------------


def crc64_redis_bitwise(data: bytes) -> int:
    """Redis crc64.c's reference ``_crc64(0, ...)``: MSB-first with reflected input and output."""
    crc = 0
    for byte in data:
        for bit in range(8):
            top = bool(crc >> 63) ^ bool(byte >> bit & 1)
            crc = (crc << 1) & 0xFFFFFFFFFFFFFFFF
            if top:
                crc ^= JONES_POLY
    return int(f"{crc:064b}"[::-1], 2)


def test_redis_test_vector() -> None:
    assert crc64(b"123456789") == 0xE9C6D914C4B8D9CA
    assert crc64_python(b"123456789") == 0xE9C6D914C4B8D9CA
    assert crc64_redis_bitwise(b"123456789") == 0xE9C6D914C4B8D9CA
    assert crc64(b"") == 0


@pytest.mark.parametrize("size", [63, 64, 65, 100, 1000, CRC_BLOCK - 1, CRC_BLOCK + 1, 40_000])
def test_folding_matches_the_bitwise_reference(size: int) -> None:
    data = os.urandom(size)
    assert crc64(data) == crc64_python(data) == crc64_redis_bitwise(data)


@settings(max_examples=60, deadline=None)
@given(first=st.binary(max_size=3000), second=st.binary(max_size=3000))
def test_crc_continues_across_pieces(first: bytes, second: bytes) -> None:
    whole = crc64(first + second)
    assert crc64(second, crc64(first)) == whole
    assert crc64_python(second, crc64_python(first)) == whole
    assert whole == crc64_redis_bitwise(first + second)
