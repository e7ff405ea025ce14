"""Helpers for the workflow tests: state reset, runs, target snapshots and fault injection.

Everything here drives the real ASL through moto's Step Functions interpreter, with the real
handlers run in-process by the harness's LambdaRunner and real redis-servers as Redis.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from servalsheets_backup.errors import TransientError
from servalsheets_backup.handler_support import set_services_factory
from servalsheets_backup.services import Services
from servalsheets_backup.settings import Settings
from servalsheets_backup.store.sets import SetRef
from servalsheets_backup_local.testing.environment import (
    ENV_SECRET,
    PARAMETER_PATH,
    STAND_IN_NETWORK,
    TARGET_REDIS_SECRET,
    TOKEN_KEY_SECRET,
    LocalEnvironment,
)
from servalsheets_backup_local.testing.executions import Run, finish
from servalsheets_backup_local.testing.redis_server import RedisServer
from servalsheets_backup_local.testing.servalsheets_state import SeededState, redis_snapshot, seed_state
from servalsheets_backup_local.testing.serverless_standin import ServerlessCacheStandIn

REPO_ROOT = Path(__file__).resolve().parents[2]
ASL_FILES = {
    "backup": REPO_ROOT / "statemachines" / "backup.asl.json",
    "restore": REPO_ROOT / "statemachines" / "restore.asl.json",
}
SCHEDULES = {
    "config": "BackupStateMachineConfigSchedule",
    "tokens": "BackupStateMachineTokensSchedule",
    "redis": "BackupStateMachineRedisSchedule",
    "full": "BackupStateMachineFullSchedule",
}
DEFAULT_KEYS = 400
TTL_SLACK_MS = 1_000
Snapshot = dict[bytes, tuple[bytes | None, int]]


# -- executions ------------------------------------------------------------------------------
def run_restore(env: LocalEnvironment, **request: Any) -> Run:
    """Start the restore state machine with a console-style request and wait for it."""
    return finish(env, env.start_execution("RestoreStateMachine", request))


def restore_redis_to_scratch(env: LocalEnvironment, backup_id: str) -> Run:
    """Replace the restore-test Redis (TARGET_REDIS_SECRET) with one set's Redis keys."""
    target = {"redis_url_secret_id": TARGET_REDIS_SECRET}
    return run_restore(env, backup=backup_id, kinds=["redis"], mode="replace", target=target, poll_seconds=0)


def run_backup(env: LocalEnvironment, request: dict[str, Any]) -> Run:
    """Start the backup state machine directly (not through a schedule) and wait for it."""
    return finish(env, env.start_execution("BackupStateMachine", request))


def fire(env: LocalEnvironment, kind: str) -> Run:
    """Fire the kind's EventBridge schedule, as the scheduler would, and wait for the execution."""
    description = env.fire_schedule(SCHEDULES[kind])
    arn = description["executionArn"]
    return Run(arn, description, env.history(arn))


def backed_up(env: LocalEnvironment, kind: str) -> dict[str, Any]:
    """Fire a backup schedule; fail the test unless it succeeded; return the backup result."""
    run = fire(env, kind)
    assert run.status == "SUCCEEDED", (kind, run.error, run.cause[:500])
    return run.output


# -- state of the deployment -----------------------------------------------------------------
@dataclass
class TargetState:
    """Everything a restore can change on the default (production) target."""

    redis: Snapshot
    tokens: bytes | None
    tokens_mode: int | None
    env_secret: str | None
    parameters: dict[str, tuple[str, str]]
    credentials: bytes | None
    credentials_mode: int | None
    taken_at: float = field(default_factory=time.monotonic)


def secret_string(env: LocalEnvironment, secret_id: str) -> str | None:
    """A secret's current value, or None when it does not exist."""
    try:
        return str(env.client("secretsmanager").get_secret_value(SecretId=secret_id)["SecretString"])
    except Exception as exc:  # ResourceNotFoundException (also for secrets pending deletion)
        if "ResourceNotFound" in type(exc).__name__ or "ResourceNotFound" in str(exc):
            return None
        raise


