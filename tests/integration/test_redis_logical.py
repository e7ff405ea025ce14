"""Logical Redis dump and restore against real redis-server processes on 127.0.0.1."""

from __future__ import annotations

import io
import time
from collections import Counter
from collections.abc import Callable, Iterator

import pytest
import redis

from servalsheets_backup.components import redis_logical as rl
from servalsheets_backup.errors import IntegrityError, RedisBackupError, TransientError
from servalsheets_backup.format.dump_payload import same_value
from servalsheets_backup.format.redis_keys import OAUTH_KEY_PATTERNS, compile_patterns, key_prefix
from servalsheets_backup.format.redis_stream import (
    END_RECORD,
    RecordStream,
    encode_end,
    encode_header,
    encode_key_record,
)
from servalsheets_backup_local.testing.redis_server import RedisServer, free_port, start_redis
from servalsheets_backup_local.testing.seed import SeedSummary, seed_servalsheets

pytestmark = pytest.mark.integration

Seeded = tuple[redis.Redis, SeedSummary]
KEYS = 2000
MINUTE_MS = 60_000
ALL_TYPES = {"string", "hash", "list", "set", "zset", "stream"}


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def client_for(server: RedisServer) -> redis.Redis:
    return redis.Redis.from_url(server.url)


@pytest.fixture
def source(redis_server: RedisServer) -> Iterator[Seeded]:
    client = client_for(redis_server)
    summary = seed_servalsheets(client, KEYS, seed=7)
    yield client, summary
    client.close()


@pytest.fixture
def target(redis_target: RedisServer) -> Iterator[redis.Redis]:
    client = client_for(redis_target)
    yield client
    client.close()


def dump_all(client: redis.Redis, backup_time_ms: int) -> tuple[bytes, rl.DumpResult]:
    sink = io.BytesIO()
    result = rl.dump_keys(client, sink, backup_time_ms=backup_time_ms)
    assert result.complete
    return sink.getvalue(), result


def chunked(data: bytes, size: int = 4096) -> Iterator[bytes]:
    """Feed a stream in small pieces so records straddle chunk boundaries."""
    return (data[i : i + size] for i in range(0, len(data), size))


def snapshot(client: redis.Redis) -> dict[bytes, tuple[bytes, int]]:
    pipe = client.pipeline(transaction=False)
    keys = list(client.scan_iter(count=1000))
    for key in keys:
        pipe.dump(key)
        pipe.pttl(key)
    replies = pipe.execute()
    return {k: (d, t) for k, d, t in zip(keys, replies[0::2], replies[1::2], strict=True) if d is not None}


# --------------------------------------------------------------------------- round trip


def dump(client: redis.Redis, key: bytes) -> bytes:
    payload = client.dump(key)
    assert isinstance(payload, bytes)
    return payload


def logical_value(client: redis.Redis, key: bytes) -> object:
    kind = client.type(key)
    assert isinstance(kind, bytes)
    readers = {
        b"string": lambda: client.get(key),
        b"hash": lambda: client.hgetall(key),
        b"set": lambda: client.smembers(key),
        b"list": lambda: client.lrange(key, 0, -1),
        b"zset": lambda: client.zrange(key, 0, -1, withscores=True),
        b"stream": lambda: client.xrange(key),
    }
    return kind, readers[kind]()


def test_round_trip_keeps_every_type_byte_for_byte_with_ttls(source: Seeded, target: redis.Redis) -> None:
    client, summary = source
    backup_time = now_ms()

    data, result = dump_all(client, backup_time)
    restored = rl.restore_records(target, chunked(data), now_ms=now_ms(), mode="replace")

    before, after = snapshot(client), snapshot(target)
    short = set(summary.short_ttl_keys)
    assert set(before) - short == set(after) - short
    assert ALL_TYPES <= set(result.type_counts)
    assert result.keys_written == sum(result.prefix_counts.values()) == restored.restored
    assert restored.complete and restored.records_processed == result.keys_written
    reordered = 0
    for key in set(after) - short:
        (payload, ttl), (restored_payload, restored_ttl) = before[key], after[key]
        if payload[0] in (2, 4):
            # Hash-table sets and hashes: DUMP lists elements in each server's seeded hash
            # order, so only the elements (and the value read back) can be compared.
            reordered += restored_payload != payload
            assert same_value(payload, restored_payload)
            assert logical_value(client, key) == logical_value(target, key)
        else:
            assert restored_payload == payload
        assert (ttl == -1) == (restored_ttl == -1)
        assert abs(restored_ttl - ttl) <= 1000
    assert reordered > 0  # the seeded data does exercise the element-order case
    assert restored.prefix_counts == rl.count_keys_by_prefix(target)


