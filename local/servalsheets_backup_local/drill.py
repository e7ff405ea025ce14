"""The local disaster-recovery drill: the whole system end to end, no AWS account needed.

It starts moto (AWS), two real redis-servers and an application stand-in on 127.0.0.1, deploys
template.yaml, seeds realistic ServalSheets state, fires every backup schedule as EventBridge
would, simulates a disaster, restores through the restore state machine, verifies, and reports.
Scenarios exercise the runbook's other restore cases; ``elasticache-serverless`` deploys with
RedisMode=elasticache and an ElastiCache Serverless cache, played by a stand-in (moto has none)
whose caches are real redis-servers and whose snapshots are real RDB files; ``rdb-stream`` deploys
with RedisMode=rdb-stream, so Redis is backed up as the server's own RDB snapshot over the
replication protocol and restored key by key from it; ``cluster`` backs up a 3-shard Redis Cluster
(real cluster-enabled redis-servers) through the state machines' Map states, destroys it and
restores into a fresh 2-shard cluster. Everything started is stopped by pid.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import redis

from servalsheets_backup.format.redis_keys import OAUTH_KEY_PATTERNS

from .drill_cluster import CLUSTER_SOURCE_SHARDS, scenario_cluster, start_cluster
from .drill_region import STANDBY_REGION, StandbySite, scenario_region_loss, setup_standby
from .drill_report import DrillReport
from .drill_steps import (
    ScenarioRun,
    capture,
    check_secret_hygiene,
    compare_redis,
    console_input,
    disaster,
    expect_refusal,
    expect_success,
    restore,
    unchanged,
)
from .scenarios import DRILL_SCENARIOS
from .testing.environment import (
    ENV_SECRET,
    REDIS_SECRET,
    STAND_IN_NETWORK,
    TOKEN_KEY_SECRET,
    LocalEnvironment,
    start_environment,
)
from .testing.keyspace import capture_keyspace
from .testing.moto_patches import NAME as MOTO_KMS_PATCH
from .testing.redis_cluster import RedisCluster
from .testing.servalsheets_state import redis_snapshot, seed_state
from .testing.serverless_standin import ServerlessCacheStandIn

SCENARIOS = DRILL_SCENARIOS
BACKUP_SCHEDULES = {
    "config": "BackupStateMachineConfigSchedule",
    "tokens": "BackupStateMachineTokensSchedule",
    "redis": "BackupStateMachineRedisSchedule",
}
SERVERLESS_CACHE = "servalsheets-drill"
RESTORED_CACHE = "servalsheets-drill-restored"
# Stack parameters a scenario deploys with, on top of the drill's defaults.
SCENARIO_PARAMETERS = {
    "elasticache-serverless": {
        "RedisMode": "elasticache",
        "ElastiCacheServerlessCacheName": SERVERLESS_CACHE,
        **STAND_IN_NETWORK,
    },
    "rdb-stream": {"RedisMode": "rdb-stream"},
}
# The stand-in finishes snapshots and exports at once; the schedules' 30 s polls need not be real.
STAND_IN_WAIT_SECONDS = 0.2


def run_drill(
    keys: int = 2000,
    kinds: tuple[str, ...] = ("config", "tokens", "redis"),
    scenario: str = "full-restore",
    keep: Callable[[LocalEnvironment], None] | None = None,
    progress: Callable[[str], None] | None = None,
) -> DrillReport:
    """Run the drill; every process it starts is stopped before it returns (after ``keep`` if given)."""
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}: use one of {', '.join(SCENARIOS)}")
    report = DrillReport(scenario, keys)
    say = progress or (lambda message: None)
    say("starting moto, two redis-servers and the application stand-in on 127.0.0.1")
    environment = start_environment(with_app=True, extra_parameters=SCENARIO_PARAMETERS.get(scenario))
    serverless = None
    clusters: list[RedisCluster] = []
    standby: StandbySite | None = None
    try:
        _describe_environment(environment, report)
        if scenario == "elasticache-serverless":
            serverless = _install_serverless_stand_in(environment, report)
        seed_into = None
        if scenario == "region-loss":
            say(f"deploying the standby stack in {STANDBY_REGION}; the primary replicates to it")
            standby = setup_standby(environment, report)
        if scenario == "cluster":
            say(
                f"starting a {CLUSTER_SOURCE_SHARDS}-shard Redis Cluster on 127.0.0.1; REDIS_URL points at it"
            )
            clusters.append(start_cluster(environment, report, CLUSTER_SOURCE_SHARDS, "source"))
            seed_into = clusters[0].client()
        say(f"seeding {keys} Redis keys, the token store and configuration")
        seeded = seed_state(environment, keys, redis_client=seed_into)
        say("running every backup schedule as EventBridge would")
        _run_backups(environment, kinds, report)
        _SCENARIO_RUNNERS[scenario](
            ScenarioRun(environment, seeded, report, say, serverless, clusters, standby)
        )
        if keep is not None:
            keep(environment)
    except Exception as exc:  # the report says what failed; the processes are stopped below
        report.failure = f"{type(exc).__name__}: {exc}"
    finally:
        if serverless is not None:
            serverless.close()
        for cluster in clusters:
            cluster.stop()
        if standby is not None:
            standby.stop()
        environment.close()
    return report


def _install_serverless_stand_in(
    environment: LocalEnvironment, report: DrillReport
) -> ServerlessCacheStandIn:
    """ElastiCache Serverless for the handlers: the production redis-server is the cache."""
    from servalsheets_backup.handler_support import set_services_factory
    from servalsheets_backup.services import Services
    from servalsheets_backup.settings import Settings

    stand_in = ServerlessCacheStandIn()
    stand_in.register(SERVERLESS_CACHE, environment.production)
    set_services_factory(
        lambda: Services(Settings.from_env(), environment.metrics, serverless_caches=stand_in)
    )
    environment.cap_wait_states(STAND_IN_WAIT_SECONDS)
    report.environment["not_emulated"] = sorted(
        [
            *report.environment["not_emulated"],
            "ElastiCache Serverless (stand-in: real redis-servers, real RDB files)",
        ]
    )
    report.environment["wait_states_capped_to_seconds"] = STAND_IN_WAIT_SECONDS
    return stand_in


def _describe_environment(environment: LocalEnvironment, report: DrillReport) -> None:
    report.environment = {
        "aws_endpoint": environment.moto.endpoint,
        "redis_production_port": environment.production.port,
        "redis_target_port": environment.target.port,
        "redis_pids": [environment.production.pid, environment.target.pid],
        "moto_port": environment.moto.port,
        "application_stand_in": environment.app.url if environment.app else None,
        "application_stand_in_port": environment.app.port if environment.app else None,
        "stack_resources": len(environment.deployment.physical),
        "not_emulated": sorted({*environment.deployment.skipped.values(), MOTO_KMS_PATCH}),
    }


def _run_backups(environment: LocalEnvironment, kinds: tuple[str, ...], report: DrillReport) -> None:
    for kind in kinds:
        _record_backup(environment, report, BACKUP_SCHEDULES[kind])
    _record_backup(environment, report, "BackupStateMachineFullSchedule")
    freshness = environment.fire_schedule("CheckFreshnessFunctionFreshnessSchedule")
    report.check("freshness check ran (BackupAgeSeconds emitted)", freshness["status"] == "SUCCEEDED")


def _record_backup(environment: LocalEnvironment, report: DrillReport, schedule: str) -> None:
    started = time.monotonic()
    description = environment.fire_schedule(schedule)
    seconds = round(time.monotonic() - started, 3)
    if description["status"] != "SUCCEEDED":
        raise RuntimeError(
            f"{schedule} failed: {description.get('error')} {description.get('cause', '')[:300]}"
        )
    result = json.loads(description["output"])
    entered = [
        event["stateEnteredEventDetails"]["name"]
        for event in environment.history(description["executionArn"])
        if "stateEnteredEventDetails" in event
    ]
    report.backups.append(
        {
            "kind": result["kind"],
            "backup_id": result["backup_id"],
            "size_bytes": result["size_bytes"],
            "duration_seconds": seconds,
            "items": result["items"],
            "redis_shards_dumped": entered.count("Shard dumped"),
        }
    )
    report.check(
        f"{result['kind']} backup verifies", _verify(environment, result["backup_id"], result["kind"])
    )


def _verify(environment: LocalEnvironment, backup_id: str, kind: str) -> bool:
    store = environment.services().store
    return store.verify_set(store.find(backup_id, kind)).ok


def _scenario_full_restore(run: ScenarioRun) -> None:
    environment, report, say = run.environment, run.report, run.say
    before = capture(environment)
    say("simulating the disaster: Redis wiped, token file deleted, a secret overwritten")
    disaster(environment)
    say("restoring through the restore state machine (console-style input)")
    description = restore(environment, console_input(), report)
    expect_success(description, report)
    say("verifying the restored deployment independently")
    compare_redis(environment, before["redis"], report, expected_subset=None)
    report.check(
        "token store restored byte for byte", environment.token_path.read_bytes() == before["tokens"]
    )
    report.check("token store mode 0600", (environment.token_path.stat().st_mode & 0o777) == 0o600)
    current = environment.client("secretsmanager").get_secret_value(SecretId=ENV_SECRET)["SecretString"]
    report.check("configuration secret restored", current == before["env_secret"])
    check_secret_hygiene(environment, run.seeded, report)


def _scenario_rdb_stream(run: ScenarioRun) -> None:
    redis_sets = [b for b in run.report.backups if b["kind"] in ("redis", "full")]
    store = run.environment.services().store
    modes = [
        store.load_manifest(store.find(backup["backup_id"], backup["kind"])).components["redis"]["mode"]
        for backup in redis_sets
    ]
    run.report.check(
        "redis and full backups hold the server's RDB stream", modes == ["rdb-stream"] * 2, str(modes)
    )
    _scenario_full_restore(run)


def _scenario_elasticache_serverless(run: ScenarioRun) -> None:
    environment, report, say, stand_in = run.environment, run.report, run.say, run.serverless
    if stand_in is None:
        raise RuntimeError("the elasticache-serverless scenario needs the stand-in run_drill installs")
    before = capture(environment)
    snapshots = sorted(stand_in.snapshots)
    report.check(
        "scheduled redis and full backups took serverless snapshots",
        len(snapshots) == 2,
        ", ".join(snapshots),
    )
    say("simulating the disaster: the cache's data lost, token file deleted, a secret overwritten")
    disaster(environment)
    say("restoring into a NEW serverless cache seeded from the RDB export, REDIS_URL switched to it")
    # bandit B105: a restore option's name, not a credential.
    target = {"new_serverless_cache_name": RESTORED_CACHE, "update_redis_url_secret": True}  # nosec B105
    description = restore(environment, console_input(target=target), report)
    expect_success(description, report)
    say("verifying the new cache, the switched REDIS_URL, the token store and configuration")
    restored = stand_in.server(RESTORED_CACHE)
    report.environment["restored_cache_pid"] = restored.pid
    report.environment["restored_cache_port"] = restored.port
    compare_redis(environment, before["redis"], report, expected_subset=None, url=restored.url)
    url = environment.client("secretsmanager").get_secret_value(SecretId=REDIS_SECRET)["SecretString"]
    report.check(
        "REDIS_URL points at the new cache over TLS",
        f"rediss://127.0.0.1:{restored.port}/" in url,
    )
    report.check(
        "the running cache was never overwritten",
        redis_snapshot(environment.production.url) == {},
        "still as the disaster left it",
    )
    report.check(
        "token store restored byte for byte", environment.token_path.read_bytes() == before["tokens"]
    )
    current = environment.client("secretsmanager").get_secret_value(SecretId=ENV_SECRET)["SecretString"]
    report.check("configuration secret restored", current == before["env_secret"])
    check_secret_hygiene(environment, run.seeded, report)


def _scenario_oauth_only(run: ScenarioRun) -> None:
    environment, report, say = run.environment, run.report, run.say
    before = capture(environment)
    say("wiping Redis, then restoring only the OAuth and webhook keys")
    client = redis.Redis.from_url(environment.production.url)
    client.flushall()
    client.close()
    request = console_input(kinds=["redis"], mode="merge", key_patterns=list(OAUTH_KEY_PATTERNS))
    expect_success(restore(environment, request, report), report)
    compare_redis(environment, before["redis"], report, expected_subset=list(OAUTH_KEY_PATTERNS))


def _scenario_wrong_token_key(run: ScenarioRun) -> None:
    environment, report, say = run.environment, run.report, run.say
    say("rotating the live token key to a wrong one, then asking for a token store restore")
    environment.token_path.write_bytes(b"{}")  # a damaged file the operator wants replaced
    untouched = environment.token_path.read_bytes()
    environment.client("secretsmanager").put_secret_value(
        SecretId=TOKEN_KEY_SECRET, SecretString=json.dumps({"ENCRYPTION_KEY": "ab" * 32})
    )
    description = restore(environment, console_input(kinds=["tokens"]), report)
    expect_refusal(description, "TokenKeyMismatchError", report)
    report.check("target token file untouched", environment.token_path.read_bytes() == untouched)


def _scenario_corrupted_backup(run: ScenarioRun) -> None:
    environment, report, say = run.environment, run.report, run.say
    before = capture_keyspace(environment.production.url)
    say("flipping one byte of the newest full backup's Redis dump, then asking for a restore")
    store = environment.services().store
    ref = store.resolve("latest", "full")
    key = ref.prefix + store.load_manifest(ref).objects_of("redis")[0].name
    body = bytearray(store.s3.get_object(Bucket=store.bucket, Key=key)["Body"].read())
    body[len(body) // 2] ^= 0x01
    store.s3.put_object(Bucket=store.bucket, Key=key, Body=bytes(body))
    description = restore(environment, console_input(), report)
    expect_refusal(description, "IntegrityError", report)
    report.check("target Redis untouched", *unchanged(environment, before))


def _scenario_rollback(run: ScenarioRun) -> None:
    environment, report, say = run.environment, run.report, run.say
    before = capture_keyspace(environment.production.url)
    tokens = environment.token_path.read_bytes()
    say("restoring with a failure injected after verification: the run must roll back")
    description = restore(environment, console_input(fail_after="verify"), report)
    expect_refusal(description, "InjectedFault", report)
    report.check("rollback ran", any(step["state"] == "Roll back" for step in report.steps))
    report.check("Redis exactly as before (every key compared)", *unchanged(environment, before))
    report.check("token store exactly as before", environment.token_path.read_bytes() == tokens)


_SCENARIO_RUNNERS: dict[str, Callable[[ScenarioRun], None]] = {
    "full-restore": _scenario_full_restore,
    "oauth-only": _scenario_oauth_only,
    "wrong-token-key": _scenario_wrong_token_key,
    "corrupted-backup": _scenario_corrupted_backup,
    "rollback": _scenario_rollback,
    "elasticache-serverless": _scenario_elasticache_serverless,
    "rdb-stream": _scenario_rdb_stream,
    "cluster": scenario_cluster,
    "region-loss": scenario_region_loss,
}
