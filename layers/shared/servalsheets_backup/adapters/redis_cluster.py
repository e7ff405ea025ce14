"""Shard discovery: every primary of a Redis Cluster (or the one server of a standalone Redis).

From the configured endpoint, ``discover_shards`` asks ``CLUSTER SHARDS`` (Redis 7+; ``CLUSTER
NODES`` on older servers) which primary serves which slots, and counts each primary's keys.
A standalone server is one shard holding every slot. Node connections reuse the endpoint's URL
(scheme, TLS options, user and password) with the node's own address, so AUTH and TLS work as
for a single server. ``check_unchanged`` compares a later discovery with a plan and fails with a
message naming what moved: a backup taken across a resharding or failover is not consistent.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis

from servalsheets_backup.adapters.redis_client import connect, redis_errors, server_address
from servalsheets_backup.errors import RedisBackupError
from servalsheets_backup.format.redis_slots import (
    SLOTS,
    SlotRange,
    format_ranges,
    normalise_ranges,
    parse_ranges,
    uncovered_slots,
)

STANDALONE = "standalone"
CLUSTER = "cluster"


@dataclass(frozen=True)
class Shard:
    """One primary and the slots it serves."""

    index: int
    node_id: str
    host: str
    port: int
    slots: tuple[SlotRange, ...]
    keys: int
    replicas: int

    @property
    def address(self) -> str:
        """``host:port`` of the primary."""
        return f"{self.host}:{self.port}"

    def as_dict(self) -> dict[str, Any]:
        """Plan and manifest form (no credentials)."""
        return {
            "index": self.index,
            "node_id": self.node_id,
            "address": self.address,
            "slots": format_ranges(self.slots),
            "keys": self.keys,
            "replicas": self.replicas,
        }


@dataclass(frozen=True)
class ShardPlan:
    """Every shard of one Redis deployment, in slot order."""

    mode: str
    shards: tuple[Shard, ...]

    @property
    def keys(self) -> int:
        """Keys over every primary at discovery."""
        return sum(shard.keys for shard in self.shards)

    def slot_owners(self) -> list[int]:
        """For each of the 16384 slots, the index of the shard serving it."""
        owners = [0] * SLOTS
        for shard in self.shards:
            for first, last in shard.slots:
                owners[first : last + 1] = [shard.index] * (last - first + 1)
        return owners

    def signature(self) -> str:
        """A digest of who serves which slots; equal signatures mean no resharding or failover."""
        layout = ";".join(f"{s.node_id}@{s.address}={format_ranges(s.slots)}" for s in self.shards)
        return hashlib.sha256(f"{self.mode}|{layout}".encode()).hexdigest()

    def as_dict(self) -> dict[str, Any]:
        """Plan and manifest form."""
        return {
            "mode": self.mode,
            "shards": [shard.as_dict() for shard in self.shards],
            "keys": self.keys,
            "signature": self.signature(),
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> ShardPlan:
        """The plan ``as_dict`` wrote (carried between invocations); ``ValueError`` if it was altered."""
        shards = tuple(
            Shard(
                int(item["index"]),
                str(item["node_id"]),
                str(item["address"]).rpartition(":")[0].strip("[]"),
                int(str(item["address"]).rpartition(":")[2]),
                tuple(parse_ranges(str(item["slots"]))),
                int(item["keys"]),
                int(item["replicas"]),
            )
            for item in raw["shards"]
        )
        plan = cls(str(raw["mode"]), shards)
        if plan.signature() != raw.get("signature"):
            raise ValueError("the shard plan does not match its signature: pass it on unchanged")
        return plan


def node_url(url: str, host: str, port: int) -> str:
    """``url`` with another host and port: same scheme, credentials, database and TLS options."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    hostpart = f"[{host}]" if ":" in host else host
    return urlunsplit((parts.scheme, f"{userinfo}{hostpart}:{port}", parts.path, parts.query, ""))


def discover_shards(url: str) -> ShardPlan:
    """The shards behind ``url``: one for a standalone server, one per primary for a cluster."""
    client = connect(url)
    try:
        with redis_errors(client, "shard discovery"):
            if not _cluster_enabled(client):
                return ShardPlan(STANDALONE, (_standalone_shard(client),))
            primaries = _cluster_primaries(client, tls=urlsplit(url).scheme == "rediss")
    finally:
        client.close()
    shards = tuple(
        Shard(index, node_id, host, port, ranges, _count_keys(url, host, port), replicas)
        for index, (node_id, host, port, ranges, replicas) in enumerate(sorted(primaries, key=lambda p: p[3]))
    )
    _check_coverage(shards)
    return ShardPlan(CLUSTER, shards)


