"""The ``redis`` component: logical dumps (SCAN/DUMP/PTTL) in chunks, or ElastiCache snapshots.

A logical dump that does not fit in one Lambda invocation continues from the saved SCAN cursor;
each invocation writes one complete object ``redis/dump-NNNN`` and the restore reads them in
order, so the result is still one backup set.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from .backup import PendingSet
from .errors import TransientError
from .services import Services

logger = logging.getLogger(__name__)


def redis_logical_module() -> Any:
    """redis_logical, imported on first use: handlers that never touch Redis skip redis-py."""
    from . import redis_logical

    return redis_logical


CHUNK_PREFIX = "redis/dump-"


def chunk_name(index: int) -> str:
    """Object name of the ``index``-th dump chunk (1-based, zero padded, sorts in order)."""
    return f"{CHUNK_PREFIX}{index:04d}"


def add_logical_chunk(services: Services, pending: PendingSet, deadline: float | None = None) -> PendingSet:
    """Dump keys from the saved cursor until done or ``deadline`` (time.monotonic); one object per call."""
    url = services.redis_url()
    client = redis_logical_module().connect(url)
    pending.redis_chunks += 1
    name = chunk_name(pending.redis_chunks)
    upload = services.store.open_object(pending.kind, pending.backup_id, name, "redis")
    try:
        result = redis_logical_module().dump_keys(
            client,
            upload,
            backup_time_ms=pending.created_ms,
            cursor=pending.redis_cursor,
            deadline=deadline,
        )
        entry = upload.finish({"keys": result.keys_written})
    except BaseException:
        upload.abort()
        pending.redis_chunks -= 1
        raise
    finally:
        client.close()
    pending.add(entry)
    pending.redis_cursor = result.next_cursor
    pending.redis_done = result.next_cursor == 0
    _merge_counts(pending, result, url)
    return pending


def _merge_counts(pending: PendingSet, result: Any, url: str) -> None:
    partial = pending.source.get("redis_partial", {})
    counts: dict[str, int] = dict(partial.get("keys_by_prefix", {}))
    for prefix, count in result.prefix_counts.items():
        counts[prefix] = counts.get(prefix, 0) + count
    totals = {
        "mode": "logical",
        "endpoint": redis_logical_module().redact_url(url),
        "backup_time_ms": pending.created_ms,
        "keys": partial.get("keys", 0) + result.keys_written,
        "keys_vanished": partial.get("keys_vanished", 0) + result.keys_skipped_vanished,
        "keys_by_prefix": counts,
        "chunks": pending.redis_chunks,
        "source_version": result.source_version,
    }
    if pending.redis_done:
        pending.source.pop("redis_partial", None)
        pending.components["redis"] = totals
    else:
        pending.source["redis_partial"] = totals


def wait_seconds(attempt: int, base: float = 0.5, cap: float = 8.0) -> float:
    """Exponential back-off for transient Redis errors."""
    return float(min(cap, base * (2**attempt)))


def with_retries(operation: Any, attempts: int = 4) -> Any:
    """Run ``operation()`` retrying TransientError with back-off, then re-raise."""
    for attempt in range(attempts):
        try:
            return operation()
        except TransientError:
            if attempt == attempts - 1:
                raise
            time.sleep(wait_seconds(attempt))
    return None


# -- ElastiCache mode --------------------------------------------------------------------
STAGING_PREFIX = "staging/"


def staging_prefix(backup_id: str) -> str:
    """Where the ElastiCache export of one backup lands before ingestion."""
    return f"{STAGING_PREFIX}{backup_id}/"


def _exporter(services: Services) -> Any:
    from .adapters.elasticache import AwsSnapshotExporter

    if services.snapshot_exporter is not None:
        return services.snapshot_exporter
    return AwsSnapshotExporter(services.client("elasticache"), bool(services.settings.serverless_cache_name))


def expected_shards(services: Services) -> int:
    """How many .rdb files the export of the configured replication group produces."""
    group = services.settings.replication_group_id
    if not group:
        return 1
    groups = services.client("elasticache").describe_replication_groups(ReplicationGroupId=group)
    node_groups = groups["ReplicationGroups"][0].get("NodeGroups") or [{}]
    return max(1, len(node_groups))


def start_export(services: Services, pending: PendingSet, snapshot: str) -> PendingSet:
    """Export the finished snapshot to the staging prefix (the state machine then polls)."""
    _exporter(services).export(snapshot, services.settings.bucket, staging_prefix(pending.backup_id))
    pending.source["snapshot_name"] = snapshot
    pending.source["expected_shards"] = expected_shards(services)
    return pending


def _staged_rdb_keys(services: Services, pending: PendingSet) -> list[str]:
    s3 = services.store.s3
    listing = s3.list_objects_v2(Bucket=services.settings.bucket, Prefix=staging_prefix(pending.backup_id))
    return sorted(item["Key"] for item in listing.get("Contents", []) if item["Key"].endswith(".rdb"))


def ingest_exports(services: Services, pending: PendingSet) -> tuple[PendingSet, bool]:
    """Once every shard's .rdb is staged, validate and encrypt each into the set; (pending, done)."""
    keys = _staged_rdb_keys(services, pending)
    if len(keys) < int(pending.source.get("expected_shards", 1)):
        return pending, False
    shards = [_ingest_one(services, pending, key, index) for index, key in enumerate(keys, start=1)]
    for key in keys:
        _delete_all_versions(services, key)
    pending.components["redis"] = {
        "mode": "elasticache",
        "snapshot_name": pending.source.get("snapshot_name"),
        "replication_group_id": services.settings.replication_group_id,
        "serverless_cache_name": services.settings.serverless_cache_name,
        "backup_time_ms": pending.created_ms,
        "shards": shards,
    }
    pending.redis_done = True
    return pending, True


def _delete_all_versions(services: Services, key: str) -> None:
    """Remove a plaintext staging export outright: every version, not just the current one."""
    s3, bucket = services.store.s3, services.settings.bucket
    listing = s3.list_object_versions(Bucket=bucket, Prefix=key)
    versions = [v for v in listing.get("Versions", []) + listing.get("DeleteMarkers", []) if v["Key"] == key]
    if not versions:
        s3.delete_object(Bucket=bucket, Key=key)
    for version in versions:
        s3.delete_object(Bucket=bucket, Key=key, VersionId=version["VersionId"])


def _ingest_one(services: Services, pending: PendingSet, key: str, index: int) -> dict[str, Any]:
    from .adapters.s3 import S3ObjectReader
    from .rdb import RdbValidator

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


def prune_snapshots(services: Services, keep: str) -> list[str]:
    """Delete this system's snapshots older than the redis retention; never ``keep`` or the newest."""
    from datetime import UTC, datetime, timedelta

    from .adapters.elasticache import delete_snapshot, list_own_snapshots

    group = services.settings.replication_group_id
    if not group:
        return []
    elasticache = services.client("elasticache")
    snapshots = list_own_snapshots(elasticache, group)
    cutoff = datetime.now(UTC) - timedelta(days=services.settings.redis_retention_days)
    deleted = []
    for info in snapshots[1:]:
        if info.name != keep and info.created is not None and info.created < cutoff:
            delete_snapshot(elasticache, info.name)
            deleted.append(info.name)
    return deleted
