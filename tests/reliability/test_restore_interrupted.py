"""A restore interrupted after any one of its steps leaves the target exactly as it was before.

One deployment of template.yaml (moto executing the ASL, the handlers in this process, real
redis-servers). A full backup is taken of state A; the target is then changed to state B: keys
changed, deleted and added (hash-table-encoded hashes and sets among them), another token store,
another credentials.json with another mode, the config secret and the SSM parameters changed.
Each case puts the target back to B, runs the restore state machine with ``fail_after`` set to
one step, and compares the target with what it was: key by key, file by file (bytes and mode),
the config secret and every parameter. The module ends with the secret-hygiene search over
everything the deployment produced.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass

import pytest
import redis

from servalsheets_backup.cli.main import main
from servalsheets_backup.format.tokenstore import encrypt_store, parse_key, write_token_file_atomic
from servalsheets_backup.store.audit import read_audit
from servalsheets_backup_local.testing.environment import ENV_SECRET, PARAMETER_PATH, LocalEnvironment
from servalsheets_backup_local.testing.environment import start_environment as start
from servalsheets_backup_local.testing.servalsheets_state import SeededState, seed_state

from .envsupport import LogCollector, Target, capture, differences, execute, locks_held, put_back
from .helpers import find_leaks

pytestmark = pytest.mark.reliability
# Every value restore.maybe_fail is called with, in the order the state machine reaches them.
FAIL_POINTS = (
    "preflight",
    "maintenance-start",
    "safety-backup",
    "restore-config",
    "restore-tokens",
    "restore-redis",
    "maintenance-end",
    "verify",
)
KEYS = 150


@dataclass
class States:
    """The deployment, what was seeded, the backup of state A, and captures of A and B."""

    env: LocalEnvironment
    seeded: SeededState
    backup_id: str
    a: Target
    b: Target


@pytest.fixture(scope="module")
def env(module_logs: LogCollector, retrier_sleeps: list[float]) -> Iterator[LocalEnvironment]:
    """One deployment for the module (logs collected from the start)."""
    environment = start()
    try:
        yield environment
    finally:
        environment.close()


def _change_everything(env: LocalEnvironment, seeded: SeededState) -> None:
    """State B: every component of the target differs from the backup."""
    client = redis.Redis.from_url(env.production.url)
    keys = sorted(client.scan_iter(count=1000))
    strings = [k for k in keys if client.type(k) == b"string"]
    client.delete(*strings[:10])
    for key in strings[10:20]:
        client.set(key, b"changed after the backup", keepttl=True)
    client.set("reliability:new:string", "added after the backup", ex=3600)
    client.hset("reliability:new:hash", mapping={f"field-{i}": f"value-{i}" for i in range(600)})
    client.sadd("reliability:new:set", *[f"member-{i}" for i in range(300)])
    client.rpush("reliability:new:list", *[f"item-{i}" for i in range(50)])
    client.close()
    key = parse_key(seeded.secret_values[0])
    write_token_file_atomic(env.token_path, encrypt_store({"access_token": "ya29.state-b"}, key))
    env.credentials_path.write_text('{"installed": {"client_id": "state-b"}}')
    env.credentials_path.chmod(0o640)
    manager = env.client("secretsmanager")
    document = json.loads(manager.get_secret_value(SecretId=ENV_SECRET)["SecretString"])
    document["JWT_SECRET"] = "state-b-jwt-secret"
    document["ADDED_AFTER_BACKUP"] = "x"
    manager.put_secret_value(SecretId=ENV_SECRET, SecretString=json.dumps(document))
    ssm = env.client("ssm")
    ssm.put_parameter(Name=f"{PARAMETER_PATH}PORT", Value="8080", Type="String", Overwrite=True)
    ssm.put_parameter(Name=f"{PARAMETER_PATH}ADDED_AFTER_BACKUP", Value="1", Type="String")
    ssm.delete_parameter(Name=f"{PARAMETER_PATH}NODE_ENV")


@pytest.fixture(scope="module")
def states(env: LocalEnvironment) -> Iterator[States]:
    """Seed A, back it up (full, through the backup state machine), then change the target to B."""
    patch = pytest.MonkeyPatch()
    patch.setenv("AWS_ENDPOINT_URL", env.moto.endpoint)
    try:
        seeded = seed_state(env, KEYS)
        run = execute(env, "BackupStateMachine", {"kind": "full", "trigger": "manual"})
        assert run.status == "SUCCEEDED", run.cause
        a = capture(env)
        _change_everything(env, seeded)
        b = capture(env)
        assert len(differences(a, b)) > 20
        yield States(env, seeded, run.output["backup_id"], a, b)
    finally:
        patch.undo()


@pytest.fixture
def at_b(states: States, on_moto: LocalEnvironment) -> States:
    """The target put back to state B, no locks, metrics cleared."""
    put_back(states.env, states.b)
    assert locks_held(states.env) == []
    states.env.metrics.points.clear()
    return states


@pytest.mark.parametrize("step", FAIL_POINTS)
def test_restore_failing_after_any_step_leaves_the_target_exactly_as_before(at_b: States, step: str) -> None:
    env = at_b.env
    before = capture(env)
    run = execute(
        env,
        "RestoreStateMachine",
        {"backup": at_b.backup_id, "mode": "replace", "requested_by": "reliability", "fail_after": step},
    )

    assert run.status == "FAILED" and run.error == "InjectedFault"
    if step == "preflight":
        assert run.entered[-1] == "Restore refused after checks"
        assert "Take safety backup" not in run.entered
    else:
        assert run.entered[-1] == "Restore failed and was rolled back"
        assert "Roll back" in run.entered and "End maintenance window after rollback" in run.entered
    assert differences(before, capture(env)) == []
    assert locks_held(env) == []
    audit = [
        r for r in read_audit(env.client("s3"), env.output("BackupBucketName")) if r["operation"] == "restore"
    ]
    assert audit[-1]["result"] == ("refused" if step == "preflight" else "rolled_back")
    assert audit[-1]["error"].startswith(f"InjectedFault: fault injected after step '{step}'")
    assert env.metrics.values("RestoreFailed") == [1] and env.metrics.values("RestoreSucceeded") == []


def test_a_rollback_that_finds_the_token_store_absent_deletes_it_again(at_b: States) -> None:
    env = at_b.env
    env.token_path.unlink()
    before = capture(env)
    run = execute(
        env,
        "RestoreStateMachine",
        {"backup": at_b.backup_id, "kinds": ["tokens"], "source_kind": "full", "fail_after": "verify"},
    )
    assert run.status == "FAILED" and run.entered[-1] == "Restore failed and was rolled back"
    assert not env.token_path.exists()
    assert differences(before, capture(env)) == []


def test_uninterrupted_restore_brings_back_state_a(at_b: States) -> None:
    env = at_b.env
    run = execute(env, "RestoreStateMachine", {"backup": at_b.backup_id, "mode": "replace"})
    assert run.status == "SUCCEEDED", run.cause
    after = capture(env)
    assert differences(at_b.a, after) == []
    assert locks_held(env) == []


# -- secret hygiene --------------------------------------------------------------------------------
def _redis_secrets(url: str) -> list[str]:
    """Secret-looking values held in the seeded Redis: OAuth client secrets, tokens, webhook keys."""
    client = redis.Redis.from_url(url)
    found: set[str] = set()
    try:
        for key in client.scan_iter(count=1000):
            if client.type(key) != b"string":
                continue
            try:
                value = json.loads(client.get(key) or b"")
            except ValueError:
                continue
            if isinstance(value, dict):
                for name in ("client_secret", "secret", "access_token", "refresh_token"):
                    if isinstance(value.get(name), str) and len(value[name]) >= 16:
                        found.add(value[name])
    finally:
        client.close()
    return sorted(found)


def _cli(argv: list[str]) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue() + err.getvalue()


def _executions(env: LocalEnvironment) -> str:
    sfn = env.client("stepfunctions")
    texts = []
    for logical_id in ("BackupStateMachine", "RestoreStateMachine"):
        listing = sfn.list_executions(stateMachineArn=env.state_machine_arn(logical_id), maxResults=1000)
        for execution in listing["executions"]:
            texts.append(json.dumps(env.history(execution["executionArn"]), default=str))
            texts.append(
                json.dumps(sfn.describe_execution(executionArn=execution["executionArn"]), default=str)
            )
    return "\n".join(texts)


def _sns_messages() -> str:
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.sns.models import sns_backends

    backend = sns_backends[DEFAULT_ACCOUNT_ID]["us-east-1"]
    return json.dumps([topic.sent_notifications for topic in backend.topics.values()], default=str)


def test_no_secret_value_appears_in_any_output(
    at_b: States,
    module_logs: LogCollector,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = at_b.env
    # Given backups of every kind, a restore, a failing (rolled back) restore and a refused one
    for kind in ("config", "tokens", "redis", "full"):
        assert execute(env, "BackupStateMachine", {"kind": kind}).status == "SUCCEEDED"
    assert execute(env, "RestoreStateMachine", {"backup": "latest", "mode": "merge"}).status == "SUCCEEDED"
    failed = execute(env, "RestoreStateMachine", {"backup": "latest", "fail_after": "restore-redis"})
    refused = execute(env, "RestoreStateMachine", {"backup": "latest", "key_patterns": ["nothing:*"]})
    assert failed.status == refused.status == "FAILED"
    # and the operator CLI, human and --json, including failing commands
    functions = env.deployment.resources_of("AWS::Lambda::Function")
    operator_env = {k: v for f in functions for k, v in env.function_env(f).items()}
    for name, value in {**operator_env, "AWS_ENDPOINT_URL": env.moto.endpoint}.items():
        monkeypatch.setenv(name, value)
    newest = env.services().store.list_sets("full")[0].backup_id
    outputs = {}
    for argv in (
        ["list"],
        ["list", "--json"],
        ["show", newest],
        ["show", newest, "--json"],
        ["verify", newest],
        ["verify", newest, "--json"],
        ["restore", newest, "--dry-run"],
        ["restore", newest, "--dry-run", "--json"],
        ["restore", newest, "--kind", "redis", "--key-pattern", "nothing:*"],
        ["backup", "pre-deploy"],
        ["show", "20200101T000000Z-00000000"],
    ):
        outputs[" ".join(argv)] = _cli(argv)[1]
    monkeypatch.setenv("ENCRYPTION_KEY", "ff" * 32)  # a wrong live key: the refusal must not quote it
    outputs["backup tokens (wrong key)"] = _cli(["backup", "tokens"])[1]

    # When everything the deployment produced is searched for every secret value
    store = env.services().store
    s3, bucket = env.client("s3"), env.output("BackupBucketName")
    manifests = [
        s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
        for key in (ref.manifest_key for ref in store.list_sets())
    ]
    captured = capfd.readouterr()
    texts = {
        "logs": module_logs.text,
        "stdout/stderr": captured.out + captured.err,
        "metrics": json.dumps(env.metrics.points),
        "manifests": "\n".join(manifests),
        "audit records": json.dumps(read_audit(s3, bucket)),
        "execution histories": _executions(env),
        "notifications": _sns_messages(),
        **{f"cli {argv}": text for argv, text in outputs.items()},
    }
    secrets = at_b.seeded.secret_values + _redis_secrets(env.production.url) + ["ff" * 32]

    # Then none is found, in any encoding
    assert len(secrets) > 20 and len(module_logs.lines) > 20 and manifests
    assert find_leaks(secrets, texts) == []
    # and the searched texts are real: they name the backups and the failures
    assert newest in texts["logs"] and "InjectedFault" in texts["execution histories"]
    assert re.search(r"VERIFIED", texts[f"cli verify {newest}"])
    assert "fault injected after step 'restore-redis'" in texts["notifications"]
