"""Restoring an ElastiCache-mode backup seeds a NEW replication group; rollback undoes it."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
import redis
from moto import mock_aws

from servalsheets_backup.adapters.aws import reset_clients
from servalsheets_backup.components import redis_snapshot as component_snapshot
from servalsheets_backup.errors import InvalidInputError
from servalsheets_backup.format.manifest import Manifest, new_backup_id
from servalsheets_backup.services import Services
from servalsheets_backup.settings import Settings
from servalsheets_backup.workflows import backup
from servalsheets_backup.workflows.restore import InjectedFault, run_restore
from servalsheets_backup_local.testing.redis_server import RedisServer

from .aws_account import create_backup_account

pytestmark = pytest.mark.integration
BUCKET = "ssbk-elasticache-restore"
SECRET = "servalsheets/redis-url"


@pytest.fixture
def services(monkeypatch: pytest.MonkeyPatch) -> Iterator[Services]:
    with mock_aws():
        reset_clients()
        key = create_backup_account(BUCKET)
        boto3.client("elasticache").create_replication_group(
            ReplicationGroupId="prod",
            ReplicationGroupDescription="prod",
            CacheNodeType="cache.r7g.large",
            Engine="redis",
            NumNodeGroups=1,
        )
        boto3.client("secretsmanager").create_secret(
            Name=SECRET, SecretString=json.dumps({"REDIS_URL": "redis://:hunter2-auth@master.prod:6379/0"})
        )
        monkeypatch.setenv("ALLOW_FAULT_INJECTION", "true")
        settings = Settings.from_env(
            {
                "BACKUP_BUCKET": BUCKET,
                "BACKUP_KMS_KEY_ID": key,
                "BACKUP_ENVIRONMENT": "test",
                "STATE_TABLE": "state",
                "REDIS_MODE": "elasticache",
                "ELASTICACHE_REPLICATION_GROUP_ID": "prod",
                "REDIS_URL_SECRET_ID": SECRET,
            }
        )
        yield Services(settings)
        reset_clients()


def _rdb(server: RedisServer) -> bytes:
    client = redis.Redis.from_url(server.url)
    client.set("refresh:abc", "x" * 100)
    client.save()
    client.close()
    return Path(server.workdir, "dump.rdb").read_bytes()


def _backup(services: Services, rdb: bytes) -> str:
    backup_id = new_backup_id()
    entry = services.store.write_object(
        "redis", backup_id, "redis/shard-0001.rdb", "redis", rdb, {"rdb_files": 1}
    )
    services.store.commit(
        Manifest(
            backup_id,
            "redis",
            "2026-11-25T02:00:00Z",
            "test",
            [entry],
            components={"redis": {"mode": "elasticache"}},
        )
    )
    return backup_id


def _request(**extra: object) -> dict[str, object]:
    return {
        "backup": "latest",
        "kinds": ["redis"],
        "requested_by": "test",
        "target": {"new_replication_group_id": "prod-restored", "update_redis_url_secret": True},
        **extra,
    }


def _secret() -> str:
    return json.loads(boto3.client("secretsmanager").get_secret_value(SecretId=SECRET)["SecretString"])[
        "REDIS_URL"
    ]


def test_seeds_a_new_group_and_points_the_secret_at_it(services: Services, redis_server: RedisServer) -> None:
    rdb = _rdb(redis_server)
    _backup(services, rdb)
    summary = run_restore(services, _request(), "tester")
    assert summary["outcome"] == "succeeded"
    group = boto3.client("elasticache").describe_replication_groups(ReplicationGroupId="prod-restored")
    endpoint = group["ReplicationGroups"][0]["NodeGroups"][0]["PrimaryEndpoint"]["Address"]
    assert summary["results"]["redis"]["endpoint"].startswith(endpoint)
    assert _secret() == f"redis://:hunter2-auth@{endpoint}:6379/0"
    assert group["ReplicationGroups"][0]["CacheNodeType"] == "cache.r7g.large"
    staged = boto3.client("s3").list_object_versions(Bucket=BUCKET, Prefix="staging/")
    assert not staged.get("Versions"), "plaintext RDB copies must be gone after seeding"
    assert "hunter2-auth" not in json.dumps(summary)


def test_failure_after_seeding_rolls_back_secret_and_group(
    services: Services, redis_server: RedisServer
) -> None:
    _backup(services, _rdb(redis_server))
    before = _secret()
    with pytest.raises(InjectedFault):
        run_restore(services, _request(fail_after="verify"), "tester")
    assert _secret() == before
    groups = boto3.client("elasticache").describe_replication_groups()["ReplicationGroups"]
    assert [g["ReplicationGroupId"] for g in groups if g.get("Status") != "deleting"] == ["prod"]


def test_rdb_backup_without_a_new_group_is_refused(services: Services, redis_server: RedisServer) -> None:
    _backup(services, _rdb(redis_server))
    with pytest.raises(InvalidInputError, match="new_replication_group_id"):
        run_restore(services, {"backup": "latest", "kinds": ["redis"]}, "tester")
    assert os.environ.get("ALLOW_FAULT_INJECTION") == "true"


class ThreeFileExport:
    """Stands in for CopySnapshot of a cluster-mode group (moto has no TargetBucket): one real RDB
    file per node group, named as ElastiCache names them (``<target name>-000N.rdb``)."""

    def __init__(self, rdbs: list[bytes]) -> None:
        self.rdbs = rdbs

    def export(self, snapshot_name: str, bucket: str, prefix: str) -> None:
        for index, rdb in enumerate(self.rdbs, start=1):
            boto3.client("s3").put_object(
                Bucket=bucket, Key=f"{prefix}{snapshot_name}-{index:04d}.rdb", Body=rdb
            )


def test_cluster_mode_group_keeps_every_node_group_and_seeds_the_same_slots(
    services: Services, redis_server: RedisServer
) -> None:
    # Given a cluster-mode-enabled source group of three node groups, each exporting its own RDB
    elasticache = boto3.client("elasticache")
    elasticache.create_replication_group(
        ReplicationGroupId="prod-sharded",
        ReplicationGroupDescription="prod, cluster mode enabled",
        CacheNodeType="cache.r7g.large",
        Engine="redis",
        ClusterMode="enabled",
        NumNodeGroups=3,
        NodeGroupConfiguration=[  # uneven, so a restore that ignored the layout would differ
            {"NodeGroupId": "0001", "Slots": "0-1000"},
            {"NodeGroupId": "0002", "Slots": "1001-9000"},
            {"NodeGroupId": "0003", "Slots": "9001-16383"},
        ],
    )
    source_groups = elasticache.describe_replication_groups(ReplicationGroupId="prod-sharded")
    source_slots = [g["Slots"] for g in source_groups["ReplicationGroups"][0]["NodeGroups"]]
    assert source_slots == ["0-1000", "1001-9000", "9001-16383"]
    sharded = dataclasses.replace(
        services,
        settings=dataclasses.replace(services.settings, replication_group_id="prod-sharded"),
        snapshot_exporter=ThreeFileExport([_rdb(redis_server) for _ in range(3)]),
    )

    # When the snapshot's export is ingested into a set
    pending = backup.begin(sharded, "redis", owner="test")
    component_snapshot.start_export(sharded, pending, "servalsheets-backup-test")
    pending, done = component_snapshot.ingest_exports(sharded, pending)
    assert done
    result = backup.finalize(sharded, pending)

    # Then the set keeps all three files and the node groups' slots
    manifest = sharded.store.load_manifest(sharded.store.find(result.backup_id, "redis"))
    summary = manifest.components["redis"]
    assert len(manifest.objects_of("redis")) == 3 and summary["cluster_mode"] is True
    assert [group["slots"] for group in summary["node_groups"]] == source_slots

    # ... and a restore seeds a new cluster-mode-enabled group, each node group with its slots
    summary = run_restore(sharded, _request(backup=result.backup_id), "tester")
    assert summary["outcome"] == "succeeded"
    restored = elasticache.describe_replication_groups(ReplicationGroupId="prod-restored")[
        "ReplicationGroups"
    ][0]
    assert restored["ClusterEnabled"] is True
    assert [g["Slots"] for g in restored["NodeGroups"]] == source_slots

    # ... and where the source group does not exist (a standby Region), the recorded shape is used
    assert manifest.components["redis"]["source_shape"] == {
        "Engine": "redis",
        "CacheNodeType": "cache.r7g.large",
    }
    elsewhere = dataclasses.replace(
        sharded,
        settings=dataclasses.replace(sharded.settings, replication_group_id="prod-in-the-lost-region"),
    )
    target = {"new_replication_group_id": "standby-restored", "update_redis_url_secret": False}
    summary = run_restore(elsewhere, {**_request(backup=result.backup_id), "target": target}, "tester")
    assert summary["outcome"] == "succeeded"
    seeded = elasticache.describe_replication_groups(ReplicationGroupId="standby-restored")[
        "ReplicationGroups"
    ][0]
    assert seeded["CacheNodeType"] == "cache.r7g.large"
    assert [g["Slots"] for g in seeded["NodeGroups"]] == source_slots
