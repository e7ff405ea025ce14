"""The drill's shared steps: what a scenario works with, the disaster, the restore through the
state machine, and the independent checks every scenario reports."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import redis

from servalsheets_backup.format.redis_keys import compile_patterns

from .drill_report import DrillReport
from .testing.environment import ENV_SECRET, LocalEnvironment
from .testing.keyspace import FAILURES, Keyspace, capture_after, capture_keyspace, compare_keyspaces, prefixes
from .testing.redis_cluster import RedisCluster
from .testing.servalsheets_state import SeededState
from .testing.serverless_standin import ServerlessCacheStandIn


@dataclass
class ScenarioRun:
    """What a scenario works with: the environment, the seeded state, the report, progress output."""

    environment: LocalEnvironment
    seeded: SeededState
    report: DrillReport
    say: Callable[[str], None]
    serverless: ServerlessCacheStandIn | None = None
    clusters: list[RedisCluster] | None = None  # the cluster scenario's; stopped by run_drill
    standby: Any = None  # the region-loss scenario's drill_region.StandbySite; stopped by run_drill


# -- the disaster and the restore ----------------------------------------------------------------
def disaster(environment: LocalEnvironment) -> None:
    client = redis.Redis.from_url(environment.production.url)
    try:
        client.flushall()
    finally:
        client.close()
    lose_files_and_secret(environment)


def lose_files_and_secret(environment: LocalEnvironment) -> None:
    environment.token_path.unlink()
    environment.client("secretsmanager").put_secret_value(
        # bandit B105: a value the drill writes to simulate a disaster, not a credential.
        SecretId=ENV_SECRET,
        SecretString=json.dumps({"JWT_SECRET": "overwritten-by-the-disaster"}),  # nosec B105
    )


def restore(environment: LocalEnvironment, request: dict[str, Any], report: DrillReport) -> dict[str, Any]:
    arn = environment.start_execution("RestoreStateMachine", request)
    description = environment.wait(arn, timeout=1800)
    stop = description.get("stopDate")
    start = description["startDate"]
    if isinstance(stop, datetime) and isinstance(start, datetime):
        report.rto_seconds = round((stop - start).total_seconds(), 3)
    report.steps = steps(environment, arn)
    return description


def steps(environment: LocalEnvironment, arn: str) -> list[dict[str, Any]]:
    # A Map's iterations enter the same states side by side: each exit closes the earliest entry.
    entered: dict[str, list[Any]] = {}
    steps: list[dict[str, Any]] = []
    for event in environment.history(arn):
        details = event.get("stateEnteredEventDetails")
        if details:
            entered.setdefault(details["name"], []).append(event["timestamp"])
        details = event.get("stateExitedEventDetails")
        if details and entered.get(details["name"]):
            seconds = (event["timestamp"] - entered[details["name"]].pop(0)).total_seconds()
            steps.append({"state": details["name"], "seconds": round(seconds, 3)})
    return steps


def console_input(**overrides: Any) -> dict[str, Any]:
    request = {
        "backup": "latest",
        "kinds": ["config", "tokens", "redis"],
        "mode": "replace",
        "requested_by": "drill-operator",
        "reason": "local disaster-recovery drill",
        "poll_seconds": 0,
    }
    request.update(overrides)
    return request


# -- checks ------------------------------------------------------------------------------------
def capture(environment: LocalEnvironment) -> dict[str, Any]:
    secret = environment.client("secretsmanager").get_secret_value(SecretId=ENV_SECRET)["SecretString"]
    return {
        "redis": capture_keyspace(environment.production.url),
        "tokens": environment.token_path.read_bytes(),
        "env_secret": secret,
    }


def expect_success(description: dict[str, Any], report: DrillReport) -> None:
    ok = description["status"] == "SUCCEEDED"
    report.check("restore execution succeeded", ok, description.get("error") or "")
    if not ok:
        return
    summary = json.loads(description["output"])
    report.rpo_seconds = summary.get("backup_age_seconds")
    for check in summary.get("checks", []):
        report.check(f"state machine: {check['name']}", check["ok"], check.get("detail", ""))


def expect_refusal(description: dict[str, Any], error: str, report: DrillReport) -> None:
    report.check(
        f"restore refused with {error}",
        description["status"] == "FAILED" and description.get("error") == error,
        f"{description['status']} {description.get('error')}",
    )


def compare_redis(
    environment: LocalEnvironment,
    before: Keyspace,
    report: DrillReport,
    expected_subset: list[str] | None,
    url: str | None = None,
) -> None:
    """Every key of ``before`` judged at the moment it was checked (see testing/keyspace.py)."""
    judge_redis(before, capture_after(url or environment.production.url, before), report, expected_subset)


def judge_redis(
    before: Keyspace, after: Keyspace, report: DrillReport, expected_subset: list[str] | None
) -> None:
    """The drill's Redis checks: every live key there, nothing unexpected, TTLs and values kept."""
    verdict = compare_keyspaces(before, after, matcher=compile_patterns(expected_subset))
    report.redis_comparison = verdict.as_dict()
    required = verdict.total("required")
    lost = verdict.total("missing")
    gone = (
        f" ({verdict.total('expired_before_check')} expired in wall-clock time before they were "
        f"checked, {verdict.total('expiring_at_check')} within {verdict.tolerance_ms} ms of it)"
    )
    report.check(
        "every live key restored",
        not lost,
        f"{required - lost}/{required} keys{gone}" + failing(verdict.missing),
    )
    report.check("no unexpected keys", not verdict.unexpected, f"{verdict.total('unexpected')} unexpected")
    off = verdict.total("ttl_off") + verdict.total("outlived_ttl")
    report.check(
        f"TTLs kept (absolute expiry within {verdict.tolerance_ms // 1000} s of the original)",
        not off,
        f"{off} keys off" + failing(verdict.ttl_off + verdict.outlived_ttl),
    )
    different = verdict.total("value_different")
    report.check(
        "values identical to before the disaster",
        not different,
        f"{verdict.total('compared') - different}/{verdict.total('compared')} keys"
        + failing(verdict.value_different),
    )


def failing(counter: Counter[str]) -> str:
    return f"; by prefix: {prefixes(counter)}" if counter else ""


def unchanged(environment: LocalEnvironment, before: Keyspace) -> tuple[bool, str]:
    """Same keys, same values, same absolute expiries; keys may only have expired meanwhile."""
    verdict = compare_keyspaces(before, capture_after(environment.production.url, before))
    problems = {name: verdict.total(name) for name in FAILURES if verdict.total(name)}
    detail = f"{verdict.total('required')} keys compared" + "".join(
        f", {count} {name.replace('_', ' ')}" for name, count in problems.items()
    )
    return verdict.ok, detail


def check_secret_hygiene(environment: LocalEnvironment, seeded: SeededState, report: DrillReport) -> None:
    from servalsheets_backup.store.audit import read_audit

    store = environment.services().store
    texts = [json.dumps(read_audit(store.s3, store.bucket))]
    for ref in store.list_sets():
        texts.append(json.dumps(store.load_manifest(ref).body()))
    texts.append(json.dumps(environment.metrics.points))
    blob = "\n".join(texts)
    leaked = [value for value in seeded.secret_values if value and value in blob]
    report.check(
        "no secret value in manifests, audit records or metrics",
        not leaked,
        f"{len(seeded.secret_values)} seeded secrets searched",
    )
