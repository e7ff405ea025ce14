"""Restoring an ElastiCache-mode backup: seed a NEW replication group from the backed-up RDB files.

The production group is never overwritten. The RDB files are decrypted into ``staging/restore/``
(SSE-S3: ElastiCache can only seed from objects it can read), CreateReplicationGroup seeds a new
group from them with the source group's shape, the state machine polls until it is available,
the plaintext copies are deleted, and optionally the REDIS_URL secret is pointed at the new
endpoint (its previous version is kept so a rollback can move the secret back).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse, urlunparse

from .adapters.s3 import MultipartSink
from .errors import ConfigurationError, InvalidInputError, RestoreVerificationError
from .health import Check
from .manifest import Manifest, ObjectEntry
from .services import Services

STAGING_RESTORE = "staging/restore/"
GROUP_FIELDS = (
    "CacheNodeType",
    "AutomaticFailover",
    "MultiAZ",
    "TransitEncryptionEnabled",
    "AtRestEncryptionEnabled",
)


def seed_key(restore_id: str, index: int) -> str:
    """Where the plaintext RDB of one shard is staged for seeding."""
    return f"{STAGING_RESTORE}{restore_id}/shard-{index:04d}.rdb"


def step(services: Services, job: dict[str, Any], manifest: Manifest, read: Any) -> None:
    """Advance the restore by one state-machine step: seed, then poll until available."""
    new_group = job["target"].get("new_replication_group_id")
    if not new_group:
        raise InvalidInputError(
            "this backup holds ElastiCache RDB exports: give target.new_replication_group_id, a new "
            "replication group to seed from them (the running group is never overwritten)"
        )
    state = job["redis"]
    if state.get("phase") is None:
        _seed(services, job, manifest, read, new_group)
        state.update(phase="creating", waiting=True)
        return
    group = _describe(services, new_group)
    status = group.get("Status", "")
    if status in ("create-failed", "deleting", "deleted"):
        raise RestoreVerificationError(
            f"replication group {new_group} is {status}; see the ElastiCache console"
        )
    if status != "available":
        return
    endpoint = _endpoint(group)
    _delete_staged(services, job, len(manifest.objects_of("redis")))
    state.update(phase="available", waiting=False, done=True, endpoint=endpoint)
    job.setdefault("results", {})["redis"] = {
        "mode": "elasticache",
        "replication_group_id": new_group,
        "endpoint": endpoint,
    }
    if job["target"].get("update_redis_url_secret"):
        _point_secret_at(services, job, group, endpoint)


def _seed(services: Services, job: dict[str, Any], manifest: Manifest, read: Any, new_group: str) -> None:
    shards = manifest.objects_of("redis")
    arns = []
    for index, entry in enumerate(shards, start=1):
        key = seed_key(job["restore_id"], index)
        _stage(services, entry, key, read)
        arns.append(f"arn:aws:s3:::{services.settings.bucket}/{key}")
    source = _source_shape(services)
    services.client("elasticache").create_replication_group(
        ReplicationGroupId=new_group,
        ReplicationGroupDescription=f"restored by servalsheets-backup {job['restore_id']}"[:255],
        SnapshotArns=arns,
        NumNodeGroups=max(1, len(shards)),
        **source,
    )


def _stage(services: Services, entry: ObjectEntry, key: str, read: Any) -> None:
    sink = MultipartSink(services.store.s3, services.settings.bucket, key, kms_key_id="", sse="AES256")
    try:
        for chunk in read(entry):
            sink.write(chunk)
        sink.close()
    except BaseException:
        sink.abort()
        raise


def _source_shape(services: Services) -> dict[str, Any]:
    """Node type, engine and encryption settings copied from the configured source group."""
    group_id = services.settings.replication_group_id
    if not group_id:
        raise ConfigurationError("ELASTICACHE_REPLICATION_GROUP_ID is needed to copy the new group's shape")
    group = _describe(services, group_id)
    shape: dict[str, Any] = {
        "Engine": "redis",
        "CacheNodeType": group.get("CacheNodeType", "cache.t4g.small"),
    }
    if group.get("TransitEncryptionEnabled"):
        shape["TransitEncryptionEnabled"] = True
    if group.get("AtRestEncryptionEnabled"):
        shape["AtRestEncryptionEnabled"] = True
    return shape


def _describe(services: Services, group_id: str) -> dict[str, Any]:
    groups = services.client("elasticache").describe_replication_groups(ReplicationGroupId=group_id)
    return dict(groups["ReplicationGroups"][0])


def _endpoint(group: dict[str, Any]) -> str:
    configuration = group.get("ConfigurationEndpoint")
    primary = configuration or (group.get("NodeGroups") or [{}])[0].get("PrimaryEndpoint") or {}
    return f"{primary.get('Address', '')}:{primary.get('Port', 6379)}"


def _delete_staged(services: Services, job: dict[str, Any], count: int) -> None:
    s3, bucket = services.store.s3, services.settings.bucket
    for index in range(1, count + 1):
        key = seed_key(job["restore_id"], index)
        listing = s3.list_object_versions(Bucket=bucket, Prefix=key)
        for version in listing.get("Versions", []) + listing.get("DeleteMarkers", []):
            s3.delete_object(Bucket=bucket, Key=key, VersionId=version["VersionId"])


def _point_secret_at(services: Services, job: dict[str, Any], group: dict[str, Any], endpoint: str) -> None:
    secret_id = services.settings.redis_url_secret_id
    if not secret_id:
        raise ConfigurationError("update_redis_url_secret needs REDIS_URL_SECRET_ID (RedisUrlSecretName)")
    from .adapters.secrets import secret_field

    manager = services.client("secretsmanager")
    current = secret_field(manager, secret_id, ("REDIS_URL",))
    previous = manager.describe_secret(SecretId=secret_id)
    job["redis"]["previous_secret_version"] = next(
        (v for v, stages in previous.get("VersionIdsToStages", {}).items() if "AWSCURRENT" in stages), None
    )
    parsed = urlparse(current)
    scheme = "rediss" if group.get("TransitEncryptionEnabled") else parsed.scheme or "redis"
    auth = parsed.netloc.rsplit("@", 1)[0] + "@" if "@" in parsed.netloc else ""
    new_url = urlunparse((scheme, auth + endpoint, parsed.path or "/0", "", "", ""))
    import json

    response = manager.put_secret_value(SecretId=secret_id, SecretString=json.dumps({"REDIS_URL": new_url}))
    job["redis"]["new_secret_version"] = response["VersionId"]


def rollback(services: Services, job: dict[str, Any]) -> None:
    """Undo: move the REDIS_URL secret back and delete the new group (production was never touched)."""
    state = job.get("redis") or {}
    previous, new = state.get("previous_secret_version"), state.get("new_secret_version")
    if previous and new and services.settings.redis_url_secret_id:
        # Re-put the previous version's value (the value itself never enters the state data).
        manager = services.client("secretsmanager")
        secret_id = services.settings.redis_url_secret_id
        old = manager.get_secret_value(SecretId=secret_id, VersionId=previous)["SecretString"]
        manager.put_secret_value(SecretId=secret_id, SecretString=old)
    new_group = job["target"].get("new_replication_group_id")
    if state.get("phase") in ("creating", "available") and new_group:
        services.client("elasticache").delete_replication_group(ReplicationGroupId=new_group)


def verify(services: Services, job: dict[str, Any]) -> list[Check]:
    """The new group is available and has an endpoint (its data is the seeded RDB)."""
    new_group = job["target"].get("new_replication_group_id", "")
    group = _describe(services, new_group)
    endpoint = _endpoint(group)
    return [Check("new replication group available", group.get("Status") == "available", endpoint)]
