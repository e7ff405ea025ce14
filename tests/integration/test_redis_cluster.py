"""Shard discovery against a real Redis Cluster (three redis-server --cluster-enabled processes
joined by redis-cli --cluster create on loopback), a standalone server, and hand-built clusters."""

from __future__ import annotations

import functools
import io
import os
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager

import boto3
import pytest
import redis
from moto import mock_aws

from servalsheets_backup.adapters import redis_cluster
from servalsheets_backup.adapters.aws import reset_clients
from servalsheets_backup.adapters.redis_cluster import check_unchanged, discover_shards, node_url
from servalsheets_backup.components.redis_logical import cluster as logical_cluster
from servalsheets_backup.components.redis_logical.cluster import ClusterTargets, dump_shard, require_one_shard
from servalsheets_backup.components.redis_logical.restore import RestoreResult, restore_records
from servalsheets_backup.errors import RedisBackupError, TransientError
from servalsheets_backup.format.redis_slots import SLOTS, key_slot, uncovered_slots
from servalsheets_backup.observability import CollectingMetrics
from servalsheets_backup.services import Services
from servalsheets_backup.settings import Settings
from servalsheets_backup.workflows import backup, backup_steps
from servalsheets_backup.workflows.restore.redis_shards import restore_parts
from servalsheets_backup_local.testing.redis_cluster import RedisCluster, start_redis_cluster
from servalsheets_backup_local.testing.redis_server import start_redis

from .aws_account import create_backup_account

pytestmark = pytest.mark.integration
KEYS = 3000


def seed(cluster: RedisCluster, count: int = KEYS) -> None:
    client = cluster.client()
    pipe = client.pipeline(transaction=False)
    for index in range(count):
        pipe.set(f"servalsheets:session:{index}", os.urandom(16), px=3_600_000)
    pipe.execute()
    client.close()


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    running = start_redis_cluster(3)
    seed(running)
    yield running
    running.stop()


def test_key_slot_is_the_clusters_own(cluster: RedisCluster) -> None:
    node = redis.Redis(port=cluster.nodes[0].port)
    rng = random.Random(7)
    keys = [b"123456789", b"{user1000}.following", b"foo{}{bar}", b"foo{{bar}}zap", b"{}", b"a{b", b""]
    keys += [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40))) for _ in range(300)]
    for key in keys:
        assert key_slot(key) == node.execute_command("CLUSTER", "KEYSLOT", key), key
    assert key_slot(b"123456789") == 12739  # CRC16/XMODEM check value 0x31C3 mod 16384
    node.close()


def test_discovery_lists_every_primary_with_its_slots_and_keys(cluster: RedisCluster) -> None:
    plan = discover_shards(cluster.url)
    assert plan.mode == "cluster"
    assert sorted(s.port for s in plan.shards) == sorted(n.port for n in cluster.nodes)
    assert uncovered_slots([s.slots for s in plan.shards]) == ([], [])
    assert plan.shards[0].slots[0][0] == 0  # in slot order
    counts = {n.port: redis.Redis(port=n.port).dbsize() for n in cluster.nodes}
    assert {s.port: s.keys for s in plan.shards} == counts
    assert plan.keys == KEYS
    assert all(s.replicas == 0 for s in plan.shards)


def test_cluster_nodes_fallback_reads_the_same_layout(cluster: RedisCluster) -> None:
    node = redis.Redis(port=cluster.nodes[1].port)
    from_nodes = redis_cluster._primaries_from_nodes(node.execute_command("CLUSTER", "NODES"))
    from_shards = redis_cluster._cluster_primaries(node, tls=False)
    node.close()
    assert sorted(from_nodes) == sorted(from_shards)


def test_a_standalone_server_is_one_shard_of_every_slot() -> None:
    server = start_redis()
    try:
        redis.Redis(port=server.port).set("k", "v")
        plan = discover_shards(server.url)
        assert plan.mode == "standalone"
        assert [(s.slots, s.keys, s.port) for s in plan.shards] == [(((0, SLOTS - 1),), 1, server.port)]
    finally:
        server.stop()


