"""Faults under the backup state machine: a Lambda timing out mid-upload, Redis dropping and refusing.

One deployment of template.yaml, executed by moto (Retry and Catch are the ASL's own; their
back-off intervals are recorded instead of slept). TransientError is retried with back-off and
then recorded as a failure; a permanent error is not retried; a timed-out Lambda's upload is left
for the lifecycle rule; and never does a failed run leave a set behind or the lock held.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import redis

from servalsheets_backup.adapters.s3 import MultipartSink
from servalsheets_backup.components.redis_logical import dump as logical_dump
from servalsheets_backup.store.audit import read_audit
from servalsheets_backup_local.testing.environment import REDIS_SECRET, LocalEnvironment
from servalsheets_backup_local.testing.environment import start_environment as start
from servalsheets_backup_local.testing.redis_server import free_port, start_redis
from servalsheets_backup_local.testing.servalsheets_state import seed_state

from .envsupport import Run, execute, locks_held
from .helpers import seed_random_values

pytestmark = pytest.mark.reliability
DUMP_STATE = "Dump shard chunk"
PLAN_STATE = "Plan Redis shards"  # the first state that connects to Redis


@pytest.fixture(scope="module")
def env(retrier_sleeps: list[float]) -> Iterator[LocalEnvironment]:
    """One deployment, seeded with more keys than one DUMP batch and ~18 MB of values."""
    environment = start()
    patch = pytest.MonkeyPatch()
    try:
        patch.setenv("AWS_ENDPOINT_URL", environment.moto.endpoint)
        seed_state(environment, 2500)
        seed_random_values(environment.production.url, 18, 1 << 20)
        yield environment
    finally:
        patch.undo()
        environment.close()


@pytest.fixture
def deployment(on_moto: LocalEnvironment, retrier_sleeps: list[float]) -> Iterator[LocalEnvironment]:
    """The deployment with no lock, no recorded sleeps or metrics, and production Redis configured."""
    on_moto.metrics.points.clear()
    retrier_sleeps.clear()
    yield on_moto
    _point_redis_secret(on_moto, on_moto.production.url)
    assert locks_held(on_moto) == []


def _point_redis_secret(env: LocalEnvironment, url: str) -> None:
    env.client("secretsmanager").put_secret_value(
        SecretId=REDIS_SECRET, SecretString=json.dumps({"REDIS_URL": url})
    )


def _redis_sets(env: LocalEnvironment) -> list[str]:
    return [ref.backup_id for ref in env.services().store.list_sets("redis")]


def _uploads(env: LocalEnvironment) -> list[dict[str, Any]]:
    s3 = env.client("s3")
    return list(s3.list_multipart_uploads(Bucket=env.output("BackupBucketName")).get("Uploads", []))


def _assert_failed_without_a_set(env: LocalEnvironment, run: Run, sets_before: list[str]) -> None:
    assert run.status == "FAILED" and run.error == "BackupFailed"
    assert run.entered[-2:] == ["Record backup failure", "Backup failed"]
    assert _redis_sets(env) == sets_before
    assert env.metrics.values("BackupFailed", "redis") == [1]
    assert env.metrics.values("BackupSucceeded", "redis") == []


def test_lambda_timeout_mid_upload_is_recorded_and_the_next_run_succeeds(
    deployment: LocalEnvironment, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = deployment
    sets_before, uploads_before = _redis_sets(env), len(_uploads(env))
    # A Lambda that times out is frozen and discarded: none of its clean-up code runs.
    timed_out = type("Sandbox.Timedout", (Exception,), {})
    original = MultipartSink._upload_part
    parts: list[int] = []

    def upload_part(self: MultipartSink, part: bytes) -> None:
        if parts:
            raise timed_out("Task timed out after 900.00 seconds")
        original(self, part)
        parts.append(len(part))

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(MultipartSink, "_upload_part", upload_part)
        patch.setattr(MultipartSink, "abort", lambda self: None)
        run = execute(env, "BackupStateMachine", {"kind": "redis"})

    _assert_failed_without_a_set(env, run, sets_before)
    assert run.cause == "Sandbox.Timedout: Task timed out after 900.00 seconds"
    assert run.attempts(DUMP_STATE) == 1, "a timeout is not retried"
    assert parts == [8 << 20]
    abandoned = _uploads(env)[uploads_before:]
    assert len(abandoned) == 1 and abandoned[0]["Key"].endswith("/redis/dump-0001")
    failure = [
        r for r in read_audit(env.client("s3"), env.output("BackupBucketName")) if r["result"] == "failed"
    ]
    assert failure[-1]["error"] == "Sandbox.Timedout: Task timed out after 900.00 seconds"
    assert locks_held(env) == [], "the failure state released the lock"

    retry = execute(env, "BackupStateMachine", {"kind": "redis"})
    assert retry.status == "SUCCEEDED", retry.cause
    assert _redis_sets(env)[0] == retry.output["backup_id"]


@contextmanager
def _dropping_connections(env: LocalEnvironment, times: int) -> Iterator[dict[str, int]]:
    """CLIENT KILL the dump's connection before its second batch, in the first ``times`` invocations."""
    state = {"invocations": 0, "batches": 0}
    original = logical_dump._collect_dumps

    def collect(*args: Any, **kwargs: Any) -> Any:
        state["batches"] += 1
        if state["invocations"] <= times and state["batches"] == 2:
            admin = redis.Redis.from_url(env.production.url)
            admin.client_kill_filter(_type="normal", skipme=True)
            admin.close()
        return original(*args, **kwargs)

    def count_invocations(folder: str, payload: dict[str, Any]) -> None:
        if folder == "dump_redis" and payload.get("action") == "shard":  # not the shard planning
            state["invocations"] += 1
            state["batches"] = 0

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(logical_dump, "_collect_dumps", collect)
        patch.setattr(env.runner, "before_invoke", count_invocations)
        yield state


