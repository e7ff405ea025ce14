"""The ``redis`` component in logical mode: SCAN/DUMP/PTTL dumps, shard by shard, in chunks.

A set's Redis keys come from every shard of the deployment: one for a standalone server, one per
primary of a Redis Cluster (``adapters/redis_cluster.py``). Each call dumps one chunk of one
shard from that shard's saved SCAN cursor and writes one complete object, ``redis/dump-NNNN``
for a standalone server and ``redis/dump-sSS-NNNN`` for shard SS of a cluster. The restore reads
every chunk and routes each key by slot, so the result is one backup set whatever the shard count.

Two drivers share these steps. ``add_logical_chunk`` dumps the shards one after the other (the
CLI, the restore's safety backup). The backup state machine plans the shards (``plan_shards``),
runs ``dump_shard_chunk`` for every shard at once in a Map state, each iteration carrying its own
``ShardDump``, and merges them with ``finish_shards``: the set is complete only when every shard
is, and a shard that fails fails the Map and with it the set.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from servalsheets_backup.adapters import redis_client
from servalsheets_backup.adapters.redis_cluster import CLUSTER, ShardPlan, discover_shards
from servalsheets_backup.components.pending import PendingSet
from servalsheets_backup.components.redis_logical.cluster import dump_shard
from servalsheets_backup.components.redis_logical.dump import DumpResult
from servalsheets_backup.errors import InvalidInputError, RedisBackupError
from servalsheets_backup.format.manifest import ObjectEntry
from servalsheets_backup.services import Services

CHUNK_PREFIX = "redis/dump-"


def chunk_name(index: int, shard: int | None = None) -> str:
    """Object name of a shard's ``index``-th dump chunk (1-based, zero padded, sorts in order).

    ``shard`` is None for a standalone server, whose chunks keep the names of single-server sets.
    """
    middle = "" if shard is None else f"s{shard:02d}-"
    return f"{CHUNK_PREFIX}{middle}{index:04d}"


@dataclass
class ShardDump:
    """One shard's dump in progress: its SCAN cursor, the chunks written so far and their tallies."""

    index: int
    cursor: int = 0
    chunks: int = 0
    done: bool = False
    keys: int = 0
    keys_vanished: int = 0
    keys_by_prefix: dict[str, int] = field(default_factory=dict)
    objects: list[dict[str, Any]] = field(default_factory=list)
    source_version: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON form (a Map iteration's state)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: Any) -> ShardDump:
        """Parse the JSON form; InvalidInputError when it is not one."""
        try:
            shard = cls(**raw)
        except TypeError as exc:
            raise InvalidInputError(
                f"a shard dump must be the object plan_redis_shards returned ({exc})"
            ) from None
        if not isinstance(shard.index, int) or not isinstance(shard.cursor, int):
            raise InvalidInputError("a shard dump's index and cursor must be integers")
        return shard

    def record(self, result: DumpResult, entry: ObjectEntry) -> None:
        """Add one finished chunk."""
        self.objects.append(entry.as_dict())
        self.cursor = result.next_cursor
        self.done = result.complete
        self.keys += result.keys_written
        self.keys_vanished += result.keys_skipped_vanished
        for prefix, count in result.prefix_counts.items():
            self.keys_by_prefix[prefix] = self.keys_by_prefix.get(prefix, 0) + count
        self.source_version = result.source_version


def plan_shards(services: Services, pending: PendingSet) -> list[ShardDump]:
    """Discover the shards behind REDIS_URL, keep the plan in the pending set, one ShardDump each."""
    plan = discover_shards(services.redis_url())
    pending.redis_plan = plan.as_dict()
    return [ShardDump(shard.index) for shard in plan.shards]


def shard_plan(pending: PendingSet) -> ShardPlan:
    """The plan ``plan_shards`` kept in the pending set."""
    if pending.redis_plan is None:
        raise InvalidInputError("this step needs the shard plan: run plan_redis_shards first")
    try:
        return ShardPlan.from_dict(pending.redis_plan)
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidInputError(f"the pending set's shard plan is malformed ({exc})") from None


def dump_shard_chunk(
    services: Services, pending: PendingSet, shard: ShardDump, deadline: float | None = None
) -> ShardDump:
    """Dump one chunk of ``shard`` (until done or ``deadline``, a time.monotonic value) into one object."""
    plan = shard_plan(pending)
    if not 0 <= shard.index < len(plan.shards):
        raise InvalidInputError(f"shard {shard.index} is not in the plan of {len(plan.shards)} shards")
    name = chunk_name(shard.chunks + 1, shard.index if plan.mode == CLUSTER else None)
    upload = services.store.open_object(pending.kind, pending.backup_id, name, "redis")
    try:
        result = dump_shard(
            services.redis_url(),
            plan,
            shard.index,
            upload,
            backup_time_ms=pending.created_ms,
            cursor=shard.cursor,
            deadline=deadline,
        )
        entry = upload.finish({"keys": result.keys_written})
    except BaseException:
        upload.abort()
        raise
    shard.chunks += 1
    shard.record(result, entry)
    return shard


def finish_shards(services: Services, pending: PendingSet, shards: Iterable[ShardDump]) -> PendingSet:
    """Merge every shard's dump into the pending set; RedisBackupError if one is missing or unfinished."""
    plan = shard_plan(pending)
    ordered = sorted(shards, key=lambda shard: shard.index)
    unfinished = [str(s.index) for s in ordered if not s.done]
    if [s.index for s in ordered] != list(range(len(plan.shards))) or unfinished:
        raise RedisBackupError(
            f"the Redis dump needs every one of the {len(plan.shards)} shards finished; got shards "
            f"{[s.index for s in ordered]} (unfinished: {', '.join(unfinished) or 'none'})"
        )
    for shard in ordered:
        pending.objects.extend(shard.objects)
    pending.redis_chunks = sum(shard.chunks for shard in ordered)
    pending.redis_shards = []
    pending.redis_done = True
    pending.components["redis"] = _summary(services, pending, plan, ordered)
    return pending


def add_logical_chunk(services: Services, pending: PendingSet, deadline: float | None = None) -> PendingSet:
    """Dump one chunk of the first unfinished shard, planning the shards on the first call."""
    if pending.redis_plan is None:
        pending.redis_shards = [shard.to_dict() for shard in plan_shards(services, pending)]
    shards = [ShardDump.from_dict(raw) for raw in pending.redis_shards]
    current = next(shard for shard in shards if not shard.done)
    dump_shard_chunk(services, pending, current, deadline)
    pending.redis_shards = [shard.to_dict() for shard in shards]
    if all(shard.done for shard in shards):
        finish_shards(services, pending, shards)
    return pending


def _summary(
    services: Services, pending: PendingSet, plan: ShardPlan, shards: list[ShardDump]
) -> dict[str, Any]:
    """The manifest's ``redis`` component: totals, and every shard with its slots and objects."""
    counts: dict[str, int] = {}
    for shard in shards:
        for prefix, count in shard.keys_by_prefix.items():
            counts[prefix] = counts.get(prefix, 0) + count
    return {
        "mode": "logical",
        "endpoint": redis_client.redact_url(services.redis_url()),
        "backup_time_ms": pending.created_ms,
        "keys": sum(shard.keys for shard in shards),
        "keys_vanished": sum(shard.keys_vanished for shard in shards),
        "keys_by_prefix": dict(sorted(counts.items())),
        "chunks": pending.redis_chunks,
        "source_version": shards[0].source_version if shards else "",
        "topology": plan.mode,
        "shards": [
            {
                **planned.as_dict(),
                "keys": shard.keys,
                "keys_at_discovery": planned.keys,
                "objects": [str(entry["name"]) for entry in shard.objects],
            }
            for planned, shard in zip(plan.shards, shards, strict=True)
        ],
    }
