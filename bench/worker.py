"""Our side of each comparison, run in a fresh process so its peak RSS is measured alone.

``python -m bench.worker OPERATION --options`` prints one JSON object on stdout: the
operation's own timing (``op_seconds``, without interpreter start and imports) and its counts.
The local master key comes from ``BENCH_MASTER_KEY`` (hex), generated per benchmark run.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from servalsheets_backup.adapters.redis_client import connect
from servalsheets_backup.components.redis_logical.dump import dump_keys
from servalsheets_backup.components.redis_logical.restore import restore_records
from servalsheets_backup.format.envelope import decrypt_stream, keyring_resolver
from servalsheets_backup.format.envelope_v2 import EnvelopeWriterV2
from servalsheets_backup.format.keys import LocalKeyring, encryption_context

ENVIRONMENT = "bench"
KIND = "redis"
OBJECT_NAME = "redis/dump-0001"
MASTER_KEY_ENV = "BENCH_MASTER_KEY"


def keyring() -> LocalKeyring:
    """The run's local keyring (the benchmark never talks to a real KMS)."""
    return LocalKeyring(bytes.fromhex(os.environ[MASTER_KEY_ENV]))


def object_context(backup_id: str) -> dict[str, str]:
    """Encryption context of the benchmark's one dump object."""
    return encryption_context(backup_id, KIND, OBJECT_NAME, ENVIRONMENT)


@contextmanager
def profiled(path: str | None) -> Iterator[None]:
    """Run the block under cProfile (main thread only) when ``path`` is given."""
    if not path:
        yield
        return
    profile = cProfile.Profile()
    profile.enable()
    try:
        yield
    finally:
        profile.disable()
        profile.dump_stats(path)


def backup_file(args: argparse.Namespace) -> dict[str, Any]:
    """dump_keys -> EnvelopeWriterV2 (format v2) -> a local file."""
    client = connect(args.url)
    counts: dict[str, int] = {}

    def feed(writer: EnvelopeWriterV2) -> None:
        counts["keys"] = dump_keys(client, writer, backup_time_ms=args.backup_time_ms).keys_written

    digest = _envelope_file(args, feed)
    sizes = {"bytes_in": digest.plaintext_size, "bytes_out": digest.stored_size}
    return {"keys": counts["keys"], **sizes, "digest": digest.as_dict()}


def _envelope_file(args: argparse.Namespace, feed: Callable[[EnvelopeWriterV2], None]) -> Any:
    """A format v2 envelope writer (a local data key) into ``args.path``, fed by ``feed``."""
    context = object_context(args.backup_id)
    data_key = keyring().new_data_key(context)
    with Path(args.path).open("wb") as sink:
        writer = EnvelopeWriterV2(sink, data_key, context)
        feed(writer)
        return writer.close()


def backup_s3(args: argparse.Namespace) -> dict[str, Any]:
    """The production path: BackupStore.open_object (MultipartSink, KMS data key) fed by dump_keys."""
    upload = _store(args).open_object(KIND, args.backup_id, OBJECT_NAME, "redis")
    client = connect(args.url)
    result = dump_keys(client, upload, backup_time_ms=args.backup_time_ms)
    entry = upload.finish({"keys": result.keys_written})
    return {"keys": result.keys_written, "bytes_in": entry.plaintext_size, "bytes_out": entry.stored_size}


def rdb_stream_file(args: argparse.Namespace) -> dict[str, Any]:
    """RedisMode=rdb-stream into a local file: RdbStream (SYNC) -> EnvelopeWriterV2 -> file."""
    from servalsheets_backup.adapters.redis_replication import RdbStream

    def feed(writer: EnvelopeWriterV2) -> None:
        for chunk in RdbStream(args.url):
            writer.write(chunk)

    digest = _envelope_file(args, feed)
    return {"keys": args.keys, "bytes_in": digest.plaintext_size, "bytes_out": digest.stored_size}


def rdb_stream_s3(args: argparse.Namespace) -> dict[str, Any]:
    """RedisMode=rdb-stream's production path: RdbStream -> BackupStore.open_object -> multipart upload."""
    from servalsheets_backup.adapters.redis_replication import RdbStream

    upload = _store(args).open_object(KIND, args.backup_id, "redis/shard-0001.rdb", "redis")
    for chunk in RdbStream(args.url):
        upload.write(chunk)
    entry = upload.finish({"rdb_files": 1})
    return {"keys": args.keys, "bytes_in": entry.plaintext_size, "bytes_out": entry.stored_size}


