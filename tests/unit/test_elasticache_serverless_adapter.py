"""AwsServerlessCaches against botocore's Stubber: every call is checked against the ElastiCache model.

moto has no ElastiCache Serverless, so these tests are what pins the real adapter's requests:
Stubber rejects a parameter the service model does not have and compares the exact request.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from servalsheets_backup.adapters.elasticache import AwsServerlessCaches, CacheInfo
from servalsheets_backup.errors import ConfigurationError

pytestmark = pytest.mark.unit

TAGS = [{"Key": "CreatedBy", "Value": "servalsheets-backup"}]
SOURCE = {
    "ServerlessCacheName": "prod",
    "Status": "available",
    "Engine": "valkey",
    "MajorEngineVersion": "8",
    "CacheUsageLimits": {"DataStorage": {"Maximum": 10, "Unit": "GB"}},
    "KmsKeyId": "arn:aws:kms:us-east-1:123456789012:key/1111",
    "SecurityGroupIds": ["sg-1"],
    "SubnetIds": ["subnet-1", "subnet-2"],
    "UserGroupId": "servalsheets-users",
    "Endpoint": {"Address": "prod-abc.serverless.use1.cache.amazonaws.com", "Port": 6379},
    "SnapshotRetentionLimit": 3,  # not copied: the restored cache keeps the default
}


@pytest.fixture
def stubbed() -> Iterator[tuple[AwsServerlessCaches, Stubber]]:
    """The adapter over a stubbed client; every queued response must be used."""
    client = boto3.client(
        "elasticache", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    with Stubber(client) as stubber:
        yield AwsServerlessCaches(client), stubber
        stubber.assert_no_pending_responses()


def snapshot(name: str, status: str = "available", day: int = 1) -> dict[str, Any]:
    """A ServerlessCacheSnapshot as DescribeServerlessCacheSnapshots returns it."""
    return {
        "ServerlessCacheSnapshotName": name,
        "Status": status,
        "CreateTime": datetime(2026, 11, day, tzinfo=UTC),
    }


def test_create_snapshot_names_the_cache_and_tags_the_snapshot(stubbed: Any) -> None:
    caches, stubber = stubbed
    stubber.add_response(
        "create_serverless_cache_snapshot",
        {"ServerlessCacheSnapshot": snapshot("servalsheets-backup-x", "creating")},
        {"ServerlessCacheSnapshotName": "servalsheets-backup-x", "ServerlessCacheName": "prod", "Tags": TAGS},
    )

    assert caches.create_snapshot("prod", "servalsheets-backup-x") == "creating"


def test_snapshot_status_and_export(stubbed: Any) -> None:
    caches, stubber = stubbed
    stubber.add_response(
        "describe_serverless_cache_snapshots",
        {"ServerlessCacheSnapshots": [snapshot("s", "available")]},
        {"ServerlessCacheSnapshotName": "s"},
    )
    stubber.add_response(
        "export_serverless_cache_snapshot",
        {"ServerlessCacheSnapshot": snapshot("s")},
        {"ServerlessCacheSnapshotName": "s", "S3BucketName": "backups"},
    )

    assert caches.snapshot_status("s") == "available"
    caches.export_snapshot("s", "backups")


def test_own_snapshots_are_listed_newest_first_across_pages_and_foreign_ones_ignored(stubbed: Any) -> None:
    caches, stubber = stubbed
    request = {"ServerlessCacheName": "prod", "SnapshotType": "manual"}
    stubber.add_response(
        "describe_serverless_cache_snapshots",
        {
            "ServerlessCacheSnapshots": [snapshot("servalsheets-backup-20261101t0"), snapshot("hand-made")],
            "NextToken": "page-2",
        },
        request,
    )
    stubber.add_response(
        "describe_serverless_cache_snapshots",
        {"ServerlessCacheSnapshots": [snapshot("servalsheets-backup-20261102t0", day=2)]},
        {**request, "NextToken": "page-2"},
    )

    names = [info.name for info in caches.list_own_snapshots("prod")]

    assert names == ["servalsheets-backup-20261102t0", "servalsheets-backup-20261101t0"]


def test_create_cache_copies_network_limits_and_key_from_the_running_cache(stubbed: Any) -> None:
    caches, stubber = stubbed
    seeds = ["arn:aws:s3:::backups/staging/restore/r/shard-0001.rdb"]
    stubber.add_response(
        "describe_serverless_caches", {"ServerlessCaches": [SOURCE]}, {"ServerlessCacheName": "prod"}
    )
    copied = {k: SOURCE[k] for k in ("Engine", "MajorEngineVersion", "CacheUsageLimits", "KmsKeyId")}
    copied |= {k: SOURCE[k] for k in ("SecurityGroupIds", "SubnetIds", "UserGroupId")}
    stubber.add_response(
        "create_serverless_cache",
        {"ServerlessCache": {"ServerlessCacheName": "restored", "Status": "creating"}},
        {
            "ServerlessCacheName": "restored",
            "Description": "restored by servalsheets-backup from a backup of prod",
            "SnapshotArnsToRestore": seeds,
            "Tags": TAGS,
            **copied,
        },
    )

    caches.create_cache("restored", seeds, like="prod")


def test_create_cache_without_the_running_cache_says_which_setting_is_wrong(stubbed: Any) -> None:
    caches, stubber = stubbed
    stubber.add_client_error(
        "describe_serverless_caches", "ServerlessCacheNotFoundFault", http_status_code=404
    )

    with pytest.raises(ConfigurationError, match="ELASTICACHE_SERVERLESS_CACHE_NAME"):
        caches.create_cache("restored", ["arn:aws:s3:::b/k.rdb"], like="prod")


def test_describe_cache_reports_the_endpoint_or_none(stubbed: Any) -> None:
    caches, stubber = stubbed
    stubber.add_response(
        "describe_serverless_caches", {"ServerlessCaches": [SOURCE]}, {"ServerlessCacheName": "prod"}
    )
    stubber.add_client_error(
        "describe_serverless_caches", "ServerlessCacheNotFoundFault", http_status_code=404
    )
    stubber.add_response(
        "delete_serverless_cache",
        {"ServerlessCache": {"ServerlessCacheName": "restored", "Status": "deleting"}},
        {"ServerlessCacheName": "restored"},
    )
    stubber.add_response(
        "delete_serverless_cache_snapshot",
        {"ServerlessCacheSnapshot": snapshot("old")},
        {"ServerlessCacheSnapshotName": "old"},
    )

    assert caches.describe_cache("prod") == CacheInfo(
        "prod", "available", "prod-abc.serverless.use1.cache.amazonaws.com:6379"
    )
    assert caches.describe_cache("gone") is None
    caches.delete_cache("restored")
    caches.delete_snapshot("old")
