"""Every state, every Retry and every Catch of both state machines, exercised at least once.

A dedicated set of runs drives each path on purpose (a logical-mode deployment, then an
ElastiCache-mode one); the tests then read the execution histories of every run and compare
what was entered, retried and caught with the states, Retry and Catch fields of the ASL files.
In every run the first invocation serving each state fails with TransientError, so each Task's
Retry has to recover before the run can go on.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from servalsheets_backup_local.testing.environment import LocalEnvironment, start_environment
from servalsheets_backup_local.testing.serverless_standin import (
    InvalidServerlessCacheStateFault,
    ServerlessCacheNotFoundFault,
    ServerlessCacheSnapshotNotFoundFault,
    ServerlessCacheStandIn,
)

from .support import (
    ELASTICACHE_PARAMETERS,
    REDIS_BACKUP_REQUEST,
    SERVERLESS_CACHE,
    SERVERLESS_PARAMETERS,
    Exercised,
    FailAlways,
    RdbExporter,
    Run,
    SnapshotLifecycle,
    TransientOnce,
    asl_paths,
    backed_up,
    chain,
    coverage_gaps,
    create_replication_group,
    elasticache_fault,
    elasticache_services,
    fire,
    flip_byte,
    histories,
    install_services,
    load_asl,
    release_all_locks,
    reset,
    run_backup,
    run_restore,
    serverless_services,
    sets,
)

pytestmark = pytest.mark.workflow

ALL_KINDS = ["config", "tokens", "redis"]
CONSOLE = {"requested_by": "workflow-test", "reason": "ASL coverage", "poll_seconds": 0}
ROLLBACK_POINTS = [
    "maintenance-start",
    "safety-backup",
    "restore-config",
    "restore-tokens",
    "restore-redis",
    "maintenance-end",
    "verify",
]
EC_REQUEST = REDIS_BACKUP_REQUEST


def expect(run: Run, status: str, last_state: str) -> Run:
    """Fail the set-up loudly when a dedicated run did not take the path it was made for."""
    assert (run.status, run.entered[-1]) == (status, last_state), (run.entered, run.error, run.cause[:400])
    return run


def _restore_runs(env: LocalEnvironment) -> None:
    reset(env)
    backup = backed_up(env, "full")
    request = {"backup": backup["backup_id"], "kinds": ALL_KINDS, "mode": "replace", **CONSOLE}

    env.runner.before_invoke = TransientOnce()
    expect(run_restore(env, **request), "SUCCEEDED", "Restore succeeded")
    env.runner.before_invoke = TransientOnce()
    expect(run_restore(env, **{**request, "kinds": ["sessions"]}), "FAILED", "Restore refused")
    env.runner.before_invoke = TransientOnce()
    expect(run_restore(env, **request, dry_run=True), "SUCCEEDED", "Dry run complete")
    for point in ROLLBACK_POINTS:
        env.runner.before_invoke = TransientOnce()
        run = expect(
            run_restore(env, **request, fail_after=point), "FAILED", "Restore failed and was rolled back"
        )
        if point == "maintenance-end":  # the window's end failed again after the rollback: still recorded
            assert run.entered.count("End maintenance window after rollback") == 1
    env.runner.before_invoke = chain(TransientOnce(), FailAlways("rollback_restore"))
    expect(run_restore(env, **request, fail_after="restore-redis"), "FAILED", "Restore and rollback failed")
    for state in ("restore_redis:plan", "restore_redis:part"):  # the Map path's own Catch fields
        env.runner.before_invoke = chain(TransientOnce(), FailAlways(state))
        expect(run_restore(env, **request), "FAILED", "Restore failed and was rolled back")

    env.runner.before_invoke = None
    damaged = backed_up(env, "redis")
    ref = next(ref for ref in sets(env, "redis") if ref.backup_id == damaged["backup_id"])
    flip_byte(env, ref.prefix + "redis/dump-0001")
    env.runner.before_invoke = TransientOnce()
    refused = run_restore(env, **{**request, "backup": damaged["backup_id"], "kinds": ["redis"]})
    expect(refused, "FAILED", "Restore refused after checks")
    env.runner.before_invoke = None


def _backup_runs(env: LocalEnvironment) -> None:
    reset(env)
    env.runner.before_invoke = TransientOnce()
    expect(fire(env, "full"), "SUCCEEDED", "Backup succeeded")
    env.runner.before_invoke = TransientOnce()
    expect(run_backup(env, {"kind": "sessions"}), "FAILED", "Backup failed")
    for kind, folder in [
        ("config", "backup_config"),
        ("tokens", "backup_tokens"),
        ("redis", "dump_redis:plan"),
        ("redis", "dump_redis:shard"),
        ("redis", "dump_redis:merge"),
        ("config", "finalize_backup"),
    ]:
        env.runner.before_invoke = chain(TransientOnce(), FailAlways(folder))
        expect(fire(env, kind), "FAILED", "Backup failed")
    env.runner.before_invoke = chain(TransientOnce(), FailAlways("dump_redis", "fail_backup"))
    expect(fire(env, "redis"), "FAILED", "Backup failed, failure not recorded")
    env.runner.before_invoke = None
    release_all_locks(env)  # the unrecorded failure could not release its lock


def _elasticache_runs(env: LocalEnvironment, runs: dict[str, Run]) -> None:
    reset(env)
    with pytest.MonkeyPatch.context() as patch:
        life = SnapshotLifecycle(status="creating", polls_until_available=1).install(patch)

        # Happy path: every Lambda fails once first (TransientError)
        exporter = RdbExporter(env.production, delay=1)
        install_services(env, elasticache_services(exporter))
        env.runner.before_invoke = chain(TransientOnce(), exporter.before_invoke)
        backup = expect(run_backup(env, EC_REQUEST), "SUCCEEDED", "Backup succeeded").output

        # ... restored into a new replication group (the restore waits for it to be seeded)
        env.runner.before_invoke = TransientOnce()
        target = {"new_replication_group_id": "servalsheets-coverage"}
        request = {"backup": backup["backup_id"], "kinds": ["redis"], "target": target, **CONSOLE}
        run = expect(run_restore(env, **request), "SUCCEEDED", "Restore succeeded")
        assert "Wait for new cache" in run.entered
        # ... and a failure seeding it is caught and rolled back
        env.runner.before_invoke = FailAlways("restore_redis:None")
        target = {"new_replication_group_id": "servalsheets-coverage-2"}
        request = {**request, "target": target}
        expect(run_restore(env, **request), "FAILED", "Restore failed and was rolled back")
        env.runner.before_invoke = None

        # A throttled CreateSnapshot (quota exceeded): its Retry should wait and try again
        life.create_errors = [elasticache_fault("SnapshotQuotaExceededFault", "snapshot quota exceeded")]
        install_services(env, elasticache_services(RdbExporter(env.production)))
        runs["quota"] = run_backup(env, EC_REQUEST)
        release_all_locks(env)

        # CreateSnapshot refused outright -> Catch
        life.create_errors = [elasticache_fault("ReplicationGroupNotFoundFault")]
        expect(run_backup(env, EC_REQUEST), "FAILED", "Backup failed")

        # DescribeSnapshots refused while polling -> Catch
        life.describe_errors = [elasticache_fault("InvalidParameterValue")]
        expect(run_backup(env, EC_REQUEST), "FAILED", "Backup failed")
        life.describe_errors = []

        # ElastiCache reports the snapshot as failed
        life.status = "failed"
        run = expect(run_backup(env, EC_REQUEST), "FAILED", "Backup failed")
        assert (
            "Snapshot failed" in run.entered
            and run.cause == "SnapshotFailed: ElastiCache reported the snapshot as failed"
        )
        life.status = "creating"

        # The export cannot be started; the exported RDB is corrupt
        env.runner.before_invoke = FailAlways("export_snapshot")
        expect(run_backup(env, EC_REQUEST), "FAILED", "Backup failed")
        env.runner.before_invoke = None
        install_services(env, elasticache_services(RdbExporter(env.production, corrupt=True)))
        expect(run_backup(env, EC_REQUEST), "FAILED", "Backup failed")


def _rdb_stream_runs(env: LocalEnvironment) -> None:
    """rdb-stream mode's own states: the one-invocation RDB dump, retried once, then caught."""
    reset(env)
    env.runner.before_invoke = TransientOnce()
    expect(fire(env, "redis"), "SUCCEEDED", "Backup succeeded")
    env.runner.before_invoke = FailAlways("dump_redis")
    expect(fire(env, "redis"), "FAILED", "Backup failed")
    env.runner.before_invoke = None


