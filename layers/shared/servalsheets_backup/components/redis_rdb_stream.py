"""The ``redis`` component in rdb-stream mode: the server's own RDB snapshot, streamed encrypted to S3.

For Redis servers that allow replication (self-managed, Docker, Kubernetes): the server forks
and a child serialises a point-in-time snapshot (``adapters/redis_replication.py``), which is
validated, compressed, encrypted and uploaded as it arrives, in one invocation. The set holds
one ``redis/shard-0001.rdb`` like an ElastiCache export, so it restores the same ways: key by key
into a running Redis (``format/rdb_entries.py``) or by seeding a new cache.
"""

from __future__ import annotations

from servalsheets_backup.adapters import redis_client
from servalsheets_backup.adapters.redis_replication import RdbStream
from servalsheets_backup.components.pending import PendingSet
from servalsheets_backup.components.redis_logical.cluster import require_one_shard
from servalsheets_backup.services import Services

MODE = "rdb-stream"
OBJECT_NAME = "redis/shard-0001.rdb"


def add_rdb_stream(services: Services, pending: PendingSet) -> PendingSet:
    """Stream the server's RDB snapshot into the set; the component is complete after one call."""
    url = services.redis_url()
    require_one_shard(url, "redis rdb stream")  # SYNC on one node of a cluster sends one shard
    source_version = _server_version(url)
    stream = RdbStream(url, subject=OBJECT_NAME)
    upload = services.store.open_object(pending.kind, pending.backup_id, OBJECT_NAME, "redis")
    try:
        for chunk in stream:
            upload.write(chunk)
        info = stream.info
        if info is None:  # the iteration ended without the validator's verdict
            raise RuntimeError("the RDB stream ended unvalidated")
        entry = upload.finish({"rdb_files": 1})
    except BaseException:
        upload.abort()
        raise
    pending.add(entry)
    pending.redis_chunks = 1
    pending.redis_done = True
    pending.components["redis"] = {
        "mode": MODE,
        "endpoint": redis_client.redact_url(url),
        "backup_time_ms": pending.created_ms,
        "source_version": source_version,
        "shards": [
            {
                "object": OBJECT_NAME,
                "rdb_version": info.version,
                "size": info.size,
                "checksum_verified": info.checksum_verified,
            }
        ],
    }
    return pending


def _server_version(url: str) -> str:
    client = redis_client.connect(url)
    try:
        return str(client.info("server").get("redis_version", ""))
    finally:
        client.close()