def check_unchanged(url: str, plan: ShardPlan) -> None:
    """Raise ``RedisBackupError`` when the slot layout is no longer ``plan``'s."""
    now = discover_shards(url)
    if now.signature() == plan.signature():
        return
    before = {s.address: format_ranges(s.slots) for s in plan.shards}
    after = {s.address: format_ranges(s.slots) for s in now.shards}
    moved = [
        f"{address}: {before.get(address, 'none')} -> {after.get(address, 'none')}"
        for address in sorted(before.keys() | after.keys())
        if before.get(address) != after.get(address)
    ]
    raise RedisBackupError(
        "the cluster was resharded or failed over during the backup (slot owners changed: "
        f"{'; '.join(moved or ['node ids changed'])[:400]}); the set would not be consistent: run the "
        "backup again once the cluster is stable"
    )


def _cluster_enabled(client: redis.Redis) -> bool:
    info = client.info("cluster")
    return bool(int(info.get("cluster_enabled", 0)))


def _standalone_shard(client: redis.Redis) -> Shard:
    host, _, port = server_address(client).rpartition(":")
    return Shard(0, "standalone", host, int(port), ((0, SLOTS - 1),), int(client.dbsize()), 0)


Primary = tuple[str, str, int, tuple[SlotRange, ...], int]
"""node id, host, port, slot ranges, replica count."""


def _cluster_primaries(client: redis.Redis, tls: bool) -> list[Primary]:
    try:
        reply = client.execute_command("CLUSTER", "SHARDS")
    except redis.ResponseError as exc:
        if "unknown subcommand" not in str(exc).lower():
            raise
        return _primaries_from_nodes(client.execute_command("CLUSTER", "NODES"))
    return [primary for shard in reply if (primary := _primary_of_shard(_pairs(shard), tls)) is not None]


def _pairs(value: Any) -> dict[str, Any]:
    """A RESP2 flat list of name, value, ... (or a RESP3 map) as a dict with str keys."""
    if isinstance(value, Mapping):
        items: Iterable[tuple[Any, Any]] = value.items()
    else:
        items = zip(value[::2], value[1::2], strict=True)
    return {_text(k): v for k, v in items}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _primary_of_shard(shard: dict[str, Any], tls: bool) -> Primary | None:
    bounds = [int(v) for v in shard.get("slots", [])]
    ranges = tuple(normalise_ranges(zip(bounds[::2], bounds[1::2], strict=True)))
    nodes = [_pairs(node) for node in shard.get("nodes", [])]
    primaries = [
        n for n in nodes if _text(n.get("role", "")) == "master" and _text(n.get("health", "")) == "online"
    ]
    if not ranges or not primaries:
        return None  # a shard without slots (a new, empty primary) holds no keys to back up
    node = primaries[0]
    host = _text(node.get("endpoint") or node.get("ip"))
    port = int(node["tls-port"] if tls and node.get("tls-port") else node["port"])
    return _text(node["id"]), host, port, ranges, len(nodes) - 1


def _primaries_from_nodes(reply: Any) -> list[Primary]:
    """Parse ``CLUSTER NODES`` (servers before 7.0): one line per node."""
    lines = [line.split() for line in _text(reply).splitlines() if line.strip()]
    replicas: dict[str, int] = {}
    for fields in lines:
        if fields[3] != "-":
            replicas[fields[3]] = replicas.get(fields[3], 0) + 1
    found: list[Primary] = []
    for fields in lines:
        flags = fields[2].split(",")
        ranges = [_node_slot_range(token) for token in fields[8:] if not token.startswith("[")]
        if "master" not in flags or "fail" in flags or not ranges:
            continue
        host, _, port = fields[1].split("@")[0].rpartition(":")
        found.append(
            (fields[0], host, int(port), tuple(normalise_ranges(ranges)), replicas.get(fields[0], 0))
        )
    return found


def _node_slot_range(token: str) -> SlotRange:
    first, _, last = token.partition("-")
    return int(first), int(last or first)


def _count_keys(url: str, host: str, port: int) -> int:
    node = connect(node_url(url, host, port))
    try:
        with redis_errors(node, "shard discovery"):
            return int(node.dbsize())
    finally:
        node.close()


def _check_coverage(shards: Sequence[Shard]) -> None:
    missing, doubled = uncovered_slots([s.slots for s in shards])
    if missing or doubled:
        raise RedisBackupError(
            "the cluster does not serve every hash slot exactly once "
            f"(unserved: {format_ranges(missing)[:200] or 'none'}; claimed twice: "
            f"{','.join(map(str, doubled)) or 'none'}): fix the cluster (redis-cli --cluster check) "
            "before backing it up"
        )