def test_dropped_redis_connections_are_retried_with_back_off(
    deployment: LocalEnvironment, retrier_sleeps: list[float]
) -> None:
    env = deployment
    with _dropping_connections(env, times=2) as state:
        run = execute(env, "BackupStateMachine", {"kind": "redis"})
    assert run.status == "SUCCEEDED", run.cause
    assert run.attempts(DUMP_STATE) == 3 and state["invocations"] == 3
    assert len(retrier_sleeps) == 2 and all(0 <= s <= 4 for s in retrier_sleeps)
    client = redis.Redis.from_url(env.production.url)
    assert run.output["items"]["keys"] == client.dbsize()
    client.close()
    assert env.services().store.verify_set(env.services().store.list_sets("redis")[0]).ok


def test_redis_down_for_good_fails_after_the_retries_naming_the_cause(
    deployment: LocalEnvironment, retrier_sleeps: list[float]
) -> None:
    env = deployment
    sets_before = _redis_sets(env)
    port = free_port()
    _point_redis_secret(env, f"redis://127.0.0.1:{port}/0")
    run = execute(env, "BackupStateMachine", {"kind": "redis"})
    _assert_failed_without_a_set(env, run, sets_before)
    assert run.cause.startswith(
        f"TransientError: connect: Redis at 127.0.0.1:{port} is unreachable or timed out"
    )
    assert run.attempts(PLAN_STATE) == 5, "the first attempt and four retries"
    assert len(retrier_sleeps) == 4
    # Each retry's interval is drawn below a cap that doubles: 2, 4, 8, 16 s (JitterStrategy FULL).
    assert all(0 <= slept <= cap for slept, cap in zip(retrier_sleeps, (2, 4, 8, 16), strict=True))


def test_wrong_redis_password_is_not_retried(
    deployment: LocalEnvironment, retrier_sleeps: list[float]
) -> None:
    env = deployment
    sets_before = _redis_sets(env)
    server = start_redis(password="the-right-one-0123456789")
    port = server.port
    try:
        _point_redis_secret(env, f"redis://:the-wrong-one-9876543210@127.0.0.1:{server.port}/0")
        run = execute(env, "BackupStateMachine", {"kind": "redis"})
    finally:
        server.stop()
    _assert_failed_without_a_set(env, run, sets_before)
    assert run.attempts(PLAN_STATE) == 1 and retrier_sleeps == []
    assert run.cause == (
        f"RedisBackupError: connect: Redis at 127.0.0.1:{port} rejected the credentials "
        "(check the user and password)"
    )
    assert "the-wrong-one" not in run.cause and "the-right-one" not in json.dumps(
        env.history(run.arn), default=str
    )


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        ({"kind": "everything"}, "unknown kind 'everything'"),
        ({"kind": "full", "bucket": "elsewhere"}, "bucket: Extra inputs are not permitted"),
        ({"kind": "pre-deploy"}, "a pre-deploy backup needs a release label"),
        ({"kind": "config", "label": "x" * 10_000}, "label: String should have at most 128 characters"),
    ],
    ids=["unknown-kind", "unknown-field", "pre-deploy-without-label", "huge-label"],
)
def test_bad_backup_input_fails_in_the_first_state(
    deployment: LocalEnvironment, request_: dict[str, Any], message: str
) -> None:
    run = execute(deployment, "BackupStateMachine", request_)
    assert run.status == "FAILED"
    assert run.entered == ["Begin backup", "Record backup failure", "Backup failed"]
    assert message in run.cause
    assert run.attempts("Begin backup") == 1