def parameters(env: LocalEnvironment) -> dict[str, tuple[str, str]]:
    """SSM parameters under the configured path: name -> (value, type)."""
    ssm = env.client("ssm")
    found: dict[str, tuple[str, str]] = {}
    for page in ssm.get_paginator("get_parameters_by_path").paginate(
        Path=PARAMETER_PATH, Recursive=True, WithDecryption=True
    ):
        for item in page["Parameters"]:
            found[item["Name"]] = (item["Value"], item["Type"])
    return found


def _file(path: Path) -> tuple[bytes | None, int | None]:
    if not path.exists():
        return None, None
    return path.read_bytes(), path.stat().st_mode & 0o777


def capture(env: LocalEnvironment) -> TargetState:
    """Snapshot Redis (DUMP + PTTL of every key), the token file, the config secret, SSM and files."""
    tokens, tokens_mode = _file(env.token_path)
    credentials, credentials_mode = _file(env.credentials_path)
    return TargetState(
        redis=redis_snapshot(env.production.url),
        tokens=tokens,
        tokens_mode=tokens_mode,
        env_secret=secret_string(env, ENV_SECRET),
        parameters=parameters(env),
        credentials=credentials,
        credentials_mode=credentials_mode,
    )


def same_contents(client: redis.Redis, key: bytes, payload: bytes | None) -> bool:
    """DUMP equality, or equal contents read back through a scratch RESTORE of ``payload``.

    Hash-table encoded hashes and sets may list their elements in another order after
    RESTORE (each server seeds its hash tables randomly), so those are compared by content.
    """
    current = client.dump(key)
    if current == payload or payload is None or current is None:
        return current == payload
    scratch = b"workflow-test:compare:" + key
    client.restore(scratch, 60_000, payload, replace=True)
    try:
        kind = client.type(key)
        readers: dict[bytes, Callable[[bytes], Any]] = {
            b"hash": client.hgetall,
            b"set": client.smembers,
            b"zset": lambda k: client.zrange(k, 0, -1, withscores=True),
            b"list": lambda k: client.lrange(k, 0, -1),
            b"string": client.get,
            b"stream": lambda k: client.xrange(k),
        }
        read = readers.get(kind if isinstance(kind, bytes) else str(kind).encode())
        return read is not None and client.type(scratch) == kind and read(key) == read(scratch)
    finally:
        client.delete(scratch)


def redis_differences(
    url: str,
    expected: Snapshot,
    *,
    since: float,
    exact: bool = True,
) -> list[str]:
    """Every way the server at ``url`` differs from ``expected`` (empty when it matches).

    ``since`` is the time.monotonic() when ``expected`` was taken: a key's TTL may have run
    down by at most the time since then. Keys that could have expired meanwhile may be
    missing; every other key must be there with the same value and a TTL in that window.
    With ``exact`` no other key may exist.
    """
    # A key that expired between SCAN and DUMP shows up without a payload: it is not there.
    actual = {key: value for key, value in redis_snapshot(url).items() if value[0] is not None}
    elapsed_ms = int((time.monotonic() - since) * 1000) + TTL_SLACK_MS
    problems: list[str] = []
    client = redis.Redis.from_url(url)
    try:
        for key, (payload, ttl) in sorted(expected.items()):
            may_expire = ttl != -1 and ttl <= elapsed_ms
            if payload is None or key not in actual:
                if payload is not None and not may_expire:
                    problems.append(f"missing {key!r}")
                continue
            after = actual[key][1]
            if ttl == -1 and after != -1:
                problems.append(f"{key!r} gained a TTL ({after} ms)")
            elif ttl != -1 and not (ttl - elapsed_ms <= after <= ttl + TTL_SLACK_MS):
                problems.append(f"{key!r} TTL {after} ms, expected {ttl - elapsed_ms}..{ttl} ms")
            if actual[key][0] != payload and not same_contents(client, key, payload):
                if not (may_expire and not client.exists(key)):  # it expired while being compared
                    problems.append(f"{key!r} has another value")
    finally:
        client.close()
    if exact:
        problems += [f"unexpected {key!r}" for key in sorted(set(actual) - set(expected))]
    return problems


