"""The drill's independent Redis checker: right at every size, and able to fail.

The pure tests build snapshots by hand, with the read times a snapshot of a million keys
really has (minutes between the reference and the check); the real-server tests read two
redis-servers, one a faithful copy of the other, then break the copy one key at a time.
"""

from __future__ import annotations

import redis

from servalsheets_backup.format.redis_keys import compile_patterns
from servalsheets_backup_local.testing.keyspace import (
    TTL_TOLERANCE_MS,
    Keyspace,
    KeyState,
    capture_after,
    capture_keyspace,
    compare_keyspaces,
)
from servalsheets_backup_local.testing.redis_server import RedisServer
from servalsheets_backup_local.testing.seed import seed_servalsheets

T0 = 1_800_000_000_000
MINUTE = 60_000
STRING = b"\x00\x05hello\x0b\x00" + bytes(8)  # a DUMP-shaped payload: type, value, version, CRC


def _state(pttl: int, at: int, payload: bytes = STRING, width: int = 3) -> KeyState:
    return KeyState(payload, pttl, at, at + width)


def _space(keys: dict[bytes, KeyState], absent: dict[bytes, int] | None = None, end: int = 0) -> Keyspace:
    return Keyspace(keys=keys, absent_at_ms=absent or {}, finished_ms=end)


def _copy_after(reference: Keyspace, elapsed_ms: int) -> Keyspace:
    """What a faithful restore shows ``elapsed_ms`` later: same expiries, smaller PTTLs."""
    keys = {}
    absent = {}
    for key, state in reference.keys.items():
        at = state.read_from_ms + elapsed_ms
        if state.persistent:
            keys[key] = _state(-1, at, state.payload)
        elif state.read_from_ms + state.pttl > at + 3:
            keys[key] = _state(state.pttl - elapsed_ms, at, state.payload)
        else:
            absent[key] = at
    return _space(keys, absent, T0 + elapsed_ms + 10)


def test_a_faithful_restore_checked_minutes_later_passes_and_expired_keys_are_not_missing() -> None:
    reference = _space(
        {
            b"refresh:a": _state(30 * 24 * 60 * MINUTE, T0),
            b"dcr:b": _state(-1, T0),
            b"rate:c": _state(90_000, T0),  # expires 1.5 minutes later
            b"servalsheets:mcp:d:seq": _state(4 * MINUTE, T0 + 5),
        }
    )
    verdict = compare_keyspaces(reference, _copy_after(reference, 10 * MINUTE))
    assert verdict.ok, verdict.as_dict()
    assert verdict.total("required") == 2 and verdict.total("restored") == 2
    assert dict(verdict.expired_before_check) == {"rate:": 1, "servalsheets:mcp:": 1}


def test_the_tolerance_does_not_grow_with_the_time_between_snapshots() -> None:
    reference = _space({b"refresh:a": _state(30 * 24 * 60 * MINUTE, T0)})
    for elapsed in (MINUTE, 30 * MINUTE, 6 * 60 * MINUTE):
        after = _copy_after(reference, elapsed)
        assert compare_keyspaces(reference, after).ok
        shifted = after.keys[b"refresh:a"]
        after.keys[b"refresh:a"] = KeyState(
            shifted.payload, shifted.pttl + TTL_TOLERANCE_MS + 10, *_at(shifted)
        )
        assert compare_keyspaces(reference, after).total("ttl_off") == 1


def _at(state: KeyState) -> tuple[int, int]:
    return state.read_from_ms, state.read_to_ms


def test_a_dropped_key_a_shifted_ttl_and_an_altered_value_each_fail() -> None:
    day = 24 * 60 * MINUTE
    reference = _space({b"refresh:%d" % i: _state(day + i, T0) for i in range(6)})
    after = _copy_after(reference, 7 * MINUTE)
    del after.keys[b"refresh:0"]
    after.absent_at_ms[b"refresh:0"] = T0 + 7 * MINUTE
    one = after.keys[b"refresh:1"]
    after.keys[b"refresh:1"] = KeyState(one.payload, one.pttl + MINUTE, *_at(one))
    two = after.keys[b"refresh:2"]
    after.keys[b"refresh:2"] = KeyState(two.payload.replace(b"hello", b"jello"), two.pttl, *_at(two))
    verdict = compare_keyspaces(reference, after)
    assert not verdict.ok
    assert verdict.total("missing") == verdict.total("ttl_off") == verdict.total("value_different") == 1
    assert verdict.examples == {
        "missing": [b"refresh:0"],
        "ttl_off": [b"refresh:1"],
        "value_different": [b"refresh:2"],
    }
    assert verdict.total("restored") == 3


