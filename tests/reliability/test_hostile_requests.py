"""Hostile state machine inputs and Lambda events: refused in the first step, with a message.

The backup and restore requests go through the same functions their first states call
(``backup_steps.begin``, ``restore.prepare``), which validate with the pydantic models of
schemas.py; every Lambda handler is also called directly with events it must refuse. Nothing is
locked, written or restored by a refused request.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from servalsheets_backup.errors import BackupNotFoundError, InvalidInputError
from servalsheets_backup.workflows import backup, backup_steps, restore
from servalsheets_backup_local.testing.lambda_runner import LambdaRunner
from servalsheets_backup_local.testing.redis_server import RedisServer

from .helpers import REPO_ROOT, MiniStack, redis_differences, redis_state

pytestmark = pytest.mark.reliability
HUGE = "x" * 100_000


@pytest.fixture(scope="module")
def one_redis_set(module_stack: MiniStack) -> str:
    """A redis set to point restore requests at."""
    return backup.run_backup(module_stack.services(), "redis", owner="fixture").backup_id


@pytest.fixture
def requests_stack(shared_stack: MiniStack, one_redis_set: str) -> Iterator[MiniStack]:
    """The shared stack; afterwards no lock may be left in the state table."""
    yield shared_stack
    items = shared_stack.client("dynamodb").scan(TableName=shared_stack.table)["Items"]
    assert [item["pk"]["S"] for item in items if item["pk"]["S"].startswith("lock#")] == []


# -- the backup state machine's input (first state: Begin backup) -----------------------------
BAD_BACKUP_REQUESTS: dict[str, tuple[Any, str]] = {
    "missing-kind": ({}, "invalid backup request: kind: Field required"),
    "kind-wrong-type": ({"kind": 5}, "invalid backup request: kind: Input should be a valid string"),
    "unknown-kind": (
        {"kind": "everything"},
        "invalid backup request: kind: Value error, unknown kind 'everything'; use one of config, tokens, "
        "redis, full, pre-deploy",
    ),
    "safety-kind-by-hand": ({"kind": "pre-restore"}, "unknown kind 'pre-restore'"),
    "huge-kind": ({"kind": HUGE}, "invalid backup request: kind: String should have at most 4096 characters"),
    "huge-label": (
        {"kind": "full", "label": HUGE},
        "invalid backup request: label: String should have at most 128 characters",
    ),
    "long-label": (
        {"kind": "full", "label": "v" * 129},
        "invalid backup request: label: String should have at most 128 characters",
    ),
    "label-control-characters": (
        {"kind": "pre-deploy", "label": "v2\x00\n"},
        "label must be printable text of at most 128 characters",
    ),
    "pre-deploy-without-label": (
        {"kind": "pre-deploy"},
        'a pre-deploy backup needs a release label, e.g. {"label": "v2.0.1"}',
    ),
    "unknown-field": (
        {"kind": "config", "bucket": "elsewhere"},
        "invalid backup request: bucket: Extra inputs are not permitted",
    ),
    "poll-seconds-type": (
        {"kind": "redis", "poll_seconds": "soon"},
        "invalid backup request: poll_seconds: Input should be a valid integer",
    ),
    "poll-seconds-range": (
        {"kind": "redis", "poll_seconds": 86_400},
        "invalid backup request: poll_seconds: Input should be less than or equal to 900",
    ),
    "not-an-object": (
        ["config"],
        "invalid backup request: backup request: Input should be a valid dictionary",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_BACKUP_REQUESTS))
def test_bad_backup_request_is_refused_in_the_first_state(requests_stack: MiniStack, case: str) -> None:
    request, message = BAD_BACKUP_REQUESTS[case]
    with pytest.raises(InvalidInputError) as refusal:
        backup_steps.begin(requests_stack.services(), {"request": request, "execution_id": "x"}, "owner")
    assert message in str(refusal.value)
    assert len(str(refusal.value)) < 1000, "a huge input is not echoed back"


# -- the restore state machine's input (first state: Prepare restore) ---------------------------
BAD_RESTORE_REQUESTS: dict[str, tuple[dict[str, Any], str]] = {
    "backup-wrong-type": ({"backup": 5}, "invalid restore input: backup.constrained-str: Input should be"),
    "as-of-not-a-time": (
        {"backup": {"as_of": "yesterday"}},
        "as_of 'yesterday' is not an ISO-8601 time; use e.g. 2026-11-25T02:00:00Z",
    ),
    "as-of-extra-field": (
        {"backup": {"as_of": "2026-01-01T00:00:00Z", "kind": "x"}},
        "backup.AsOf.kind: Extra inputs are not permitted",
    ),
    "not-a-backup-id": (
        {"backup": "../../etc/passwd"},
        "'../../etc/passwd' is not a backup id (expected YYYYMMDDTHHMMSSZ-xxxxxxxx)",
    ),
    "huge-backup-id": ({"backup": HUGE}, "String should have at most 4096 characters"),
    "no-kinds": ({"kinds": []}, "kinds: Value error, kinds must name at least one of config, tokens, redis"),
    "kinds-not-a-list": ({"kinds": "redis"}, "kinds: Input should be a valid list"),
    "unknown-kind": (
        {"kinds": ["redis", "everything"]},
        "kinds.1: Input should be 'config', 'tokens' or 'redis'",
    ),
    "unknown-source-kind": ({"source_kind": "nope"}, "source_kind: Value error, source_kind must be one of"),
    "unknown-mode": ({"mode": "destroy"}, "mode: Input should be 'replace', 'merge' or 'missing-only'"),
    "empty-key-pattern": ({"key_patterns": [""]}, "each key pattern must be 1 to 512 characters"),
    "huge-key-pattern": ({"key_patterns": ["k" * 513]}, "each key pattern must be 1 to 512 characters"),
    "too-many-key-patterns": ({"key_patterns": ["a*"] * 65}, "List should have at most 64 items"),
    "token-path-traversal": (
        {"target": {"token_store_path": "/srv/servalsheets/../../etc/shadow"}},
        "target.token_store_path: Value error, token_store_path must be an absolute path without '..'",
    ),
    "token-path-relative": (
        {"target": {"token_store_path": "../tokens.encrypted"}},
        "token_store_path must be an absolute path without '..' (or an s3:// URI)",
    ),
    "bad-replication-group": (
        {"target": {"new_replication_group_id": "Prod_Redis!"}},
        "target.new_replication_group_id: String should match pattern",
    ),
    "unknown-target-field": ({"target": {"host": "evil"}}, "target.host: Extra inputs are not permitted"),
    "credentials-in-redis-url": (
        {"target": {"redis_url": "redis://:hunter2hunter2@10.0.0.1:6379/0"}},
        "target.redis_url must not carry credentials",
    ),
    "huge-reason": ({"reason": HUGE}, "reason: String should have at most 1024 characters"),
    "dry-run-not-boolean": ({"dry_run": "perhaps"}, "dry_run: Input should be a valid boolean"),
    "fault-injection-in-production": (
        {"fail_after": "restore-redis"},
        "fail_after is a test hook; it is refused unless ALLOW_FAULT_INJECTION=true",
    ),
    "kinds-the-set-lacks": ({"kinds": ["tokens"], "source_kind": "redis"}, "holds no tokens"),
}


def test_a_literal_target_redis_url_is_refused_outside_tests(
    requests_stack: MiniStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ALLOW_LITERAL_REDIS_URL")
    request = {"target": {"redis_url": "redis://10.0.0.9:6379/0"}}
    with pytest.raises(
        InvalidInputError, match="target.redis_url is only accepted where ALLOW_LITERAL_REDIS_URL"
    ):
        restore.prepare(requests_stack.services(), request, "owner")


@pytest.mark.parametrize("case", sorted(BAD_RESTORE_REQUESTS))
def test_bad_restore_request_is_refused_in_the_first_state(
    requests_stack: MiniStack, case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ALLOW_FAULT_INJECTION", raising=False)
    request, message = BAD_RESTORE_REQUESTS[case]
    with pytest.raises(InvalidInputError) as refusal:
        restore.prepare(requests_stack.services(), {"request": request, "execution_id": "x"}, "owner")
    assert message in str(refusal.value)
    assert "hunter2hunter2" not in str(refusal.value)
    assert len(str(refusal.value)) < 1000


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        ({"backup": "20200101T000000Z-00000000"}, "no complete backup set 20200101T000000Z-00000000"),
        (
            {"backup": {"as_of": "2001-01-01T00:00:00Z"}, "kinds": ["redis"]},
            "no complete backup holding redis",
        ),
        ({"kinds": ["config"], "source_kind": "config"}, "no complete backup of kind config exists yet"),
    ],
    ids=["unknown-id", "as-of-before-everything", "kind-never-backed-up"],
)
def test_requests_for_missing_backups_are_refused(
    requests_stack: MiniStack, request_: dict[str, Any], message: str
) -> None:
    with pytest.raises(BackupNotFoundError, match=message):
        restore.prepare(requests_stack.services(), request_, "owner")


def test_key_pattern_matching_nothing_is_refused_before_the_target_is_touched(
    requests_stack: MiniStack, one_redis_set: str, redis_target: RedisServer
) -> None:
    client = redis.Redis.from_url(redis_target.url)
    client.set("target:keep", "me", ex=600)
    client.close()
    before, started = redis_state(redis_target.url), time.monotonic()
    request = {
        "backup": one_redis_set,
        "kinds": ["redis"],
        "mode": "merge",
        "key_patterns": ["refresh:*", "no-such-prefix:*"],
        "target": {"redis_url": redis_target.url},
    }
    with pytest.raises(InvalidInputError) as refusal:
        restore.run_restore(requests_stack.services(), request, "owner")
    assert str(refusal.value) == (
        f"key pattern 'no-such-prefix:*' matches no key in backup {one_redis_set}; "
        "fix the pattern (Redis glob syntax)"
    )
    elapsed = int((time.monotonic() - started) * 1000)
    assert redis_differences(before, redis_state(redis_target.url), elapsed) == []
    audit = [r for r in requests_stack.audit() if r["operation"] == "restore"][-1]
    assert audit["result"] == "refused" and "no-such-prefix" in audit["error"]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CONFIG_FILES", "/srv/servalsheets/../../etc/passwd"),
        ("CONFIG_FILES", "credentials.json"),
        ("GOOGLE_TOKEN_STORE_PATH", "../../tokens.encrypted"),
    ],
    ids=["config-file-traversal", "config-file-relative", "token-path-relative"],
)
def test_file_sources_must_be_absolute_without_dot_dot(
    requests_stack: MiniStack, variable: str, value: str
) -> None:
    kind = "config" if variable == "CONFIG_FILES" else "tokens"
    with pytest.raises(InvalidInputError) as refusal:
        backup.run_backup(requests_stack.services(**{variable: value}), kind, owner="run")
    assert str(refusal.value) == f"file path {value!r} must be absolute and must not contain '..'"
    assert requests_stack.metrics.values("BackupFailed", kind) == [1]


# -- every Lambda handler, called directly --------------------------------------------------------
FOLDERS = sorted(p.name for p in (REPO_ROOT / "functions").iterdir() if (p / "app.py").exists())
PENDING_STEPS = (
    "backup_config",
    "backup_tokens",
    "dump_redis",
    "export_snapshot",
    "finalize_backup",
    "ingest_snapshot",
    "snapshot",
)
JOB_STEPS = (
    "finish_restore",
    "preflight_restore",
    "restore_config",
    "restore_redis",
    "restore_tokens",
    "rollback_restore",
    "safety_backup",
    "set_maintenance",
    "verify_restore",
)


@pytest.fixture(scope="module")
def handlers() -> LambdaRunner:
    """Imports functions/<folder>/app.py once per folder."""
    return LambdaRunner(REPO_ROOT / "functions")


def test_the_handler_lists_cover_every_function() -> None:
    assert set(PENDING_STEPS + JOB_STEPS) | {
        "begin_backup",
        "prepare_restore",
        "fail_backup",
        "check_freshness",
    } == set(FOLDERS)


@pytest.mark.parametrize("folder", [f for f in FOLDERS if f != "check_freshness"])
@pytest.mark.parametrize(
    "event", ["a string", ["a", "list"], None, 42], ids=["str", "list", "null", "number"]
)
def test_every_handler_refuses_an_event_that_is_not_an_object(
    requests_stack: MiniStack, handlers: LambdaRunner, lambda_context: Any, folder: str, event: Any
) -> None:
    with pytest.raises(InvalidInputError, match="the event must be a JSON object"):
        handlers.handler(folder)(event, lambda_context)


MALFORMED_PENDING: dict[str, tuple[Any, str]] = {
    "not-an-object": ("begin", "pending must be the object returned by begin_backup"),
    "missing-fields": ({"kind": "redis"}, "pending set is malformed"),
    "unknown-field": (
        {"kind": "redis", "backup_id": "20261125T000000Z-00000000", "created_ms": 1, "owner": "o", "x": 1},
        "pending set is malformed",
    ),
    "unknown-kind": (
        {"kind": "../../etc", "backup_id": "20261125T000000Z-00000000", "created_ms": 1, "owner": "o"},
        "unknown backup kind '../../etc'",
    ),
    "bad-backup-id": (
        {"kind": "redis", "backup_id": "../../x", "created_ms": 1, "owner": "o"},
        "'../../x' is not a backup id",
    ),
    "wrong-types": (
        {"kind": "redis", "backup_id": "20261125T000000Z-00000000", "created_ms": "now", "owner": "o"},
        "pending set is malformed",
    ),
}


@pytest.mark.parametrize("folder", PENDING_STEPS)
@pytest.mark.parametrize("case", sorted(MALFORMED_PENDING))
def test_backup_steps_refuse_a_malformed_pending_set(
    requests_stack: MiniStack, handlers: LambdaRunner, lambda_context: Any, folder: str, case: str
) -> None:
    pending, message = MALFORMED_PENDING[case]
    event = {"pending": pending, "snapshot_name": "servalsheets-backup-x", "action": "check"}
    with pytest.raises(InvalidInputError) as refusal:
        handlers.handler(folder)(event, lambda_context)
    assert message in str(refusal.value)
    assert requests_stack.keys("../") == [] and requests_stack.uploads() == []


MALFORMED_JOBS: dict[str, Any] = {
    "missing": None,
    "not-an-object": "job",
    "only-an-id": {"restore_id": "r"},
    "source-not-an-object": {
        "restore_id": "r",
        "source": "full/2026/manifest.json",
        "components": ["redis"],
        "target": {},
        "lock": "l",
        "owner": "o",
        "mode": "merge",
    },
}


@pytest.mark.parametrize("folder", JOB_STEPS)
@pytest.mark.parametrize("case", sorted(MALFORMED_JOBS))
def test_restore_steps_refuse_a_malformed_job(
    requests_stack: MiniStack, handlers: LambdaRunner, lambda_context: Any, folder: str, case: str
) -> None:
    job = MALFORMED_JOBS[case]
    event: dict[str, Any] = {} if job is None else {"job": job}
    with pytest.raises(InvalidInputError) as refusal:
        handlers.handler(folder)(event, lambda_context)
    assert "job" in str(refusal.value) and "prepare_restore" in str(refusal.value)


def test_maintenance_refuses_an_unknown_phase(
    requests_stack: MiniStack, handlers: LambdaRunner, lambda_context: Any
) -> None:
    job = restore.prepare(requests_stack.services(), {"kinds": ["redis"], "source_kind": "redis"}, "owner")
    try:
        with pytest.raises(InvalidInputError, match="phase must be 'start' or 'end'"):
            handlers.handler("set_maintenance")(
                {"job": restore.dump_job(job), "phase": "drop-everything"}, lambda_context
            )
    finally:
        requests_stack.services().state.release(job.lock, job.owner)


def test_fail_backup_with_garbage_records_nothing_and_says_why(
    requests_stack: MiniStack, handlers: LambdaRunner, lambda_context: Any
) -> None:
    result = handlers.handler("fail_backup")({"request": {"kind": "nope"}, "error": "x"}, lambda_context)
    assert result == {"recorded": False, "error": "unknown error"}
    assert requests_stack.metrics.points == []


def test_check_freshness_ignores_its_event(
    requests_stack: MiniStack, handlers: LambdaRunner, lambda_context: Any
) -> None:
    report = handlers.handler("check_freshness")("anything at all", lambda_context)
    assert set(report) == {"backup_age_seconds", "verification_age_seconds"}


def test_handlers_directory_is_what_the_template_deploys() -> None:
    template = (REPO_ROOT / "template.yaml").read_text()
    for folder in FOLDERS:
        assert f"CodeUri: functions/{folder}/" in template
    assert Path(REPO_ROOT / "functions").is_dir()
