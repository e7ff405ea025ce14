"""The ``redis`` component in ElastiCache mode: snapshot, export to S3, validate and ingest the RDB.

One path serves node-based replication groups and serverless caches: the snapshot is created and
polled through an adapter (``NodeSnapshots`` / ``ServerlessCaches``), exported (CopySnapshot to
``staging/<backup id>/``, or ExportServerlessCacheSnapshot to the bucket root under the snapshot
name), and each exported ``.rdb`` is validated (magic, version, CRC-64) and encrypted into the set
before its plaintext is deleted. ElastiCache restricts SYNC, PSYNC, BGSAVE and CONFIG: nothing
here uses them.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from servalsheets_backup.components.pending import PendingSet, lock_name
from servalsheets_backup.errors import ConfigurationError, InvalidRdbError, SnapshotExportError
from servalsheets_backup.services import Services

logger = logging.getLogger(__name__)

STAGING_PREFIX = "staging/"
# A serverless export that has produced no file this long after it started has failed.
SERVERLESS_EXPORT_TIMEOUT_SECONDS = 3 * 3600


def staging_prefix(backup_id: str) -> str:
    """Where the export of a node-based snapshot of one backup lands before ingestion."""
    return f"{STAGING_PREFIX}{backup_id}/"


def _exporter(services: Services) -> Any:
    from servalsheets_backup.adapters.elasticache import AwsSnapshotExporter

    if services.snapshot_exporter is not None:
        return services.snapshot_exporter
    return AwsSnapshotExporter(services.client("elasticache"))


def create_snapshot(services: Services, snapshot: str) -> str:
    """Start a manual snapshot of the configured serverless cache or replication group; its status."""
    snapshots, source = _snapshot_source(services)
    return str(snapshots.create_snapshot(source, snapshot))


def snapshot_status(services: Services, snapshot: str) -> str:
    """The status of one of this system's snapshots (the state machine polls it)."""
    snapshots, _source = _snapshot_source(services)
    return str(snapshots.snapshot_status(snapshot))


def described_group(services: Services) -> dict[str, Any] | None:
    """DescribeReplicationGroups of the configured group (None for a serverless cache)."""
    group = services.settings.replication_group_id
    if not group:
        return None
    groups = services.client("elasticache").describe_replication_groups(ReplicationGroupId=group)
    return dict(groups["ReplicationGroups"][0])


def group_shape(group: dict[str, Any]) -> dict[str, Any]:
    """What a new group seeded from this one's RDB files copies: node type and encryption."""
    shape: dict[str, Any] = {
        "Engine": "redis",
        "CacheNodeType": group.get("CacheNodeType", "cache.t4g.small"),
    }
    for flag in ("TransitEncryptionEnabled", "AtRestEncryptionEnabled"):
        if group.get(flag):
            shape[flag] = True
    return shape


def node_groups(services: Services, group: dict[str, Any] | None = None) -> list[dict[str, str]]:
    """The configured replication group's node groups (shards), in id order, with their slots.

    A cluster-mode-enabled group lists each shard's hash slots (``Slots``, e.g. ``0-5460``); its
    export holds one .rdb file per node group. Cluster-mode-disabled groups have one node group
    and no slots; a serverless cache has none listed here.
    """
    group = group if group is not None else described_group(services)
    if group is None:
        return []
    listed = group.get("NodeGroups") or []
    found = [
        {
            "node_group_id": str(item.get("NodeGroupId", "")),
            **({"slots": item["Slots"]} if item.get("Slots") else {}),
        }
        for item in listed
    ]
    return sorted(found, key=lambda item: item["node_group_id"])


def expected_shards(services: Services) -> int:
    """How many .rdb files the export of the configured replication group produces."""
    return max(1, len(node_groups(services)))


