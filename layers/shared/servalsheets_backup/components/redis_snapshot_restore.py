"""Restoring an ElastiCache-mode backup: seed a NEW cache from the backed-up RDB files.

The production cache is never overwritten. The RDB files are decrypted into ``staging/restore/``
(SSE-S3: ElastiCache can only seed from objects it can read), then either CreateReplicationGroup
(``target.new_replication_group_id``, the source group's shape) or CreateServerlessCache
(``target.new_serverless_cache_name``, the source cache's network, limits and key) seeds a new
cache from them, the state machine polls until it is available, the plaintext copies are
deleted, and optionally the REDIS_URL secret is pointed at the new endpoint (its previous
version is kept so a rollback can move the secret back).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse, urlunparse

from servalsheets_backup.adapters.app_health import Check
from servalsheets_backup.adapters.s3 import MultipartSink, delete_every_version
from servalsheets_backup.errors import ConfigurationError, InvalidInputError, RestoreVerificationError
from servalsheets_backup.format.manifest import Manifest, ObjectEntry
from servalsheets_backup.services import Services

STAGING_RESTORE = "staging/restore/"
FAILED_STATUSES = ("create-failed", "deleting", "deleted")


def seed_key(restore_id: str, index: int) -> str:
    """Where the plaintext RDB of one shard is staged for seeding."""
    return f"{STAGING_RESTORE}{restore_id}/shard-{index:04d}.rdb"


@dataclass(frozen=True)
class NewCacheState:
    """What the restore needs to know about the cache it is seeding."""

    status: str
    endpoint: str
    tls: bool


class NewReplicationGroup:
    """A node-based replication group seeded from the RDB files, shaped like the source group."""

    kind = "replication group"
    result_field = "replication_group_id"

    def __init__(self, services: Services, name: str) -> None:
        self.services, self.name = services, name

    def create(
        self,
        seed_arns: list[str],
        node_groups: list[dict[str, str]] | None = None,
        recorded_shape: dict[str, Any] | None = None,
    ) -> None:
        """CreateReplicationGroup with SnapshotArns, one node group per RDB file.

        With the source's ``node_groups`` (cluster mode enabled), the new group is cluster mode
        enabled too, each node group given the same id and hash slots as the one whose RDB file
        seeds it, so every key lands in a shard that serves its slot.
        """
        layout: dict[str, Any] = {}
        if node_groups:
            if len(node_groups) != len(seed_arns):
                raise InvalidInputError(
                    f"the backup lists {len(node_groups)} node groups but holds {len(seed_arns)} RDB files: "
                    "the set is inconsistent; restore another set"
                )
            layout = {
                "ClusterMode": "enabled",
                "NodeGroupConfiguration": [
                    {"NodeGroupId": group["node_group_id"], "Slots": group["slots"]} for group in node_groups
                ],
            }
        self.services.client("elasticache").create_replication_group(
            ReplicationGroupId=self.name,
            ReplicationGroupDescription=f"restored by servalsheets-backup into {self.name}"[:255],
            SnapshotArns=seed_arns,
            NumNodeGroups=max(1, len(seed_arns)),
            **layout,
            **_source_shape(self.services, recorded_shape),
        )

    def state(self) -> NewCacheState | None:
        """Status and endpoint, or None when the group does not exist."""
        elasticache = self.services.client("elasticache")
        try:
            group = _describe(self.services, self.name)
        except elasticache.exceptions.ReplicationGroupNotFoundFault:
            return None
        return NewCacheState(
            str(group.get("Status", "")), _endpoint(group), bool(group.get("TransitEncryptionEnabled"))
        )

    def delete(self) -> None:
        """DeleteReplicationGroup."""
        self.services.client("elasticache").delete_replication_group(ReplicationGroupId=self.name)


class NewServerlessCache:
    """A serverless cache seeded from the RDB files, shaped like the configured source cache."""

    kind = "serverless cache"
    result_field = "serverless_cache_name"

    def __init__(self, services: Services, name: str) -> None:
        self.services, self.name = services, name

    def create(
        self,
        seed_arns: list[str],
        node_groups: list[dict[str, str]] | None = None,
        recorded_shape: dict[str, Any] | None = None,
    ) -> None:
        """CreateServerlessCache with SnapshotArnsToRestore (a serverless cache shards itself)."""
        source = self.services.settings.serverless_cache_name
        if not source:
            raise ConfigurationError(
                "ELASTICACHE_SERVERLESS_CACHE_NAME is needed to copy the new serverless cache's network, "
                "limits and key from the cache it replaces"
            )
        self.services.serverless().create_cache(self.name, seed_arns, like=source)

    def state(self) -> NewCacheState | None:
        """Status and endpoint (serverless caches always require TLS), or None when absent."""
        info = self.services.serverless().describe_cache(self.name)
        return None if info is None else NewCacheState(info.status, info.endpoint, True)

    def delete(self) -> None:
        """DeleteServerlessCache."""
        self.services.serverless().delete_cache(self.name)


def new_cache(services: Services, target: dict[str, Any]) -> NewReplicationGroup | NewServerlessCache | None:
    """The new cache named by the restore target, if any."""
    if target.get("new_serverless_cache_name"):
        return NewServerlessCache(services, target["new_serverless_cache_name"])
    if target.get("new_replication_group_id"):
        return NewReplicationGroup(services, target["new_replication_group_id"])
    return None


def step(
    services: Services,
    target: dict[str, Any],
    restore_id: str,
    state: dict[str, Any],
    manifest: Manifest,
    read: Any,
) -> dict[str, Any] | None:
    """Advance the restore by one state-machine step: seed, then poll until available.

    ``state`` is the restore's Redis progress (phase, waiting, done, endpoint, secret versions),
    updated in place; the result to record is returned once the new cache is available.
    """
    cache = new_cache(services, target)
    if cache is None:
        raise InvalidInputError(
            "this backup holds ElastiCache RDB exports: give target.new_replication_group_id or "
            "target.new_serverless_cache_name, a new cache to seed from them (the running one is never "
            "overwritten)"
        )
    if state.get("phase") is None:
        recorded = (manifest.components.get("redis") or {}).get("source_shape")
        cache.create(_stage_all(services, restore_id, manifest, read), _node_groups(manifest), recorded)
        state.update(phase="creating", waiting=True)
        return None
    current = cache.state()
    status = current.status if current else "deleted"
    if status in FAILED_STATUSES:
        raise RestoreVerificationError(f"{cache.kind} {cache.name} is {status}; see the ElastiCache console")
    if current is None or status != "available":
        return None
    _delete_staged(services, restore_id, len(manifest.objects_of("redis")))
    state.update(phase="available", waiting=False, done=True, endpoint=current.endpoint)
    if target.get("update_redis_url_secret"):
        _point_secret_at(services, state, current)
    return {"mode": "elasticache", cache.result_field: cache.name, "endpoint": current.endpoint}


def _node_groups(manifest: Manifest) -> list[dict[str, str]] | None:
    """The source's node groups with their slots, when it was cluster mode enabled."""
    summary = manifest.components.get("redis") or {}
    groups = summary.get("node_groups") if summary.get("cluster_mode") else None
    return [dict(group) for group in groups] if isinstance(groups, list) else None


