"""A backup interrupted in the middle of its upload: by an error, and by SIGKILL of the CLI process.

Either way no manifest is written (the set does not exist), a later run succeeds, and the lock
never blocks for ever. An upload abandoned by a killed process stays listed until the bucket's
AbortIncompleteMultipartUpload lifecycle rule (from template.yaml) removes it a day later.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import types
from pathlib import Path
from typing import Any

import pytest

from servalsheets_backup.adapters.s3 import PART_SIZE, MultipartSink
from servalsheets_backup.errors import LockHeldError
from servalsheets_backup.store import locks
from servalsheets_backup.workflows.backup import lock_name, run_backup
from servalsheets_backup_local.testing.moto_server import MotoServer

from .helpers import MiniStack, aborting_rules, lifecycle_rules, seed_random_values

pytestmark = pytest.mark.reliability
# Incompressible values worth a little more than two 8 MiB parts once sealed.
BIG_VALUES, BIG_VALUE_BYTES = 18, 1 << 20


class SimulatedCrash(Exception):
    """Stands for the process dying while a part is on the wire."""


def test_abort_multipart_rule_is_deployed_from_the_template(stack: MiniStack) -> None:
    rules = lifecycle_rules(stack.lifecycle())
    abort = [rule for rule in rules if rule.abort_upload_days is not None]
    assert [(rule.rule_id, rule.prefix, rule.abort_upload_days) for rule in abort] == [
        ("abort-incomplete-multipart-uploads", "", 1)
    ]
    assert aborting_rules(rules, "redis/2026/11/25/x/redis/dump-0001", age_days=1) == [abort[0].rule_id]
    assert aborting_rules(rules, "redis/2026/11/25/x/redis/dump-0001", age_days=0.5) == []


def test_error_after_some_parts_leaves_no_set_and_the_next_run_succeeds(
    stack: MiniStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a Redis large enough for a multipart upload, and S3 failing on the third part
    seed_random_values(stack.redis.url, BIG_VALUES, BIG_VALUE_BYTES)
    uploaded: list[int] = []
    original = MultipartSink._upload_part

    def flaky_upload_part(self: MultipartSink, part: bytes) -> None:
        if len(uploaded) == 2:
            raise SimulatedCrash("connection lost while uploading part 3")
        original(self, part)
        uploaded.append(len(part))

    monkeypatch.setattr(MultipartSink, "_upload_part", flaky_upload_part)
    services = stack.services()

    # When the backup runs
    with pytest.raises(SimulatedCrash):
        run_backup(services, "redis", owner="test-run-1")

    # Then two parts had been uploaded, yet no set exists and nothing is left behind
    assert uploaded == [PART_SIZE, PART_SIZE]
    assert stack.sets("redis") == []
    assert stack.keys("redis/") == []
    assert stack.uploads() == [], "the fail path aborts its own multipart upload"
    assert stack.lock(lock_name("redis")) is None, "the fail path releases the lock"
    assert stack.metrics.values("BackupFailed", "redis") == [1]
    assert stack.metrics.values("BackupSucceeded", "redis") == []
    failed = [r for r in stack.audit() if r["operation"] == "backup" and r["result"] == "failed"]
    assert [r["error"] for r in failed] == ["SimulatedCrash"]

    # And a later run succeeds with every key
    monkeypatch.setattr(MultipartSink, "_upload_part", original)
    result = run_backup(stack.services(), "redis", owner="test-run-2")
    assert [ref.backup_id for ref in stack.sets("redis")] == [result.backup_id]
    assert stack.services().store.verify_set(stack.sets("redis")[0]).ok
    assert result.items["keys"] == 100 + BIG_VALUES


def _cli_env(stack: MiniStack, moto: MotoServer) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "BACKUP_", "PYTEST"))}
    return {
        **env,
        **stack.env,
        "AWS_ENDPOINT_URL": moto.endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "USER": "reliability",
    }


def _hold_second_part(monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Event, threading.Event]:
    """Make moto (in this process) hold the second UploadPart until released."""
    from moto.s3.models import S3Backend

    arrived, release = threading.Event(), threading.Event()
    original = S3Backend.upload_part

    def upload_part(self: Any, bucket_name: str, multipart_id: str, part_id: int, value: bytes) -> Any:
        if part_id == 2:
            arrived.set()
            release.wait(30)
        return original(self, bucket_name, multipart_id, part_id, value)

    monkeypatch.setattr(S3Backend, "upload_part", upload_part)
    return arrived, release


def test_cli_killed_mid_upload_leaves_an_abandoned_upload_and_a_lock_that_expires(
    stack: MiniStack, moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given `servalsheets-backup backup redis` running in its own process
    seed_random_values(stack.redis.url, BIG_VALUES, BIG_VALUE_BYTES)
    arrived, release = _hold_second_part(monkeypatch)
    script = Path(sys.executable).with_name("servalsheets-backup")
    process = subprocess.Popen(
        [str(script), "backup", "redis", "--json"],
        env=_cli_env(stack, moto_server),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        # When it is killed (SIGKILL: no handler, no clean-up) while its second part is in flight
        assert arrived.wait(60), "the CLI never reached its second part"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        release.set()
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL

    # Then there is no set, only the abandoned multipart upload (part 1 stored)
    assert stack.sets("redis") == []
    uploads = stack.uploads()
    assert len(uploads) == 1 and uploads[0]["Key"].endswith("/redis/dump-0001")
    killed_prefix = uploads[0]["Key"].rsplit("redis/dump-0001", 1)[0]
    assert stack.keys(killed_prefix) == [], "nothing of the killed run is visible as an object"
    parts = stack.client("s3").list_parts(
        Bucket=stack.bucket, Key=uploads[0]["Key"], UploadId=uploads[0]["UploadId"]
    )["Parts"]
    assert [p["PartNumber"] for p in parts][:1] == [1]
    # which the template's lifecycle rule aborts once it is a day old
    rules = lifecycle_rules(stack.lifecycle())
    assert aborting_rules(rules, uploads[0]["Key"], age_days=1) == ["abort-incomplete-multipart-uploads"]

    # And the dead run's lock refuses a new run, naming its owner and expiry ...
    lock = stack.lock(lock_name("redis"))
    assert lock is not None and lock["owner"]["S"].startswith("cli:reliability@")
    with pytest.raises(LockHeldError, match=r"backup:redis is locked by cli:reliability@\d+ until epoch"):
        run_backup(stack.services(), "redis", owner="next-run")
    assert stack.sets("redis") == []

    # ... but only until it expires: four hours later a new run takes it and succeeds
    expires = int(lock["expires_at"]["N"])
    monkeypatch.setattr(locks, "time", types.SimpleNamespace(time=lambda: expires + 1.0))
    result = run_backup(stack.services(), "redis", owner="next-run")
    assert [ref.backup_id for ref in stack.sets("redis")] == [result.backup_id]
    assert stack.services().store.verify_set(stack.sets("redis")[0]).ok
    assert stack.lock(lock_name("redis")) is None
    assert len(stack.uploads()) == 1, "the abandoned upload is the lifecycle rule's to remove"


def test_a_dead_runs_lock_blocks_for_four_hours_at_most(stack: MiniStack) -> None:
    state = stack.services().state
    before = int(time.time())
    state.acquire(lock_name("config"), "owner-a")
    lock = stack.lock(lock_name("config"))
    assert lock is not None
    assert 0 <= int(lock["expires_at"]["N"]) - before - locks.DEFAULT_LOCK_SECONDS <= 2
    with pytest.raises(LockHeldError, match="owner-a"):
        state.acquire(lock_name("config"), "owner-b")
    state.acquire(lock_name("config"), "owner-a")  # re-entrant for its owner
    state.release(lock_name("config"), "owner-b")  # a stranger cannot release it
    assert stack.lock(lock_name("config")) is not None
    state.release(lock_name("config"), "owner-a")
    assert stack.lock(lock_name("config")) is None
