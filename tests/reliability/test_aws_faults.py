"""AWS failing under a backup, verify or restore: S3 throttling and 5xx, KMS refusals, missing secrets.

Errors are injected at botocore's ``before-send`` hook of the very client the code uses, with the
service's own wire format, so botocore's retry logic (standard mode, five attempts) sees them as
it would on AWS. moto cannot refuse with a disabled KMS key by itself (it does not enforce key
state), so those answers are injected too. Retry sleeps are recorded instead of slept.
"""

from __future__ import annotations

import time
import types
from collections.abc import Iterator

import pytest
from botocore.exceptions import ClientError

from servalsheets_backup.cli.main import main
from servalsheets_backup.errors import ConfigurationError
from servalsheets_backup.workflows.backup import lock_name, run_backup
from servalsheets_backup.workflows.restore import run_restore
from servalsheets_backup_local.testing.redis_server import RedisServer

from .helpers import MiniStack, inject_error, redis_differences, redis_state, seed_random_values

pytestmark = pytest.mark.reliability


@pytest.fixture
def retry_sleeps(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    """botocore's back-off delays between attempts (recorded, not slept)."""
    import botocore.endpoint

    delays: list[float] = []
    monkeypatch.setattr(botocore.endpoint, "time", types.SimpleNamespace(sleep=delays.append))
    yield delays


def _failed(stack: MiniStack, kind: str) -> list[str]:
    return [r["error"] for r in stack.audit() if r["operation"] == "backup" and r["result"] == "failed"]


def _assert_no_set(stack: MiniStack, kind: str) -> None:
    assert stack.sets(kind) == []
    assert stack.keys(f"{kind}/") == []
    assert stack.uploads() == []
    assert stack.lock(lock_name(kind)) is None
    assert stack.metrics.values("BackupFailed", kind) == [1]


# -- S3 ----------------------------------------------------------------------------------------
def test_s3_throttling_on_put_is_retried_with_back_off(stack: MiniStack, retry_sleeps: list[float]) -> None:
    s3 = stack.client("s3")
    with inject_error(s3, "PutObject", 503, "SlowDown", "Please reduce your request rate.", times=2) as slow:
        result = run_backup(stack.services(), "config", owner="run")
    assert slow.injected == 2 and slow.calls > 2
    assert len(retry_sleeps) == 2 and all(0 <= delay <= 20 for delay in retry_sleeps)
    assert [ref.backup_id for ref in stack.sets("config")] == [result.backup_id]
    assert stack.services().store.verify_set(stack.sets("config")[0]).ok


def test_s3_5xx_on_upload_part_is_retried_and_the_object_is_whole(
    stack: MiniStack, retry_sleeps: list[float]
) -> None:
    seed_random_values(stack.redis.url, 10, 1 << 20)  # > 8 MiB: a multipart upload
    s3 = stack.client("s3")
    with inject_error(
        s3, "UploadPart", 500, "InternalError", "We encountered an internal error.", times=3
    ) as err:
        run_backup(stack.services(), "redis", owner="run")
    assert err.injected == 3 and len(retry_sleeps) == 3
    report = stack.services().store.verify_set(stack.sets("redis")[0])
    assert report.ok, report.checks


def test_persistent_s3_throttling_fails_clearly_after_the_retries(
    stack: MiniStack, retry_sleeps: list[float], capsys: pytest.CaptureFixture[str]
) -> None:
    seed_random_values(stack.redis.url, 10, 1 << 20)
    s3 = stack.client("s3")
    with inject_error(s3, "UploadPart", 503, "SlowDown", "Please reduce your request rate.") as slow:
        with pytest.raises(ClientError, match=r"reached max retries: 5"):
            run_backup(stack.services(), "redis", owner="run")
        # The adapters' Config(retries={"mode": "standard", "max_attempts": 5}): 5 retries after the
        # first call, each after a jittered exponential delay capped at 20 s.
        assert slow.calls == 6
        assert len(retry_sleeps) == 5 and all(0 <= delay <= 20 for delay in retry_sleeps)
        _assert_no_set(stack, "redis")
        assert _failed(stack, "redis") == ["ClientError: SlowDown from UploadPart"]
        # The operator's CLI names the cause too (exit 1, one line).
        assert main(["backup", "redis"]) == 1
    assert capsys.readouterr().err == "error: AWS request failed: SlowDown from UploadPart\n"


def test_s3_5xx_while_verifying_is_retried(stack: MiniStack, capsys: pytest.CaptureFixture[str]) -> None:
    run_backup(stack.services(), "tokens", owner="run")
    capsys.readouterr()
    with inject_error(stack.client("s3"), "GetObject", 503, "ServiceUnavailable", times=1) as flaky:
        ref = stack.sets("tokens")[0]
        assert stack.services().store.verify_set(ref).ok
    assert flaky.injected == 1


# -- KMS ---------------------------------------------------------------------------------------
KMS_REFUSALS = [
    (400, "AccessDeniedException", "User is not authorized to perform: kms:GenerateDataKey"),
    (400, "DisabledException", "The key is disabled."),
    (400, "KMSInvalidStateException", "The key is pending deletion."),
]


@pytest.mark.parametrize(("status", "code", "message"), KMS_REFUSALS, ids=[c for _, c, _ in KMS_REFUSALS])
def test_kms_refusing_data_keys_fails_the_backup_naming_the_cause(
    stack: MiniStack, status: int, code: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    kms = stack.client("kms")
    with inject_error(kms, "GenerateDataKey", status, code, message) as refusal:
        with pytest.raises(ClientError) as failure:
            run_backup(stack.services(), "config", owner="run")
        assert failure.value.response["Error"]["Code"] == code
        assert refusal.calls == 1, "a refusal is not retried"
        _assert_no_set(stack, "config")
        assert _failed(stack, "config") == [f"ClientError: {code} from GenerateDataKey"]
        assert main(["backup", "config"]) == 1
    assert capsys.readouterr().err == f"error: AWS request failed: {code} from GenerateDataKey\n"


def test_kms_throttling_is_retried(stack: MiniStack, retry_sleeps: list[float]) -> None:
    with inject_error(
        stack.client("kms"), "GenerateDataKey", 400, "ThrottlingException", "Rate exceeded", times=2
    ):
        run_backup(stack.services(), "tokens", owner="run")
    assert len(retry_sleeps) == 2
    assert len(stack.sets("tokens")) == 1


@pytest.fixture
def target(redis_target: RedisServer) -> RedisServer:
    import redis

    client = redis.Redis.from_url(redis_target.url)
    client.set("target:sentinel", "must survive", ex=3600)
    client.hset("target:hash", mapping={f"f{i}": i for i in range(300)})
    client.close()
    return redis_target


@pytest.mark.parametrize("code", ["AccessDeniedException", "DisabledException"])
def test_kms_refusing_decrypt_is_not_reported_as_corruption_and_touches_nothing(
    stack: MiniStack, target: RedisServer, code: str, capsys: pytest.CaptureFixture[str]
) -> None:
    result = run_backup(stack.services(), "redis", owner="run")
    before, started = redis_state(target.url), time.monotonic()
    capsys.readouterr()
    kms = stack.client("kms")
    # The manifest's key unwraps; the object's does not (Decrypt refused from the second call on).
    with inject_error(kms, "Decrypt", 400, code, "refused by the reliability suite", after=1):
        assert main(["verify", result.backup_id]) == 1, "not exit 4: the backup is intact"
    assert capsys.readouterr().err == f"error: AWS request failed: {code} from Decrypt\n"
    # A restore unwraps the manifest's key twice (prepare, preflight) before the first object's.
    with inject_error(kms, "Decrypt", 400, code, "refused by the reliability suite", after=2):
        request = {
            "backup": result.backup_id,
            "kinds": ["redis"],
            "mode": "replace",
            "target": {"redis_url": target.url},
        }
        with pytest.raises(ClientError, match=code):
            run_restore(stack.services(), request, "restore-run")
    elapsed_ms = int((time.monotonic() - started) * 1000)
    assert redis_differences(before, redis_state(target.url), elapsed_ms) == [], "the target was not touched"
    refused = [r for r in stack.audit() if r["operation"] == "restore"]
    assert [r["result"] for r in refused] == ["refused"] and code in refused[0]["error"]
    assert stack.client("dynamodb").scan(TableName=stack.table)["Items"] == [], "no lock left behind"
    assert stack.services().store.verify_set(stack.sets("redis")[0]).ok, "once KMS answers, all is well"


# -- Secrets Manager ----------------------------------------------------------------------------
MISSING_SECRETS = [
    ("config", "CONFIG_SECRET_IDS", "servalsheets/test/missing-env"),
    ("tokens", "TOKEN_KEY_SECRET_ID", "servalsheets/test/missing-key"),
    ("redis", "REDIS_URL_SECRET_ID", "servalsheets/test/missing-redis-url"),
]


@pytest.mark.parametrize(
    ("kind", "variable", "secret_id"), MISSING_SECRETS, ids=[m[0] for m in MISSING_SECRETS]
)
def test_missing_secret_is_named_with_what_to_do(
    stack: MiniStack,
    kind: str,
    variable: str,
    secret_id: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    overrides = {variable: secret_id, "REDIS_URL": ""} if kind == "redis" else {variable: secret_id}
    expected = (
        f"secret {secret_id!r} does not exist in Secrets Manager: create it or fix the secret name "
        "in the stack parameters"
    )
    with pytest.raises(ConfigurationError) as failure:
        run_backup(stack.services(**overrides), kind, owner="run")
    assert str(failure.value) == expected
    _assert_no_set(stack, kind)
    assert _failed(stack, kind) == [f"ConfigurationError: {expected}"]
    for name, value in overrides.items():
        monkeypatch.setenv(name, value)
    assert main(["backup", kind]) == ConfigurationError.exit_code
    assert capsys.readouterr().err == f"error: {expected}\n"


def test_secrets_manager_throttling_is_retried(stack: MiniStack, retry_sleeps: list[float]) -> None:
    manager = stack.client("secretsmanager")
    with inject_error(manager, "GetSecretValue", 400, "ThrottlingException", "Rate exceeded", times=1):
        run_backup(stack.services(), "config", owner="run")
    assert len(retry_sleeps) == 1 and len(stack.sets("config")) == 1
