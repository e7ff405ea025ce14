"""Hostile inputs on the backup path: bad token store files and keys, bad RDB exports.

Each one fails the backup with a specific message (never the key, a token or file content),
records BackupFailed, leaves no set and no upload behind, and releases the lock.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from servalsheets_backup.cli.main import main
from servalsheets_backup.components import redis_snapshot as component_snapshot
from servalsheets_backup.errors import InvalidRdbError, TokenKeyMismatchError, TokenStoreError
from servalsheets_backup.format.tokenstore import encrypt_store
from servalsheets_backup.workflows import backup, backup_steps
from servalsheets_backup_local.testing.redis_server import start_redis

from .helpers import MiniStack

pytestmark = pytest.mark.reliability


@pytest.fixture
def tokens(shared_stack: MiniStack) -> Iterator[MiniStack]:
    """The stack, with its token store file put back afterwards."""
    original = shared_stack.token_path.read_bytes()
    yield shared_stack
    shared_stack.token_path.write_bytes(original)
    shared_stack.token_path.chmod(0o600)
    for leftover in shared_stack.token_path.parent.glob("tokens.encrypted.tmp"):
        leftover.unlink()


def _live_key(stack: MiniStack) -> bytes:
    return bytes.fromhex(stack.secret_values[0])


def _store(stack: MiniStack, **changes: Any) -> bytes:
    document = json.loads(encrypt_store({"access_token": "ya29.x"}, _live_key(stack)))
    document.update(changes)
    return json.dumps(document, indent=2).encode()


TOKEN_FILE_CASES: dict[str, tuple[Any, str]] = {
    "version-2": (lambda s: _store(s, version=2), "token store: unsupported token store version 2"),
    "version-as-text": (
        lambda s: _store(s, version="1"),
        "token store: field 'version' must be the number 1; got a string",
    ),
    "cleared-but-not-empty": (
        lambda s: _store(s, cleared=True),
        "token store is marked cleared but field 'iv' is not empty; a cleared store has empty iv, "
        "tag and ciphertext",
    ),
    "cleared-not-boolean": (
        lambda s: _store(s, cleared="yes"),
        "token store: field 'cleared' must be true or false; got a string",
    ),
    "truncated-json": (
        lambda s: _store(s)[:40],
        "token store is truncated: its JSON ends after 40 bytes before the object is complete "
        "(an interrupted write or copy)",
    ),
    "not-json": (
        lambda s: b"ENCRYPTION_KEY=0011\n",
        "token store is not JSON (Expecting value at line 1 column 1)",
    ),
    "not-utf8": (
        lambda s: b"\xff\xfe{}",
        "token store is not UTF-8 text (invalid byte at offset 0); it is not a ServalSheets token store",
    ),
    "empty": (lambda s: b"", "token store is empty (0 bytes)"),
    "json-list": (lambda s: b"[1, 2]", "token store: the JSON is a list, not an object"),
    "short-iv": (
        lambda s: _store(s, iv="AAEC"),
        "token store: field 'iv' decodes to 3 bytes; it must be 12 bytes",
    ),
    "tampered-ciphertext": (
        lambda s: _store(s, ciphertext="AAAA" + json.loads(_store(s))["ciphertext"][4:]),
        "the live token store key cannot decrypt this token store (AES-GCM authentication failed); "
        "ENCRYPTION_KEY/TOKEN_STORE_KEY does not match the key the file was written with",
    ),
}

KEY_CASES: dict[str, tuple[str, str]] = {
    "wrong-key": (
        "ff" * 32,
        "the live token store key cannot decrypt this token store (AES-GCM authentication failed); "
        "ENCRYPTION_KEY/TOKEN_STORE_KEY does not match the key the file was written with",
    ),
    "non-hex-key": (
        "zz" * 32,
        "the token store key must be 64 hexadecimal characters (32 bytes); it contains non-hex characters",
    ),
    "short-key": (
        "00112233",
        "the token store key must be 64 hexadecimal characters (32 bytes); got 8 characters",
    ),
    "key-with-newline": (
        "ab" * 32 + "\n",
        "the token store key must be 64 hexadecimal characters (32 bytes); got 65 characters "
        "(it has leading or trailing whitespace)",
    ),
}


def _backup_tokens_fails(stack: MiniStack, expected: str, error: type[Exception], **overrides: str) -> None:
    with pytest.raises(error) as failure:
        backup.run_backup(stack.services(**overrides), "tokens", owner="run")
    assert str(failure.value) == expected
    assert type(failure.value).__name__ in {"TokenStoreError", "TokenKeyMismatchError"}
    assert stack.sets("tokens") == [] and stack.keys("tokens/") == [] and stack.uploads() == []
    assert stack.lock(backup.lock_name("tokens")) is None
    assert stack.metrics.values("BackupFailed", "tokens") == [1]
    recorded = [r for r in stack.audit() if r["operation"] == "backup" and r["result"] == "failed"][-1]
    assert recorded["error"] == f"{type(failure.value).__name__}: {expected}"
    for secret in stack.secret_values + list(overrides.values()):
        assert secret.strip() not in expected


@pytest.mark.parametrize("case", sorted(TOKEN_FILE_CASES))
def test_bad_token_store_file_fails_the_backup_with_a_specific_message(
    tokens: MiniStack, case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    make, expected = TOKEN_FILE_CASES[case]
    tokens.token_path.write_bytes(make(tokens))
    error = TokenKeyMismatchError if "cannot decrypt" in expected else TokenStoreError
    _backup_tokens_fails(tokens, expected, error)
    assert main(["backup", "tokens"]) == 4
    assert capsys.readouterr().err == f"error: {expected}\n"


@pytest.mark.parametrize("case", sorted(KEY_CASES))
def test_bad_live_key_fails_the_backup_with_a_specific_message(
    tokens: MiniStack, case: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    key, expected = KEY_CASES[case]
    error = TokenKeyMismatchError if case == "wrong-key" else TokenStoreError
    _backup_tokens_fails(tokens, expected, error, ENCRYPTION_KEY=key)
    monkeypatch.setenv("ENCRYPTION_KEY", key)
    assert main(["backup", "tokens"]) == 4
    err = capsys.readouterr().err
    assert err == f"error: {expected}\n" and key.strip() not in err


def test_missing_store_with_a_leftover_tmp_names_both(tokens: MiniStack) -> None:
    path = tokens.token_path
    path.rename(path.with_name("tokens.encrypted.tmp"))
    expected = (
        f"token store file {path} is missing; a leftover {path}.tmp exists from an interrupted "
        "write and is not a token store"
    )
    try:
        _backup_tokens_fails(tokens, expected, TokenStoreError)
    finally:
        path.with_name("tokens.encrypted.tmp").rename(path)


def test_a_cleared_store_is_backed_up_and_reported_as_cleared(tokens: MiniStack) -> None:
    cleared = {"version": 1, "iv": "", "tag": "", "ciphertext": "", "createdAt": "2026-11-25T00:00:00.000Z"}
    tokens.token_path.write_bytes(json.dumps({**cleared, "cleared": True}, indent=2).encode())
    result = backup.run_backup(tokens.services(), "tokens", owner="run")
    manifest = tokens.services().store.load_manifest(tokens.sets("tokens")[0])
    assert manifest.backup_id == result.backup_id
    assert manifest.components["tokens"]["cleared"] is True
    assert manifest.components["tokens"]["tokens"] == {} or not any(
        manifest.components["tokens"]["tokens"].values()
    )


# -- RDB exports through the ingest step ---------------------------------------------------------
@pytest.fixture(scope="module")
def rdb_snapshot() -> Iterator[bytes]:
    """A real RDB file written by redis-server (SAVE)."""
    server = start_redis()
    try:
        client = redis.Redis.from_url(server.url)
        client.set("dcr:dcr_1", '{"client_secret":"x"}', ex=3600)
        client.rpush("webhook:queue:pending", *[f"job-{i}" for i in range(100)])
        client.hset("servalsheets:task:task_1", mapping={"status": "working"})
        client.save()
        client.close()
        yield (server.workdir / "dump.rdb").read_bytes()
    finally:
        server.stop()


def _corrupt_checksum(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 0x01])


RDB_CASES: dict[str, tuple[Any, str, str]] = {
    "wrong-magic": (
        lambda d: b"NOTREDIS" + d[8:],
        "rdb magic",
        "the file does not start with the RDB magic REDIS",
    ),
    "gzip": (
        lambda d: b"\x1f\x8b\x08\x00" + d,
        "rdb magic",
        "; it looks gzip-compressed: decompress it first",
    ),
    "unsupported-version": (lambda d: b"REDIS0099" + d[9:], "rdb version", "unsupported RDB version 99"),
    "valkey-9": (lambda d: b"VALKEY080" + d[9:], "rdb version", "unsupported RDB version 80 (Valkey 9+"),
    "bad-crc": (_corrupt_checksum, "rdb checksum", "CRC-64 of the content is"),
    "truncated": (lambda d: d[: len(d) // 2], "rdb truncated", "the file is cut short or corrupt"),
    "header-only": (lambda d: d[:5], "rdb truncated", "shorter than the 9-byte RDB header"),
}


def _staged_pending(stack: MiniStack, rdb: bytes) -> tuple[backup.PendingSet, str]:
    services = stack.services()
    pending = backup.begin(services, "redis", owner="snapshot-run")
    pending.source.update(snapshot_name="servalsheets-backup-test", expected_shards=1)
    key = component_snapshot.staging_prefix(pending.backup_id) + "servalsheets-backup-test-0001.rdb"
    stack.put(key, rdb)
    return pending, key


@pytest.mark.parametrize("case", sorted(RDB_CASES))
def test_bad_rdb_export_fails_the_ingest_step(
    shared_stack: MiniStack, rdb_snapshot: bytes, case: str
) -> None:
    stack = shared_stack
    change, check, detail = RDB_CASES[case]
    pending, key = _staged_pending(stack, change(rdb_snapshot))
    event = {"pending": pending.to_dict()}

    # When the state machine's ingest step runs, and its Catch records the failure
    with pytest.raises(InvalidRdbError) as failure:
        backup_steps.ingest_snapshot(stack.services(), event)
    assert failure.value.check == check
    assert detail in failure.value.detail
    assert str(failure.value).startswith(f"servalsheets-backup-test-0001.rdb: {check} failed (")
    error = {"Error": "InvalidRdbError", "Cause": json.dumps({"errorMessage": str(failure.value)})}
    recorded = backup_steps.fail(stack.services(), {**event, "error": error}, "snapshot-run")

    # Then the failure is recorded, nothing of the set remains, and the lock is free
    assert recorded == {"recorded": True, "kind": "redis", "error": f"InvalidRdbError: {failure.value}"}
    assert stack.metrics.values("BackupFailed", "redis") == [1]
    assert pending.backup_id not in [ref.backup_id for ref in stack.sets("redis")]
    assert [k for k in stack.keys("redis/") if pending.backup_id in k] == []
    assert stack.uploads() == []
    assert stack.lock(backup.lock_name("redis")) is None
    # A corrupt export will not get better: its plaintext is deleted at once, every version.
    versions = stack.client("s3").list_object_versions(Bucket=stack.bucket, Prefix=key)
    assert versions.get("Versions", []) == [] and versions.get("DeleteMarkers", []) == []


def test_good_rdb_export_is_ingested_and_the_plaintext_removed(
    shared_stack: MiniStack, rdb_snapshot: bytes
) -> None:
    stack = shared_stack
    pending, key = _staged_pending(stack, rdb_snapshot)
    done = backup_steps.ingest_snapshot(stack.services(), {"pending": pending.to_dict()})
    assert done["redis_done"] is True
    assert done["components"]["redis"]["shards"][0]["checksum_verified"] is True
    versions = stack.client("s3").list_object_versions(Bucket=stack.bucket, Prefix=key)
    assert versions.get("Versions", []) == [] and versions.get("DeleteMarkers", []) == []
    result = backup_steps.finalize(stack.services(), {"pending": done})
    assert stack.services().store.verify_set(stack.services().store.find(result["backup_id"], "redis")).ok