def state_differences(env: LocalEnvironment, before: TargetState) -> list[str]:
    """Every difference between the deployment now and ``before`` (Redis, tokens, config)."""
    now = capture(env)
    problems = redis_differences(env.production.url, before.redis, since=before.taken_at)
    for name in ("tokens", "tokens_mode", "env_secret", "parameters", "credentials", "credentials_mode"):
        if getattr(now, name) != getattr(before, name):
            problems.append(f"{name} changed")
    return problems


def redis_client(server: RedisServer) -> redis.Redis:
    """A client for one of the environment's redis-servers."""
    return redis.Redis.from_url(server.url)


def drop_short_lived(env: LocalEnvironment, below_ms: int = 30_000) -> None:
    """Delete keys about to expire on their own, so counts in a test are exact."""
    client = redis_client(env.production)
    try:
        for key, (_, ttl) in redis_snapshot(env.production.url).items():
            if 0 <= ttl < below_ms:
                client.delete(key)
    finally:
        client.close()


# -- resetting between tests -----------------------------------------------------------------
def default_services(env: LocalEnvironment) -> Callable[[], Services]:
    """The services factory the environment installs (settings read per invocation)."""
    return lambda: Services(Settings.from_env(), env.metrics)


def install_services(env: LocalEnvironment, customise: Callable[[Services], Services]) -> None:
    """Make every handler build its Services as the environment does, then ``customise`` them."""
    base = default_services(env)
    set_services_factory(lambda: customise(base()))


def shifted_clock(seconds: float) -> Callable[[Services], Services]:
    """A customisation that runs the restore's clock ``seconds`` ahead of the wall clock."""
    return lambda services: dataclasses.replace(services, clock=lambda: time.time() + seconds)


def reset(env: LocalEnvironment, keys: int = DEFAULT_KEYS) -> SeededState:
    """Put the deployment back to a freshly seeded state: no locks, no hooks, fresh secrets."""
    env.runner.before_invoke = None
    env.runner.budget_ms = 900_000
    set_services_factory(default_services(env))
    env.metrics.points.clear()
    for server in (env.production, env.target):
        client = redis_client(server)
        client.flushall()
        client.close()
    for path in (env.token_path, env.workdir / "restore-test" / "tokens.encrypted"):
        path.unlink(missing_ok=True)
        path.with_name(path.name + ".tmp").unlink(missing_ok=True)
    manager = env.client("secretsmanager")
    if secret_string(env, ENV_SECRET) is not None:
        manager.delete_secret(SecretId=ENV_SECRET, ForceDeleteWithoutRecovery=True)
    ssm = env.client("ssm")
    for name in parameters(env):
        ssm.delete_parameter(Name=name)
    release_all_locks(env)
    return seed_state(env, keys)


def state_table(env: LocalEnvironment) -> str:
    """The deployed DynamoDB state table's name."""
    return env.function_env("PrepareRestoreFunction")["STATE_TABLE"]


def held_locks(env: LocalEnvironment) -> dict[str, str]:
    """Lock name -> owner for every lock in the state table."""
    dynamodb = env.client("dynamodb")
    items = dynamodb.scan(TableName=state_table(env)).get("Items", [])
    return {
        item["pk"]["S"].removeprefix("lock#"): item["owner"]["S"]
        for item in items
        if item["pk"]["S"].startswith("lock#")
    }


def release_all_locks(env: LocalEnvironment) -> None:
    """Delete every lock (a test that failed half-way must not block the next one)."""
    dynamodb = env.client("dynamodb")
    for name in held_locks(env):
        dynamodb.delete_item(TableName=state_table(env), Key={"pk": {"S": f"lock#{name}"}})


def sets(env: LocalEnvironment, kind: str) -> list[SetRef]:
    """Complete backup sets of ``kind`` (those with a manifest), newest first."""
    return env.services().store.list_sets(kind)


