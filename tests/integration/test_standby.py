"""The standby Region's side of a backup set, against moto with two Regions kept apart.

A set written in the primary Region under a multi-Region KMS key must decrypt in the standby
Region with the key's replica there; a set whose objects have not all been replicated must not
be listed, resolved or restored there.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass

import boto3
import pytest
from moto import mock_aws

from servalsheets_backup.errors import ConfigurationError, IncompleteSetError
from servalsheets_backup.format.keys import KmsKeyring, encryption_context
from servalsheets_backup.format.manifest import Manifest, new_backup_id
from servalsheets_backup.store.replicas import missing_objects
from servalsheets_backup.store.sets import BackupStore

pytestmark = pytest.mark.integration
PRIMARY, STANDBY = "us-east-1", "us-west-2"


@dataclass
class TwoRegions:
    primary_key: str
    replica_key: str
    primary: BackupStore
    standby: BackupStore


def _bucket(region: str, name: str) -> None:
    s3 = boto3.client("s3", region_name=region)
    location = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
    s3.create_bucket(Bucket=name, **location)
    s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})


@pytest.fixture
def regions() -> Iterator[TwoRegions]:
    with mock_aws():
        kms = boto3.client("kms", region_name=PRIMARY)
        primary_key = kms.create_key(MultiRegion=True)["KeyMetadata"]["Arn"]
        # moto 5.2.5's ReplicateKey wants the key id (an ARN raises KeyError); AWS takes either
        key_id = primary_key.rsplit("/", 1)[1]
        replica = kms.replicate_key(KeyId=key_id, ReplicaRegion=STANDBY)["ReplicaKeyMetadata"]["Arn"]
        _bucket(PRIMARY, "ssbk-primary")
        _bucket(STANDBY, "ssbk-standby")

        def store(region: str, bucket: str, key: str, replica: bool) -> BackupStore:
            keyring = KmsKeyring(boto3.client("kms", region_name=region), key)
            s3 = boto3.client("s3", region_name=region)
            return BackupStore(s3, bucket, keyring, environment="test", kms_key_id=key, replica=replica)

        yield TwoRegions(
            primary_key,
            replica,
            store(PRIMARY, "ssbk-primary", primary_key, replica=False),
            store(STANDBY, "ssbk-standby", replica, replica=True),
        )


def _write_set(primary: BackupStore) -> tuple[str, list[str]]:
    backup_id = new_backup_id()
    entries = [
        primary.write_object("redis", backup_id, name, "redis", b"x" * size, {"keys": 1})
        for name, size in (("redis/dump-0001", 5000), ("redis/dump-0002", 7000))
    ]
    ref = primary.commit(Manifest(backup_id, "redis", "2026-12-04T00:00:00Z", "test", entries, components={}))
    return backup_id, [ref.manifest_key, *[ref.prefix + entry.name for entry in entries]]


def _replicate(keys: list[str]) -> None:
    """What S3 Replication does for these keys (the drill's stand-in does it by the rules)."""
    source = boto3.client("s3", region_name=PRIMARY)
    target = boto3.client("s3", region_name=STANDBY)
    for key in keys:
        body = source.get_object(Bucket="ssbk-primary", Key=key)["Body"].read()
        target.put_object(Bucket="ssbk-standby", Key=key, Body=body)


def test_a_multi_region_key_replica_decrypts_data_keys_in_the_standby(regions: TwoRegions) -> None:
    assert regions.replica_key.split(":")[3] == STANDBY
    assert regions.replica_key.rsplit("/", 1)[1] == regions.primary_key.rsplit("/", 1)[1]
    context = encryption_context("20261204T000000Z-00000000", "redis", "redis/dump-0001", "test")
    data_key = regions.primary.keyring.new_data_key(context)
    assert regions.standby.keyring.unwrap(data_key.wrapped, context) == data_key.plaintext


def test_a_standby_without_the_replica_fails_naming_the_keys_and_the_region() -> None:
    with mock_aws():
        primary = boto3.client("kms", region_name=PRIMARY)
        key = primary.create_key(MultiRegion=True)["KeyMetadata"]["Arn"]  # never replicated
        context = encryption_context("20261204T000000Z-00000000", "redis", "redis/dump-0001", "test")
        data_key = KmsKeyring(primary, key).new_data_key(context)
        west = boto3.client("kms", region_name=STANDBY)
        local = west.create_key()["KeyMetadata"]["Arn"]
        with pytest.raises(ConfigurationError) as caught:
            KmsKeyring(west, local).unwrap(data_key.wrapped, context)
    message = str(caught.value)
    assert f"KMS in {STANDBY} cannot decrypt the data key of redis/dump-0001, wrapped under {key}" in message
    assert f"this stack's key is {local}" in message
    assert "replica there of the primary's multi-Region key" in message


def test_a_standby_set_counts_only_once_every_object_has_arrived(regions: TwoRegions) -> None:
    backup_id, keys = _write_set(regions.primary)
    manifest_key, *objects = keys

    # The manifest replicated first, one object still missing: not listed, refused by name
    _replicate([manifest_key, objects[0]])
    assert regions.standby.list_sets("redis") == []
    with pytest.raises(IncompleteSetError, match=r"1 of its objects have not arrived \(redis/dump-0002\)"):
        regions.standby.resolve(backup_id, "redis")
    # ... a truncated copy counts as missing too
    target = boto3.client("s3", region_name=STANDBY)
    target.put_object(Bucket="ssbk-standby", Key=objects[1], Body=b"x")
    assert regions.standby.list_sets("redis") == []
    assert (
        missing_objects(regions.primary, regions.primary.find(backup_id, "redis")) == []
    )  # the primary is whole

    # Once everything is there, the set is listed, verifies and reads with the replica key
    _replicate(objects[1:])
    (listed,) = regions.standby.list_sets("redis")
    assert listed.backup_id == backup_id
    assert regions.standby.resolve("latest", "redis") == listed
    assert regions.standby.verify_set(listed).ok


def test_the_cli_lists_and_verifies_the_standby_copy_against_the_primary(
    regions: TwoRegions, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from servalsheets_backup.adapters.aws import reset_clients
    from servalsheets_backup.cli.main import main

    reset_clients()
    backup_id, (manifest_key, *objects) = _write_set(regions.primary)
    monkeypatch.setenv("BACKUP_KMS_KEY_ID", regions.replica_key)
    monkeypatch.setenv("BACKUP_ENVIRONMENT", "test")
    standby = ["--region", STANDBY, "--bucket", "ssbk-standby", "--standby"]

    _replicate([manifest_key])  # the manifest first: the set is not complete in the standby yet
    capsys.readouterr()
    assert main([*standby, "list", "--json"]) == 0
    assert capsys.readouterr().out.strip() == "[]"

    _replicate(objects)
    assert main([*standby, "list", "--json"]) == 0
    assert [item["backup_id"] for item in json.loads(capsys.readouterr().out)] == [backup_id]
    against = ["--against-bucket", "ssbk-primary", "--against-region", PRIMARY]
    assert main([*standby, "verify", backup_id, "--json", *against]) == 0
    checks = json.loads(capsys.readouterr().out)["checks"]
    assert checks[-1] == {
        "object": "set",
        "ok": True,
        "check": "same as in ssbk-primary",
        "detail": "manifest bytes and object sizes equal",
    }

    # A copy that differs from the primary's is reported by name (exit 4)
    boto3.client("s3", region_name=PRIMARY).put_object(Bucket="ssbk-primary", Key=objects[1], Body=b"y" * 3)
    assert main([*standby, "verify", backup_id, "--json", *against]) == 4
    failed = [c for c in json.loads(capsys.readouterr().out)["checks"] if not c["ok"]]
    assert [c["object"] for c in failed] == ["redis/dump-0002"]
    assert os.environ.get("AWS_REGION") != STANDBY, "the options do not outlive the command"


def test_the_standby_freshness_check_names_replication_when_nothing_arrived(regions: TwoRegions) -> None:
    from servalsheets_backup.observability import CollectingMetrics
    from servalsheets_backup.services import Services
    from servalsheets_backup.settings import Settings
    from servalsheets_backup.workflows import freshness

    boto3.client("dynamodb", region_name=STANDBY).create_table(
        TableName="state",
        BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
    )
    settings = Settings.from_env(
        {
            "BACKUP_BUCKET": "ssbk-standby",
            "BACKUP_KMS_KEY_ID": regions.replica_key,
            "BACKUP_ENVIRONMENT": "test",
            "STATE_TABLE": "state",
            "STACK_ROLE": "standby",
            "AWS_REGION": STANDBY,
        }
    )
    metrics = CollectingMetrics()
    nothing = freshness.report(Services(settings, metrics))
    assert (
        "no complete config, tokens, redis, full set has arrived in the standby bucket" in nothing["warning"]
    )
    assert nothing["backup_age_seconds"]["redis"] == freshness.NEVER_SECONDS

    _, keys = _write_set(regions.primary)
    _replicate(keys)
    arrived = freshness.report(Services(settings, metrics))
    assert arrived["backup_age_seconds"]["redis"] < 3600
    assert "redis" not in arrived["warning"] and "config" in arrived["warning"]
