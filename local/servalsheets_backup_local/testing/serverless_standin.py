"""A stand-in for ElastiCache Serverless, which moto does not implement, for tests and local runs.

It implements :class:`servalsheets_backup.adapters.elasticache.ServerlessCaches` with real parts:
each "serverless cache" is a real redis-server on 127.0.0.1, a snapshot is the RDB file that
server writes on ``SAVE``, an export puts that file into the (moto) S3 bucket, and a cache created
from ``SnapshotArnsToRestore`` is a new redis-server that loads the RDB it reads from S3. So the
backup validates and encrypts a real RDB, and a restored cache really holds the backed-up keys.

What it cannot tell: the object names AWS gives serverless exports (not documented; the
``export_key`` default is an assumption the ingest step does not depend on beyond the snapshot
name prefix), and the status names AWS reports while exporting.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from servalsheets_backup.adapters import aws
from servalsheets_backup.adapters.elasticache import SNAPSHOT_PREFIX, CacheInfo, SnapshotInfo

from .redis_server import RedisServer, start_redis


# Named like the botocore exceptions, because Step Functions matches Lambda errors by class name.
class InvalidServerlessCacheStateFault(Exception):
    """The cache is busy (e.g. being modified)."""


class ServerlessCacheSnapshotQuotaExceededFault(Exception):
    """Too many snapshots."""


class ServerlessCacheNotFoundFault(Exception):
    """No such cache."""


class ServerlessCacheSnapshotNotFoundFault(Exception):
    """No such snapshot."""


class InvalidServerlessCacheSnapshotStateFault(Exception):
    """The snapshot is not in a state that allows the call (e.g. export while creating)."""


class ServerlessCacheAlreadyExistsFault(Exception):
    """A cache with that name exists."""


def flat_export_key(snapshot_name: str, number: int = 1) -> str:
    """One assumed layout: ``<snapshot>-0001.rdb`` at the bucket root."""
    return f"{snapshot_name}-{number:04d}.rdb"


def folder_export_key(snapshot_name: str, number: int = 1) -> str:
    """Another: ``<snapshot>/<snapshot>-0001.rdb`` (the ingest must find either)."""
    return f"{snapshot_name}/{snapshot_name}-{number:04d}.rdb"


@dataclass
class _Snapshot:
    cache: str
    rdb: bytes
    created: datetime
    status: str
    polls_left: int
    export_to: str | None = None
    delivered: int = 0


@dataclass
class _Cache:
    server: RedisServer
    status: str
    polls_left: int
    owned: bool
    seeded_from: list[str] = field(default_factory=list)


@dataclass
class ServerlessCacheStandIn:
    """ElastiCache Serverless for local runs (see the module docstring).

    ``snapshot_polls`` / ``export_polls`` / ``cache_polls``: how many status reads report a snapshot
    ``creating``, an export ``exporting`` and a new cache ``creating`` before they finish.
    ``export_files``: how many .rdb files an export writes, one per status read once the export
    polls are used up (so a multi-file export lands over time, as one shard after another).
    ``faults`` maps a method name to exceptions its next calls raise. ``snapshot_outcome``
    ``failed`` makes snapshots fail; ``corrupt_exports`` flips one byte of every exported RDB;
    ``lose_exports`` makes exports finish without writing a file.
    """

    snapshot_polls: int = 1
    export_polls: int = 1
    cache_polls: int = 1
    export_key: Callable[[str, int], str] = flat_export_key
    export_files: int = 1
    snapshot_outcome: str = "available"
    corrupt_exports: bool = False
    lose_exports: bool = False
    faults: dict[str, list[Exception]] = field(default_factory=dict)
    caches: dict[str, _Cache] = field(default_factory=dict)
    snapshots: dict[str, _Snapshot] = field(default_factory=dict)
    calls: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)

    # -- set-up -----------------------------------------------------------------------------
    def register(self, name: str, server: RedisServer) -> None:
        """Make ``server`` the serverless cache ``name`` (an existing, available cache)."""
        self.caches[name] = _Cache(server, "available", 0, owned=False)

    def add_snapshot(self, cache: str, name: str, created: datetime) -> None:
        """Record an existing snapshot (e.g. an old one pruning should delete)."""
        self.snapshots[name] = _Snapshot(cache, b"", created, "available", 0)

    def close(self) -> None:
        """Stop every redis-server this stand-in started."""
        for cache in self.caches.values():
            if cache.owned:
                cache.server.stop()

    def _call(self, method: str, *args: Any) -> None:
        self.calls.append((method, args))
        pending = self.faults.get(method)
        if pending:
            raise pending.pop(0)

    # -- snapshots ----------------------------------------------------------------------------
    def create_snapshot(self, cache_name: str, snapshot_name: str) -> str:
        """SAVE on the cache's redis-server; the RDB it writes is the snapshot."""
        self._call("create_snapshot", cache_name, snapshot_name)
        cache = self._cache(cache_name)
        client = _client(cache.server)
        try:
            client.save()
        finally:
            client.close()
        rdb = (cache.server.workdir / "dump.rdb").read_bytes()
        snapshot = _Snapshot(cache_name, rdb, datetime.now(UTC), "creating", self.snapshot_polls)
        self.snapshots[snapshot_name] = snapshot
        return snapshot.status

    def snapshot_status(self, snapshot_name: str) -> str:
        """Each read advances the snapshot (and its export) by one poll."""
        self._call("snapshot_status", snapshot_name)
        snapshot = self._snapshot(snapshot_name)
        if snapshot.status in ("creating", "exporting") and snapshot.polls_left > 0:
            snapshot.polls_left -= 1
        elif snapshot.status == "creating":
            snapshot.status = self.snapshot_outcome
        elif snapshot.status == "exporting":
            self._deliver(snapshot_name, snapshot)
        return snapshot.status

    def export_snapshot(self, snapshot_name: str, bucket: str) -> None:
        """Begin the export; the file lands in ``bucket`` after ``export_polls`` status reads."""
        self._call("export_snapshot", snapshot_name, bucket)
        snapshot = self._snapshot(snapshot_name)
        if snapshot.status != "available":
            raise InvalidServerlessCacheSnapshotStateFault(f"snapshot {snapshot_name} is {snapshot.status}")
        snapshot.status, snapshot.polls_left, snapshot.export_to = "exporting", self.export_polls, bucket

    def _deliver(self, snapshot_name: str, snapshot: _Snapshot) -> None:
        """Write the next file of the export; the export ends with the last one."""
        if self.lose_exports or snapshot.export_to is None:
            snapshot.status = "available"
            return
        data = snapshot.rdb
        if self.corrupt_exports:
            damaged = bytearray(data)
            damaged[len(damaged) // 2] ^= 0x01
            data = bytes(damaged)
        snapshot.delivered += 1
        key = self.export_key(snapshot_name, snapshot.delivered)
        aws.client("s3").put_object(Bucket=snapshot.export_to, Key=key, Body=data)
        if snapshot.delivered >= self.export_files:
            snapshot.status = "available"

    def list_own_snapshots(self, cache_name: str) -> list[SnapshotInfo]:
        """This system's snapshots of ``cache_name``, newest first."""
        self._call("list_own_snapshots", cache_name)
        found = [
            SnapshotInfo(name, snapshot.status, snapshot.created)
            for name, snapshot in self.snapshots.items()
            if snapshot.cache == cache_name and name.startswith(SNAPSHOT_PREFIX)
        ]
        return sorted(found, key=lambda info: info.name, reverse=True)

    def delete_snapshot(self, snapshot_name: str) -> None:
        """Forget a snapshot."""
        self._call("delete_snapshot", snapshot_name)
        self._snapshot(snapshot_name)
        del self.snapshots[snapshot_name]

    # -- caches -------------------------------------------------------------------------------
    def create_cache(self, name: str, seed_arns: list[str], like: str) -> None:
        """Start a redis-server that loads the RDB named by the one S3 ARN."""
        self._call("create_cache", name, tuple(seed_arns), like)
        self._cache(like)
        if name in self.caches:
            raise ServerlessCacheAlreadyExistsFault(f"serverless cache {name} already exists")
        if len(seed_arns) != 1:
            raise NotImplementedError("the stand-in seeds a cache from exactly one RDB file")
        bucket, key = seed_arns[0].removeprefix("arn:aws:s3:::").split("/", 1)
        rdb = aws.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
        server = start_redis(rdb=rdb)
        _wait_loaded(server)
        self.caches[name] = _Cache(server, "creating", self.cache_polls, owned=True, seeded_from=[key])

    def describe_cache(self, name: str) -> CacheInfo | None:
        """Each read advances a new cache by one poll."""
        self._call("describe_cache", name)
        cache = self.caches.get(name)
        if cache is None:
            return None
        if cache.status == "creating":
            if cache.polls_left > 0:
                cache.polls_left -= 1
            else:
                cache.status = "available"
        return CacheInfo(name, cache.status, f"127.0.0.1:{cache.server.port}")

    def delete_cache(self, name: str) -> None:
        """Stop the cache's redis-server (only ones this stand-in started)."""
        self._call("delete_cache", name)
        cache = self._cache(name)
        if cache.owned:
            cache.server.stop()
        del self.caches[name]

    def server(self, name: str) -> RedisServer:
        """The redis-server behind a cache (for tests to inspect)."""
        return self._cache(name).server

    def _cache(self, name: str) -> _Cache:
        if name not in self.caches:
            raise ServerlessCacheNotFoundFault(f"serverless cache {name} not found")
        return self.caches[name]

    def _snapshot(self, name: str) -> _Snapshot:
        if name not in self.snapshots:
            raise ServerlessCacheSnapshotNotFoundFault(f"serverless cache snapshot {name} not found")
        return self.snapshots[name]


def _client(server: RedisServer) -> Any:
    import redis

    return redis.Redis.from_url(server.url)


def _wait_loaded(server: RedisServer, timeout: float = 30.0) -> None:
    """redis-server accepts connections while it is still loading the RDB: wait for the load."""
    import redis

    client = _client(server)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                if int(client.info("persistence").get("loading", 0)) == 0:
                    return
            except redis.BusyLoadingError:
                pass
            time.sleep(0.05)
    finally:
        client.close()
    raise RuntimeError(f"redis-server on port {server.port} did not finish loading its RDB")