def test_same_value_rejects_different_elements(source: Seeded) -> None:
    client, _ = source
    task = next(client.scan_iter(match="servalsheets:task:task_*"))
    original = dump(client, task)
    client.hset(task, "status", "completed")
    changed = dump(client, task)

    assert original[0] == changed[0] == 4
    assert not same_value(original, changed)
    assert not same_value(original, original[:-11] + original[-10:])


def test_dump_result_counts_match_the_seeded_mix(source: Seeded) -> None:
    client, summary = source

    _, result = dump_all(client, now_ms())

    expected = Counter(summary.prefix_counts)
    got = Counter(result.prefix_counts)
    # The 1.5 s key may have expired before the dump reached it.
    assert expected - got <= Counter({"code:": len(summary.short_ttl_keys)})
    assert got == Counter(rl.count_keys_by_prefix(client))
    assert result.bytes_written > 1000 * KEYS // 2
    assert result.keys_skipped_vanished == 0


def test_dump_continues_across_calls_with_a_tiny_deadline(source: Seeded, target: redis.Redis) -> None:
    client, _ = source
    backup_time = now_ms()
    _, whole = dump_all(client, backup_time)

    parts: list[bytes] = []
    cursor, written = 0, 0
    while True:
        sink = io.BytesIO()
        part = rl.dump_keys(
            client, sink, backup_time_ms=backup_time, cursor=cursor, deadline=0.0,
            scan_count=200, batch=100,
        )  # fmt: skip
        parts.append(sink.getvalue())
        written += part.keys_written
        cursor = part.next_cursor
        if part.complete:
            break

    assert len(parts) > 3
    assert abs(written - whole.keys_written) <= 1  # the 1.5 s key may expire in between
    restored = sum(
        rl.restore_records(target, iter([p]), now_ms=now_ms(), mode="merge").restored for p in parts
    )
    assert restored == written == target.dbsize()


def test_restore_resumes_from_records_processed(source: Seeded, target: redis.Redis) -> None:
    client, _ = source
    data, result = dump_all(client, now_ms())

    calls, processed, restored = 0, 0, 0
    while True:
        part = rl.restore_records(
            target, chunked(data), now_ms=now_ms(), mode="merge",
            skip_records=processed, deadline=0.0, batch=300,
        )  # fmt: skip
        calls += 1
        processed, restored = part.records_processed, restored + part.restored
        if part.complete:
            break

    assert calls >= result.keys_written // 300
    assert processed == result.keys_written
    assert restored == target.dbsize() == result.keys_written


# --------------------------------------------------------------------------- TTLs and modes


def test_keys_whose_ttl_ran_out_since_the_backup_are_skipped(source: Seeded, target: redis.Redis) -> None:
    client, _ = source
    backup_time = now_ms()
    data, _ = dump_all(client, backup_time)
    before = snapshot(client)
    short_lived = {k for k, (_, ttl) in before.items() if 0 <= ttl <= 5 * MINUTE_MS}

    result = rl.restore_records(target, chunked(data), now_ms=backup_time + 10 * MINUTE_MS, mode="replace")

    after = snapshot(target)
    assert short_lived and not short_lived & set(after)
    assert result.skipped_expired >= len(short_lived)
    assert all(ttl == -1 for k, (_, ttl) in after.items() if k.startswith(b"servalsheets:mcp:"))
    refresh = next(k for k in after if k.startswith(b"refresh:"))
    assert abs(after[refresh][1] - (before[refresh][1] - 10 * MINUTE_MS)) <= 1000


def test_merge_overwrites_shared_keys_and_keeps_extra_ones(source: Seeded, target: redis.Redis) -> None:
    client, _ = source
    data, _ = dump_all(client, now_ms())
    shared = next(k for k in client.scan_iter(match="refresh:*"))
    target.set(shared, b"stale")
    target.set(b"extra:1", b"kept")

    result = rl.restore_records(target, chunked(data), now_ms=now_ms(), mode="merge")

    assert dump(target, shared) == dump(client, shared)
    assert target.get(b"extra:1") == b"kept"
    assert result.kept_existing == 0


