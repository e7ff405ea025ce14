"""Sharded Redis through the deployed state machines: the Map states against real Redis Clusters.

A 3-primary cluster is REDIS_URL; the backup's Map dumps each shard from its own primary, the
restore's Map restores one part per source shard into a 2-primary cluster. A failure injected
in one shard's iteration fails the backup without a set, and fails the restore into a rollback
that puts the target cluster back exactly as it was.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from servalsheets_backup_local.testing.environment import (
    REDIS_SECRET,
    TARGET_REDIS_SECRET,
    LocalEnvironment,
)
from servalsheets_backup_local.testing.keyspace import capture_with, compare_keyspaces
from servalsheets_backup_local.testing.redis_cluster import RedisCluster, start_redis_cluster
from servalsheets_backup_local.testing.seed import seed_servalsheets

from .support import fire, held_locks, reset, restore_redis_to_scratch, sets

pytestmark = pytest.mark.workflow
KEYS = 3000


def point(env: LocalEnvironment, secret_id: str, url: str) -> None:
    env.client("secretsmanager").put_secret_value(
        SecretId=secret_id, SecretString=json.dumps({"REDIS_URL": url})
    )


@pytest.fixture(scope="module")
def clusters(env: LocalEnvironment) -> Iterator[tuple[RedisCluster, RedisCluster]]:
    """A seeded 3-primary source cluster (REDIS_URL) and a 2-primary target (the restore-test secret)."""
    source, target = start_redis_cluster(3), start_redis_cluster(2)
    try:
        with source.client() as client:
            seed_servalsheets(client, KEYS, seed=5)
        yield source, target
    finally:
        source.stop()
        target.stop()


@pytest.fixture
def deployment(
    env: LocalEnvironment, clusters: tuple[RedisCluster, RedisCluster]
) -> Iterator[LocalEnvironment]:
    reset(env)
    with clusters[0].client() as client:
        seed_servalsheets(client, KEYS, seed=5)  # reset flushed only the standalone servers
    point(env, REDIS_SECRET, clusters[0].url)
    point(env, TARGET_REDIS_SECRET, clusters[1].url)
    yield env
    point(env, REDIS_SECRET, env.production.url)
    point(env, TARGET_REDIS_SECRET, env.target.url)
    assert held_locks(env) == {}


def fail_shard(folder_action: str, index: int) -> Any:
    """A before_invoke hook failing every invocation for one shard (``dump_redis:shard``) or part."""
    folder, action = folder_action.split(":")
    item = "shard" if action == "shard" else "part"

    def hook(folder_seen: str, payload: dict[str, Any]) -> None:
        if folder_seen == folder and payload.get("action") == action and payload[item]["index"] == index:
            raise RuntimeError(f"injected failure in {item} {index}")

    return hook


def test_a_three_shard_backup_restores_into_two_shards(
    deployment: LocalEnvironment, clusters: tuple[RedisCluster, RedisCluster]
) -> None:
    env, (source, target) = deployment, clusters
    with source.client() as client:
        before = capture_with(client)

    run = fire(env, "redis")

    assert run.status == "SUCCEEDED", (run.error, run.message[:500])
    assert run.entered.count("Dump every shard") == 1 and run.entered.count("Shard dumped") == 3
    ref = next(ref for ref in sets(env, "redis") if ref.backup_id == run.output["backup_id"])
    manifest = env.services().store.load_manifest(ref)
    shards = manifest.components["redis"]["shards"]
    assert [s["address"] for s in shards] == [f"127.0.0.1:{node.port}" for node in source.nodes]
    assert [s["slots"] for s in shards] == ["0-5460", "5461-10922", "10923-16383"]
    assert sum(s["keys"] for s in shards) == manifest.components["redis"]["keys"] == len(before)

    restore = restore_redis_to_scratch(env, ref.backup_id)

    assert restore.status == "SUCCEEDED", (restore.error, restore.message[:500])
    assert restore.entered.count("Shard restored") == 3
    assert all(check["ok"] for check in restore.output["checks"]), restore.output["checks"]
    with target.client() as client:
        verdict = compare_keyspaces(before, capture_with(client, before))
    assert verdict.ok, verdict.as_dict()
    assert verdict.total("restored") >= len(before) - 1  # the one short-lived key may expire


def test_a_failing_shard_fails_the_backup_without_a_set(
    deployment: LocalEnvironment, clusters: tuple[RedisCluster, RedisCluster]
) -> None:
    env = deployment
    before = {ref.backup_id for ref in sets(env, "redis")}
    env.runner.before_invoke = fail_shard("dump_redis:shard", 1)

    run = fire(env, "redis")

    assert run.status == "FAILED" and "Record backup failure" in run.entered
    assert "injected failure in shard 1" in run.cause
    assert {ref.backup_id for ref in sets(env, "redis")} == before, "no set is called complete"


def test_a_failing_restore_part_rolls_the_target_cluster_back(
    deployment: LocalEnvironment, clusters: tuple[RedisCluster, RedisCluster]
) -> None:
    env, (_, target) = deployment, clusters
    backup = fire(env, "redis")
    assert backup.status == "SUCCEEDED", backup.message[:300]
    with target.client() as client:
        client.flushall(target_nodes="primaries")
        for index in range(200):  # what the target held: its safety backup must bring it back
            client.set(f"servalsheets:session:target-{index}", b"before", px=3_600_000)
            client.hset(f"servalsheets:task:target-{index}", mapping={"state": "running"})
        target_before = capture_with(client)
    env.runner.before_invoke = fail_shard("restore_redis:part", 2)

    restore = restore_redis_to_scratch(env, backup.output["backup_id"])

    assert restore.status == "FAILED" and restore.entered[-1] == "Restore failed and was rolled back"
    assert "Restore every shard" in restore.entered and "Roll back" in restore.entered
    env.runner.before_invoke = None
    with target.client() as client:
        verdict = compare_keyspaces(target_before, capture_with(client, target_before))
    assert verdict.ok and not verdict.unexpected, verdict.as_dict()
    nodes = [redis.Redis(port=node.port) for node in target.nodes]
    try:
        assert all(node.dbsize() > 0 for node in nodes), "both primaries hold their keys again"
    finally:
        for node in nodes:
            node.close()
