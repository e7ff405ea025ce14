"""Redis Cluster in logical mode: one dump per shard from its own primary, restores routed by slot.

A cluster's keyspace is split over its primaries by hash slot, and SCAN on a node lists only
that node's keys, so a backup dumps every shard separately (``dump_shard``, one object per shard
and invocation) and a restore sends each key to the primary that owns its slot in the target
(``ClusterTargets``), whatever the two clusters' shard counts. A standalone server is a
one-shard plan, so the same calls serve both (and a cluster backup restores into a standalone
server and back).

Consistency: the slot layout is compared with the plan before and after each shard's dump; a
resharding or failover in between, or a MOVED/ASK reply during it, fails the dump with a
message that says so (the set is never completed from a dump taken across a layout change).
"""

from __future__ import annotations

from contextlib import suppress

import redis

from servalsheets_backup.adapters.redis_client import connect, redact_url, redis_errors
from servalsheets_backup.adapters.redis_cluster import ShardPlan, check_unchanged, discover_shards, node_url
from servalsheets_backup.components.redis_logical.dump import ByteSink, DumpResult, dump_keys
from servalsheets_backup.components.redis_logical.restore import Targets
from servalsheets_backup.errors import RedisBackupError
from servalsheets_backup.format.redis_slots import key_slot

_REDIRECTIONS = ("MOVED", "ASK", "TRYAGAIN", "CLUSTERDOWN")


def dump_shard(
    url: str,
    plan: ShardPlan,
    index: int,
    sink: ByteSink,
    *,
    backup_time_ms: int,
    cursor: int = 0,
    deadline: float | None = None,
) -> DumpResult:
    """Dump shard ``index`` of ``plan`` from its primary, continuing from ``cursor``."""
    shard = plan.shards[index]
    check_unchanged(url, plan)
    client = connect(node_url(url, shard.host, shard.port))
    try:
        result = dump_keys(client, sink, backup_time_ms=backup_time_ms, cursor=cursor, deadline=deadline)
    except RedisBackupError as exc:
        if any(word in str(exc) for word in _REDIRECTIONS):
            raise RedisBackupError(
                f"shard {index} ({shard.address}) redirected a command during the backup, so slots "
                "are moving (resharding or failover); run the backup again once the cluster is stable"
            ) from None
        raise
    finally:
        client.close()
    check_unchanged(url, plan)
    return result


def require_one_shard(url: str, purpose: str) -> None:
    """Refuse a Redis Cluster of several primaries where only one server's keys would be handled.

    SYNC on one node streams that node's slots only: an rdb-stream backup would silently miss
    the other shards' keys. Logical mode dumps every shard and is the mode to use instead.
    """
    plan = discover_shards(url)  # a standalone server is a plan of one shard
    if len(plan.shards) > 1:
        addresses = ", ".join(shard.address for shard in plan.shards)
        raise RedisBackupError(
            f"{purpose}: the Redis at {redact_url(url)} is a Redis Cluster of {len(plan.shards)} "
            f"primaries ({addresses}); this step reads one server, so it would miss the other "
            "shards' keys. Use RedisMode=logical, which backs up and restores every shard"
        )


class ClusterTargets:
    """Connections to every primary of a restore target and the slot routing between them."""

    def __init__(self, url: str) -> None:
        self.plan = discover_shards(url)
        self._clients: list[redis.Redis] = []
        try:
            for shard in self.plan.shards:
                self._clients.append(connect(node_url(url, shard.host, shard.port)))
        except BaseException:
            self.close()
            raise
        owners = self.plan.slot_owners()
        route = None if len(self._clients) == 1 else (lambda key: owners[key_slot(key)])
        self.targets = Targets(self._clients, route)

    def close(self) -> None:
        """Close every node connection."""
        for client in self._clients:
            with suppress(Exception):
                client.close()

    def __enter__(self) -> ClusterTargets:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def flush_every_primary(url: str) -> int:
    """FLUSHDB on every primary behind ``url`` (one for a standalone server); returns how many."""
    with ClusterTargets(url) as cluster:
        for client in cluster.targets.clients:
            with redis_errors(client, "redis flush"):
                client.flushdb()
        return len(cluster.targets.clients)
