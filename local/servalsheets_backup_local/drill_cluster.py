"""The drill's ``cluster`` scenario: a 3-shard Redis Cluster backed up through the state machines'
Map states, destroyed, and restored into a fresh 2-shard cluster, checked key by key."""

from __future__ import annotations

import json

import redis

from .drill_report import DrillReport
from .drill_steps import (
    ScenarioRun,
    check_secret_hygiene,
    console_input,
    expect_success,
    judge_redis,
    lose_files_and_secret,
    restore,
)
from .testing.environment import ENV_SECRET, REDIS_SECRET, LocalEnvironment
from .testing.keyspace import capture_with
from .testing.redis_cluster import RedisCluster, start_redis_cluster

# Backed up from this many primaries, restored into a fresh cluster of the other.
CLUSTER_SOURCE_SHARDS = 3
CLUSTER_TARGET_SHARDS = 2


def start_cluster(environment: LocalEnvironment, report: DrillReport, shards: int, role: str) -> RedisCluster:
    """A fresh Redis Cluster of ``shards`` primaries; the REDIS_URL secret is pointed at it."""
    cluster = start_redis_cluster(shards)
    environment.client("secretsmanager").put_secret_value(
        SecretId=REDIS_SECRET, SecretString=json.dumps({"REDIS_URL": cluster.url})
    )
    report.environment[f"redis_cluster_{role}"] = {
        "primaries": shards,
        "ports": [node.port for node in cluster.nodes],
        "pids": [node.pid for node in cluster.nodes],
    }
    return cluster


def scenario_cluster(run: ScenarioRun) -> None:
    environment, report, say = run.environment, run.report, run.say
    if not run.clusters:
        raise RuntimeError("the cluster scenario needs the cluster run_drill starts")
    source = run.clusters[0]
    store = environment.services().store
    for backup in (b for b in report.backups if b["kind"] in ("redis", "full")):
        summary = store.load_manifest(store.find(backup["backup_id"], backup["kind"])).components["redis"]
        listed = [(shard["address"], shard["slots"]) for shard in summary.get("shards", [])]
        report.check(
            f"{backup['kind']} backup: the Map dumped each of the {CLUSTER_SOURCE_SHARDS} shards, "
            "the manifest lists each with its slots",
            backup["redis_shards_dumped"] == CLUSTER_SOURCE_SHARDS == len(listed)
            and summary.get("topology") == "cluster",
            "; ".join(f"{address} {slots}" for address, slots in listed),
        )
    with source.client() as client:
        before = capture_with(client)
    before_secret = environment.client("secretsmanager").get_secret_value(SecretId=ENV_SECRET)["SecretString"]
    tokens = environment.token_path.read_bytes()
    say(
        f"simulating the disaster: the {CLUSTER_SOURCE_SHARDS}-shard cluster destroyed, token file "
        "deleted, a secret overwritten"
    )
    source.stop()
    lose_files_and_secret(environment)
    say(f"starting a fresh {CLUSTER_TARGET_SHARDS}-shard cluster; restoring into it (console-style input)")
    target = start_cluster(environment, report, CLUSTER_TARGET_SHARDS, "target")
    run.clusters.append(target)
    description = restore(environment, console_input(), report)
    expect_success(description, report)
    parts = sum(1 for step in report.steps if step["state"] == "Shard restored")
    report.check(
        "the restore's Map restored one part per source shard",
        parts == CLUSTER_SOURCE_SHARDS
        and any(step["state"] == "Restore every shard" for step in report.steps),
        f"{parts} parts",
    )
    say("verifying every key, value and TTL on the new cluster independently (redis-py's cluster client)")
    with target.client() as client:
        after = capture_with(client, before)
    judge_redis(before, after, report, expected_subset=None)
    per_node = [dbsize(node.url) for node in target.nodes]
    report.check(
        "every primary of the new cluster holds keys", all(per_node), f"keys per primary: {per_node}"
    )
    report.check("token store restored byte for byte", environment.token_path.read_bytes() == tokens)
    current = environment.client("secretsmanager").get_secret_value(SecretId=ENV_SECRET)["SecretString"]
    report.check("configuration secret restored", current == before_secret)
    check_secret_hygiene(environment, run.seeded, report)


def dbsize(url: str) -> int:
    with redis.Redis.from_url(url) as client:
        return int(client.dbsize())
