"""The weekly restore test as its schedule fires it, and the ECS maintenance window around a restore."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import redis

from servalsheets_backup.workflows.freshness import VERIFICATION_MARKER
from servalsheets_backup_local.testing.environment import LocalEnvironment, start_environment
from servalsheets_backup_local.testing.servalsheets_state import redis_snapshot, seed_state

pytestmark = pytest.mark.workflow
CLUSTER, SERVICE = "servalsheets", "servalsheets-mcp"


@pytest.fixture(scope="module")
def env() -> Iterator[LocalEnvironment]:
    environment = start_environment(extra_parameters={"EcsClusterName": CLUSTER, "EcsServiceName": SERVICE})
    try:
        seed_state(environment, 400)
        assert environment.fire_schedule("BackupStateMachineFullSchedule")["status"] == "SUCCEEDED"
        yield environment
    finally:
        environment.close()


def _secret_names(env: LocalEnvironment) -> list[str]:
    return sorted(s["Name"] for s in env.client("secretsmanager").list_secrets()["SecretList"])


def test_weekly_verification_restores_into_the_scratch_target_then_cleans_up(env: LocalEnvironment) -> None:
    production = redis_snapshot(env.production.url)
    secrets_before = _secret_names(env)
    schedule = env.schedules()["RestoreStateMachineRestoreTestSchedule"]
    scratch_token = schedule["input"]["target"]["token_store_path"]

    description = env.fire_schedule("RestoreStateMachineRestoreTestSchedule")

    assert description["status"] == "SUCCEEDED", description.get("cause")
    summary = json.loads(description["output"])
    assert all(check["ok"] for check in summary["checks"]) and summary["checks"]
    assert env.metrics.values("VerificationSucceeded", "verification") == [1]
    assert env.services().state.get_marker(VERIFICATION_MARKER) is not None
    # Cleaned up: scratch Redis empty, scratch token file gone, scratch secrets removed.
    assert redis.Redis.from_url(env.target.url).dbsize() == 0
    assert not Path(scratch_token).exists()
    assert _secret_names(env) == secrets_before
    # Production untouched (same keys; values compared by DUMP where no TTL ran out).
    after = redis_snapshot(env.production.url)
    assert set(after) <= set(production)
    assert all(after[key][0] == production[key][0] for key in after)


def test_verification_without_an_isolated_target_is_refused(env: LocalEnvironment) -> None:
    description = env.run("RestoreStateMachine", {"backup": "latest", "verification": True})
    assert description["status"] == "FAILED"
    assert description["error"] == "InvalidInputError"
    assert "isolated target" in description["cause"]


def test_restore_scales_the_service_down_and_back_up(env: LocalEnvironment) -> None:
    ecs = boto3.client("ecs", endpoint_url=env.moto.endpoint, region_name="us-east-1")
    ecs.create_cluster(clusterName=CLUSTER)
    ecs.register_task_definition(
        family="mcp", containerDefinitions=[{"name": "mcp", "image": "servalsheets", "memory": 512}]
    )
    ecs.create_service(cluster=CLUSTER, serviceName=SERVICE, taskDefinition="mcp", desiredCount=3)
    seen: dict[str, Any] = {}

    def during_restore(folder: str, payload: dict[str, Any]) -> None:
        if folder == "restore_redis" and "desired" not in seen:
            seen["desired"] = ecs.describe_services(cluster=CLUSTER, services=[SERVICE])["services"][0][
                "desiredCount"
            ]

    env.runner.before_invoke = during_restore
    try:
        description = env.run(
            "RestoreStateMachine",
            {
                "backup": "latest",
                "kinds": ["redis"],
                "mode": "merge",
                "requested_by": "test",
                "poll_seconds": 0,
            },
        )
    finally:
        env.runner.before_invoke = None
    assert description["status"] == "SUCCEEDED", description.get("cause")
    assert seen["desired"] == 0  # scaled down while the data was written
    assert ecs.describe_services(cluster=CLUSTER, services=[SERVICE])["services"][0]["desiredCount"] == 3
