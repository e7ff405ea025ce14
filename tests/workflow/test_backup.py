"""The backup state machine executed end to end (logical Redis mode): schedules, chunked dumps,
failures and concurrent runs, with the real handlers against real redis-servers.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from servalsheets_backup.services import Services
from servalsheets_backup_local.testing.environment import LocalEnvironment
from servalsheets_backup_local.testing.seed import seed_servalsheets
from servalsheets_backup_local.testing.servalsheets_state import SeededState, redis_snapshot

from .support import (
    SCHEDULES,
    FailAlways,
    LambdaGate,
    backed_up,
    drop_short_lived,
    finish,
    fire,
    held_locks,
    install_services,
    redis_client,
    redis_differences,
    restore_redis_to_scratch,
    set_objects,
    sets,
)

pytestmark = pytest.mark.workflow

COMPONENTS = {
    "config": {"config"},
    "tokens": {"tokens"},
    "redis": {"redis"},
    "full": {"config", "tokens", "redis"},
}


@pytest.mark.parametrize("kind", list(SCHEDULES))
def test_every_scheduled_backup_succeeds(env: LocalEnvironment, seeded: SeededState, kind: str) -> None:
    # Given the deployed schedule for the kind
    schedule = env.schedules()[SCHEDULES[kind]]
    assert schedule["input"] == {"kind": kind, "trigger": "schedule"}
    assert schedule["target"] == env.state_machine_arn("BackupStateMachine")
    before = {ref.backup_id for ref in sets(env, kind)}
    drop_short_lived(env)
    keys = len(redis_snapshot(env.production.url))

    # When EventBridge fires it
    result = backed_up(env, kind)

    # Then exactly one new, complete, verifiable set of that kind exists
    new = [ref for ref in sets(env, kind) if ref.backup_id not in before]
    assert [ref.backup_id for ref in new] == [result["backup_id"]]
    store = env.services().store
    report = store.verify_set(new[0])
    assert report.ok, report.first_failure()
    manifest = report.manifest
    assert manifest is not None
    assert set(manifest.components) == COMPONENTS[kind]
    assert {entry.component for entry in manifest.objects} == COMPONENTS[kind]
    assert manifest.trigger == "schedule"
    if "redis" in COMPONENTS[kind]:
        assert manifest.components["redis"]["keys"] == keys
        assert [entry.name for entry in manifest.objects_of("redis")] == ["redis/dump-0001"]
    assert env.metrics.values("BackupSucceeded", kind) == [1]
    assert held_locks(env) == {}


def slow_uploads(seconds: float) -> Any:
    """Every object upload write waits ``seconds`` first, as over a slow link to S3."""

    def customise(services: Services) -> Services:
        store = services.store
        open_object = store.open_object

        def slow_open(*args: Any, **kwargs: Any) -> Any:
            upload = open_object(*args, **kwargs)
            write = upload.write

            def slow_write(data: bytes) -> int:
                time.sleep(seconds)
                return int(write(data))

            upload.write = slow_write  # type: ignore[method-assign]
            return upload

        store.open_object = slow_open  # type: ignore[method-assign]
        return services

    return customise


def test_logical_dump_continues_across_invocations_and_restores_completely(
    env: LocalEnvironment, seeded: SeededState
) -> None:
    # Given 20k keys, an invocation budget that leaves about 1 s of work per invocation
    # (deadline_of keeps 60 s in reserve) and uploads that take 0.1 s per 1000-key batch
    client = redis_client(env.production)
    seed_servalsheets(client, 20_000, seed=11)
    client.close()
    drop_short_lived(env)
    backed = redis_snapshot(env.production.url)
    since = time.monotonic()
    env.runner.budget_ms = 61_000
    install_services(env, slow_uploads(0.1))

    # When the redis backup runs
    run = fire(env, "redis")

    # Then the one shard's Map iteration looped, one invocation per chunk, each chunk its own object
    assert run.status == "SUCCEEDED", (run.error, run.message[:500])
    assert run.entered.count("Dump every shard") == 1
    dumps = run.entered.count("Dump shard chunk")
    assert dumps > 1
    assert run.entered.count("Shard dumped?") == dumps
    pending = run.task_output("Merge shard dumps")
    assert pending["redis_done"] is True and pending["redis_chunks"] == dumps
    ref = next(ref for ref in sets(env, "redis") if ref.backup_id == run.output["backup_id"])
    manifest = env.services().store.load_manifest(ref)
    names = [entry.name for entry in manifest.objects_of("redis")]
    assert names == [f"redis/dump-{n:04d}" for n in range(1, dumps + 1)]
    assert sum(entry.items["keys"] for entry in manifest.objects_of("redis")) == len(backed)
    assert manifest.components["redis"]["chunks"] == dumps

    # ... and a restore into the (empty) restore-test Redis brings every key back
    restore = restore_redis_to_scratch(env, ref.backup_id)
    assert restore.status == "SUCCEEDED", (restore.error, restore.message[:500])
    assert all(check["ok"] for check in restore.output["checks"])
    assert redis_differences(env.target.url, backed, since=since) == []
    assert redis_differences(env.production.url, backed, since=since) == []  # the source is untouched


@pytest.mark.parametrize("failing", ["dump_redis", "finalize_backup"])
def test_failed_backup_leaves_no_set_and_releases_the_lock(
    env: LocalEnvironment, seeded: SeededState, failing: str
) -> None:
    before = [ref.backup_id for ref in sets(env, "redis")]
    env.runner.before_invoke = FailAlways(failing, message="disk on fire")

    run = fire(env, "redis")

    assert run.status == "FAILED" and run.error == "BackupFailed"
    assert run.cause.startswith("RuntimeError: disk on fire"), run.cause
    assert run.entered[-2:] == ["Record backup failure", "Backup failed"]
    assert env.metrics.values("BackupFailed", "redis") == [1]
    assert env.metrics.values("BackupSucceeded") == []
    assert [ref.backup_id for ref in sets(env, "redis")] == before
    backup_id = run.task_output("Begin backup")["pending"]["backup_id"]
    assert set_objects(env, "redis", backup_id) == []  # partial objects were removed too
    assert held_locks(env) == {}

    # A later backup of the same kind is not blocked
    env.runner.before_invoke = None
    assert backed_up(env, "redis")["kind"] == "redis"


def test_two_backups_of_one_kind_at_once_one_is_refused(
    env: LocalEnvironment, seeded: SeededState, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = {ref.backup_id for ref in sets(env, "redis")}
    gate = LambdaGate(env, "dump_redis").install(monkeypatch)
    try:
        # Given a redis backup that holds its lock (held at the dump step)
        first = env.start_execution("BackupStateMachine", {"kind": "redis", "trigger": "schedule"})
        gate.wait_until_held()

        # When a second one of the same kind starts
        second = fire(env, "redis")

        # Then the second is refused at once and records the refusal
        assert second.status == "FAILED" and second.error == "BackupFailed"
        assert second.cause.startswith("LockHeldError: backup:redis is locked by " + first), second.cause
        assert second.entered == ["Begin backup", "Record backup failure", "Backup failed"]
        assert held_locks(env) == {"backup:redis": first}
    finally:
        gate.release()

    # ... and the first completes: exactly one new set, complete and intact
    done = finish(env, first)
    assert done.status == "SUCCEEDED", (done.error, done.message[:500])
    new = [ref for ref in sets(env, "redis") if ref.backup_id not in before]
    assert [ref.backup_id for ref in new] == [done.output["backup_id"]]
    assert env.services().store.verify_set(new[0]).ok
    assert env.metrics.values("BackupSucceeded", "redis") == [1]
    assert env.metrics.values("BackupFailed", "redis") == [1]
    assert held_locks(env) == {}
