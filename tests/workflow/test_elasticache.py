"""The backup state machine in ElastiCache mode: snapshot, wait, export, ingest a real RDB, finalize.

moto keeps the snapshot bookkeeping (CreateSnapshot / DescribeSnapshots run through the ASL's
aws-sdk tasks); the export to S3, which moto lacks, is an RdbExporter writing the RDB file that
the production test redis-server itself SAVEs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from servalsheets_backup.adapters.elasticache import snapshot_name
from servalsheets_backup.components.redis_snapshot import STAGING_PREFIX
from servalsheets_backup.components.redis_snapshot_restore import seed_key
from servalsheets_backup.format.dump_payload import same_value
from servalsheets_backup_local.testing.environment import (
    REDIS_SECRET,
    TARGET_REDIS_SECRET,
    LocalEnvironment,
    start_environment,
)
from servalsheets_backup_local.testing.servalsheets_state import SeededState, redis_snapshot

from .support import (
    ELASTICACHE_PARAMETERS,
    REDIS_BACKUP_REQUEST,
    REPLICATION_GROUP,
    RdbExporter,
    SnapshotLifecycle,
    create_replication_group,
    elasticache_services,
    held_locks,
    install_services,
    run_backup,
    run_restore,
    set_objects,
    sets,
    snapshot_backup_path,
)

pytestmark = pytest.mark.workflow

REQUEST = REDIS_BACKUP_REQUEST
# Snapshot: one poll still creating, then available. Ingest: the export has not landed yet, then it has.
EXPECTED_PATH = snapshot_backup_path(snapshot_polls=2, ingest_polls=2)


@pytest.fixture(scope="module")
def env() -> Iterator[LocalEnvironment]:
    """A deployment with RedisMode=elasticache and the replication group it snapshots."""
    environment = start_environment(extra_parameters=ELASTICACHE_PARAMETERS)
    try:
        create_replication_group(environment)
        yield environment
    finally:
        environment.close()


def staged(env: LocalEnvironment) -> list[str]:
    """Objects left under staging/ (plaintext exports)."""
    store = env.services().store
    listing = store.s3.list_objects_v2(Bucket=store.bucket, Prefix=STAGING_PREFIX)
    return [item["Key"] for item in listing.get("Contents", [])]


def test_snapshot_is_exported_validated_and_ingested(
    env: LocalEnvironment, seeded: SeededState, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a snapshot that takes one poll to become available and an export that lands late
    SnapshotLifecycle(status="creating", polls_until_available=1).install(monkeypatch)
    exporter = RdbExporter(env.production, delay=1)
    install_services(env, elasticache_services(exporter))
    env.runner.before_invoke = exporter.before_invoke

    # When the redis backup runs in ElastiCache mode
    run = run_backup(env, REQUEST)

    # Then it went Create snapshot -> Wait -> Check -> Export -> Ingest -> Finalize
    assert run.status == "SUCCEEDED", (run.error, run.cause[:500])
    assert run.entered == EXPECTED_PATH
    backup_id = run.output["backup_id"]
    created = run.task_input("Create ElastiCache snapshot")
    assert (created["action"], created["snapshot_name"]) == ("create", snapshot_name(backup_id))
    [snapshot] = env.client("elasticache").describe_snapshots(SnapshotName=snapshot_name(backup_id))[
        "Snapshots"
    ]
    assert snapshot["ReplicationGroupId"] == REPLICATION_GROUP
    assert exporter.exports == [snapshot_name(backup_id)]

    # ... and the set holds the exporter's real RDB, encrypted, byte for byte
    ref = next(ref for ref in sets(env, "redis") if ref.backup_id == backup_id)
    store = env.services().store
    assert store.verify_set(ref).ok
    manifest = store.load_manifest(ref)
    assert [entry.name for entry in manifest.objects] == ["redis/shard-0001.rdb"]
    assert exporter.rdb is not None and exporter.rdb.startswith(b"REDIS")
    assert b"".join(store.read_object(ref, manifest.objects[0])) == exporter.rdb
    shard = manifest.components["redis"]["shards"][0]
    assert manifest.components["redis"]["mode"] == "elasticache"
    assert shard["checksum_verified"] is True and shard["size"] == len(exporter.rdb)
    # The plaintext staging copy is gone; the snapshot itself is kept (the newest is never pruned)
    assert staged(env) == []
    snapshots = env.client("elasticache").describe_snapshots(SnapshotName=snapshot_name(backup_id))
    assert snapshots["Snapshots"][0]["SnapshotStatus"] == "available"
    assert held_locks(env) == {}


def test_corrupted_rdb_fails_the_backup_and_lists_no_set(env: LocalEnvironment, seeded: SeededState) -> None:
    before = [ref.backup_id for ref in sets(env, "redis")]
    install_services(env, elasticache_services(RdbExporter(env.production, corrupt=True)))

    run = run_backup(env, REQUEST)

    assert run.status == "FAILED" and run.error == "BackupFailed"
    assert run.cause.startswith("InvalidRdbError: "), run.cause
    assert run.entered[-3:] == ["Ingest exported RDB files", "Record backup failure", "Backup failed"]
    assert [ref.backup_id for ref in sets(env, "redis")] == before
    backup_id = run.task_output("Begin backup")["pending"]["backup_id"]
    assert set_objects(env, "redis", backup_id) == []
    assert env.metrics.values("BackupFailed", "redis") == [1]
    assert held_locks(env) == {}


def test_begin_backup_plans_the_configured_replication_group(
    env: LocalEnvironment, seeded: SeededState
) -> None:
    install_services(env, elasticache_services(RdbExporter(env.production), fill_in_group=False))

    run = run_backup(env, REQUEST)

    assert run.status == "SUCCEEDED", (run.error, run.cause[:300])
    name = snapshot_name(run.output["backup_id"])
    [snapshot] = env.client("elasticache").describe_snapshots(SnapshotName=name)["Snapshots"]
    assert snapshot["ReplicationGroupId"] == REPLICATION_GROUP


def elasticache_backup(env: LocalEnvironment, exporter: RdbExporter) -> str:
    """Make an ElastiCache-mode redis backup of the seeded production Redis; its id."""
    install_services(env, elasticache_services(exporter))
    run = run_backup(env, REQUEST)
    assert run.status == "SUCCEEDED", (run.error, run.cause[:500])
    return str(run.output["backup_id"])


def group_status(env: LocalEnvironment, group_id: str) -> str | None:
    """A replication group's status, or None when there is no such group."""
    try:
        groups = env.client("elasticache").describe_replication_groups(ReplicationGroupId=group_id)
    except Exception as exc:  # ReplicationGroupNotFoundFault
        assert "ReplicationGroupNotFound" in str(exc), exc
        return None
    return str(groups["ReplicationGroups"][0]["Status"])