def test_auth_reaches_every_node_and_stays_out_of_the_plan() -> None:
    secret = "cluster-pass-" + os.urandom(6).hex()
    running = start_redis_cluster(3, password=secret)
    try:
        seed(running, 100)
        plan = discover_shards(running.url)
        assert plan.keys == 100
        assert secret not in repr(plan.as_dict())
        with pytest.raises(RedisBackupError, match="rejected the credentials") as caught:
            discover_shards(running.url.replace(secret, "wrong"))
        assert secret not in str(caught.value)
    finally:
        running.stop()


@pytest.mark.parametrize("primaries", [1, 2])
def test_clusters_smaller_than_three_primaries(primaries: int) -> None:
    running = start_redis_cluster(primaries)
    try:
        seed(running, 200)
        plan = discover_shards(running.url)
        assert len(plan.shards) == primaries
        assert plan.keys == 200
        assert uncovered_slots([s.slots for s in plan.shards]) == ([], [])
    finally:
        running.stop()


def test_moving_a_slot_is_reported_as_a_resharding() -> None:
    running = start_redis_cluster(3)
    try:
        plan = discover_shards(running.url)
        check_unchanged(running.url, plan)  # nothing moved yet
        source, target = plan.shards[0], plan.shards[1]
        slot = source.slots[0][0]  # empty: nothing was seeded
        for node in running.nodes:
            redis.Redis(port=node.port).execute_command("CLUSTER", "SETSLOT", slot, "NODE", target.node_id)
        with pytest.raises(RedisBackupError, match="resharded or failed over") as caught:
            check_unchanged(running.url, plan)
        assert source.address in str(caught.value)
    finally:
        running.stop()


def test_node_url_keeps_scheme_credentials_and_options() -> None:
    url = "rediss://backup:s3cret@primary.example:6379/0?ssl_cert_reqs=none"
    assert node_url(url, "10.0.0.7", 6380) == "rediss://backup:s3cret@10.0.0.7:6380/0?ssl_cert_reqs=none"
    assert node_url("redis://127.0.0.1:7000", "::1", 7001) == "redis://[::1]:7001"


# --------------------------------------------------------------------------- dump and restore


