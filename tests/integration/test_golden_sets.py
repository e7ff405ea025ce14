"""Sets written by earlier format versions (tests/vectors/sets-v*) still verify and restore.

Each golden set was written once by the code of its time through the deployed backup state
machine (``tests/vectors/make_golden_sets.py``); its data keys are wrapped for the checked-in
test escrow key, so no KMS is needed to read it. What it must restore to was computed from the
source Redis and token store when it was written, not from the set.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
import redis
from moto import mock_aws

from servalsheets_backup.components import redis_logical
from servalsheets_backup.components.config import ConfigBundle
from servalsheets_backup.format.keys import EscrowKeyring
from servalsheets_backup.format.rdb_entries import record_stream_from_rdb
from servalsheets_backup.store.sets import BackupStore, SetRef
from servalsheets_backup_local.testing.redis_server import RedisServer
from tests.vectors.golden import ESCROW_KEY_FILE, VECTORS, expected, golden_dirs, keyspace

pytestmark = pytest.mark.integration
BUCKET = "ssbk-golden"
SHORT_TTL_MS = 10_000  # keys this close to expiry at backup time may or may not survive a restore
TTL_SLACK_MS = 60_000


@pytest.fixture(params=golden_dirs(), ids=lambda path: f"{path.parent.name}-{path.name}")
def golden(request: pytest.FixtureRequest) -> Iterator[tuple[Path, BackupStore, SetRef]]:
    """A fresh bucket holding one golden set, read through the test escrow key."""
    set_dir: Path = request.param
    facts = expected(set_dir)
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        objects = set_dir / "objects"
        for path in sorted(objects.rglob("*")):
            if path.is_file():
                s3.put_object(Bucket=BUCKET, Key=path.relative_to(objects).as_posix(), Body=path.read_bytes())
        keyring = EscrowKeyring.from_pem((VECTORS / ESCROW_KEY_FILE).read_bytes())
        store = BackupStore(s3, BUCKET, keyring, environment=facts["environment"], kms_key_id="unused")
        yield set_dir, store, store.find(facts["backup_id"], facts["kind"])


def test_golden_sets_exist_for_format_v1() -> None:
    assert {path.parent.name for path in golden_dirs()} >= {"sets-v1"}
    assert {path.name for path in golden_dirs() if path.parent.name == "sets-v1"} == {"logical", "rdb-stream"}


def test_golden_set_verifies(golden: tuple[Path, BackupStore, SetRef]) -> None:
    _, store, ref = golden
    report = store.verify_set(ref)
    assert report.ok, report.first_failure()
    assert {check.name for check in report.checks} >= {"manifest.json", "config.bundle", "tokens.encrypted"}


def test_golden_set_restores_tokens_and_config(golden: tuple[Path, BackupStore, SetRef]) -> None:
    set_dir, store, ref = golden
    manifest = store.load_manifest(ref)
    (tokens,) = manifest.objects_of("tokens")
    data = b"".join(store.read_object(ref, tokens))
    assert hashlib.sha256(data).hexdigest() == expected(set_dir)["tokens_sha256"]
    (config,) = manifest.objects_of("config")
    bundle = ConfigBundle.from_bytes(b"".join(store.read_object(ref, config)))
    assert bundle.secrets and bundle.parameters and bundle.files


def _restore_redis(store: BackupStore, ref: SetRef, client: redis.Redis, patterns: list[str] | None) -> int:
    manifest = store.load_manifest(ref)
    backup_ms = int(manifest.components["redis"]["backup_time_ms"])
    restored = 0
    for entry in manifest.objects_of("redis"):
        chunks = store.read_object(ref, entry)
        is_dump = entry.name.startswith(redis_logical.CHUNK_PREFIX)
        records = chunks if is_dump else record_stream_from_rdb(chunks)
        result = redis_logical.restore_records(
            client, records, now_ms=backup_ms + 1_000, mode="replace", patterns=patterns, subject=entry.name
        )
        assert result.complete
        restored += result.restored
    return restored


@pytest.mark.parametrize("patterns", [None, ["servalsheets:*", "refresh:*"]], ids=["every-key", "patterns"])
def test_golden_set_restores_redis(
    golden: tuple[Path, BackupStore, SetRef], redis_target: RedisServer, patterns: list[str] | None
) -> None:
    set_dir, store, ref = golden
    source = expected(set_dir)["redis"]
    wanted = {
        key: facts
        for key, facts in source.items()
        if patterns is None or any(key.startswith(pattern[:-1]) for pattern in patterns)
    }
    client = redis.Redis.from_url(redis_target.url)
    try:
        client.flushall()
        restored = _restore_redis(store, ref, client, patterns)
        found = keyspace(client)
    finally:
        client.close()
    assert restored >= len(found)  # more only by keys that expired since (checked below)
    assert set(found) <= set(wanted), sorted(set(found) - set(wanted))[:5]
    for key, facts in wanted.items():
        if key not in found:
            assert 0 <= facts["pttl"] < SHORT_TTL_MS, f"{key} was not restored"
            continue
        assert found[key]["digest"] == facts["digest"], key
        if facts["pttl"] < 0:
            assert found[key]["pttl"] == -1, key
        else:
            assert facts["pttl"] - TTL_SLACK_MS <= found[key]["pttl"] <= facts["pttl"] + 1_000, key
    assert len(found) > 0.9 * len(wanted) > 0