def start_export(services: Services, pending: PendingSet, snapshot: str) -> PendingSet:
    """Export the finished snapshot to the bucket (the state machine then polls the ingest step)."""
    bucket = services.settings.bucket
    if services.settings.serverless_cache_name:
        # ExportServerlessCacheSnapshot takes a bucket but no prefix: the files land at the bucket
        # root, named after the snapshot (the bucket policy lets ElastiCache write only there).
        services.serverless().export_snapshot(snapshot, bucket)
        pending.source["export"] = {"prefix": snapshot, "settle": True, "started_ms": _now_ms(services)}
    else:
        _exporter(services).export(snapshot, bucket, staging_prefix(pending.backup_id))
        pending.source["export"] = {"prefix": staging_prefix(pending.backup_id)}
    pending.source["snapshot_name"] = snapshot
    described = described_group(services)
    groups = node_groups(services, described)
    pending.source["expected_shards"] = max(1, len(groups))
    if described is not None:
        # Kept in the manifest so a standby Region, where this group does not exist, can seed
        # a new group of the same shape.
        pending.source["source_shape"] = group_shape(described)
    if any("slots" in group for group in groups):
        pending.source["node_groups"] = groups
    return pending


def _now_ms(services: Services) -> int:
    return int(services.clock() * 1000)


def export_prefix(pending: PendingSet) -> str:
    """Where this backup's exported .rdb files appear."""
    return str((pending.source.get("export") or {}).get("prefix") or staging_prefix(pending.backup_id))


def _staged_rdb_objects(services: Services, pending: PendingSet) -> dict[str, int]:
    """Exported .rdb objects of this backup and their sizes."""
    s3, found = services.store.s3, {}
    for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket=services.settings.bucket, Prefix=export_prefix(pending)
    ):
        for item in page.get("Contents", []):
            if item["Key"].endswith(".rdb"):
                found[item["Key"]] = int(item.get("Size", 0))
    return found


def _export_complete(services: Services, pending: PendingSet, found: dict[str, int]) -> bool:
    """True once every file of the export is in the bucket.

    A node-based export has one file per shard, counted beforehand. A serverless export's file
    count is not known, so it is complete when ElastiCache reports the snapshot ``available``
    again and the listing has not changed since the previous look (one poll interval earlier).
    """
    export = pending.source.setdefault("export", {})
    if not export.get("settle"):
        return len(found) >= int(pending.source.get("expected_shards", 1))
    snapshot = str(pending.source.get("snapshot_name", ""))
    status = snapshot_status(services, snapshot)
    if "fail" in status:
        raise SnapshotExportError(f"ElastiCache reports serverless snapshot {snapshot} as {status}")
    if not found:
        _fail_if_export_overdue(services, export, snapshot)
    listing = sorted([key, size] for key, size in found.items())
    previous, export["seen"] = export.get("seen"), listing
    return bool(found) and status == "available" and previous == listing


def _fail_if_export_overdue(services: Services, export: dict[str, Any], snapshot: str) -> None:
    waited = (_now_ms(services) - int(export.get("started_ms", _now_ms(services)))) / 1000
    if waited > SERVERLESS_EXPORT_TIMEOUT_SECONDS:
        raise SnapshotExportError(
            f"no .rdb file named {snapshot}* appeared in s3://{services.settings.bucket}/ "
            f"{int(waited)} s after ExportServerlessCacheSnapshot started: check that the bucket policy "
            "statement ElastiCacheServerlessExportObjects is deployed and see docs/operations.md"
        )


def ingest_exports(services: Services, pending: PendingSet) -> tuple[PendingSet, bool]:
    """Once every exported .rdb is in the bucket, validate and encrypt each into the set; (pending, done)."""
    found = _staged_rdb_objects(services, pending)
    if not _export_complete(services, pending, found):
        return pending, False
    keys = sorted(found)
    try:
        shards = [_ingest_one(services, pending, key, index) for index, key in enumerate(keys, start=1)]
    except InvalidRdbError:
        # A corrupt export will not get better: remove the plaintext now rather than leave it to
        # the one-day lifecycle rule. (Transient read errors keep it for the state machine's retry.)
        _delete_exports(services, keys)
        raise
    _delete_exports(services, keys)
    pending.source.pop("export", None)  # polling bookkeeping; not part of the manifest
    pending.components["redis"] = {
        "mode": "elasticache",
        "snapshot_name": pending.source.get("snapshot_name"),
        "replication_group_id": services.settings.replication_group_id,
        "serverless_cache_name": services.settings.serverless_cache_name,
        "backup_time_ms": pending.created_ms,
        "shards": shards,
    }
    shape = pending.source.pop("source_shape", None)
    if shape:
        pending.components["redis"]["source_shape"] = shape
    groups = pending.source.pop("node_groups", None)
    if groups:
        # Cluster mode enabled: the files sort in node-group order (<snapshot>-0001.rdb, ...), so a
        # restore seeds each node group of the new group with its file and the same slots.
        pending.components["redis"].update(cluster_mode=True, node_groups=groups)
    pending.redis_done = True
    return pending, True