@pytest.mark.parametrize("fail_after", [None, "verify"], ids=["seeded", "rolled-back"])
def test_elasticache_backup_restores_into_a_new_replication_group(
    env: LocalEnvironment, seeded: SeededState, fail_after: str | None
) -> None:
    # Given an ElastiCache-mode backup and the live REDIS_URL secret
    exporter = RdbExporter(env.production)
    backup_id = elasticache_backup(env, exporter)
    manager = env.client("secretsmanager")
    live_url = manager.get_secret_value(SecretId=REDIS_SECRET)["SecretString"]
    staged_seeds: list[tuple[bytes, str]] = []

    def look_at_the_seed(folder: str, payload: dict[str, Any]) -> None:
        job = payload.get("job") or {}
        if folder == "restore_redis" and (job.get("redis") or {}).get("phase") == "creating":
            store = env.services().store
            key = seed_key(job["restore_id"], 1)
            seed = store.s3.get_object(Bucket=store.bucket, Key=key)
            staged_seeds.append((seed["Body"].read(), seed.get("ServerSideEncryption", "")))

    new_group = f"servalsheets-restored-{fail_after or 'ok'}"
    env.runner.before_invoke = look_at_the_seed
    try:
        # When it is restored into a new group, pointing REDIS_URL at it
        target = {"new_replication_group_id": new_group, "update_redis_url_secret": True}
        request = {"backup": backup_id, "kinds": ["redis"], "target": target, "poll_seconds": 0}
        run = run_restore(env, **request, **({"fail_after": fail_after} if fail_after else {}))

        # Then the decrypted RDB was staged (SSE-S3, as ElastiCache needs) while the group was seeded
        assert staged_seeds == [(exporter.rdb, "AES256")]
        assert "Wait for new cache" in run.entered
        assert group_status(env, REPLICATION_GROUP) == "available"  # the running group is untouched
        store = env.services().store
        left = store.s3.list_objects_v2(Bucket=store.bucket, Prefix=STAGING_PREFIX + "restore/")
        assert left.get("KeyCount", 0) == 0  # plaintext seeds removed
        if fail_after is None:
            assert run.status == "SUCCEEDED", (run.error, run.cause[:500])
            results = run.output["results"]["redis"]
            assert results["replication_group_id"] == new_group and results["endpoint"]
            assert group_status(env, new_group) == "available"
            assert results["endpoint"] in manager.get_secret_value(SecretId=REDIS_SECRET)["SecretString"]
        else:
            # ... and a failure afterwards deletes the new group and moves the secret back
            assert run.status == "FAILED" and run.error == "InjectedFault", run.cause[:500]
            assert "Roll back" in run.entered
            assert group_status(env, new_group) in (None, "deleting")  # moto keeps it as deleting
            assert manager.get_secret_value(SecretId=REDIS_SECRET)["SecretString"] == live_url
        assert held_locks(env) == {}
    finally:
        manager.put_secret_value(SecretId=REDIS_SECRET, SecretString=live_url)