def _store(args: argparse.Namespace) -> Any:
    """The production BackupStore on the moto server (AWS_ENDPOINT_URL points at it)."""
    from servalsheets_backup.adapters import aws
    from servalsheets_backup.format.keys import KmsKeyring
    from servalsheets_backup.store.sets import BackupStore

    keys = KmsKeyring(aws.client("kms"), args.kms_key)
    return BackupStore(aws.client("s3"), args.bucket, keys, environment=ENVIRONMENT, kms_key_id=args.kms_key)


def restore_file(args: argparse.Namespace) -> dict[str, Any]:
    """decrypt_stream of a local object (``--rdb``: an RDB file, read entry by entry) -> restore_records."""
    resolve = keyring_resolver(keyring(), object_context(args.backup_id), OBJECT_NAME)
    with _restore_target(args) as target, Path(args.path).open("rb") as source:
        chunks = decrypt_stream(source, resolve, OBJECT_NAME)
        if args.rdb:  # an rdb-stream set: every RDB entry becomes a record, as restore_redis does
            from servalsheets_backup.format.rdb_entries import record_stream_from_rdb

            chunks = record_stream_from_rdb(chunks, OBJECT_NAME)
        result = restore_records(target, chunks, now_ms=time.time_ns() // 1_000_000, mode="replace")
    if not result.complete:
        raise SystemExit("restore did not reach the end record")
    return {"keys": result.restored, "skipped_expired": result.skipped_expired}


def restore_s3(args: argparse.Namespace) -> dict[str, Any]:
    """The production read path: BackupStore.read_object from S3 (moto) -> restore_records.

    The object is the file backup's, uploaded by the harness under its set's prefix; the store
    reads it with the run's local keyring, as the restore Lambda does with KMS.
    """
    from servalsheets_backup.adapters import aws
    from servalsheets_backup.format.manifest import MANIFEST_NAME, ObjectEntry
    from servalsheets_backup.store.sets import BackupStore, SetRef, set_prefix

    store = BackupStore(aws.client("s3"), args.bucket, keyring(), environment=ENVIRONMENT, kms_key_id="")
    ref = SetRef(KIND, args.backup_id, set_prefix(KIND, args.backup_id) + MANIFEST_NAME)
    entry = ObjectEntry.from_dict({"name": OBJECT_NAME, "component": "redis", **json.loads(args.entry)})
    client = connect(args.url)
    chunks = store.read_object(ref, entry)
    result = restore_records(client, chunks, now_ms=time.time_ns() // 1_000_000, mode="replace")
    if not result.complete:
        raise SystemExit("restore did not reach the end record")
    return {"keys": result.restored, "skipped_expired": result.skipped_expired}


@contextmanager
def _restore_target(args: argparse.Namespace) -> Iterator[Any]:
    """One server's client, or with ``--cluster`` every primary of the cluster with slot routing."""
    if args.cluster:
        from servalsheets_backup.components.redis_logical.cluster import ClusterTargets

        with ClusterTargets(args.url) as cluster:
            yield cluster.targets
        return
    client = connect(args.url)
    try:
        yield client
    finally:
        client.close()


OPERATIONS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "backup-file": backup_file,
    "backup-s3": backup_s3,
    "restore-file": restore_file,
    "restore-s3": restore_s3,
    "rdb-stream-file": rdb_stream_file,
    "rdb-stream-s3": rdb_stream_s3,
}


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Options shared by every operation (each uses the ones it needs)."""
    parser = argparse.ArgumentParser(prog="python -m bench.worker")
    parser.add_argument("operation", choices=sorted(OPERATIONS))
    parser.add_argument("--url", required=True)
    parser.add_argument("--path", default="")
    parser.add_argument("--backup-id", required=True)
    parser.add_argument("--backup-time-ms", type=int, default=0)
    parser.add_argument("--bucket", default="")
    parser.add_argument("--kms-key", default="")
    parser.add_argument("--profile", default="", help="write cProfile stats of the operation here")
    parser.add_argument("--keys", type=int, default=0, help="keys in the dataset (rdb-stream reports it)")
    parser.add_argument("--rdb", action="store_true", help="restore-file: the object holds an RDB file")
    parser.add_argument(
        "--cluster", action="store_true", help="restore-file: route keys over a Redis Cluster"
    )
    parser.add_argument("--entry", default="{}", help="the object's manifest digests (JSON), for restore-s3")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Run one operation and print its JSON result."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    started = time.perf_counter()
    with profiled(args.profile):
        result = OPERATIONS[args.operation](args)
    result["op_seconds"] = time.perf_counter() - started
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