def test_missing_only_keeps_existing_values(source: Seeded, target: redis.Redis) -> None:
    client, _ = source
    data, dumped = dump_all(client, now_ms())
    shared = next(k for k in client.scan_iter(match="google_tokens:*"))
    target.set(shared, b"newer")

    result = rl.restore_records(target, chunked(data), now_ms=now_ms(), mode="missing-only")

    assert target.get(shared) == b"newer"
    assert result.kept_existing == 1
    assert result.restored + result.kept_existing + result.skipped_expired == dumped.keys_written


def test_patterns_restore_only_the_oauth_keys(source: Seeded, target: redis.Redis) -> None:
    client, _ = source
    data, dumped = dump_all(client, now_ms())

    result = rl.restore_records(
        target, chunked(data), now_ms=now_ms(), mode="merge", patterns=OAUTH_KEY_PATTERNS
    )

    oauth = {"dcr:", "mcp_consent:", "refresh:", "google_tokens:", "webhook:", "webhooks:"}
    assert set(result.prefix_counts) == oauth
    assert set(rl.count_keys_by_prefix(target)) == oauth
    assert result.restored + result.skipped_pattern == dumped.keys_written
    assert result.restored == sum(dumped.prefix_counts[p] for p in oauth)


def test_dry_run_plan_matches_the_restore(source: Seeded, target: redis.Redis) -> None:
    client, _ = source
    backup_time = now_ms()
    data, _ = dump_all(client, backup_time)
    later = backup_time + 11 * MINUTE_MS

    plan = rl.plan_restore(chunked(data), now_ms=later, patterns=["refresh:*", "servalsheets:*"])
    result = rl.restore_records(
        target,
        chunked(data),
        now_ms=later,
        mode="replace",
        patterns=["refresh:*", "servalsheets:*"],
    )

    assert target.dbsize() == result.restored == plan["would_restore_total"]
    assert plan["would_restore"] == dict(sorted(result.prefix_counts.items()))
    assert plan["skipped_expired"] == result.skipped_expired > 0
    assert plan["skipped_pattern"] == result.skipped_pattern > 0


def test_restored_ttls_count_the_time_spent_fetching_the_stream(source: Seeded, target: redis.Redis) -> None:
    # Given a dump whose first chunk takes a second to arrive (an S3 read and a KMS call, say)
    client, _ = source
    backup_time = now_ms()
    data, _ = dump_all(client, backup_time)

    def slow_first_chunk() -> Iterator[bytes]:
        time.sleep(1.0)
        yield from chunked(data)

    # When it is restored with the clock read just before the call
    rl.restore_records(target, slow_first_chunk(), now_ms=now_ms(), mode="replace")

    # Then every TTL has run down by that second too, as it has on the source (each pair of PTTLs
    # is read back to back, so the comparison itself adds no delay)
    gaps = {
        k: target.pttl(k) - client.pttl(k) for k in target.scan_iter(count=1000) if target.pttl(k) > 60_000
    }
    assert gaps
    assert [(k, gap) for k, gap in gaps.items() if gap > 250] == []


def test_one_dry_run_gives_the_keys_alive_now_and_those_still_alive_later(source: Seeded) -> None:
    client, _ = source
    backup_time = now_ms()
    data, _ = dump_all(client, backup_time)
    later = backup_time + 11 * MINUTE_MS

    both = rl.plan_restore(chunked(data), now_ms=backup_time, later_ms=later)
    now_only = rl.plan_restore(chunked(data), now_ms=backup_time)
    at_later = rl.plan_restore(chunked(data), now_ms=later)

    assert both["would_restore"] == now_only["would_restore"]
    assert both["still_alive_later"] == at_later["would_restore"]
    assert sum(both["still_alive_later"].values()) < both["would_restore_total"]  # some keys expire
    assert "still_alive_later" not in now_only


def test_one_dry_run_counts_the_keys_of_each_pattern_on_its_own(source: Seeded) -> None:
    client, _ = source
    backup_time = now_ms()
    data, _ = dump_all(client, backup_time)
    later = backup_time + 11 * MINUTE_MS
    patterns = ["refresh:*", "servalsheets:*", "no-such-family:*"]

    plan = rl.plan_restore(chunked(data), now_ms=later, patterns=patterns, count_each_pattern=True)

    for pattern in patterns:  # what one dry run per pattern finds: matching keys, expired or not
        alone = rl.plan_restore(chunked(data), now_ms=later, patterns=[pattern])
        assert plan["keys_per_pattern"][pattern] == alone["would_restore_total"] + alone["skipped_expired"]
    assert plan["keys_per_pattern"]["no-such-family:*"] == 0 < plan["keys_per_pattern"]["refresh:*"]


