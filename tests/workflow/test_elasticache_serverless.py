"""The backup and restore state machines with an ElastiCache Serverless cache (RedisMode=elasticache).

moto has no ElastiCache Serverless, so every serverless call goes through the ServerlessCaches
adapter, here the stand-in whose cache is the production test redis-server: the snapshot is the
RDB that server SAVEs, the export puts it into the moto bucket at the root (as
ExportServerlessCacheSnapshot does, with no prefix), and a cache created from
SnapshotArnsToRestore is a new redis-server loading the staged RDB, so the restored keys are real.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from servalsheets_backup.adapters.elasticache import SNAPSHOT_PREFIX, snapshot_name
from servalsheets_backup.components.redis_snapshot import SERVERLESS_EXPORT_TIMEOUT_SECONDS, STAGING_PREFIX
from servalsheets_backup.services import Services
from servalsheets_backup.settings import Settings
from servalsheets_backup.workflows.backup import run_backup as run_backup_in_process
from servalsheets_backup_local.testing.environment import REDIS_SECRET, LocalEnvironment, start_environment
from servalsheets_backup_local.testing.servalsheets_state import SeededState, redis_snapshot
from servalsheets_backup_local.testing.serverless_standin import (
    ServerlessCacheNotFoundFault,
    ServerlessCacheStandIn,
    folder_export_key,
)

from .support import (
    REDIS_BACKUP_REQUEST,
    SERVERLESS_CACHE,
    SERVERLESS_PARAMETERS,
    held_locks,
    install_services,
    redis_differences,
    run_backup,
    run_restore,
    serverless_services,
    set_objects,
    sets,
    snapshot_backup_path,
)

pytestmark = pytest.mark.workflow

REQUEST = REDIS_BACKUP_REQUEST
# Snapshot: one poll still creating, then available. Ingest: still exporting; the export ended
# but the file was listed before it landed; the file is there, so look once more to see the
# listing has settled; settled.
EXPECTED_PATH = snapshot_backup_path(snapshot_polls=2, ingest_polls=4)


@pytest.fixture(scope="module")
def env() -> Iterator[LocalEnvironment]:
    """A deployment with RedisMode=elasticache and ElastiCacheServerlessCacheName set."""
    environment = start_environment(extra_parameters=SERVERLESS_PARAMETERS)
    try:
        yield environment
    finally:
        environment.close()


@pytest.fixture
def standin(env: LocalEnvironment, seeded: SeededState) -> Iterator[ServerlessCacheStandIn]:
    """A fresh stand-in whose cache SERVERLESS_CACHE is the seeded production redis-server."""
    caches = ServerlessCacheStandIn()
    caches.register(SERVERLESS_CACHE, env.production)
    install_services(env, serverless_services(caches))
    try:
        yield caches
    finally:
        caches.close()


def root_exports(env: LocalEnvironment) -> list[str]:
    """Every version of every object at the bucket root named like one of our snapshots."""
    store = env.services().store
    listing = store.s3.list_object_versions(Bucket=store.bucket, Prefix=SNAPSHOT_PREFIX)
    return [v["Key"] for v in listing.get("Versions", []) + listing.get("DeleteMarkers", [])]


def test_serverless_snapshot_is_exported_validated_and_ingested(
    env: LocalEnvironment, standin: ServerlessCacheStandIn
) -> None:
    # When the redis backup runs against the serverless cache
    run = run_backup(env, REQUEST)

    # Then it went Create -> poll -> Export -> poll the bucket until the export settled -> Finalize
    assert run.status == "SUCCEEDED", (run.error, run.cause[:500])
    assert run.entered == EXPECTED_PATH
    backup_id = run.output["backup_id"]
    name = snapshot_name(backup_id)
    assert standin.calls[0] == ("create_snapshot", (SERVERLESS_CACHE, name))
    assert ("export_snapshot", (name, env.services().store.bucket)) in standin.calls

    # ... and the set holds the snapshot's real RDB, encrypted, byte for byte
    ref = next(ref for ref in sets(env, "redis") if ref.backup_id == backup_id)
    store = env.services().store
    assert store.verify_set(ref).ok
    manifest = store.load_manifest(ref)
    rdb = standin.snapshots[name].rdb
    assert rdb.startswith(b"REDIS") and [e.name for e in manifest.objects] == ["redis/shard-0001.rdb"]
    assert b"".join(store.read_object(ref, manifest.objects[0])) == rdb
    redis_component = manifest.components["redis"]
    assert redis_component["mode"] == "elasticache"
    assert redis_component["serverless_cache_name"] == SERVERLESS_CACHE
    assert redis_component["shards"][0]["checksum_verified"] is True
    assert "export" not in manifest.source  # polling bookkeeping stays out of the manifest
    # The plaintext export is gone, every version of it; the snapshot itself is kept (newest)
    assert root_exports(env) == []
    assert standin.snapshots[name].status == "available"
    assert held_locks(env) == {}


def test_the_export_is_found_under_a_folder_named_after_the_snapshot(
    env: LocalEnvironment, standin: ServerlessCacheStandIn
) -> None:
    # AWS does not document the exported object names; any .rdb under the snapshot name is taken
    standin.export_key = folder_export_key

    run = run_backup(env, REQUEST)

    assert run.status == "SUCCEEDED", (run.error, run.cause[:500])
    ref = next(ref for ref in sets(env, "redis") if ref.backup_id == run.output["backup_id"])
    manifest = env.services().store.load_manifest(ref)
    assert manifest.components["redis"]["shards"][0]["size"] == len(
        standin.snapshots[snapshot_name(run.output["backup_id"])].rdb
    )
    assert root_exports(env) == []


def test_a_multi_file_export_is_ingested_only_once_every_file_has_landed(
    env: LocalEnvironment, standin: ServerlessCacheStandIn
) -> None:
    # Given an export that writes three files, one per poll (the export "ends" with the third)
    standin.export_files = 3

    run = run_backup(env, REQUEST)

    # Then the ingest waited for all three and the stable listing, and took each as one shard
    assert run.status == "SUCCEEDED", (run.error, run.cause[:500])
    name = snapshot_name(run.output["backup_id"])
    ref = next(ref for ref in sets(env, "redis") if ref.backup_id == run.output["backup_id"])
    store = env.services().store
    manifest = store.load_manifest(ref)
    shards = ["redis/shard-0001.rdb", "redis/shard-0002.rdb", "redis/shard-0003.rdb"]
    assert [entry.name for entry in manifest.objects] == shards
    assert [b"".join(store.read_object(ref, entry)) for entry in manifest.objects] == [
        standin.snapshots[name].rdb
    ] * 3
    assert [s["checksum_verified"] for s in manifest.components["redis"]["shards"]] == [True] * 3
    assert run.entered.count("Ingest exported RDB files") >= 5  # 1 exporting + 3 files + settle
    assert root_exports(env) == []


def test_a_corrupted_export_fails_the_backup_and_its_plaintext_is_removed(
    env: LocalEnvironment, standin: ServerlessCacheStandIn
) -> None:
    before = [ref.backup_id for ref in sets(env, "redis")]
    standin.corrupt_exports = True

    run = run_backup(env, REQUEST)

    assert run.status == "FAILED" and run.cause.startswith("InvalidRdbError: "), run.cause
    assert [ref.backup_id for ref in sets(env, "redis")] == before
    backup_id = run.task_output("Begin backup")["pending"]["backup_id"]
    assert set_objects(env, "redis", backup_id) == []
    assert root_exports(env) == []  # not left for the lifecycle rule
    assert env.metrics.values("BackupFailed", "redis") == [1]
    assert held_locks(env) == {}


def test_a_failed_serverless_snapshot_fails_the_backup(
    env: LocalEnvironment, standin: ServerlessCacheStandIn
) -> None:
    standin.snapshot_outcome = "failed"

    run = run_backup(env, REQUEST)

    assert run.status == "FAILED"
    assert run.entered[-4:] == [
        "Snapshot available?",
        "Snapshot failed",
        "Record backup failure",
        "Backup failed",
    ]
    assert run.cause == "SnapshotFailed: ElastiCache reported the snapshot as failed"
    assert not any(call[0] == "export_snapshot" for call in standin.calls)
    assert held_locks(env) == {}


def test_an_export_that_never_arrives_fails_with_a_pointer_to_the_bucket_policy(
    env: LocalEnvironment, standin: ServerlessCacheStandIn
) -> None:
    # Given an export that "finishes" without writing a file, and a clock that reaches the limit
    standin.lose_exports = True
    offset = {"seconds": 0.0}
    install_services(env, serverless_services(standin, clock=lambda: time.time() + offset["seconds"]))

    def later_at_ingest(folder: str, payload: dict[str, Any]) -> None:
        if folder == "ingest_snapshot" and len(standin.calls) > 4:
            offset["seconds"] = SERVERLESS_EXPORT_TIMEOUT_SECONDS + 60

    env.runner.before_invoke = later_at_ingest

    run = run_backup(env, REQUEST)

    assert run.status == "FAILED", run.entered
    assert run.cause.startswith("SnapshotExportError: no .rdb file named servalsheets-backup-"), run.cause
    assert "ElastiCacheServerlessExportObjects" in run.cause
    assert held_locks(env) == {}


def test_finalize_prunes_own_serverless_snapshots_past_the_retention_only(
    env: LocalEnvironment, standin: ServerlessCacheStandIn
) -> None:
    old = datetime.now(UTC) - timedelta(days=30)
    standin.add_snapshot(SERVERLESS_CACHE, "servalsheets-backup-20261001t000000z-00000001", old)
    standin.add_snapshot(SERVERLESS_CACHE, "servalsheets-backup-20261002t000000z-00000002", old)
    standin.add_snapshot(SERVERLESS_CACHE, "operator-manual-snapshot", old)  # not ours
    standin.add_snapshot(SERVERLESS_CACHE, "servalsheets-backup-20261124t000000z-00000003", datetime.now(UTC))

    run = run_backup(env, REQUEST)

    assert run.status == "SUCCEEDED", (run.error, run.cause[:500])
    assert sorted(run.output["snapshots_pruned"]) == [
        "servalsheets-backup-20261001t000000z-00000001",
        "servalsheets-backup-20261002t000000z-00000002",
    ]
    assert sorted(standin.snapshots) == sorted(
        [
            "operator-manual-snapshot",
            "servalsheets-backup-20261124t000000z-00000003",
            snapshot_name(run.output["backup_id"]),
        ]
    )


@pytest.mark.parametrize("fail_after", [None, "verify"], ids=["seeded", "rolled-back"])
def test_serverless_backup_restores_into_a_new_serverless_cache(
    env: LocalEnvironment, standin: ServerlessCacheStandIn, fail_after: str | None
) -> None:
    # Given a serverless backup of the seeded cache, and the live REDIS_URL secret
    backup = run_backup(env, REQUEST)
    assert backup.status == "SUCCEEDED", (backup.error, backup.cause[:500])
    expected = redis_snapshot(env.production.url)
    taken_at = time.monotonic()
    manager = env.client("secretsmanager")
    live_url = manager.get_secret_value(SecretId=REDIS_SECRET)["SecretString"]
    new_cache = f"servalsheets-restored-{fail_after or 'ok'}"
    try:
        # When it is restored into a new serverless cache, pointing REDIS_URL at it
        target = {"new_serverless_cache_name": new_cache, "update_redis_url_secret": True}
        request = {
            "backup": backup.output["backup_id"],
            "kinds": ["redis"],
            "target": target,
            "poll_seconds": 0,
        }
        run = run_restore(env, **request, **({"fail_after": fail_after} if fail_after else {}))

        # Then the cache was created from the staged seed, shaped like the running cache
        creates = [args for method, args in standin.calls if method == "create_cache"]
        assert len(creates) == 1 and creates[0][0] == new_cache and creates[0][2] == SERVERLESS_CACHE
        assert creates[0][1][0].startswith(
            f"arn:aws:s3:::{env.services().store.bucket}/{STAGING_PREFIX}restore/"
        )
        assert "Wait for new cache" in run.entered
        assert redis_differences(env.production.url, expected, since=taken_at) == []  # untouched
        store = env.services().store
        left = store.s3.list_objects_v2(Bucket=store.bucket, Prefix=STAGING_PREFIX + "restore/")
        assert left.get("KeyCount", 0) == 0  # plaintext seeds removed
        if fail_after is None:
            assert run.status == "SUCCEEDED", (run.error, run.cause[:500])
            results = run.output["results"]["redis"]
            assert results["serverless_cache_name"] == new_cache
            # ... the new cache really holds every backed-up key, with its payload and TTL
            restored = standin.server(new_cache)
            assert redis_differences(restored.url, expected, since=taken_at) == []
            url = manager.get_secret_value(SecretId=REDIS_SECRET)["SecretString"]
            assert "rediss://" in url and f"127.0.0.1:{restored.port}" in url  # serverless is TLS-only
        else:
            # ... and a failure afterwards deletes the new cache and moves the secret back
            assert run.status == "FAILED" and run.error == "InjectedFault", run.cause[:500]
            assert "Roll back" in run.entered
            assert new_cache not in standin.caches
            assert manager.get_secret_value(SecretId=REDIS_SECRET)["SecretString"] == live_url
        assert held_locks(env) == {}
    finally:
        manager.put_secret_value(SecretId=REDIS_SECRET, SecretString=live_url)


def test_the_cli_backup_takes_the_same_snapshot_path_in_process(
    env: LocalEnvironment, standin: ServerlessCacheStandIn
) -> None:
    # Given the settings an operator's shell has (the functions' environment variables)
    settings = Settings.from_env({**os.environ, **env.function_env("FinalizeBackupFunction")})
    services = Services(settings, env.metrics, serverless_caches=standin)

    # When `servalsheets-backup backup redis` runs (in this process, no state machine)
    result = run_backup_in_process(services, "redis", owner="cli:test", trigger="cli", poll_seconds=0)

    # Then it snapshotted, waited, exported, ingested the settled export and finalized
    name = snapshot_name(result.backup_id)
    methods = [method for method, _ in standin.calls]
    assert methods[0] == "create_snapshot" and methods.count("export_snapshot") == 1
    assert methods[-1] == "list_own_snapshots"  # pruning ran after the set completed
    ref = next(ref for ref in sets(env, "redis") if ref.backup_id == result.backup_id)
    store = env.services().store
    manifest = store.load_manifest(ref)
    assert b"".join(store.read_object(ref, manifest.objects[0])) == standin.snapshots[name].rdb
    assert manifest.source["redis_mode"] == "elasticache" and root_exports(env) == []
    assert held_locks(env) == {}


def test_a_failed_prune_does_not_fail_a_complete_backup(
    env: LocalEnvironment, standin: ServerlessCacheStandIn
) -> None:
    standin.faults["list_own_snapshots"] = [ServerlessCacheNotFoundFault("listing refused")]

    run = run_backup(env, REQUEST)

    assert run.status == "SUCCEEDED", (run.error, run.cause[:500])
    assert run.output["snapshots_pruned"] == []
    assert ("list_own_snapshots", (SERVERLESS_CACHE,)) in standin.calls  # it was tried
