"""Each measured method of comparisons 1, 2 and 5: ours (a worker process) and the shell tools.

Every method runs as child processes of the harness and returns a :class:`Sample` with the
wall time of the whole process (interpreter start included for ours), peak RSS and CPU of the
client processes, and the CPU the Redis server spent meanwhile.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from servalsheets_backup.format.manifest import new_backup_id
from servalsheets_backup_local.testing.redis_server import RedisServer

from .dataset import empty_target
from .measure import BenchError, Completed, Meter, Sample, run_pipeline

REPO_ROOT = Path(__file__).resolve().parent.parent
_PIPE_SUMMARY = re.compile(rb"errors: (\d+), replies: (\d+)")


@dataclass
class MotoTarget:
    """The local S3 endpoint, bucket and KMS key the S3 backup writes to."""

    endpoint: str
    bucket: str
    kms_key: str

    def client(self, service: str) -> Any:
        """A boto3 client of the moto server (the harness's own: uploads and clean-up)."""
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            aws_access_key_id="bench",
            aws_secret_access_key="bench",
            region_name="us-east-1",
        )


@dataclass
class Context:
    """Where a run keeps its files, and what its worker processes need."""

    workdir: Path
    master_key_hex: str
    gpg_home: Path
    passphrase_file: Path
    moto: MotoTarget | None = None

    def worker_env(self) -> dict[str, str]:
        """Environment of ours: the run's master key, fake AWS credentials, moto endpoint."""
        env = {
            **os.environ,
            "BENCH_MASTER_KEY": self.master_key_hex,
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_DEFAULT_REGION": "us-east-1",
            "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(
                os.pathsep
            ),
        }
        env.pop("AWS_PROFILE", None)
        if self.moto is not None:
            env["AWS_ENDPOINT_URL"] = self.moto.endpoint
        return env

    def gpg_env(self) -> dict[str, str]:
        """gpg with a throwaway home, so no user keyring or agent is touched."""
        return {**os.environ, "GNUPGHOME": str(self.gpg_home)}


def _cli(server: RedisServer) -> list[str]:
    return ["redis-cli", "-h", "127.0.0.1", "-p", str(server.port)]


def _worker(ctx: Context, operation: str, *options: str) -> tuple[Completed, dict[str, Any]]:
    argv = [sys.executable, "-m", "bench.worker", operation, *options]
    done = run_pipeline([argv], env=ctx.worker_env())
    return done, json.loads(done.stdout)


def _sample(
    comparison: str, method: str, keys: int, done: Completed, meter: Meter, settle: float = 0.0
) -> Sample:
    time.sleep(settle)  # Redis reaps its RDB fork in serverCron; its CPU shows up only then
    meter.stop()
    return Sample(
        comparison=comparison,
        method=method,
        dataset_keys=keys,
        seconds=done.seconds,
        peak_rss_kb=done.peak_rss_kb,
        cpu_seconds=done.cpu_seconds,
        server_cpu_seconds=meter.server_cpu,
        other_cpu_seconds=max(0.0, meter.machine_cpu - meter.server_cpu - done.cpu_seconds),
        processes=done.usage,
    )


# --------------------------------------------------------------------------- backup


