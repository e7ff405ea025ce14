"""The ``redis`` component in logical mode: SCAN + DUMP + PTTL backups and RESTORE restores.

Works against any Redis the functions can reach: a standalone server (self-managed, or the
primary of a non-cluster ElastiCache replication group) or every primary of a Redis Cluster,
db 0 as in ServalSheets. DUMP payloads are Redis's own serialisation, so every
type (string, hash, list, set, sorted set, stream, module types) is carried unchanged. Nothing
here encrypts: the dump writes the plaintext record stream of ``format.redis_stream`` to a sink
(in production an ``EnvelopeWriter``), and the restore reads plaintext chunks (from
``decrypt_stream``).

- ``component``: the backup steps: shards planned, one object per shard and invocation
  (``redis/dump-NNNN``, ``redis/dump-sSS-NNNN`` on a cluster) continued from the shard's SCAN
  cursor, and the shards' dumps merged;
- ``dump``: ``dump_keys`` (two batches in flight, compression and encryption on a second thread);
- ``restore``: ``restore_records`` and its dry run ``plan_restore``;
- ``cluster``: per-shard dumps, slot-routed restore targets, and ``require_one_shard``, which
  refuses a sharded cluster where one server's stream would be read (rdb-stream mode);
- ``verify``: ``count_keys_by_prefix`` and ``compare_sample`` for the restore's verification.

The names below are imported on first use (PEP 562), so a handler that never touches Redis
does not import redis-py; ``connect`` and ``redact_url`` come from ``adapters.redis_client``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from servalsheets_backup.adapters.redis_client import connect, redact_url
    from servalsheets_backup.components.redis_logical.cluster import (
        ClusterTargets,
        dump_shard,
        flush_every_primary,
        require_one_shard,
    )
    from servalsheets_backup.components.redis_logical.component import (
        CHUNK_PREFIX,
        ShardDump,
        add_logical_chunk,
        dump_shard_chunk,
        finish_shards,
        plan_shards,
    )
    from servalsheets_backup.components.redis_logical.dump import ByteSink, DumpResult, WriteBehind, dump_keys
    from servalsheets_backup.components.redis_logical.restore import (
        MODES,
        RestoreResult,
        plan_restore,
        restore_records,
    )
    from servalsheets_backup.components.redis_logical.verify import (
        SampleComparison,
        compare_sample,
        count_keys_by_prefix,
    )

_HOMES = {
    "connect": "servalsheets_backup.adapters.redis_client",
    "redact_url": "servalsheets_backup.adapters.redis_client",
    "ClusterTargets": f"{__name__}.cluster",
    "dump_shard": f"{__name__}.cluster",
    "flush_every_primary": f"{__name__}.cluster",
    "require_one_shard": f"{__name__}.cluster",
    "CHUNK_PREFIX": f"{__name__}.component",
    "add_logical_chunk": f"{__name__}.component",
    "ShardDump": f"{__name__}.component",
    "dump_shard_chunk": f"{__name__}.component",
    "finish_shards": f"{__name__}.component",
    "plan_shards": f"{__name__}.component",
    "ByteSink": f"{__name__}.dump",
    "DumpResult": f"{__name__}.dump",
    "WriteBehind": f"{__name__}.dump",
    "dump_keys": f"{__name__}.dump",
    "MODES": f"{__name__}.restore",
    "RestoreResult": f"{__name__}.restore",
    "plan_restore": f"{__name__}.restore",
    "restore_records": f"{__name__}.restore",
    "SampleComparison": f"{__name__}.verify",
    "compare_sample": f"{__name__}.verify",
    "count_keys_by_prefix": f"{__name__}.verify",
}
__all__ = [
    "ByteSink",
    "CHUNK_PREFIX",
    "ClusterTargets",
    "DumpResult",
    "MODES",
    "RestoreResult",
    "SampleComparison",
    "ShardDump",
    "WriteBehind",
    "add_logical_chunk",
    "compare_sample",
    "connect",
    "count_keys_by_prefix",
    "dump_keys",
    "dump_shard",
    "dump_shard_chunk",
    "finish_shards",
    "flush_every_primary",
    "plan_restore",
    "plan_shards",
    "redact_url",
    "require_one_shard",
    "restore_records",
]


def __getattr__(name: str) -> Any:
    """Import the module that defines ``name`` when it is first asked for."""
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