def test_a_key_that_outlives_its_ttl_or_loses_or_gains_an_expiry_fails() -> None:
    reference = _space(
        {b"rate:a": _state(60_000, T0), b"dcr:b": _state(-1, T0), b"refresh:c": _state(10 * MINUTE, T0)}
    )
    later = T0 + 5 * MINUTE
    after = _space(
        {
            b"rate:a": _state(60_000, later),  # should have gone 4 minutes ago
            b"dcr:b": _state(MINUTE, later),  # gained an expiry
            b"refresh:c": _state(-1, later),  # lost its expiry
        },
        end=later + 10,
    )
    verdict = compare_keyspaces(reference, after)
    assert verdict.total("outlived_ttl") == 1 and verdict.total("ttl_off") == 2


def test_a_key_expiring_while_it_is_checked_is_neither_missing_nor_off() -> None:
    reference = _space({b"rate:a": _state(60_000, T0), b"rate:b": _state(60_000, T0)})
    check = T0 + 60_000 + TTL_TOLERANCE_MS // 2
    after = _space({b"rate:b": _state(1, check)}, absent={b"rate:a": check}, end=check + 10)
    verdict = compare_keyspaces(reference, after)
    assert verdict.ok and verdict.total("expiring_at_check") == 2
    assert verdict.total("required") == 0


def test_a_key_not_in_the_reference_is_unexpected_and_a_subset_is_judged_alone() -> None:
    reference = _space({b"refresh:a": _state(-1, T0), b"session:b": _state(-1, T0)})
    after = _space({b"refresh:a": _state(-1, T0 + 9), b"other:z": _state(-1, T0 + 9)}, end=T0 + 20)
    assert compare_keyspaces(reference, after).total("unexpected") == 1
    oauth_only = compare_keyspaces(reference, after, matcher=compile_patterns(["refresh:*"]))
    assert oauth_only.total("required") == 1 and oauth_only.total("unexpected") == 1


# -- against real redis-servers -------------------------------------------------------------------
def _copy(source: RedisServer, target: RedisServer) -> None:
    """DUMP every key with its PTTL and RESTORE it (a restore the checker has no part in)."""
    src, dst = redis.Redis.from_url(source.url), redis.Redis.from_url(target.url)
    try:
        for key in src.scan_iter(count=1000):
            payload, pttl = src.dump(key), src.pttl(key)
            if payload is not None and pttl != -2:
                dst.restore(key, max(pttl, 0), payload, replace=True)
    finally:
        src.close()
        dst.close()


def test_real_servers_a_faithful_copy_passes_then_each_break_is_found(
    redis_server: RedisServer, redis_target: RedisServer
) -> None:
    client = redis.Redis.from_url(redis_server.url)
    seed_servalsheets(client, 5000, seed=3)  # several read batches, every key type
    client.set(b"code:short", b"1", px=300)
    client.close()
    reference = capture_keyspace(redis_server.url, batch=512)
    _copy(redis_server, redis_target)
    clean = compare_keyspaces(reference, capture_after(redis_target.url, reference, batch=512))
    assert clean.ok, clean.as_dict()
    target = redis.Redis.from_url(redis_target.url)
    try:
        refresh = sorted(k for k in reference.keys if k.startswith(b"refresh:"))
        target.delete(refresh[0])
        target.pexpire(refresh[1], reference.keys[refresh[1]].pttl + MINUTE)
        target.set(refresh[2], b"altered", keepttl=True)
    finally:
        target.close()
    broken = compare_keyspaces(reference, capture_after(redis_target.url, reference, batch=512))
    assert broken.examples == {
        "missing": [refresh[0]],
        "ttl_off": [refresh[1]],
        "value_different": [refresh[2]],
    }
    assert broken.total("missing") == broken.total("ttl_off") == broken.total("value_different") == 1