def ours_file(ctx: Context, source: RedisServer, keys: int, out: Path, profile: str = "") -> Sample:
    """Our logical backup into a local file: dump_keys -> EnvelopeWriter -> file."""
    backup_id = new_backup_id()
    meter = Meter(source.pid)
    done, result = _worker(
        ctx,
        "backup-file",
        *("--url", source.url, "--path", str(out), "--backup-id", backup_id),
        *("--backup-time-ms", str(time.time_ns() // 1_000_000), "--profile", profile),
    )
    return _our_backup_sample("ours_file", keys, done, meter, result, backup_id)


def ours_s3(ctx: Context, source: RedisServer, keys: int) -> Sample:
    """Our production path to S3 (moto): BackupStore.open_object, KMS data key, multipart upload."""
    if ctx.moto is None:
        raise BenchError("the S3 backup needs the moto server")
    backup_id = new_backup_id()
    meter = Meter(source.pid)
    done, result = _worker(
        ctx,
        "backup-s3",
        *("--url", source.url, "--backup-id", backup_id, "--bucket", ctx.moto.bucket),
        *("--kms-key", ctx.moto.kms_key, "--backup-time-ms", str(time.time_ns() // 1_000_000)),
    )
    return _our_backup_sample("ours_s3", keys, done, meter, result, backup_id)


def ours_rdb_stream(ctx: Context, source: RedisServer, keys: int, out: Path | None) -> Sample:
    """RedisMode=rdb-stream: the server's RDB over SYNC, enveloped into a file (``out``) or S3."""
    backup_id = new_backup_id()
    meter = Meter(source.pid)
    if out is not None:
        target: tuple[str, ...] = ("rdb-stream-file", "--path", str(out))
        method = "ours_rdb_stream_file"
    elif ctx.moto is not None:
        target = ("rdb-stream-s3", "--bucket", ctx.moto.bucket, "--kms-key", ctx.moto.kms_key)
        method = "ours_rdb_stream_s3"
    else:
        raise BenchError("the rdb-stream S3 backup needs the moto server")
    done, result = _worker(ctx, *target, "--url", source.url, "--backup-id", backup_id, "--keys", str(keys))
    return _our_backup_sample(method, keys, done, meter, result, backup_id)


def _our_backup_sample(
    method: str, keys: int, done: Completed, meter: Meter, result: dict[str, Any], backup_id: str
) -> Sample:
    """A sample of one of our backup workers, with what the worker itself reported."""
    sample = _sample("backup", method, keys, done, meter)
    sample.keys, sample.bytes_in, sample.bytes_out = result["keys"], result["bytes_in"], result["bytes_out"]
    sample.extra = {"op_seconds": result["op_seconds"], "backup_id": backup_id}
    if "digest" in result:
        sample.extra["digest"] = result["digest"]
    return sample


def runbook(ctx: Context, source: RedisServer, keys: int, out: Path) -> Sample:
    """The runbook: ``redis-cli --rdb - | gzip | gpg --symmetric --batch --passphrase-file F``."""
    out.unlink(missing_ok=True)
    stages = [
        [*_cli(source), "--rdb", "-"],
        ["gzip"],
        ["gpg", "--symmetric", "--batch", "--passphrase-file", str(ctx.passphrase_file), "-o", str(out)],
    ]
    meter = Meter(source.pid)
    done = run_pipeline(stages, env=ctx.gpg_env())
    sample = _sample("backup", "runbook_gzip_gpg", keys, done, meter, 0.3)
    sample.keys, sample.bytes_out = keys, out.stat().st_size
    out.unlink()
    return sample


def raw_rdb(ctx: Context, source: RedisServer, keys: int, out: Path) -> Sample:
    """The floor of any client-side dump: ``redis-cli --rdb FILE`` (unencrypted, uncompressed)."""
    out.unlink(missing_ok=True)
    meter = Meter(source.pid)
    done = run_pipeline([[*_cli(source), "--rdb", str(out)]])
    sample = _sample("backup", "redis_cli_rdb", keys, done, meter, 0.3)
    sample.keys, sample.bytes_out = keys, out.stat().st_size
    out.unlink()
    return sample


# --------------------------------------------------------------------------- restore


def _check_restored(client: Any, expected: int, method: str) -> int:
    restored = int(client.dbsize())
    if restored != expected:
        raise BenchError(f"{method}: the target holds {restored} keys, expected {expected}")
    return restored


def ours_restore(ctx: Context, encrypted: Path, backup_id: str, keys: int, profile: str = "") -> Sample:
    """Our restore: decrypt_stream of the file -> restore_records into an empty redis-server."""
    options = ("--path", str(encrypted), "--backup-id", backup_id, "--profile", profile)
    return _our_restore(ctx, "ours_restore", keys, encrypted, "restore-file", *options)


def ours_restore_rdb(ctx: Context, encrypted: Path, backup_id: str, keys: int) -> Sample:
    """Our restore of an rdb-stream set: decrypt -> RDB entries as DUMP payloads -> restore_records."""
    options = ("--path", str(encrypted), "--backup-id", backup_id, "--rdb")
    return _our_restore(ctx, "ours_restore_rdb", keys, encrypted, "restore-file", *options)


def ours_restore_s3(ctx: Context, encrypted: Path, backup: Sample, keys: int) -> Sample:
    """Our production read path: the file backup's object in S3 (moto) -> read_object -> restore_records."""
    from servalsheets_backup.store.sets import set_prefix

    from .worker import KIND, OBJECT_NAME

    if ctx.moto is None:
        raise BenchError("the S3 restore needs the moto server")
    backup_id = backup.extra["backup_id"]
    key = set_prefix(KIND, backup_id) + OBJECT_NAME
    s3 = ctx.moto.client("s3")
    s3.upload_file(str(encrypted), ctx.moto.bucket, key)  # untimed: the set is in S3 before a restore
    try:
        options = (
            "--backup-id",
            backup_id,
            "--bucket",
            ctx.moto.bucket,
            "--entry",
            json.dumps(backup.extra["digest"]),
        )
        return _our_restore(ctx, "ours_restore_s3", keys, encrypted, "restore-s3", *options)
    finally:
        s3.delete_object(Bucket=ctx.moto.bucket, Key=key)


def _our_restore(
    ctx: Context, method: str, keys: int, encrypted: Path, operation: str, *options: str
) -> Sample:
    """One restore worker into a fresh, empty redis-server, checked against the target's DBSIZE."""
    target, client = empty_target()
    try:
        meter = Meter(target.pid)
        done, result = _worker(ctx, operation, "--url", target.url, *options)
        sample = _sample("restore", method, keys, done, meter)
        sample.keys = _check_restored(client, result["keys"], method)
        sample.bytes_in = encrypted.stat().st_size
        sample.extra = {"op_seconds": result["op_seconds"], "skipped_expired": result["skipped_expired"]}
    finally:
        client.close()
        target.stop()
    return sample


def pipe_restore(resp: Path, keys: int) -> Sample:
    """``redis-cli --pipe`` of RESTORE ... REPLACE commands into an empty redis-server."""
    target, client = empty_target()
    try:
        meter = Meter(target.pid)
        with resp.open("rb") as commands:
            done = run_pipeline([[*_cli(target), "--pipe"]], stdin=commands)
        sample = _sample("restore", "redis_cli_pipe", keys, done, meter)
        summary = _PIPE_SUMMARY.search(done.stdout)
        if summary is None or int(summary.group(1)) != 0:
            raise BenchError(f"redis-cli --pipe reported errors: {done.stdout[-300:]!r}")
        sample.keys = _check_restored(client, int(summary.group(2)), "redis_cli_pipe")
        sample.bytes_in = resp.stat().st_size
    finally:
        client.close()
        target.stop()
    return sample