def set_objects(env: LocalEnvironment, kind: str, backup_id: str) -> list[str]:
    """Every object key stored under one set's prefix (complete or not)."""
    from servalsheets_backup.store.sets import set_prefix

    store = env.services().store
    listing = store.s3.list_objects_v2(Bucket=store.bucket, Prefix=set_prefix(kind, backup_id))
    return [item["Key"] for item in listing.get("Contents", [])]


def flip_byte(env: LocalEnvironment, key: str, offset: int | None = None) -> None:
    """Corrupt one stored object in the bucket by flipping one bit of one byte."""
    store = env.services().store
    body = bytearray(store.s3.get_object(Bucket=store.bucket, Key=key)["Body"].read())
    body[len(body) // 2 if offset is None else offset] ^= 0x01
    store.s3.put_object(Bucket=store.bucket, Key=key, Body=bytes(body))


def set_token_key(env: LocalEnvironment, key_hex: str) -> None:
    """Rotate the live token store key (the secret the handlers read)."""
    env.client("secretsmanager").put_secret_value(
        SecretId=TOKEN_KEY_SECRET, SecretString=json.dumps({"ENCRYPTION_KEY": key_hex})
    )


def leaked(secret_values: Iterable[str], text: str) -> list[str]:
    """The seeded secret values that occur in ``text`` (shortened, for assertion messages)."""
    return [value[:6] + "..." for value in secret_values if value and value in text]


# -- fault injection -------------------------------------------------------------------------
def invocation_key(folder: str, payload: dict[str, Any]) -> str:
    """Which state an invocation serves: the function folder, told apart where one serves several."""
    if folder == "finish_restore":
        return f"{folder}:{payload.get('outcome')}"
    if folder in ("snapshot", "dump_redis", "restore_redis"):
        return f"{folder}:{payload.get('action')}"
    if folder == "set_maintenance":
        after_rollback = "rollback" in (payload.get("job") or {})
        return f"{folder}:{payload.get('phase')}" + (":after-rollback" if after_rollback else "")
    return folder


class TransientOnce:
    """A ``before_invoke`` hook: the first invocation for each state fails with TransientError."""

    def __init__(self) -> None:
        self.injected: list[str] = []

    def __call__(self, folder: str, payload: dict[str, Any]) -> None:
        key = invocation_key(folder, payload)
        if key not in self.injected:
            self.injected.append(key)
            raise TransientError(f"injected transient failure ({key})")


class FailAlways:
    """A ``before_invoke`` hook: every invocation of ``folders`` fails with a non-retryable error.

    A folder may name one state of a function serving several (``invocation_key``: ``dump_redis:shard``).
    """

    def __init__(self, *folders: str, message: str = "injected failure") -> None:
        self.folders = set(folders)
        self.message = message
        self.calls = 0

    def __call__(self, folder: str, payload: dict[str, Any]) -> None:
        if folder in self.folders or invocation_key(folder, payload) in self.folders:
            self.calls += 1
            raise RuntimeError(f"{self.message} ({folder})")


def chain(*hooks: Callable[[str, dict[str, Any]], None]) -> Callable[[str, dict[str, Any]], None]:
    """Run several ``before_invoke`` hooks in order."""

    def hook(folder: str, payload: dict[str, Any]) -> None:
        for each in hooks:
            each(folder, payload)

    return hook


class LambdaGate:
    """Holds the first invocation of one function at the Lambda service until released.

    The harness runs handlers one at a time (they share os.environ), so a handler that blocks
    blocks every other execution too. The gate waits *before* the harness takes over, as a slow
    or throttled Lambda would, so other executions keep running meanwhile.
    """

    def __init__(self, env: LocalEnvironment, folder: str) -> None:
        self._env = env
        self.folder = folder
        self.arrived = threading.Event()
        self.released = threading.Event()
        self._lock = threading.Lock()
        self._used = False

    def install(self, monkeypatch: Any) -> LambdaGate:
        """Patch moto's Lambda invocation (undone by ``monkeypatch``)."""
        from moto.awslambda.models import LambdaFunction

        inner = LambdaFunction._invoke_lambda
        gate = self

        def gated(function: Any, event: str | None = None) -> tuple[str, bool, str]:
            if gate._env.runner.folders.get(function.function_name) == gate.folder and gate._take():
                gate.arrived.set()
                gate.released.wait(timeout=120)
            return inner(function, event)

        monkeypatch.setattr(LambdaFunction, "_invoke_lambda", gated)
        return self

    def _take(self) -> bool:
        with self._lock:
            if self._used:
                return False
            self._used = True
            return True

    def wait_until_held(self, timeout: float = 60) -> None:
        """Block until an invocation is being held."""
        assert self.arrived.wait(timeout), f"no invocation of {self.folder} arrived"

    def release(self) -> None:
        """Let the held invocation run."""
        self.released.set()


# -- ASL coverage ----------------------------------------------------------------------------
def load_asl(name: str) -> dict[str, Any]:
    """One of the project's state machine definitions."""
    return dict(json.loads(ASL_FILES[name].read_text()))


@dataclass
class Exercised:
    """What a set of executions exercised: states entered, retries that recovered, catches taken."""

    entered: set[str] = field(default_factory=set)
    retried: dict[str, set[str]] = field(default_factory=dict)
    caught: dict[str, set[str]] = field(default_factory=dict)

    def add(self, events: list[dict[str, Any]]) -> None:
        """Walk one execution's history, one state at a time (a Map's iterations run one by one
        here: the deployments under test have one Redis shard)."""
        state: str | None = None
        failures: list[str] = []
        attempts = 0
        maps: list[str] = []
        for event in events:
            entered = event.get("stateEnteredEventDetails")
            if entered:
                if state is not None and failures and attempts == len(failures):
                    # The visit ended on a failure: the next state is where its Catch led.
                    self.caught.setdefault(state, set()).add(entered["name"])
                state, failures, attempts = entered["name"], [], 0
                self.entered.add(state)
                if event["type"] == "MapStateEntered":
                    maps.append(state)
                continue
            if event["type"] == "MapStateFailed" and maps:
                # An iteration failed and with it the Map: the Map's own Catch decides what is next.
                state, failures, attempts = maps.pop(), ["States.ALL"], 1
                continue
            if event["type"] == "MapStateSucceeded" and maps:
                maps.pop()
            if event["type"] in ("LambdaFunctionScheduled", "TaskScheduled"):
                attempts += 1
            failed = event.get("lambdaFunctionFailedEventDetails") or event.get("taskFailedEventDetails")
            if failed:
                failures.append(failed["error"])
            succeeded = event.get("lambdaFunctionSucceededEventDetails") or event.get(
                "taskSucceededEventDetails"
            )
            if succeeded and failures and state is not None:
                self.retried.setdefault(state, set()).update(failures)


def asl_paths(definition: dict[str, Any]) -> tuple[set[str], dict[str, list[str]], dict[str, str]]:
    """(every state, Task -> its Retry error names, Task -> its Catch target), Map iterations' states too."""
    states = dict(definition["States"])
    for state in definition["States"].values():
        if state["Type"] == "Map":
            inner = asl_paths(state["ItemProcessor"])
            states.update({name: state["ItemProcessor"]["States"][name] for name in inner[0]})
    retries = {
        name: [error for retrier in state["Retry"] for error in retrier["ErrorEquals"]]
        for name, state in states.items()
        if state.get("Retry")
    }
    catches = {name: catcher["Next"] for name, state in states.items() for catcher in state.get("Catch", [])}
    return set(states), retries, catches


def coverage_gaps(definition: dict[str, Any], exercised: Exercised) -> dict[str, list[str]]:
    """States never entered, Retry paths never recovered from, Catch paths never taken."""
    states, retries, catches = asl_paths(definition)

    def recovered(name: str, errors: list[str]) -> bool:
        seen = exercised.retried.get(name, set())
        return any(error in errors or "States.TaskFailed" in errors for error in seen)

    return {
        "never entered": sorted(states - exercised.entered),
        "Retry never exercised": sorted(
            name for name, errors in retries.items() if not recovered(name, errors)
        ),
        "Catch never taken": sorted(
            name for name, target in catches.items() if target not in exercised.caught.get(name, set())
        ),
    }


def histories(env: LocalEnvironment, logical_id: str) -> list[list[dict[str, Any]]]:
    """The histories of every execution of one state machine in this environment."""
    sfn = env.client("stepfunctions")
    arns: list[str] = []
    for page in sfn.get_paginator("list_executions").paginate(
        stateMachineArn=env.state_machine_arn(logical_id)
    ):
        arns += [item["executionArn"] for item in page["executions"]]
    return [env.history(arn) for arn in arns]


# -- ElastiCache mode ------------------------------------------------------------------------
REPLICATION_GROUP = "servalsheets-prod"
ELASTICACHE_PARAMETERS = {
    "RedisMode": "elasticache",
    "ElastiCacheReplicationGroupId": REPLICATION_GROUP,
    **STAND_IN_NETWORK,
}


def create_replication_group(env: LocalEnvironment) -> None:
    """The replication group the stack snapshots (moto keeps only the bookkeeping)."""
    env.client("elasticache").create_replication_group(
        ReplicationGroupId=REPLICATION_GROUP,
        ReplicationGroupDescription="ServalSheets production Redis",
        Engine="redis",
        CacheNodeType="cache.t4g.small",
        NumNodeGroups=1,
    )


class RdbExporter:
    """Stands in for CopySnapshot with TargetBucket, which moto lacks.

    It writes a real RDB file, produced by ``SAVE`` on the test redis-server, to
    ``<prefix><snapshot name>-0001.rdb`` in the bucket, as the ElastiCache export does. With
    ``delay`` the file lands only after that many ingest attempts found nothing yet.
    """

    def __init__(self, server: RedisServer, *, corrupt: bool = False, delay: int = 0) -> None:
        self.server = server
        self.corrupt = corrupt
        self.delay = delay
        self.rdb: bytes | None = None
        self.key: str | None = None
        self.exports: list[str] = []
        self._pending: tuple[str, str, bytes] | None = None

    def export(self, snapshot_name: str, bucket: str, prefix: str) -> None:
        """SnapshotExporter protocol: begin exporting ``snapshot_name`` to ``bucket``/``prefix``."""
        client = redis.Redis.from_url(self.server.url)
        try:
            client.save()
        finally:
            client.close()
        data = (self.server.workdir / "dump.rdb").read_bytes()
        self.rdb = data
        if self.corrupt:
            damaged = bytearray(data)
            damaged[len(damaged) // 2] ^= 0x01
            data = bytes(damaged)
        self.key = f"{prefix}{snapshot_name}-0001.rdb"
        self.exports.append(snapshot_name)
        self._pending = (bucket, self.key, data)
        if self.delay <= 0:
            self._deliver()

    def _deliver(self) -> None:
        from servalsheets_backup.adapters import aws

        if self._pending is not None:
            bucket, key, data = self._pending
            aws.client("s3").put_object(Bucket=bucket, Key=key, Body=data)
            self._pending = None

    def before_invoke(self, folder: str, payload: dict[str, Any]) -> None:
        """A ``before_invoke`` hook: the export arrives once ``delay`` ingest attempts have passed."""
        if folder == "ingest_snapshot" and self._pending is not None:
            if self.delay <= 0:
                self._deliver()
            else:
                self.delay -= 1


def elasticache_services(
    exporter: RdbExporter, *, fill_in_group: bool = True
) -> Callable[[Services], Services]:
    """A customisation that installs ``exporter`` (and, if unset, the replication group id).

    ``fill_in_group`` only acts when ELASTICACHE_REPLICATION_GROUP_ID is missing from a function's
    environment; template.yaml now passes it to BeginBackupFunction too, which
    test_begin_backup_plans_the_configured_replication_group proves with fill_in_group=False.
    """

    def customise(services: Services) -> Services:
        settings = services.settings
        if fill_in_group and services.settings.redis_mode == "elasticache":
            settings = dataclasses.replace(
                settings, replication_group_id=settings.replication_group_id or REPLICATION_GROUP
            )
        return dataclasses.replace(services, settings=settings, snapshot_exporter=exporter)

    return customise


class SnapshotLifecycle:
    """Makes moto's instant snapshots behave like ElastiCache's (and fail on demand).

    moto creates snapshots ``available`` at once; here a new snapshot starts as ``status`` and
    becomes ``available`` after ``polls_until_available`` DescribeSnapshots calls (``failed``
    stays failed). ``create_errors`` / ``describe_errors`` are raised by the next calls.
    """

    def __init__(self, status: str = "creating", polls_until_available: int = 1) -> None:
        self.status = status
        self.polls_until_available = polls_until_available
        self.create_errors: list[Exception] = []
        self.describe_errors: list[Exception] = []
        self.polls: dict[str, int] = {}

    def install(self, monkeypatch: Any) -> SnapshotLifecycle:
        """Patch moto's ElastiCache backend (undone by ``monkeypatch``)."""
        from moto.elasticache.models import ElastiCacheBackend

        create, describe = ElastiCacheBackend.create_snapshot, ElastiCacheBackend.describe_snapshots
        life = self

        def create_snapshot(backend: Any, *args: Any, **kwargs: Any) -> Any:
            if life.create_errors:
                raise life.create_errors.pop(0)
            snapshot = create(backend, *args, **kwargs)
            snapshot.snapshot_status = life.status
            return snapshot

        def describe_snapshots(backend: Any, *args: Any, **kwargs: Any) -> Any:
            name = kwargs.get("snapshot_name")
            if name and life.describe_errors:
                raise life.describe_errors.pop(0)
            found = describe(backend, *args, **kwargs)
            for snapshot in found if name else []:
                if snapshot.snapshot_status == "creating":
                    life.polls[name] = life.polls.get(name, 0) + 1
                    if life.polls[name] > life.polls_until_available:
                        snapshot.snapshot_status = "available"
            return found

        monkeypatch.setattr(ElastiCacheBackend, "create_snapshot", create_snapshot)
        monkeypatch.setattr(ElastiCacheBackend, "describe_snapshots", describe_snapshots)
        return self


def elasticache_fault(code: str, message: str = "injected") -> Exception:
    """An ElastiCache API error as moto's server returns it (a 400 with this error code)."""
    from moto.elasticache.exceptions import ElastiCacheException

    fault = type(code, (ElastiCacheException,), {"code": code})
    return fault(message)


# A redis backup request as the schedule sends it, with the polls not waiting.
REDIS_BACKUP_REQUEST = {"kind": "redis", "trigger": "schedule", "poll_seconds": 0}
# The backup state machine's ElastiCache polling loops, as execution paths list them.
SNAPSHOT_STATES = ["Wait for snapshot", "Check snapshot status", "Snapshot available?"]
INGEST_STATES = ["Wait for export", "Ingest exported RDB files", "Export ingested?"]


def snapshot_backup_path(snapshot_polls: int, ingest_polls: int) -> list[str]:
    """The states a redis backup in ElastiCache mode enters, polling this many times each."""
    return [
        "Begin backup",
        "Include configuration?",
        "Include token store?",
        "Include Redis?",
        "Create ElastiCache snapshot",
        *SNAPSHOT_STATES * snapshot_polls,
        "Export snapshot",
        *INGEST_STATES * ingest_polls,
        "Finalize backup",
        "Backup succeeded",
    ]


# -- ElastiCache Serverless -------------------------------------------------------------------
SERVERLESS_CACHE = "servalsheets-serverless"
SERVERLESS_PARAMETERS = {
    "RedisMode": "elasticache",
    "ElastiCacheServerlessCacheName": SERVERLESS_CACHE,
    **STAND_IN_NETWORK,
}


def serverless_services(
    caches: ServerlessCacheStandIn, clock: Callable[[], float] | None = None
) -> Callable[[Services], Services]:
    """A customisation that installs the stand-in (and optionally a clock)."""

    def customise(services: Services) -> Services:
        changes: dict[str, Any] = {"serverless_caches": caches}
        if clock is not None:
            changes["clock"] = clock
        return dataclasses.replace(services, **changes)

    return customise
