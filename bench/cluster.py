"""The cluster case: backup and restore throughput of a real Redis Cluster by shard count.

For 1, 2 and 3 primaries on loopback (``redis-server --cluster-enabled yes`` joined by
``redis-cli --cluster create``), holding the benchmark's data set (seeded untimed, by a slot-routed
restore of its plain record stream):

- *ours, backup*: one ``bench.worker backup-file`` process per primary, all at once, each dumping
  its shard (SCAN on a cluster node lists that node's keys) into its own v2 envelope file, as the
  backup state machine's Map runs one invocation per shard;
- *raw*: ``redis-cli --rdb`` against every primary at once, the floor of a client-side dump;
- *ours, restore*: into a fresh cluster of the same size, one ``bench.worker restore-file
  --cluster`` process per shard file, all at once, each routing every key to the primary that
  owns its slot.

Wall time from the first start to the last exit; keys/s over the whole data set. Every process
shares the machine's cores with every primary, so on 2 vCPUs more shards mean more processes
competing, not more hardware: read the figures as overhead per shard, not as scaling.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import redis

from servalsheets_backup.components.redis_logical.cluster import ClusterTargets
from servalsheets_backup.components.redis_logical.restore import restore_records
from servalsheets_backup.format.manifest import new_backup_id
from servalsheets_backup_local.testing.redis_cluster import RedisCluster, start_redis_cluster

from .measure import BenchError

SHARD_COUNTS = (1, 2, 3)


def measure(
    plain: Path, workdir: Path, env: dict[str, str], shard_counts: tuple[int, ...] = SHARD_COUNTS
) -> dict[str, Any]:
    """Backup, raw RDB and restore wall times per shard count (``plain``: the data set's stream)."""
    out: dict[str, Any] = {}
    for shards in shard_counts:
        out[str(shards)] = _one_size(plain, workdir, env, shards)
    return out


def _one_size(plain: Path, workdir: Path, env: dict[str, str], shards: int) -> dict[str, Any]:
    source = start_redis_cluster(shards)
    files: list[Path] = []
    try:
        keys = _seed(source, plain)
        backup_id = new_backup_id()
        files = [workdir / f"cluster-{shards}-shard-{i}.ssbk" for i in range(shards)]
        backup_s = _parallel(
            [
                _worker(
                    "backup-file",
                    node.url,
                    "--path",
                    str(path),
                    "--backup-id",
                    backup_id,
                    "--backup-time-ms",
                    str(time.time_ns() // 1_000_000),
                )
                for node, path in zip(source.nodes, files, strict=True)
            ],
            env,
        )
        rdbs = [workdir / f"cluster-{shards}-{i}.rdb" for i in range(shards)]
        rdb_s = _parallel(
            [
                ["redis-cli", "-h", "127.0.0.1", "-p", str(node.port), "--rdb", str(path)]
                for node, path in zip(source.nodes, rdbs, strict=True)
            ],
            env,
        )
        for path in rdbs:
            path.unlink(missing_ok=True)
    finally:
        source.stop()
    target = start_redis_cluster(shards)
    try:
        restore_s = _parallel(
            [
                _worker(
                    "restore-file", target.url, "--path", str(path), "--backup-id", backup_id, "--cluster"
                )
                for path in files
            ],
            env,
        )
        restored = _count(target)
    finally:
        target.stop()
        for path in files:
            path.unlink(missing_ok=True)
    if restored != keys:
        raise BenchError(f"cluster of {shards}: restored {restored} keys of {keys}")
    return {
        "keys": keys,
        "backup_seconds": backup_s,
        "redis_cli_rdb_seconds": rdb_s,
        "restore_seconds": restore_s,
        "backup_keys_per_second": keys / backup_s,
        "restore_keys_per_second": keys / restore_s,
        "backup_vs_rdb": rdb_s / backup_s,
    }


def _seed(cluster: RedisCluster, plain: Path) -> int:
    """Load the data set into ``cluster`` (untimed): a slot-routed restore of the plain stream."""
    with plain.open("rb") as source, ClusterTargets(cluster.url) as targets:
        chunks = iter(lambda: source.read(1 << 20), b"")
        result = restore_records(targets.targets, chunks, now_ms=time.time_ns() // 1_000_000, mode="replace")
    if not result.complete:
        raise BenchError("seeding the cluster did not reach the stream's end record")
    return _count(cluster)


def _count(cluster: RedisCluster) -> int:
    total = 0
    for node in cluster.nodes:
        client = redis.Redis(port=node.port, password=cluster.password)
        total += int(client.dbsize())
        client.close()
    return total


def _worker(operation: str, url: str, *options: str) -> list[str]:
    return [sys.executable, "-m", "bench.worker", operation, "--url", url, *options]


def _parallel(commands: list[list[str]], env: dict[str, str]) -> float:
    """Start every command at once; the wall time until the last one exits."""
    started = time.perf_counter()
    procs = [
        subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)  # noqa: S603
        for argv in commands
    ]
    failures = []
    for argv, proc in zip(commands, procs, strict=True):
        stdout, stderr = proc.communicate()
        if proc.returncode != 0:
            failures.append(f"{' '.join(argv[:4])}: {stderr[-300:]!r}")
        elif argv[1:3] == ["-m", "bench.worker"]:
            json.loads(stdout)  # a worker prints its JSON result; anything else is an error
    seconds = time.perf_counter() - started
    if failures:
        raise BenchError("; ".join(failures))
    return seconds


def log_lines(results: dict[str, Any]) -> list[str]:
    """One line per shard count for the harness's log."""
    return [
        f"  {shards} primar{'y' if shards == '1' else 'ies'}: backup {r['backup_seconds']:.2f} s "
        f"({r['backup_keys_per_second']:,.0f} keys/s, {r['backup_vs_rdb']:.2f}x redis-cli --rdb "
        f"{r['redis_cli_rdb_seconds']:.2f} s), restore {r['restore_seconds']:.2f} s "
        f"({r['restore_keys_per_second']:,.0f} keys/s)"
        for shards, r in results.items()
    ]
