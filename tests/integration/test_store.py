"""The S3 backup store against moto: write, list, resolve, verify, detect tampering."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import boto3
import pytest
from moto import mock_aws

from servalsheets_backup.adapters.s3 import checksum_header, crc64nvme
from servalsheets_backup.errors import BackupNotFoundError, IntegrityError, InvalidInputError
from servalsheets_backup.format.keys import KmsKeyring
from servalsheets_backup.format.manifest import Manifest, new_backup_id
from servalsheets_backup.store.sets import EXPIRABLE_TAG, BackupStore, set_prefix

pytestmark = pytest.mark.integration
BUCKET = "ssbk-test-bucket"


@pytest.fixture
def store() -> Iterator[BackupStore]:
    with mock_aws():
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket=BUCKET)
        s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        kms = boto3.client("kms")
        key_id = kms.create_key()["KeyMetadata"]["Arn"]
        yield BackupStore(s3, BUCKET, KmsKeyring(kms, key_id), environment="test", kms_key_id=key_id)


def _write_set(
    store: BackupStore, kind: str = "config", payload: bytes = b"x" * 5000
) -> tuple[str, Manifest]:
    backup_id = new_backup_id()
    entry = store.write_object(kind, backup_id, "config.bundle", "config", payload, {"secrets": 2})
    big = store.open_object(kind, backup_id, "big.bin", "config")
    for _ in range(12):
        big.write(os.urandom(1 << 20))
    manifest = Manifest(backup_id, kind, "2026-11-25T02:00:00Z", "test", [entry, big.finish({"n": 12})])
    store.commit(manifest)
    return backup_id, manifest


def test_round_trip_and_verify(store: BackupStore) -> None:
    backup_id, manifest = _write_set(store)
    ref = store.resolve("latest", "config")
    assert ref.backup_id == backup_id
    report = store.verify_set(ref)
    assert report.ok, report.checks
    data = b"".join(store.read_object(ref, manifest.objects[0]))
    assert data == b"x" * 5000


def test_set_without_manifest_is_not_listed(store: BackupStore) -> None:
    backup_id = new_backup_id()
    store.write_object("redis", backup_id, "dump-0001", "redis", b"data", {})
    assert store.list_sets("redis") == []
    with pytest.raises(BackupNotFoundError):
        store.resolve("latest", "redis")


def _corrupt(store: BackupStore, key: str, position: int) -> None:
    body = bytearray(store.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    body[position % len(body)] ^= 0x01
    store.s3.put_object(Bucket=BUCKET, Key=key, Body=bytes(body))


@pytest.mark.parametrize("name", ["manifest.json", "config.bundle", "big.bin"])
@pytest.mark.parametrize("position", [0, 20, 200, -1, -5000])
def test_any_flipped_byte_fails_verification(store: BackupStore, name: str, position: int) -> None:
    backup_id, _ = _write_set(store)
    _corrupt(store, set_prefix("config", backup_id) + name, position)
    report = store.verify_set(store.find(backup_id))
    assert not report.ok
    failure = report.first_failure()
    assert failure is not None and failure.name == name


def test_object_swapped_between_sets_is_detected(store: BackupStore) -> None:
    first, _ = _write_set(store, payload=b"a" * 100)
    second, _ = _write_set(store, payload=b"b" * 100)
    old = store.s3.get_object(Bucket=BUCKET, Key=set_prefix("config", first) + "config.bundle")["Body"].read()
    store.s3.put_object(Bucket=BUCKET, Key=set_prefix("config", second) + "config.bundle", Body=old)
    failure = store.verify_set(store.find(second)).first_failure()
    assert failure is not None and failure.name == "config.bundle"
    assert failure.check == "context binding"


def test_resolve_rejects_bad_selectors(store: BackupStore) -> None:
    with pytest.raises(InvalidInputError):
        store.resolve({"as_of": "yesterday"}, "config")
    with pytest.raises(InvalidInputError):
        store.resolve("not-an-id", "config")


def test_newest_set_is_never_tagged_expirable(store: BackupStore) -> None:
    ids = [_write_set(store)[0] for _ in range(3)]
    newest = store.list_sets("config")[0]
    tagged = store.mark_expirable("config")
    assert set(tagged) == set(ids) - {newest.backup_id}
    assert store.mark_expirable("config") == []  # idempotent
    tags: Any = store.s3.get_object_tagging(Bucket=BUCKET, Key=newest.manifest_key)["TagSet"]
    assert {"Key": EXPIRABLE_TAG, "Value": "false"} in tags


def test_manifest_tamper_raises_integrity_error(store: BackupStore) -> None:
    backup_id, _ = _write_set(store)
    key = set_prefix("config", backup_id) + "manifest.json"
    text = (
        store.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read().replace(b'"secrets": 2', b'"secrets": 3')
    )
    store.s3.put_object(Bucket=BUCKET, Key=key, Body=text)
    with pytest.raises(IntegrityError, match="manifest authenticity"):
        store.load_manifest(store.find(backup_id))


def test_manifest_is_write_once(store: BackupStore) -> None:
    from servalsheets_backup.store.sets import SetExistsError

    backup_id, manifest = _write_set(store)
    with pytest.raises(SetExistsError):
        store.commit(manifest)
    assert [ref.backup_id for ref in store.list_sets("config")] == [backup_id]
    assert store.verify_set(store.find(backup_id)).ok


def test_an_object_of_another_format_version_than_its_entry_is_refused(store: BackupStore) -> None:
    import io

    from servalsheets_backup.format.envelope import EnvelopeWriter
    from servalsheets_backup.format.keys import encryption_context

    backup_id, manifest = _write_set(store)
    ref = store.resolve("latest", "config")
    entry = manifest.objects[0]
    assert entry.format_version == 2 and entry.tags_sha256 and entry.plaintext_sha256 is None
    context = encryption_context(backup_id, "config", entry.name, "test")
    v1 = io.BytesIO()
    writer = EnvelopeWriter(v1, store.keyring.new_data_key(context), context)
    writer.write(b"x" * 5000)
    writer.close()
    store.s3.put_object(Bucket=BUCKET, Key=ref.prefix + entry.name, Body=v1.getvalue())
    report = store.verify_set(ref)
    failure = report.first_failure()
    assert failure is not None and (failure.name, failure.check) == (entry.name, "format version")


def test_every_object_records_the_full_object_crc64nvme_s3_checks(store: BackupStore) -> None:
    backup_id, manifest = _write_set(store)
    prefix = set_prefix("config", backup_id)
    for entry in manifest.objects:
        stored = store.s3.get_object(Bucket=BUCKET, Key=prefix + entry.name)["Body"].read()
        assert entry.stored_crc64nvme == checksum_header(crc64nvme(stored)), entry.name
    head = store.s3.head_object(Bucket=BUCKET, Key=prefix + "big.bin", ChecksumMode="ENABLED")
    assert head["ChecksumType"] == "FULL_OBJECT"
    assert "ChecksumCRC64NVME" in head  # moto without awscrt stores a CRC32 under this name


def test_a_stored_crc64nvme_other_than_the_manifest_fails_the_read(store: BackupStore) -> None:
    backup_id, manifest = _write_set(store)
    ref = store.resolve("latest", "config")
    entry = manifest.objects[0]
    other = replace(entry, stored_crc64nvme=checksum_header(crc64nvme(b"another object")))
    with pytest.raises(IntegrityError, match="stored CRC64NVME"):
        b"".join(store.read_object(ref, other))
    assert b"".join(store.read_object(ref, entry)) == b"x" * 5000