def test_compare_sample_passes_after_restore_and_spots_a_changed_key(
    source: Seeded, target: redis.Redis
) -> None:
    client, _ = source
    data, dumped = dump_all(client, now_ms())
    rl.restore_records(target, chunked(data), now_ms=now_ms(), mode="replace")

    good = rl.compare_sample(chunked(data), target, now_ms=now_ms(), sample_size=300, seed=1)
    changed = next(k for k in target.scan_iter(match="dcr:*"))
    target.set(changed, b"tampered", keepttl=True)
    full = rl.compare_sample(chunked(data), target, now_ms=now_ms(), sample_size=KEYS * 2)

    assert good.ok and good.sampled == 300
    assert not full.ok
    assert full.payload_mismatch == 1 and full.mismatch_prefixes == {"dcr:": 1}
    assert full.sampled == full.eligible <= dumped.keys_written


def test_a_sampled_key_that_runs_out_while_a_long_stream_is_read_is_not_a_mismatch(
    redis_server: RedisServer, target: redis.Redis
) -> None:
    # Given 100 keys with 2.5 s to live and 100 without expiry, restored, and a verification
    # whose stream takes 3 s more to read to its end (a large dump: S3, KMS, decryption)
    client = client_for(redis_server)
    for i in range(100):
        client.set(b"rate:%03d" % i, b"1", px=2500)
        client.set(b"dcr:%03d" % i, b"1")
    data, _ = dump_all(client, now_ms())
    client.close()
    rl.restore_records(target, chunked(data), now_ms=now_ms(), mode="replace")

    def slow_to_finish() -> Iterator[bytes]:
        yield from chunked(data)
        time.sleep(3.0)

    # When every key is sampled (each still has over a second to live when it is picked)
    report = rl.compare_sample(slow_to_finish(), target, now_ms=now_ms(), sample_size=500)

    # Then the keys that ran out before their DUMP are counted apart, and the rest all match
    assert report.ok, report.as_dict()
    assert report.eligible == 200 and report.expired_while_checked == 100 and report.sampled == 100


# --------------------------------------------------------------------------- failure cases


def test_keys_deleted_between_scan_and_dump_are_skipped(
    redis_server: RedisServer, target: redis.Redis
) -> None:
    client = client_for(redis_server)
    seed_servalsheets(client, KEYS, seed=3)
    other = client_for(redis_server)

    class FlushAfterFirstBatch(io.BytesIO):
        writes = 0

        def write(self, data: bytes) -> int:  # type: ignore[override]
            self.writes += 1
            if self.writes == 2:  # header first, then the first batch of records
                other.flushall()
            return super().write(data)

    sink = FlushAfterFirstBatch()
    # One SCAN returns every key; DUMPs then go out 100 at a time after the flush.
    result = rl.dump_keys(
        client, sink, backup_time_ms=now_ms(), scan_count=100_000, batch=100, write_behind=False
    )

    assert result.keys_skipped_vanished >= KEYS - 3 * 100
    assert result.keys_written + result.keys_skipped_vanished >= KEYS - 1
    restored = rl.restore_records(target, iter([sink.getvalue()]), now_ms=now_ms(), mode="merge")
    assert restored.complete and restored.restored == result.keys_written


def test_a_failing_sink_surfaces_its_own_error(source: Seeded) -> None:
    client, _ = source

    class FailingUpload:
        writes = 0

        def write(self, data: bytes) -> int:
            self.writes += 1
            if self.writes == 3:
                raise TransientError("upload part 3 failed")
            return len(data)

    for write_behind in (True, False):
        with pytest.raises(TransientError, match="upload part 3 failed"):
            rl.dump_keys(
                client, FailingUpload(), backup_time_ms=now_ms(), batch=100,
                write_behind=write_behind,
            )  # fmt: skip


