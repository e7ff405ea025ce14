"""ElastiCache: snapshots and their export to S3, behind a small replaceable interface.

moto implements CreateSnapshot / DescribeSnapshots / DeleteSnapshot but not CopySnapshot (the
export to S3), so the export sits behind :class:`SnapshotExporter`; tests and the drill supply
one that writes a real RDB file produced by a real redis-server.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

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
    """The real export: CopySnapshot with TargetBucket (node-based) or ExportServerlessCacheSnapshot."""

    def __init__(self, elasticache: Any, serverless: bool) -> None:
        self._elasticache = elasticache
        self._serverless = serverless

    def export(self, snapshot_name: str, bucket: str, prefix: str) -> None:
        """Ask ElastiCache to write the snapshot's .rdb files to ``bucket``/``prefix``."""
        if self._serverless:
            # Serverless exports land at the bucket root under the snapshot name.
            self._elasticache.export_serverless_cache_snapshot(
                ServerlessCacheSnapshotName=snapshot_name, S3BucketName=bucket
            )
            return
        # The export writes <TargetSnapshotName>-0001.rdb (one file per shard) into the bucket.
        self._elasticache.copy_snapshot(
            SourceSnapshotName=snapshot_name,
            TargetSnapshotName=prefix + snapshot_name,
            TargetBucket=bucket,
        )


def snapshot_name(backup_id: str) -> str:
    """The name this system gives the snapshot of one backup (so it can find and prune it)."""
    return f"{SNAPSHOT_PREFIX}{backup_id.lower()}"


def list_own_snapshots(elasticache: Any, replication_group_id: str) -> list[SnapshotInfo]:
    """Manual snapshots of the group that this system created, newest first."""
    found: list[SnapshotInfo] = []
    paginator = elasticache.get_paginator("describe_snapshots")
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


def delete_snapshot(elasticache: Any, name: str) -> None:
    """Delete one manual snapshot."""
    elasticache.delete_snapshot(SnapshotName=name)