def _stage_all(services: Services, restore_id: str, manifest: Manifest, read: Any) -> list[str]:
    """Decrypt every RDB file of the set into staging/restore/; their S3 ARNs."""
    arns = []
    for index, entry in enumerate(manifest.objects_of("redis"), start=1):
        key = seed_key(restore_id, index)
        _stage(services, entry, key, read)
        arns.append(f"arn:aws:s3:::{services.settings.bucket}/{key}")
    return arns


def _stage(services: Services, entry: ObjectEntry, key: str, read: Any) -> None:
    sink = MultipartSink(services.store.s3, services.settings.bucket, key, kms_key_id="", sse="AES256")
    try:
        for chunk in read(entry):
            sink.write(chunk)
        sink.close()
    except BaseException:
        sink.abort()
        raise


def _source_shape(services: Services, recorded: dict[str, Any] | None = None) -> dict[str, Any]:
    """Node type, engine and encryption settings of the configured source group, or, where that
    group does not exist (a standby Region), the shape the backup recorded."""
    from servalsheets_backup.components.redis_snapshot import group_shape

    group_id = services.settings.replication_group_id
    group = None
    if group_id:
        elasticache = services.client("elasticache")
        try:
            group = _describe(services, group_id)
        except elasticache.exceptions.ReplicationGroupNotFoundFault:
            if not recorded:
                raise
    if group is None and not recorded:
        raise ConfigurationError("ELASTICACHE_REPLICATION_GROUP_ID is needed to copy the new group's shape")
    if group is None:
        # The recorded shape: at rest encryption uses this Region's AWS managed key.
        return dict(recorded or {})
    shape = group_shape(group)
    if group.get("KmsKeyId"):  # the restored copy is encrypted with the same customer managed key
        shape["KmsKeyId"] = group["KmsKeyId"]
    return shape