def _delete_exports(services: Services, keys: list[str]) -> None:
    """Remove plaintext exports outright (every version)."""
    from servalsheets_backup.adapters.s3 import delete_every_version

    for key in keys:
        delete_every_version(services.store.s3, services.settings.bucket, key)


def _ingest_one(services: Services, pending: PendingSet, key: str, index: int) -> dict[str, Any]:
    from servalsheets_backup.adapters.s3 import S3ObjectReader
    from servalsheets_backup.format.rdb import RdbValidator

    name = f"redis/shard-{index:04d}.rdb"
    validator = RdbValidator(key.rsplit("/", 1)[-1])
    reader = S3ObjectReader(services.store.s3, services.settings.bucket, key)
    upload = services.store.open_object(pending.kind, pending.backup_id, name, "redis")
    try:
        for chunk in reader.chunks():
            validator.update(chunk)
            upload.write(chunk)
        info = validator.finish()
        entry = upload.finish({"rdb_files": 1})
    except BaseException:
        upload.abort()
        raise
    finally:
        reader.close()
    pending.add(entry)
    return {
        "object": name,
        "rdb_version": info.version,
        "size": info.size,
        "checksum_verified": info.checksum_verified,
    }


def _snapshot_source(services: Services) -> tuple[Any, str]:
    """(snapshot adapter, cache or group name) for the configured ElastiCache source."""
    from servalsheets_backup.adapters.elasticache import NodeSnapshots

    settings = services.settings
    if settings.serverless_cache_name:
        return services.serverless(), settings.serverless_cache_name
    if settings.replication_group_id:
        return NodeSnapshots(services.client("elasticache")), settings.replication_group_id
    raise ConfigurationError(
        "REDIS_MODE=elasticache needs ELASTICACHE_REPLICATION_GROUP_ID or ELASTICACHE_SERVERLESS_CACHE_NAME"
    )


def prune_snapshots(services: Services, keep: str) -> list[str]:
    """Delete this system's snapshots older than the redis retention; never ``keep`` or the newest."""
    from datetime import UTC, datetime, timedelta

    settings = services.settings
    if not (settings.serverless_cache_name or settings.replication_group_id):
        return []
    snapshots, source = _snapshot_source(services)
    cutoff = datetime.now(UTC) - timedelta(days=settings.redis_retention_days)
    deleted = []
    for info in snapshots.list_own_snapshots(source)[1:]:
        if info.name != keep and info.created is not None and info.created < cutoff:
            snapshots.delete_snapshot(info.name)
            deleted.append(info.name)
    return deleted


def prune_after(services: Services, pending: PendingSet) -> list[str]:
    """After an ElastiCache-mode set completed: prune old snapshots, keeping the one it used."""
    if pending.components.get("redis", {}).get("mode") != "elasticache":
        return []
    try:
        return prune_snapshots(services, keep=str(pending.source.get("snapshot_name", "")))
    except Exception as exc:  # housekeeping: the set is complete; the next backup prunes again
        from servalsheets_backup.adapters.aws import describe_aws_error

        logger.warning(
            "snapshot pruning failed", extra={"error": describe_aws_error(exc) or type(exc).__name__}
        )
        return []


def add_snapshot_in_process(
    services: Services, pending: PendingSet, poll_seconds: float, sleep: Any = time.sleep
) -> PendingSet:
    """The state machine's ElastiCache path in one process (the CLI): snapshot, wait, export, ingest.

    Polls every ``poll_seconds`` and renews the backup lock at each poll, as the state machine does.
    """
    from servalsheets_backup.adapters.elasticache import snapshot_name

    name = snapshot_name(pending.backup_id)
    status = create_snapshot(services, name)
    while status != "available":
        if "fail" in status:
            raise SnapshotExportError(f"ElastiCache reported snapshot {name} as {status}")
        sleep(poll_seconds)
        services.state.acquire(lock_name(pending.kind), pending.owner)
        status = snapshot_status(services, name)
    start_export(services, pending, name)
    while True:
        pending, done = ingest_exports(services, pending)
        if done:
            return pending
        sleep(poll_seconds)
        services.state.acquire(lock_name(pending.kind), pending.owner)
