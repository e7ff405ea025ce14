"""The drill's ``region-loss`` scenario: the primary Region lost with its backups, restored in the standby.

Both stacks come from template.yaml: the primary in us-east-1 (the drill's usual deployment) and
a standby in us-west-2 (StackRole=standby, the replica of the primary's multi-Region key). The
primary is then updated with StandbyBucketName, as an operator's second deploy would, so its
bucket carries the replication rules. The schedules fire in the primary; a stand-in copies the
objects by those rules (moto does not replicate), first holding one object back to show that the
standby never calls a set complete early; then the primary Region is made unusable and the
standby's restore state machine restores from the console-style input into the standby's own
Redis, token store path and secrets, checked independently as in the full-restore scenario.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from servalsheets_backup.errors import IncompleteSetError

from .drill_report import DrillReport
from .drill_steps import (
    ScenarioRun,
    capture,
    check_secret_hygiene,
    console_input,
    expect_success,
    judge_redis,
    restore,
)
from .testing.bucket_resources import replication_rules
from .testing.environment import (
    ENV_SECRET,
    REDIS_SECRET,
    REPO_ROOT,
    TARGET_REDIS_SECRET,
    TOKEN_KEY_SECRET,
    LocalEnvironment,
    drill_parameters,
)
from .testing.keyspace import capture_after
from .testing.local_deploy import LocalDeployer
from .testing.redis_server import RedisServer, start_redis
from .testing.region_outage import NAME as OUTAGE_STAND_IN
from .testing.region_outage import region_outage
from .testing.replication_standin import NAME as REPLICATION_STAND_IN
from .testing.replication_standin import ReplicationStandIn

PRIMARY_REGION = "us-east-1"
STANDBY_REGION = "us-west-2"
STANDBY_STACK = "servalsheets-backup-standby"


@dataclass
class StandbySite:
    """The standby Region: its deployment (a LocalEnvironment view), its Redis, the replication."""

    view: LocalEnvironment
    redis: RedisServer
    scratch: RedisServer  # the weekly restore test's target in the standby Region
    replication: ReplicationStandIn
    notes: dict[str, Any] = field(default_factory=dict)

    def stop(self) -> None:
        """Stop the standby's redis-servers (moto and the runner belong to the primary environment)."""
        self.redis.stop()
        self.scratch.stop()


def setup_standby(environment: LocalEnvironment, report: DrillReport) -> StandbySite:
    """Deploy the standby stack, give it its Region's secrets, and update the primary to replicate."""
    redis, scratch = start_redis(), start_redis()
    try:
        view = _deploy_standby(environment, redis)
        _create_standby_secrets(environment, view, redis, scratch)
        bucket = view.output("BackupBucketName")
        LocalDeployer(REPO_ROOT, "servalsheets-backup-drill", environment.parameters).update(
            environment.deployment,
            environment.runner,
            {
                "StandbyRegion": STANDBY_REGION,
                "StandbyBucketName": bucket,
                "StandbyKmsKeyArn": view.output("BackupKeyArn"),
            },
        )
    except BaseException:
        redis.stop()
        scratch.stop()
        raise
    rules = replication_rules(environment.deployment.properties["BackupBucket"]["ReplicationConfiguration"])
    replication = ReplicationStandIn(environment.output("BackupBucketName"), PRIMARY_REGION, rules)
    report.environment["standby"] = {
        "region": STANDBY_REGION,
        "bucket": bucket,
        "replica_key": view.output("BackupReplicaKeyArn"),
        "redis_port": redis.port,
        "redis_pid": redis.pid,
    }
    report.environment["not_emulated"] = sorted(
        {*report.environment["not_emulated"], REPLICATION_STAND_IN, OUTAGE_STAND_IN}
    )
    return StandbySite(view, redis, scratch, replication)


def _deploy_standby(environment: LocalEnvironment, redis: RedisServer) -> LocalEnvironment:
    standby_files = environment.workdir / "standby"
    (standby_files / "servalsheets").mkdir(parents=True, mode=0o700)
    parameters = {
        **drill_parameters(environment.workdir),
        "StackRole": "standby",
        "PrimaryBackupKeyArn": environment.output("BackupKeyArn"),
        "TokenStorePath": str(standby_files / "servalsheets" / "tokens.encrypted"),
        "ApplicationUrl": environment.parameters.get("ApplicationUrl", ""),
        "OAuthIssuer": environment.parameters.get("OAuthIssuer", ""),
    }
    deployer = LocalDeployer(REPO_ROOT, STANDBY_STACK, parameters, region=STANDBY_REGION)
    deployment = deployer.deploy(environment.runner)
    return LocalEnvironment(
        environment.workdir,
        environment.moto,
        redis,
        redis,
        deployment,
        environment.runner,
        metrics=environment.metrics,
        region=STANDBY_REGION,
        parameters=parameters,
    )


