"""The ``redis`` component in logical mode: dumps (SCAN/DUMP/PTTL) in chunks.

A logical dump that does not fit in one Lambda invocation continues from the saved SCAN cursor;
each invocation writes one complete object ``redis/dump-NNNN`` and the restore reads them in
order, so the result is still one backup set.
"""

from __future__ import annotations

import logging
from typing import Any

from servalsheets_backup.adapters import redis_client
from servalsheets_backup.components.pending import PendingSet
from servalsheets_backup.components.redis_logical.cluster import require_one_shard
from servalsheets_backup.components.redis_logical.dump import dump_keys
from servalsheets_backup.services import Services

logger = logging.getLogger(__name__)


CHUNK_PREFIX = "redis/dump-"


def chunk_name(index: int) -> str:
    """Object name of the ``index``-th dump chunk (1-based, zero padded, sorts in order)."""
    return f"{CHUNK_PREFIX}{index:04d}"


def add_logical_chunk(services: Services, pending: PendingSet, deadline: float | None = None) -> PendingSet:
    """Dump keys from the saved cursor until done or ``deadline`` (time.monotonic); one object per call."""
    url = services.redis_url()
    if pending.redis_chunks == 0:  # once per set: SCAN on one node of a cluster sees one shard
        require_one_shard(url, "redis dump")
    client = redis_client.connect(url)
    pending.redis_chunks += 1
    name = chunk_name(pending.redis_chunks)
    upload = services.store.open_object(pending.kind, pending.backup_id, name, "redis")
    try:
        result = dump_keys(
            client,
            upload,
            backup_time_ms=pending.created_ms,
            cursor=pending.redis_cursor,
            deadline=deadline,
        )
        entry = upload.finish({"keys": result.keys_written})
    except BaseException:
        upload.abort()
        pending.redis_chunks -= 1
        raise
    finally:
        client.close()
    pending.add(entry)
    pending.redis_cursor = result.next_cursor
    pending.redis_done = result.next_cursor == 0
    _merge_counts(pending, result, url)
    return pending


def _merge_counts(pending: PendingSet, result: Any, url: str) -> None:
    partial = pending.source.get("redis_partial", {})
    counts: dict[str, int] = dict(partial.get("keys_by_prefix", {}))
    for prefix, count in result.prefix_counts.items():
        counts[prefix] = counts.get(prefix, 0) + count
    totals = {
        "mode": "logical",
        "endpoint": redis_client.redact_url(url),
        "backup_time_ms": pending.created_ms,
        "keys": partial.get("keys", 0) + result.keys_written,
        "keys_vanished": partial.get("keys_vanished", 0) + result.keys_skipped_vanished,
        "keys_by_prefix": counts,
        "chunks": pending.redis_chunks,
        "source_version": result.source_version,
    }
    if pending.redis_done:
        pending.source.pop("redis_partial", None)
        pending.components["redis"] = totals
    else:
        pending.source["redis_partial"] = totals