def test_the_cli_backup_takes_the_same_snapshot_path_in_process(
    env: LocalEnvironment, seeded: SeededState, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    from servalsheets_backup.services import Services
    from servalsheets_backup.settings import Settings
    from servalsheets_backup.workflows.backup import run_backup as run_backup_in_process

    # Given a snapshot that is still creating at first, and the operator's environment variables
    SnapshotLifecycle(status="creating", polls_until_available=2).install(monkeypatch)
    exporter = RdbExporter(env.production)
    settings = Settings.from_env({**os.environ, **env.function_env("FinalizeBackupFunction")})
    services = Services(settings, env.metrics, snapshot_exporter=exporter)

    # When `servalsheets-backup backup redis` runs in this process
    result = run_backup_in_process(services, "redis", owner="cli:test", trigger="cli", poll_seconds=0)

    # Then the group's snapshot was exported and its real RDB is in the set
    assert exporter.exports == [snapshot_name(result.backup_id)]
    ref = next(ref for ref in sets(env, "redis") if ref.backup_id == result.backup_id)
    store = env.services().store
    manifest = store.load_manifest(ref)
    assert b"".join(store.read_object(ref, manifest.objects[0])) == exporter.rdb
    assert manifest.components["redis"]["replication_group_id"] == REPLICATION_GROUP
    assert staged(env) == [] and held_locks(env) == {}


def test_an_elasticache_export_restores_key_by_key_into_a_named_redis(
    env: LocalEnvironment, seeded: SeededState
) -> None:
    # Given an ElastiCache-mode backup (a real RDB file) and an empty scratch Redis
    exporter = RdbExporter(env.production)
    backup_id = elasticache_backup(env, exporter)
    # Keys about to expire (the seed's 1.5 s one) may go either way between the reads below.
    everything = redis_snapshot(env.production.url)
    short = {key for key, value in everything.items() if expiring(value)}
    expected = {key: value for key, value in everything.items() if key not in short}
    scratch = redis.Redis.from_url(env.target.url)
    scratch.flushdb()

    # When it is restored into the scratch Redis the restore test uses, not into a new cache
    target = {"redis_url_secret_id": TARGET_REDIS_SECRET}
    run = run_restore(env, backup=backup_id, kinds=["redis"], mode="replace", target=target, poll_seconds=0)

    # Then every key arrived with its value and (within the run's duration) its expiry
    assert run.status == "SUCCEEDED", (run.error, run.cause[:500])
    assert "Wait for new cache" not in run.entered
    arrived = redis_snapshot(env.target.url)
    restored = {key: value for key, value in arrived.items() if key not in short}
    assert set(expected) <= set(restored)
    assert all(expiring(arrived[key]) for key in set(restored) - set(expected))  # expired since
    for key, (payload, pttl) in expected.items():
        assert payload is not None and restored[key][0] is not None
        assert same_value(payload, restored[key][0]), key
        assert (pttl == -1) == (restored[key][1] == -1), key
        assert pttl == -1 or abs(restored[key][1] - pttl) < 60_000, key
    checks = {check["name"]: check["ok"] for check in run.output["checks"]}
    assert checks["redis key counts per prefix"] and checks["redis sample DUMP and TTL"]
    assert group_status(env, REPLICATION_GROUP) == "available" and held_locks(env) == {}

    # ... and key patterns select from the export as they do from a logical dump
    scratch.flushdb()
    run = run_restore(
        env, backup=backup_id, kinds=["redis"], target=target, key_patterns=["refresh:*"], poll_seconds=0
    )
    assert run.status == "SUCCEEDED", (run.error, run.cause[:500])
    keys = list(scratch.scan_iter(count=1000))
    assert keys and all(key.startswith(b"refresh:") for key in keys)
    assert len(keys) == sum(1 for key in expected if key.startswith(b"refresh:"))
    scratch.close()


def expiring(value: tuple[bytes | None, int]) -> bool:
    """A key with under a minute to live."""
    return 0 <= value[1] < 60_000


def test_an_elasticache_export_without_a_named_target_is_refused_with_both_ways(
    env: LocalEnvironment, seeded: SeededState
) -> None:
    backup_id = elasticache_backup(env, RdbExporter(env.production))
    run = run_restore(env, backup=backup_id, kinds=["redis"], poll_seconds=0)
    assert run.status == "FAILED" and run.error == "InvalidInputError"
    assert "new_replication_group_id" in run.cause and "redis_url_secret_id" in run.cause
    assert "Take safety backup" not in run.entered and held_locks(env) == {}


def test_the_weekly_restore_test_passes_in_elasticache_mode(
    env: LocalEnvironment, seeded: SeededState
) -> None:
    # Given a full backup whose Redis part is an ElastiCache export
    install_services(env, elasticache_services(RdbExporter(env.production)))
    full = env.fire_schedule("BackupStateMachineFullSchedule")
    assert full["status"] == "SUCCEEDED", full.get("cause")

    # When the weekly restore test fires, it restores that export key by key into the scratch Redis
    description = env.fire_schedule("RestoreStateMachineRestoreTestSchedule")

    # Then every check passed and the scratch Redis was emptied again afterwards
    assert description["status"] == "SUCCEEDED", description.get("cause")
    summary = json.loads(description["output"])
    assert summary["checks"] and all(check["ok"] for check in summary["checks"]), summary["checks"]
    assert redis.Redis.from_url(env.target.url).dbsize() == 0
    assert held_locks(env) == {}