def _describe(services: Services, group_id: str) -> dict[str, Any]:
    groups = services.client("elasticache").describe_replication_groups(ReplicationGroupId=group_id)
    return dict(groups["ReplicationGroups"][0])


def _endpoint(group: dict[str, Any]) -> str:
    configuration = group.get("ConfigurationEndpoint")
    primary = configuration or (group.get("NodeGroups") or [{}])[0].get("PrimaryEndpoint") or {}
    return f"{primary.get('Address', '')}:{primary.get('Port', 6379)}"


def _delete_staged(services: Services, restore_id: str, count: int) -> None:
    for index in range(1, count + 1):
        delete_every_version(services.store.s3, services.settings.bucket, seed_key(restore_id, index))


def _point_secret_at(services: Services, state: dict[str, Any], cache: NewCacheState) -> None:
    secret_id = services.settings.redis_url_secret_id
    if not secret_id:
        raise ConfigurationError("update_redis_url_secret needs REDIS_URL_SECRET_ID (RedisUrlSecretName)")
    from servalsheets_backup.adapters.secrets import secret_field

    manager = services.client("secretsmanager")
    current = secret_field(manager, secret_id, ("REDIS_URL",))
    previous = manager.describe_secret(SecretId=secret_id)
    state["previous_secret_version"] = next(
        (v for v, stages in previous.get("VersionIdsToStages", {}).items() if "AWSCURRENT" in stages), None
    )
    parsed = urlparse(current)
    scheme = "rediss" if cache.tls else parsed.scheme or "redis"
    auth = parsed.netloc.rsplit("@", 1)[0] + "@" if "@" in parsed.netloc else ""
    new_url = urlunparse((scheme, auth + cache.endpoint, parsed.path or "/0", "", "", ""))
    import json

    response = manager.put_secret_value(SecretId=secret_id, SecretString=json.dumps({"REDIS_URL": new_url}))
    state["new_secret_version"] = response["VersionId"]


def rollback(services: Services, target: dict[str, Any], state: dict[str, Any]) -> None:
    """Undo: move the REDIS_URL secret back and delete the new cache (production was never touched)."""
    previous, new = state.get("previous_secret_version"), state.get("new_secret_version")
    if previous and new and services.settings.redis_url_secret_id:
        # Re-put the previous version's value (the value itself never enters the state data).
        manager = services.client("secretsmanager")
        secret_id = services.settings.redis_url_secret_id
        old = manager.get_secret_value(SecretId=secret_id, VersionId=previous)["SecretString"]
        manager.put_secret_value(SecretId=secret_id, SecretString=old)
    cache = new_cache(services, target)
    if state.get("phase") in ("creating", "available") and cache is not None:
        cache.delete()


def verify(services: Services, target: dict[str, Any]) -> list[Check]:
    """The new cache is available and has an endpoint (its data is the seeded RDB)."""
    cache = new_cache(services, target)
    if cache is None:
        return [Check("new cache named", False, "no new_replication_group_id or new_serverless_cache_name")]
    current = cache.state()
    available = current is not None and current.status == "available"
    return [Check(f"new {cache.kind} available", available, current.endpoint if current else "absent")]