def _serverless_runs(env: LocalEnvironment, runs: dict[str, Run]) -> None:
    reset(env)
    standin = ServerlessCacheStandIn()
    standin.register(SERVERLESS_CACHE, env.production)
    install_services(env, serverless_services(standin))
    try:
        # Happy path, every Lambda failing once first; then restored into a new serverless cache
        env.runner.before_invoke = TransientOnce()
        backup = expect(run_backup(env, EC_REQUEST), "SUCCEEDED", "Backup succeeded").output
        env.runner.before_invoke = TransientOnce()
        target = {"new_serverless_cache_name": "servalsheets-coverage"}
        request = {"backup": backup["backup_id"], "kinds": ["redis"], "target": target, **CONSOLE}
        run = expect(run_restore(env, **request), "SUCCEEDED", "Restore succeeded")
        assert "Wait for new cache" in run.entered
        env.runner.before_invoke = None

        # The cache is busy (being modified): CreateServerlessCacheSnapshot's Retry waits it out
        standin.faults["create_snapshot"] = [InvalidServerlessCacheStateFault("cache is modifying")]
        runs["serverless-busy"] = run_backup(env, EC_REQUEST)
        release_all_locks(env)

        # No such cache -> Catch; the snapshot vanishes while being polled -> Catch
        standin.faults["create_snapshot"] = [ServerlessCacheNotFoundFault("no such cache")]
        expect(run_backup(env, EC_REQUEST), "FAILED", "Backup failed")
        standin.faults["snapshot_status"] = [ServerlessCacheSnapshotNotFoundFault("deleted meanwhile")]
        expect(run_backup(env, EC_REQUEST), "FAILED", "Backup failed")
    finally:
        standin.close()


