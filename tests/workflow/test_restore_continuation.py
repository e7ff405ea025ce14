"""A Redis restore larger than one invocation's budget continues across invocations."""

from __future__ import annotations

import pytest
import redis

from servalsheets_backup_local.testing.environment import TARGET_REDIS_SECRET, LocalEnvironment
from servalsheets_backup_local.testing.seed import seed_servalsheets

pytestmark = pytest.mark.workflow
# `env`: the module-scoped logical deployment of tests/workflow/conftest.py.


def test_restore_continues_from_the_saved_record_position(env: LocalEnvironment) -> None:
    # Given 6000 keys backed up, and a restore step whose budget ends after every batch
    client = redis.Redis.from_url(env.production.url)
    seed_servalsheets(client, 6000, seed=3)
    client.close()
    backup = env.fire_schedule("BackupStateMachineRedisSchedule")
    assert backup["status"] == "SUCCEEDED"
    module = env.runner.module("restore_redis")
    original = module.deadline_of
    module.deadline_of = lambda context, reserve_seconds=60.0: 0.0  # the budget is spent at once

    # When the restore runs into the isolated target
    arn = env.start_execution(
        "RestoreStateMachine",
        {
            "backup": "latest",
            "kinds": ["redis"],
            "mode": "replace",
            "poll_seconds": 0,
            "target": {"redis_url_secret_id": TARGET_REDIS_SECRET},
        },
    )
    try:
        description = env.wait(arn)
    finally:
        module.deadline_of = original

    # Then the restore's one Map iteration looped, one batch per invocation, and every key arrived once
    assert description["status"] == "SUCCEEDED", description.get("cause")
    entered = [
        e["stateEnteredEventDetails"]["name"] for e in env.history(arn) if "stateEnteredEventDetails" in e
    ]
    assert entered.count("Restore shard chunks") >= 5
    source, target = redis.Redis.from_url(env.production.url), redis.Redis.from_url(env.target.url)
    try:
        short_lived = sum(1 for key in source.scan_iter(count=1000) if 0 <= source.pttl(key) < 60_000)
        assert abs(target.dbsize() - source.dbsize()) <= short_lived
        assert target.dbsize() > 5000
    finally:
        source.close()
        target.close()