def dump_every_shard(url: str) -> tuple[list[bytes], int]:
    plan = discover_shards(url)
    streams = []
    for index in range(len(plan.shards)):
        sink = io.BytesIO()
        result = dump_shard(url, plan, index, sink, backup_time_ms=time.time_ns() // 1_000_000)
        assert result.complete
        streams.append(sink.getvalue())
    return streams, plan.keys


def restore_streams(url: str, streams: list[bytes], **options: object) -> list[RestoreResult]:
    with ClusterTargets(url) as targets:
        return [
            restore_records(targets.targets, [s], now_ms=time.time_ns() // 1_000_000, mode="merge", **options)
            for s in streams
        ]


def contents(client: redis.Redis | redis.RedisCluster) -> dict[bytes, tuple[bytes, int]]:
    if isinstance(client, redis.RedisCluster):
        keys = client.keys(target_nodes="all")
    else:
        keys = list(client.scan_iter(count=1000))
    return {key: (client.get(key), client.pttl(key)) for key in keys}


def test_a_three_shard_backup_restores_into_two_shards_every_key_value_and_ttl(cluster: RedisCluster) -> None:
    streams, keys = dump_every_shard(cluster.url)
    assert len(streams) == 3 and keys == KEYS
    target = start_redis_cluster(2)
    try:
        results = restore_streams(target.url, streams)
        assert sum(r.restored for r in results) == KEYS and all(r.complete for r in results)
        source, restored = contents(cluster.client()), contents(target.client())
        assert restored.keys() == source.keys()
        for key, (value, ttl) in source.items():
            assert restored[key][0] == value
            assert abs(restored[key][1] - ttl) < 60_000, key
        plan = discover_shards(target.url)
        owners = plan.slot_owners()
        for shard in plan.shards:  # each key on the primary owning its slot
            node = redis.Redis(port=shard.port)
            assert {owners[key_slot(k)] for k in node.scan_iter(count=1000)} == {shard.index}
            node.close()
    finally:
        target.stop()


def test_cluster_backup_into_a_standalone_server_and_back(cluster: RedisCluster) -> None:
    streams, _ = dump_every_shard(cluster.url)
    server = start_redis()
    target = start_redis_cluster(3)
    try:
        restore_streams(server.url, streams)
        standalone = redis.Redis(port=server.port)
        assert standalone.dbsize() == KEYS
        back, _ = dump_every_shard(server.url)
        assert len(back) == 1
        restore_streams(target.url, back)
        assert contents(target.client()).keys() == contents(cluster.client()).keys()
    finally:
        server.stop()
        target.stop()


def test_missing_only_and_patterns_on_a_cluster_target(cluster: RedisCluster) -> None:
    streams, _ = dump_every_shard(cluster.url)
    target = start_redis_cluster(3)
    try:
        client = target.client()
        client.set("servalsheets:session:1", b"kept")  # matches the pattern: missing-only keeps it
        with ClusterTargets(target.url) as targets:
            now = time.time_ns() // 1_000_000
            results = [
                restore_records(targets.targets, [s], now_ms=now, mode="missing-only", patterns=["*:1*"])
                for s in streams
            ]
        wanted = {f"servalsheets:session:{i}".encode() for i in range(KEYS) if str(i).startswith("1")}
        assert set(client.keys(target_nodes="all")) == wanted
        assert client.get("servalsheets:session:1") == b"kept"
        assert sum(r.skipped_pattern for r in results) == KEYS - len(wanted)
        assert sum(r.kept_existing for r in results) == 1
        assert sum(r.restored for r in results) == len(wanted) - 1
    finally:
        target.stop()


def test_a_slot_moved_after_planning_fails_the_shard_dump() -> None:
    running = start_redis_cluster(3)
    try:
        seed(running, 300)
        plan = discover_shards(running.url)
        empty = next(
            slot
            for slot in range(plan.shards[0].slots[0][0], plan.shards[0].slots[0][1] + 1)
            if not redis.Redis(port=plan.shards[0].port).execute_command("CLUSTER", "COUNTKEYSINSLOT", slot)
        )
        new_owner = plan.shards[2].node_id
        for node in running.nodes:
            redis.Redis(port=node.port).execute_command("CLUSTER", "SETSLOT", empty, "NODE", new_owner)
        with pytest.raises(RedisBackupError, match="resharded or failed over"):
            dump_shard(running.url, plan, 0, io.BytesIO(), backup_time_ms=time.time_ns() // 1_000_000)
    finally:
        running.stop()


# --------------------------------------------------------------------------- whole sets, one process


def test_rdb_stream_refuses_a_sharded_cluster_and_names_logical_mode(cluster: RedisCluster) -> None:
    with pytest.raises(RedisBackupError, match="Redis Cluster of 3 primaries") as caught:
        require_one_shard(cluster.url, "redis rdb-stream backup")
    assert all(f"127.0.0.1:{node.port}" in str(caught.value) for node in cluster.nodes)
    assert "would miss the other shards' keys" in str(caught.value)
    assert "Use RedisMode=logical" in str(caught.value)
    single = start_redis_cluster(1)
    server = start_redis()
    try:
        require_one_shard(single.url, "redis rdb-stream backup")
        require_one_shard(server.url, "redis rdb-stream backup")
    finally:
        single.stop()
        server.stop()


@contextmanager
def backup_account(url: str, mode: str = "logical") -> Iterator[Services]:
    with mock_aws():
        reset_clients()
        key = create_backup_account("ssbk-cluster-test")
        settings = Settings.from_env(
            {
                "BACKUP_BUCKET": "ssbk-cluster-test",
                "BACKUP_KMS_KEY_ID": key,
                "BACKUP_ENVIRONMENT": "test",
                "STATE_TABLE": "state",
                "REDIS_URL": url,
                "REDIS_MODE": mode,
            }
        )
        try:
            yield Services(settings, CollectingMetrics())
        finally:
            reset_clients()


def test_an_rdb_stream_backup_of_a_sharded_cluster_fails_before_writing_an_object(
    cluster: RedisCluster,
) -> None:
    with backup_account(cluster.url, "rdb-stream") as services:
        pending = backup.begin(services, "redis", owner="test")
        with pytest.raises(RedisBackupError, match="would miss the other shards' keys"):
            backup_steps.dump_redis(services, {"pending": pending.to_dict()}, None)
        listed = boto3.client("s3").list_objects_v2(Bucket="ssbk-cluster-test")
        assert listed.get("KeyCount", 0) == 0


def test_one_process_backs_up_every_shard_and_restores_into_a_smaller_cluster(cluster: RedisCluster) -> None:
    """The CLI's driver (and the safety backup's): shards one after another, one set."""
    target = start_redis_cluster(2)
    try:
        with backup_account(cluster.url) as services:
            result = backup.run_backup(services, "redis", owner="test")
            ref = services.store.find(result.backup_id, "redis")
            manifest = services.store.load_manifest(ref)
            summary = manifest.components["redis"]
            assert summary["topology"] == "cluster" and summary["keys"] == KEYS
            assert [shard["slots"] for shard in summary["shards"]] == ["0-5460", "5461-10922", "10923-16383"]
            assert sum(shard["keys"] for shard in summary["shards"]) == KEYS
            names = [entry.name for entry in manifest.objects_of("redis")]
            assert names == [f"redis/dump-s{i:02d}-0001" for i in range(3)]
            assert services.store.verify_set(ref).ok

            parts = restore_parts(manifest)
            assert [part.objects for part in parts] == [[name] for name in names]
            with ClusterTargets(target.url) as targets:
                for entry in manifest.objects_of("redis"):
                    restored = restore_records(
                        targets.targets,
                        services.store.read_object(ref, entry),
                        now_ms=time.time_ns() // 1_000_000,
                        mode="merge",
                        subject=entry.name,
                    )
                    assert restored.complete
        assert contents(target.client()).keys() == contents(cluster.client()).keys()
    finally:
        target.stop()


def test_a_shard_dump_continues_from_its_own_cursor_per_invocation(
    cluster: RedisCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Map's iteration: one shard, several chunks, each a complete object of its own."""
    small_scans = functools.partial(logical_cluster.dump_keys, scan_count=50, batch=50)
    monkeypatch.setattr(logical_cluster, "dump_keys", small_scans)
    with backup_account(cluster.url) as services:
        pending = backup.begin(services, "redis", owner="test")
        planned = backup_steps.dump_redis(services, {"action": "plan", "pending": pending.to_dict()}, None)
        assert len(planned["shards"]) == 3 and planned["max_concurrency"] == 4
        event = {"action": "shard", "pending": planned["pending"], "shard": planned["shards"][1]}
        chunks = 0
        while True:
            # a deadline already passed: each invocation does one SCAN round, then stops
            shard = backup_steps.dump_redis(services, event, time.monotonic() - 1)
            chunks += 1
            event = {**event, "shard": shard}
            if shard["done"]:
                break
        assert chunks > 1 and shard["chunks"] == chunks
        assert [o["name"] for o in shard["objects"]] == [
            f"redis/dump-s01-{n:04d}" for n in range(1, chunks + 1)
        ]
        assert shard["keys"] == discover_shards(cluster.url).shards[1].keys
        merge = {"action": "merge", "pending": planned["pending"], "shards": [shard]}
        with pytest.raises(RedisBackupError, match="needs every one of the 3 shards finished"):
            backup_steps.dump_redis(services, merge, None)


def test_a_restore_error_names_the_primary_that_failed(cluster: RedisCluster) -> None:
    streams, _ = dump_every_shard(cluster.url)
    target = start_redis_cluster(2)
    try:
        with ClusterTargets(target.url) as targets:
            target.nodes[1].stop()  # the second primary goes away after the layout was read
            with pytest.raises(TransientError) as caught:
                restore_records(
                    targets.targets, [streams[0]], now_ms=time.time_ns() // 1_000_000, mode="merge"
                )
        assert f"127.0.0.1:{target.nodes[1].port} is unreachable" in str(caught.value)
    finally:
        target.stop()