@pytest.mark.parametrize(
    "cut",
    [
        pytest.param(lambda d: d[: len(d) - END_RECORD.size], id="end-record-missing"),
        pytest.param(lambda d: d[: len(d) // 2], id="cut-inside-a-record"),
        pytest.param(lambda d: d[:10], id="cut-inside-the-header"),
        pytest.param(lambda d: d[: -END_RECORD.size] + encode_end(5, 0), id="count-mismatch"),
        pytest.param(lambda d: d + b"\x00", id="trailing-bytes"),
        pytest.param(lambda d: b"X" + d[1:], id="bad-magic"),
    ],
)
def test_damaged_streams_are_refused(
    source: Seeded, target: redis.Redis, cut: Callable[[bytes], bytes]
) -> None:
    client, _ = source
    data, _ = dump_all(client, now_ms())
    damaged = cut(data)

    with pytest.raises(IntegrityError) as planned:
        rl.plan_restore(chunked(damaged), now_ms=now_ms())
    with pytest.raises(IntegrityError):
        rl.restore_records(target, chunked(damaged), now_ms=now_ms(), mode="merge")

    assert planned.value.check == "redis dump stream"


def test_payload_the_target_cannot_load_is_a_clear_error(source: Seeded, target: redis.Redis) -> None:
    client, _ = source
    key = next(client.scan_iter(match="refresh:*"))
    payload = bytearray(dump(client, key))
    payload[-1] ^= 0xFF  # the CRC64 no longer matches, as for an unknown RDB version
    stream = (
        encode_header(now_ms(), 0, "99.0.0") + encode_key_record(key, bytes(payload), -1) + encode_end(1, 0)
    )

    with pytest.raises(RedisBackupError, match="incompatible with the source"):
        rl.restore_records(target, iter([stream]), now_ms=now_ms(), mode="merge")


def test_dead_port_is_transient_and_never_shows_the_password() -> None:
    port = free_port()
    url = f"redis://backup:s3cret-pw@127.0.0.1:{port}/0"

    with pytest.raises(TransientError) as connecting:
        rl.connect(url, socket_timeout=2)
    dead = redis.Redis.from_url(url, socket_connect_timeout=2)
    with pytest.raises(TransientError) as dumping:
        rl.dump_keys(dead, io.BytesIO(), backup_time_ms=now_ms())

    for error in (connecting.value, dumping.value):
        assert f"127.0.0.1:{port}" in str(error)
        assert "s3cret-pw" not in str(error) and "s3cret-pw" not in repr(error)
    assert "s3cret-pw" not in rl.redact_url(url)


def test_connect_with_credentials_in_the_url() -> None:
    server = start_redis(password="pw-for-test")
    try:
        good = rl.connect(server.url)
        assert good.ping()
        wrong = server.url.replace("pw-for-test", "not-the-pw")
        with pytest.raises(RedisBackupError) as refused:
            rl.connect(wrong)
        assert "not-the-pw" not in str(refused.value)
        good.close()
    finally:
        server.stop()


def test_seed_is_deterministic(redis_server: RedisServer, target: redis.Redis) -> None:
    first = client_for(redis_server)
    a = seed_servalsheets(first, 500, seed=11, now_ms=1_775_300_000_000)
    b = seed_servalsheets(target, 500, seed=11, now_ms=1_775_300_000_000)

    short = set(a.short_ttl_keys)
    keys = set(first.scan_iter(count=1000)) - short
    assert a == b and a.total == 500
    assert keys == set(target.scan_iter(count=1000)) - short
    strings = sorted(k for k in keys if first.type(k) == b"string")
    assert first.mget(strings) == target.mget(strings)


# --------------------------------------------------------------------------- small helpers


def test_redact_url_hides_passwords_and_keeps_the_rest() -> None:
    assert rl.redact_url("rediss://app:p%40ss@cache.example:6380/0") == (
        "rediss://app:***@cache.example:6380/0"
    )
    assert rl.redact_url("redis://secretonly@h:1") == "redis://***@h:1"
    assert "hunter2" not in rl.redact_url("redis://h:1/0?password=hunter2&db=0")
    assert rl.redact_url("redis://h:6379/0") == "redis://h:6379/0"


@pytest.mark.parametrize(
    ("key", "prefix"),
    [
        (b"dcr:dcr_1", "dcr:"),
        (b"mcp_consent:c", "mcp_consent:"),
        (b"google_tokens:user:c:u", "google_tokens:"),
        (b"servalsheets:session:1:state", "servalsheets:session:"),
        (b"servalsheets:http-session:1:state", "servalsheets:http-session:"),
        (b"servalsheets:task:result:x", "servalsheets:task:"),
        (b"servalsheets:other:x", "other"),
        (b"servalsheets:session", "other"),
        (b"webhook:queue:pending", "webhook:"),
        (b"webhooks:spreadsheet:1", "webhooks:"),
        (b"rate:u:minute:1", "rate:"),
        (b"refresh", "other"),
        (b"\xff\xfe:binary", "other"),
    ],
)
def test_key_prefix(key: bytes, prefix: str) -> None:
    assert key_prefix(key) == prefix


@pytest.mark.parametrize(
    ("pattern", "key", "matches"),
    [
        ("refresh:*", b"refresh:abc", True),
        ("refresh:*", b"refreshx", False),
        ("h?llo", b"hallo", True),
        ("h[ae]llo", b"hello", True),
        ("h[^e]llo", b"hello", False),
        ("h[a-b]llo", b"hbllo", True),
        ("h[b-a]llo", b"hallo", True),
        ("h\\*llo", b"h*llo", True),
        ("h\\*llo", b"hallo", False),
        ("*", b"\xff\x00\n", True),
        ("a.b", b"axb", False),
    ],
)
def test_patterns_follow_redis_glob_rules(pattern: str, key: bytes, matches: bool) -> None:
    matcher = compile_patterns([pattern])
    assert matcher is not None
    assert bool(matcher(key)) is matches


# --------------------------------------------------------------------------- expiry per key read


def _keys_with_known_expiries(client: redis.Redis, count: int) -> dict[bytes, int]:
    """``count`` keys whose absolute expiry (PXAT) is known exactly, an hour or two away."""
    base = now_ms() + 60 * MINUTE_MS
    expiries = {b"refresh:%05d" % i: base + i * 1000 for i in range(count)}
    pipe = client.pipeline(transaction=False)
    for key, at in expiries.items():
        pipe.set(key, b"v", pxat=at)
    pipe.execute()
    return expiries


class _SlowSink(io.BytesIO):
    """A sink (compression, encryption, S3) that takes 50 ms per write."""

    def write(self, data: bytes) -> int:  # type: ignore[override]
        time.sleep(0.05)
        return super().write(data)


def test_a_slow_dump_records_each_keys_own_expiry(redis_server: RedisServer) -> None:
    # Given 3,000 keys with known expiries, dumped 100 per batch into a sink slow enough that
    # the last batch is read seconds after backup_time_ms
    client = client_for(redis_server)
    expiries = _keys_with_known_expiries(client, 3000)
    sink = _SlowSink()
    started = time.monotonic()
    backup_time = now_ms()
    rl.dump_keys(client, sink, backup_time_ms=backup_time, batch=100, scan_count=100)
    client.close()
    assert time.monotonic() - started > 1.0  # the dump really was spread out

    # Then every record's expiry (backup_time_ms + ttl) is the key's real one, to a few ms:
    # each batch's TTLs are offset by the time that batch was read, not by the start
    recorded = {k: backup_time + ttl for k, _, ttl in RecordStream([sink.getvalue()])}
    errors = [abs(recorded[k] - at) for k, at in expiries.items()]
    assert len(errors) == 3000 and max(errors) < 100


def test_a_slow_restore_gives_each_key_its_own_expiry(redis_server: RedisServer, target: redis.Redis) -> None:
    # Given a dump of 3,000 keys with known expiries, restored 100 per batch from chunks that
    # arrive over about three seconds (a slow S3 read)
    client = client_for(redis_server)
    expiries = _keys_with_known_expiries(client, 3000)
    data, _ = dump_all(client, now_ms())
    client.close()

    def trickle() -> Iterator[bytes]:
        for piece in chunked(data, 2048):
            time.sleep(0.03)
            yield piece

    rl.restore_records(target, trickle(), now_ms=now_ms(), mode="replace", batch=100)

    # Then each restored key expires when the original did (PEXPIRETIME), to a few ms, however
    # late its batch was written
    pipe = target.pipeline(transaction=False)
    for key in expiries:
        pipe.pexpiretime(key)
    restored = dict(zip(expiries, pipe.execute(), strict=True))
    errors = [abs(restored[k] - at) for k, at in expiries.items()]
    assert max(errors) < 100, sorted(errors)[-5:]
