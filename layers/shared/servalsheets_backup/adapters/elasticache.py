"""ElastiCache: snapshots and their export to S3, behind small replaceable interfaces.

moto implements CreateSnapshot / DescribeSnapshots / DeleteSnapshot but not CopySnapshot (the
export to S3), so the export sits behind :class:`SnapshotExporter`; tests and the drill supply
one that writes a real RDB file produced by a real redis-server.

moto has no ElastiCache Serverless at all, so every serverless call (snapshot, export, pruning,
creating a cache from RDB files) sits behind :class:`ServerlessCaches`; the tests' stand-in keeps
each "serverless cache" as a real redis-server and its snapshots as real RDB files.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from servalsheets_backup.errors import ConfigurationError

SNAPSHOT_PREFIX = "servalsheets-backup-"


@dataclass(frozen=True)
class SnapshotInfo:
    """What the pruning logic needs to know about a snapshot."""

    name: str
    status: str
    created: datetime | None


class SnapshotExporter(Protocol):
    """Starts the export of a finished snapshot into ``bucket`` under ``prefix``."""

    def export(self, snapshot_name: str, bucket: str, prefix: str) -> None:
        """Begin exporting; the .rdb files appear under ``prefix`` when done."""
        ...


class AwsSnapshotExporter:
    """The real export of a node-based snapshot: CopySnapshot with TargetBucket."""

    def __init__(self, elasticache: Any) -> None:
        self._elasticache = elasticache

    def export(self, snapshot_name: str, bucket: str, prefix: str) -> None:
        """Ask ElastiCache to write the snapshot's .rdb files to ``bucket``/``prefix``."""
        # The export writes <TargetSnapshotName>-0001.rdb (one file per shard) into the bucket.
        self._elasticache.copy_snapshot(
            SourceSnapshotName=snapshot_name,
            TargetSnapshotName=prefix + snapshot_name,
            TargetBucket=bucket,
        )


def snapshot_name(backup_id: str) -> str:
    """The name this system gives the snapshot of one backup (so it can find and prune it)."""
    return f"{SNAPSHOT_PREFIX}{backup_id.lower()}"


class NodeSnapshots:
    """Manual snapshots of a node-based replication group (moto implements these calls)."""

    def __init__(self, elasticache: Any) -> None:
        self._elasticache = elasticache

    def create_snapshot(self, replication_group_id: str, snapshot_name: str) -> str:
        """CreateSnapshot of the whole group (the state machine does this through aws-sdk)."""
        response = self._elasticache.create_snapshot(
            ReplicationGroupId=replication_group_id, SnapshotName=snapshot_name
        )
        return str(response["Snapshot"].get("SnapshotStatus", ""))

    def snapshot_status(self, snapshot_name: str) -> str:
        """DescribeSnapshots for one snapshot."""
        snapshots = self._elasticache.describe_snapshots(SnapshotName=snapshot_name).get("Snapshots") or [{}]
        return str(snapshots[0].get("SnapshotStatus", ""))

    def list_own_snapshots(self, replication_group_id: str) -> list[SnapshotInfo]:
        """Manual snapshots of the group that this system created, newest first."""
        found: list[SnapshotInfo] = []
        paginator = self._elasticache.get_paginator("describe_snapshots")
        for page in paginator.paginate(ReplicationGroupId=replication_group_id, SnapshotSource="manual"):
            for snapshot in page.get("Snapshots", []):
                name = snapshot["SnapshotName"]
                if not name.startswith(SNAPSHOT_PREFIX):
                    continue
                groups = snapshot.get("NodeSnapshots") or [{}]
                created = groups[0].get("SnapshotCreateTime") or snapshot.get("SnapshotCreateTime")
                found.append(SnapshotInfo(name, snapshot.get("SnapshotStatus", ""), created))
        found.sort(key=lambda info: info.name, reverse=True)  # names embed the sortable backup id
        return found

    def delete_snapshot(self, name: str) -> None:
        """Delete one manual snapshot."""
        self._elasticache.delete_snapshot(SnapshotName=name)


# -- ElastiCache Serverless ------------------------------------------------------------------
@dataclass(frozen=True)
class CacheInfo:
    """A serverless cache as the restore needs it: status and endpoint (``host:port``)."""

    name: str
    status: str
    endpoint: str


class ServerlessCaches(Protocol):
    """The ElastiCache Serverless calls this system makes."""

    def create_snapshot(self, cache_name: str, snapshot_name: str) -> str:
        """Start a manual snapshot of ``cache_name``; returns its status."""
        ...

    def snapshot_status(self, snapshot_name: str) -> str:
        """The snapshot's status (``creating``, ``available``, ``failed``, ...)."""
        ...

    def export_snapshot(self, snapshot_name: str, bucket: str) -> None:
        """Start ExportServerlessCacheSnapshot into ``bucket``; the .rdb lands under the snapshot name."""
        ...

    def list_own_snapshots(self, cache_name: str) -> list[SnapshotInfo]:
        """Manual snapshots of ``cache_name`` that this system created, newest first."""
        ...

    def delete_snapshot(self, snapshot_name: str) -> None:
        """Delete one manual snapshot."""
        ...

    def create_cache(self, name: str, seed_arns: list[str], like: str) -> None:
        """Create cache ``name`` seeded from RDB objects, shaped like the existing cache ``like``."""
        ...

    def describe_cache(self, name: str) -> CacheInfo | None:
        """The cache's status and endpoint, or None when there is no such cache."""
        ...

    def delete_cache(self, name: str) -> None:
        """Delete a cache (a restore's rollback)."""
        ...