def _create_standby_secrets(
    environment: LocalEnvironment, view: LocalEnvironment, redis: RedisServer, scratch: RedisServer
) -> None:
    """What an operator keeps in the standby Region: REDIS_URL of the Redis there and of the weekly
    restore test's scratch Redis, and the token store key (a Secrets Manager replica of the
    primary's secret; copied here)."""
    manager = view.client("secretsmanager")
    manager.create_secret(Name=REDIS_SECRET, SecretString=json.dumps({"REDIS_URL": redis.url}))
    manager.create_secret(Name=TARGET_REDIS_SECRET, SecretString=json.dumps({"REDIS_URL": scratch.url}))
    token_key = environment.client("secretsmanager").get_secret_value(SecretId=TOKEN_KEY_SECRET)[
        "SecretString"
    ]
    manager.create_secret(Name=TOKEN_KEY_SECRET, SecretString=token_key)


def scenario_region_loss(run: ScenarioRun) -> None:
    """Replicate, lose the primary Region, restore in the standby, check everything independently."""
    environment, report, say, site = run.environment, run.report, run.say, run.standby
    if site is None:
        raise RuntimeError("the region-loss scenario needs the standby run_drill deploys")
    before = capture(environment)
    schedules = site.view.schedules()
    backups_off = all(
        schedules[name]["state"] == "DISABLED" for name in schedules if name.startswith("BackupStateMachine")
    )
    report.check("the standby runs no backup schedules", backups_off)
    say("replicating with one object of the newest full set held back: the standby must not list that set")
    delay = _replicate_in_two_passes(run, site)
    say("checking the standby's freshness: its newest complete set per kind, from its own bucket")
    freshness = site.view.fire_schedule("CheckFreshnessFunctionFreshnessSchedule")
    ages = json.loads(freshness["output"]).get("backup_age_seconds", {})
    report.check(
        "the standby's freshness check sees every kind",
        freshness["status"] == "SUCCEEDED" and all(age < 3600 for age in ages.values()),
        json.dumps(ages),
    )
    say("running the standby's weekly restore test, as its schedule would")
    weekly = site.view.fire_schedule("RestoreStateMachineRestoreTestSchedule")
    report.check(
        "the weekly restore test passes in the standby Region",
        weekly["status"] == "SUCCEEDED",
        str(weekly.get("error") or ""),
    )
    say(f"losing {PRIMARY_REGION}: every request to it refused from here on")
    with region_outage(PRIMARY_REGION) as refused:
        _check_primary_unreachable(environment, report)
        say(f"restoring in {STANDBY_REGION} through its own state machine (console-style input)")
        description = restore(site.view, console_input(), report)
        expect_success(description, report)
        if report.rpo_seconds is not None:
            report.rpo_seconds = round(report.rpo_seconds + delay, 3)
        report.environment["standby"]["replication_delay_seconds"] = delay
        say("verifying the standby's Redis, token store and configuration independently")
        judge_redis(
            before["redis"], capture_after(site.redis.url, before["redis"]), report, expected_subset=None
        )
        token_path = site.view.parameters["TokenStorePath"]
        restored = Path(token_path).read_bytes() if Path(token_path).exists() else None
        report.check("token store restored byte for byte in the standby", restored == before["tokens"])
        secret = site.view.client("secretsmanager").get_secret_value(SecretId=ENV_SECRET)
        report.check(
            "configuration secret restored in the standby Region",
            secret["SecretString"] == before["env_secret"],
        )
    report.environment["standby"]["primary_requests_refused"] = len(refused)
    check_secret_hygiene(environment, run.seeded, report)


def _replicate_in_two_passes(run: ScenarioRun, site: StandbySite) -> float:
    report = run.report
    newest = next(b for b in reversed(report.backups) if b["kind"] == "full")
    held = f"/{newest['backup_id']}/redis/dump-0001"
    first = site.replication.run(hold_back=lambda key: key.endswith(held))
    store = site.view.services().store
    listed = [ref.backup_id for ref in store.list_sets("full")]
    try:
        store.find(newest["backup_id"], "full")
        refused = False
    except IncompleteSetError:
        refused = True
    report.check(
        "a standby set with an object still missing is neither listed nor restorable",
        newest["backup_id"] not in listed and refused and len(first.pending) == 1,
        f"{len(first.copied)} objects copied, {len(first.pending)} held back",
    )
    second = site.replication.run()
    complete = newest["backup_id"] in [ref.backup_id for ref in store.list_sets("full")]
    report.check("once it arrives the set is complete in the standby", complete and not second.pending)
    verified = all(store.verify_set(store.find(b["backup_id"], b["kind"])).ok for b in report.backups)
    report.check("every replicated set verifies in the standby with the replica key", verified)
    return max(first.max_delay_seconds, second.max_delay_seconds)


def _check_primary_unreachable(environment: LocalEnvironment, report: DrillReport) -> None:
    try:
        environment.client("s3").list_objects_v2(Bucket=environment.output("BackupBucketName"), MaxKeys=1)
        reachable = True
    except Exception:  # EndpointConnectionError: the Region is down
        reachable = False
    report.check(f"the primary Region ({PRIMARY_REGION}) is unusable", not reachable)