@pytest.fixture(scope="module")
def exercised() -> Iterator[dict[str, Any]]:
    """Run the dedicated executions; return what the histories show, per state machine."""
    found: dict[str, Any] = {"backup": Exercised(), "restore": Exercised(), "runs": {}}
    logical = start_environment()
    try:
        _restore_runs(logical)
        _backup_runs(logical)
        for name, logical_id in (("backup", "BackupStateMachine"), ("restore", "RestoreStateMachine")):
            for events in histories(logical, logical_id):
                found[name].add(events)
    finally:
        logical.close()
    elasticache = start_environment(extra_parameters=ELASTICACHE_PARAMETERS)
    try:
        create_replication_group(elasticache)
        _elasticache_runs(elasticache, found["runs"])
        for name, logical_id in (("backup", "BackupStateMachine"), ("restore", "RestoreStateMachine")):
            for events in histories(elasticache, logical_id):
                found[name].add(events)
    finally:
        elasticache.close()
    rdb_stream = start_environment(extra_parameters={"RedisMode": "rdb-stream"})
    try:
        _rdb_stream_runs(rdb_stream)
        for events in histories(rdb_stream, "BackupStateMachine"):
            found["backup"].add(events)
    finally:
        rdb_stream.close()
    serverless = start_environment(extra_parameters=SERVERLESS_PARAMETERS)
    try:
        _serverless_runs(serverless, found["runs"])
        for name, logical_id in (("backup", "BackupStateMachine"), ("restore", "RestoreStateMachine")):
            for events in histories(serverless, logical_id):
                found[name].add(events)
    finally:
        serverless.close()
    yield found


def test_restore_state_machine_every_state_retry_and_catch(exercised: dict[str, Any]) -> None:
    gaps = coverage_gaps(load_asl("restore"), exercised["restore"])

    assert gaps == {"never entered": [], "Retry never exercised": [], "Catch never taken": []}


def test_backup_state_machine_every_state_retry_and_catch(exercised: dict[str, Any]) -> None:
    gaps = coverage_gaps(load_asl("backup"), exercised["backup"])

    assert gaps == {"never entered": [], "Retry never exercised": [], "Catch never taken": []}


def test_every_lambda_retry_recovered_from_a_transient_error(exercised: dict[str, Any]) -> None:
    for name in ("backup", "restore"):
        _, retries, _ = asl_paths(load_asl(name))
        lambda_states = [state for state, errors in retries.items() if "TransientError" in errors]
        assert lambda_states
        missing = [
            state
            for state in lambda_states
            if "TransientError" not in exercised[name].retried.get(state, set())
        ]
        assert missing == [], name


def test_create_snapshot_retries_a_quota_fault(exercised: dict[str, Any]) -> None:
    run: Run = exercised["runs"]["quota"]
    failures = [
        e["lambdaFunctionFailedEventDetails"]["error"]
        for e in run.events
        if "lambdaFunctionFailedEventDetails" in e
    ]
    assert failures == ["SnapshotQuotaExceededFault"]  # botocore's class for the error code

    assert run.status == "SUCCEEDED", run.entered
    assert run.entered.count("Create ElastiCache snapshot") == 1


def test_create_serverless_snapshot_retries_a_busy_cache(exercised: dict[str, Any]) -> None:
    run: Run = exercised["runs"]["serverless-busy"]
    failures = [
        e["lambdaFunctionFailedEventDetails"]["error"]
        for e in run.events
        if "lambdaFunctionFailedEventDetails" in e
    ]
    assert failures == ["InvalidServerlessCacheStateFault"]

    assert run.status == "SUCCEEDED", run.entered
    assert run.entered.count("Create ElastiCache snapshot") == 1