# Settings a restored cache copies from the cache it replaces, so it is reachable by the
# same clients (network, security groups, users) and encrypted with the same key.
SERVERLESS_SHAPE_FIELDS = (
    "Engine",
    "MajorEngineVersion",
    "CacheUsageLimits",
    "KmsKeyId",
    "SecurityGroupIds",
    "SubnetIds",
    "UserGroupId",
)


class AwsServerlessCaches:
    """ServerlessCaches through the ElastiCache API."""

    def __init__(self, elasticache: Any) -> None:
        self._elasticache = elasticache

    def create_snapshot(self, cache_name: str, snapshot_name: str) -> str:
        """CreateServerlessCacheSnapshot, tagged so its origin is visible in the console."""
        response = self._elasticache.create_serverless_cache_snapshot(
            ServerlessCacheSnapshotName=snapshot_name,
            ServerlessCacheName=cache_name,
            Tags=[{"Key": "CreatedBy", "Value": "servalsheets-backup"}],
        )
        return str(response["ServerlessCacheSnapshot"].get("Status", ""))

    def snapshot_status(self, snapshot_name: str) -> str:
        """DescribeServerlessCacheSnapshots for one snapshot."""
        response = self._elasticache.describe_serverless_cache_snapshots(
            ServerlessCacheSnapshotName=snapshot_name
        )
        snapshots = response.get("ServerlessCacheSnapshots") or [{}]
        return str(snapshots[0].get("Status", ""))

    def export_snapshot(self, snapshot_name: str, bucket: str) -> None:
        """ExportServerlessCacheSnapshot (it takes a bucket, not a prefix)."""
        self._elasticache.export_serverless_cache_snapshot(
            ServerlessCacheSnapshotName=snapshot_name, S3BucketName=bucket
        )

    def list_own_snapshots(self, cache_name: str) -> list[SnapshotInfo]:
        """Manual snapshots of the cache named with this system's prefix, newest first."""
        found: list[SnapshotInfo] = []
        paginator = self._elasticache.get_paginator("describe_serverless_cache_snapshots")
        for page in paginator.paginate(ServerlessCacheName=cache_name, SnapshotType="manual"):
            for snapshot in page.get("ServerlessCacheSnapshots", []):
                name = snapshot.get("ServerlessCacheSnapshotName", "")
                if name.startswith(SNAPSHOT_PREFIX):
                    found.append(SnapshotInfo(name, snapshot.get("Status", ""), snapshot.get("CreateTime")))
        found.sort(key=lambda info: info.name, reverse=True)  # names embed the sortable backup id
        return found

    def delete_snapshot(self, snapshot_name: str) -> None:
        """DeleteServerlessCacheSnapshot."""
        self._elasticache.delete_serverless_cache_snapshot(ServerlessCacheSnapshotName=snapshot_name)

    def create_cache(self, name: str, seed_arns: list[str], like: str) -> None:
        """CreateServerlessCache with SnapshotArnsToRestore pointing at the staged RDB objects."""
        source = self._describe(like)
        if source is None:
            raise ConfigurationError(
                f"serverless cache {like} (ELASTICACHE_SERVERLESS_CACHE_NAME) does not exist, so the "
                "new cache's network, security groups and key cannot be copied from it"
            )
        shape = {field: source[field] for field in SERVERLESS_SHAPE_FIELDS if source.get(field)}
        self._elasticache.create_serverless_cache(
            ServerlessCacheName=name,
            Description=f"restored by servalsheets-backup from a backup of {like}"[:255],
            SnapshotArnsToRestore=seed_arns,
            Tags=[{"Key": "CreatedBy", "Value": "servalsheets-backup"}],
            **shape,
        )

    def describe_cache(self, name: str) -> CacheInfo | None:
        """DescribeServerlessCaches for one cache."""
        cache = self._describe(name)
        if cache is None:
            return None
        endpoint = cache.get("Endpoint") or {}
        address = f"{endpoint['Address']}:{endpoint.get('Port', 6379)}" if endpoint.get("Address") else ""
        return CacheInfo(name, str(cache.get("Status", "")), address)

    def delete_cache(self, name: str) -> None:
        """DeleteServerlessCache (no final snapshot: the backup set is the copy)."""
        self._elasticache.delete_serverless_cache(ServerlessCacheName=name)

    def _describe(self, name: str) -> dict[str, Any] | None:
        try:
            response = self._elasticache.describe_serverless_caches(ServerlessCacheName=name)
        except self._elasticache.exceptions.ServerlessCacheNotFoundFault:
            return None
        caches = response.get("ServerlessCaches") or []
        return dict(caches[0]) if caches else None
