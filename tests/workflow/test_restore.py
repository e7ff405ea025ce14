"""The restore state machine executed end to end: real ASL, real handlers, real redis-servers.

Every test backs up through the backup state machine first (as EventBridge would), changes or
breaks the deployment, restores through the restore state machine and then inspects the target
itself: every Redis key (value and TTL), the token store file, the config secret, SSM
parameters and the credentials file.
"""

from __future__ import annotations

import json
import secrets
import time
from fnmatch import fnmatchcase
from typing import Any

import pytest
import redis

from servalsheets_backup.adapters.secrets import secret_field
from servalsheets_backup.errors import LockHeldError
from servalsheets_backup.format.redis_keys import OAUTH_KEY_PATTERNS, key_prefix
from servalsheets_backup.format.tokenstore import encrypt_store, parse_key, write_token_file_atomic
from servalsheets_backup_local.testing.environment import (
    ENV_SECRET,
    PARAMETER_PATH,
    TOKEN_KEY_SECRET,
    LocalEnvironment,
)
from servalsheets_backup_local.testing.servalsheets_state import SeededState, redis_snapshot

from .support import (
    LambdaGate,
    Run,
    Snapshot,
    TargetState,
    backed_up,
    capture,
    drop_short_lived,
    finish,
    held_locks,
    install_services,
    leaked,
    redis_client,
    redis_differences,
    run_restore,
    secret_string,
    set_token_key,
    sets,
    shifted_clock,
    state_differences,
)

pytestmark = pytest.mark.workflow

ALL_KINDS = ["config", "tokens", "redis"]
CONSOLE = {"requested_by": "workflow-test", "reason": "restore test", "poll_seconds": 0}


# -- changing the deployment -----------------------------------------------------------------
def drift_redis(env: LocalEnvironment) -> dict[str, list[bytes]]:
    """What happens to Redis after a backup: values change, keys come and go."""
    client = redis_client(env.production)
    try:
        keys = sorted(
            k for k, (_, ttl) in redis_snapshot(env.production.url).items() if ttl == -1 or ttl > 60_000
        )
        changed, deleted = keys[0:6], keys[6:12]
        for key in changed:
            client.delete(key)
            client.set(key, b"changed after the backup", px=3_600_000)
        client.delete(*deleted)
        added = [b"refresh:added-after-backup-%d" % n for n in range(5)]
        for key in added:
            client.set(key, b'{"token":"new"}', px=86_400_000)
        return {"changed": changed, "deleted": deleted, "added": added}
    finally:
        client.close()


def drift_tokens(env: LocalEnvironment) -> None:
    """A token refresh after the backup: the store is rewritten with the same live key."""
    live = parse_key(secret_field(env.client("secretsmanager"), TOKEN_KEY_SECRET, ("ENCRYPTION_KEY",)))
    write_token_file_atomic(env.token_path, encrypt_store({"access_token": "ya29.refreshed"}, live))


def drift_config(env: LocalEnvironment) -> None:
    """Configuration edits after the backup: the secret, SSM parameters and the credentials file."""
    env.client("secretsmanager").put_secret_value(
        SecretId=ENV_SECRET, SecretString=json.dumps({"JWT_SECRET": "rotated-after-the-backup"})
    )
    ssm = env.client("ssm")
    ssm.put_parameter(Name=f"{PARAMETER_PATH}PORT", Value="8080", Type="String", Overwrite=True)
    ssm.put_parameter(Name=f"{PARAMETER_PATH}ADDED_LATER", Value="x", Type="String")
    ssm.delete_parameter(Name=f"{PARAMETER_PATH}NODE_ENV")
    env.credentials_path.write_bytes(b'{"installed": {"client_id": "edited"}}')
    env.credentials_path.chmod(0o644)


def drift(env: LocalEnvironment) -> None:
    """Change everything a restore can put back."""
    drift_redis(env)
    drift_tokens(env)
    drift_config(env)


def disaster(env: LocalEnvironment) -> None:
    """Redis wiped, the token store deleted, the config secret overwritten, a parameter lost."""
    client = redis_client(env.production)
    client.flushall()
    client.close()
    env.token_path.unlink()
    env.client("secretsmanager").put_secret_value(
        SecretId=ENV_SECRET, SecretString=json.dumps({"JWT_SECRET": "overwritten-by-the-disaster"})
    )
    env.client("ssm").delete_parameter(Name=f"{PARAMETER_PATH}oauth/WEBHOOK_SECRET")
    env.credentials_path.unlink()


# -- checks ----------------------------------------------------------------------------------
def succeeded(run: Run) -> dict[str, Any]:
    """The summary of a successful restore; its own verification checks must all have passed."""
    assert run.status == "SUCCEEDED", (run.error, run.message[:800], run.entered)
    summary = run.output
    assert summary["outcome"] == "succeeded"
    failed = [check for check in summary["checks"] if not check["ok"]]
    assert summary["checks"] and not failed, failed
    return summary


def assert_config_restored(env: LocalEnvironment, expected: TargetState) -> None:
    now = capture(env)
    assert now.env_secret == expected.env_secret
    assert now.parameters == expected.parameters
    assert now.credentials == expected.credentials
    assert now.credentials_mode == expected.credentials_mode


def assert_tokens_restored(env: LocalEnvironment, expected: TargetState) -> None:
    assert env.token_path.read_bytes() == expected.tokens
    assert env.token_path.stat().st_mode & 0o777 == 0o600


def refused_untouched(
    env: LocalEnvironment, run: Run, error: str, before: TargetState, safety_sets: int
) -> None:
    """A refused run: the right error, no state changed, no safety backup, no lock left."""
    assert run.status == "FAILED", run.entered
    assert run.error == error, (run.error, run.message[:500])
    assert "Take safety backup" not in run.entered
    assert "Start maintenance window" not in run.entered
    assert state_differences(env, before) == []
    assert len(sets(env, "pre-restore")) == safety_sets
    assert held_locks(env) == {}


# -- happy paths -----------------------------------------------------------------------------
def test_restore_configuration_only(env: LocalEnvironment, seeded: SeededState) -> None:
    # Given a config backup, and configuration edited afterwards
    backup = backed_up(env, "config")
    expected = capture(env)
    drift_config(env)
    env.client("secretsmanager").delete_secret(SecretId=ENV_SECRET, ForceDeleteWithoutRecovery=True)
    others = capture(env)

    # When only the configuration is restored, replacing what is there
    run = run_restore(env, backup=backup["backup_id"], kinds=["config"], mode="replace", **CONSOLE)

    # Then secret, parameters (the one added later removed) and file are as backed up
    summary = succeeded(run)
    assert_config_restored(env, expected)
    assert summary["results"]["config"]["parameters_removed"] == 1
    assert "Restore configuration" in run.entered
    assert "Restore token store" not in run.entered and "Restore every shard" not in run.entered
    # ... and nothing else was touched
    assert redis_differences(env.production.url, others.redis, since=others.taken_at) == []
    assert env.token_path.read_bytes() == others.tokens


def test_restore_token_store_only(env: LocalEnvironment, seeded: SeededState) -> None:
    backup = backed_up(env, "tokens")
    expected = capture(env)
    env.token_path.unlink()

    run = run_restore(env, backup=backup["backup_id"], kinds=["tokens"], mode="replace", **CONSOLE)

    summary = succeeded(run)
    assert_tokens_restored(env, expected)
    assert summary["results"]["tokens"] == {
        "bytes": len(expected.tokens or b""),
        "decrypts_with_live_key": True,
    }
    assert not env.token_path.with_name(env.token_path.name + ".tmp").exists()
    assert secret_string(env, ENV_SECRET) == expected.env_secret
    assert "Restore configuration" not in run.entered and "Restore every shard" not in run.entered


def test_restore_redis_only(env: LocalEnvironment, seeded: SeededState) -> None:
    drop_short_lived(env)
    backed = redis_snapshot(env.production.url)
    since = time.monotonic()
    backup = backed_up(env, "redis")
    drift_redis(env)
    others = capture(env)

    run = run_restore(env, backup=backup["backup_id"], kinds=["redis"], mode="replace", **CONSOLE)

    summary = succeeded(run)
    assert redis_differences(env.production.url, backed, since=since) == []
    assert summary["results"]["redis"]["restored"] + summary["results"]["redis"]["skipped_expired"] == len(
        backed
    )
    assert env.token_path.read_bytes() == others.tokens
    assert secret_string(env, ENV_SECRET) == others.env_secret


def test_restore_full_set_after_a_disaster(env: LocalEnvironment, seeded: SeededState) -> None:
    # Given a full backup of a seeded deployment
    expected = capture(env)
    backup = backed_up(env, "full")
    assert backup["kind"] == "full" and backup["objects"] == 3

    # When a disaster wipes Redis, deletes the token store and overwrites configuration
    disaster(env)
    run = run_restore(env, backup="latest", kinds=ALL_KINDS, mode="replace", **CONSOLE)

    # Then everything is as backed up
    summary = succeeded(run)
    assert summary["backup"]["backup_id"] == backup["backup_id"]
    assert redis_differences(env.production.url, expected.redis, since=expected.taken_at) == []
    assert_tokens_restored(env, expected)
    assert_config_restored(env, expected)
    assert [name for name in run.entered if name.startswith("Restore ") and "?" not in name] == [
        "Restore configuration",
        "Restore token store",
        "Restore every shard",  # the logical Redis restore's Map (one part: a standalone set)
        "Restore shard chunks",
        "Restore succeeded",
    ]
    assert env.metrics.values("RestoreSucceeded") == [1]
    assert held_locks(env) == {}
    # No secret value in the execution's input, output or any state's data
    assert leaked(seeded.secret_values, run.text()) == []


# -- dry run ---------------------------------------------------------------------------------
def test_dry_run_changes_nothing_and_reports_the_plan(env: LocalEnvironment, seeded: SeededState) -> None:
    drop_short_lived(env)
    backed = redis_snapshot(env.production.url)
    backup = backed_up(env, "full")
    drift(env)
    before = capture(env)
    safety_sets = len(sets(env, "pre-restore"))

    run = run_restore(
        env, backup=backup["backup_id"], kinds=ALL_KINDS, mode="replace", dry_run=True, **CONSOLE
    )

    assert run.status == "SUCCEEDED", run.message
    assert "Report plan" in run.entered and "Dry run complete" in run.entered
    assert "Start maintenance window" not in run.entered and "Take safety backup" not in run.entered
    assert state_differences(env, before) == []
    assert len(sets(env, "pre-restore")) == safety_sets
    assert held_locks(env) == {}
    summary = run.output
    assert summary["outcome"] == "planned"
    plan = summary["plan"]
    # Redis: counts per prefix of what the backup holds (nothing in it has expired yet)
    per_prefix: dict[str, int] = {}
    for key in backed:
        per_prefix[key_prefix(key)] = per_prefix.get(key_prefix(key), 0) + 1
    assert plan["redis"]["would_restore"] == dict(sorted(per_prefix.items()))
    assert plan["redis"]["would_restore_total"] == len(backed)
    assert plan["redis"]["skipped_expired"] == 0
    assert plan["redis"]["target_keys_now"] == len(before.redis)
    # Config: names added, changed and removed, never values
    config = plan["config"]
    assert f"secret:{ENV_SECRET}" in config["changed"]
    assert f"parameter:{PARAMETER_PATH}PORT" in config["changed"]
    assert f"parameter:{PARAMETER_PATH}NODE_ENV" in config["added"]
    assert f"parameter:{PARAMETER_PATH}ADDED_LATER" in config["removed"]
    assert f"file:{env.credentials_path}" in config["changed"]
    assert plan["tokens"]["exists"] is True and plan["tokens"]["differs"] is True
    assert leaked(seeded.secret_values, run.description["output"]) == []
    assert leaked(seeded.secret_values, run.text()) == []
    assert "rotated-after-the-backup" not in run.text()


# -- refusals before anything is touched -----------------------------------------------------
@pytest.mark.parametrize("victim", ["redis/dump-0001", "tokens.encrypted", "config.bundle", "manifest.json"])
def test_corrupted_object_stops_the_run_before_the_target_is_touched(
    env: LocalEnvironment, seeded: SeededState, victim: str
) -> None:
    from .support import flip_byte

    backup = backed_up(env, "full")
    drift(env)
    before = capture(env)
    safety_sets = len(sets(env, "pre-restore"))
    ref = next(ref for ref in sets(env, "full") if ref.backup_id == backup["backup_id"])
    flip_byte(env, ref.prefix + victim)

    run = run_restore(env, backup=backup["backup_id"], kinds=ALL_KINDS, mode="replace", **CONSOLE)

    refused_untouched(env, run, "IntegrityError", before, safety_sets)
    assert victim.removesuffix(".json") in run.message, run.message
    if victim == "manifest.json":  # the manifest is authenticated as soon as the set is resolved
        assert run.entered == ["Prepare restore", "Restore refused"]
    else:
        assert run.entered[-3:] == [
            "Verify backup before touching anything",
            "Release lock after refusal",
            "Restore refused after checks",
        ]


@pytest.mark.parametrize("kinds", [["tokens"], ALL_KINDS], ids=["tokens", "all"])
def test_wrong_live_token_key_stops_the_run_before_the_target_is_touched(
    env: LocalEnvironment, seeded: SeededState, kinds: list[str]
) -> None:
    backup = backed_up(env, "full")
    drift_redis(env)
    env.token_path.write_bytes(b"{}")  # a damaged store the operator wants replaced
    set_token_key(env, secrets.token_hex(32))  # ... but the live key is not the one of the backup
    before = capture(env)
    safety_sets = len(sets(env, "pre-restore"))

    run = run_restore(env, backup=backup["backup_id"], kinds=kinds, mode="replace", **CONSOLE)

    refused_untouched(env, run, "TokenKeyMismatchError", before, safety_sets)
    assert "ENCRYPTION_KEY" in run.message and "nothing was restored" in run.message
    assert run.entered[-1] == "Restore refused after checks"


BAD_INPUTS = [
    pytest.param({"kinds": ["tokens", "sessions"]}, "InvalidInputError", "kinds", id="unknown-kind"),
    pytest.param(
        {"backup": "20200101T000000Z-0badf00d"},
        "BackupNotFoundError",
        "20200101T000000Z-0badf00d",
        id="unknown-backup-id",
    ),
    pytest.param(
        {"backup": "yesterday"}, "InvalidInputError", "'yesterday' is not a backup id", id="not-a-backup-id"
    ),
    pytest.param(
        {"backup": {"as_of": "last tuesday"}},
        "InvalidInputError",
        "as_of 'last tuesday' is not an ISO-8601",
        id="malformed-as-of",
    ),
    pytest.param(
        {"target": {"token_store_path": "tokens.encrypted"}},
        "InvalidInputError",
        "token_store_path",
        id="relative-token-path",
    ),
    pytest.param(
        {"target": {"token_store_path": "/mnt/servalsheets/../../etc/cron.d/x"}},
        "InvalidInputError",
        "without '..'",
        id="dot-dot-token-path",
    ),
    pytest.param({"restore_everything": True}, "InvalidInputError", "restore_everything", id="extra-field"),
    pytest.param(
        {"target": {"redis_url": "redis://:hunter2@127.0.0.1:1/0"}},
        "InvalidInputError",
        "must not carry credentials",
        id="credentials-in-url",
    ),
    pytest.param({"mode": "overwrite"}, "InvalidInputError", "mode", id="unknown-mode"),
]


@pytest.mark.parametrize(("change", "error", "named"), BAD_INPUTS)
def test_bad_input_fails_fast_in_the_first_state(
    env: LocalEnvironment, seeded: SeededState, change: dict[str, Any], error: str, named: str
) -> None:
    backed_up(env, "full")
    before = capture(env)
    safety_sets = len(sets(env, "pre-restore"))
    request = {"backup": "latest", "kinds": ALL_KINDS, "mode": "replace", **CONSOLE, **change}

    run = run_restore(env, **request)

    refused_untouched(env, run, error, before, safety_sets)
    assert run.entered == ["Prepare restore", "Restore refused"]
    assert named in run.message, run.message
    assert "hunter2" not in run.message


def test_key_pattern_matching_nothing_is_refused_in_preflight(
    env: LocalEnvironment, seeded: SeededState
) -> None:
    backup = backed_up(env, "redis")
    drift_redis(env)
    before = capture(env)
    safety_sets = len(sets(env, "pre-restore"))

    run = run_restore(
        env, backup=backup["backup_id"], kinds=["redis"], key_patterns=["dcr:*", "sessions:*"], **CONSOLE
    )

    refused_untouched(env, run, "InvalidInputError", before, safety_sets)
    assert "'sessions:*' matches no key" in run.message
    assert run.entered[-1] == "Restore refused after checks"


# -- rollback --------------------------------------------------------------------------------
ROLLBACK_POINTS = [
    "safety-backup",
    "restore-config",
    "restore-tokens",
    "restore-redis",
    "maintenance-end",
    "verify",
]


@pytest.mark.parametrize("point", ROLLBACK_POINTS)
def test_failure_after_the_safety_backup_rolls_the_target_back_exactly(
    env: LocalEnvironment, seeded: SeededState, point: str
) -> None:
    # Given a full backup and a target that has moved on since (so a restore changes everything)
    backed_up(env, "full")
    drift(env)
    before = capture(env)
    safety_sets = len(sets(env, "pre-restore"))

    # When the restore fails after `point`
    run = run_restore(env, backup="latest", kinds=ALL_KINDS, mode="replace", fail_after=point, **CONSOLE)

    # Then it was rolled back from the safety backup, and the target is exactly as before
    assert run.status == "FAILED" and run.error == "InjectedFault", (run.error, run.message[:500])
    assert point in run.message
    assert "Roll back" in run.entered
    assert run.entered[-1] == "Restore failed and was rolled back"
    assert state_differences(env, before) == []
    assert len(sets(env, "pre-restore")) == safety_sets + 1
    assert held_locks(env) == {}
    assert env.metrics.values("RestoreFailed") == [1]
    if point in ("restore-redis", "maintenance-end", "verify"):
        # the target really had been restored before the failure
        assert {"Restore configuration", "Restore token store", "Restore shard chunks"} <= set(run.entered)


# -- concurrency -----------------------------------------------------------------------------
def test_concurrent_restore_of_the_same_target_is_refused(
    env: LocalEnvironment, seeded: SeededState, monkeypatch: pytest.MonkeyPatch
) -> None:
    backed = capture(env)
    backed_up(env, "full")
    drift(env)
    before = capture(env)
    gate = LambdaGate(env, "safety_backup").install(monkeypatch)
    try:
        # Given a restore that holds the target's lock (held at its safety backup step)
        first = env.start_execution("RestoreStateMachine", {"kinds": ALL_KINDS, "mode": "replace", **CONSOLE})
        gate.wait_until_held()
        assert list(held_locks(env).values()) == [first]

        # When a second restore of the same target starts
        second = finish(env, env.start_execution("RestoreStateMachine", {"kinds": ["redis"], **CONSOLE}))

        # Then it is refused in its first state and touches nothing
        assert second.status == "FAILED" and second.error == LockHeldError.__name__
        assert second.entered == ["Prepare restore", "Restore refused"]
        assert first in second.message
        assert state_differences(env, before) == []
        assert list(held_locks(env).values()) == [first]
    finally:
        gate.release()

    # ... while the first one completes and then frees the lock
    succeeded(finish(env, first))
    assert redis_differences(env.production.url, backed.redis, since=backed.taken_at) == []
    assert held_locks(env) == {}


# -- what is restored ------------------------------------------------------------------------
def test_keys_whose_ttl_ran_out_are_not_restored(env: LocalEnvironment, seeded: SeededState) -> None:
    shift_ms = 3 * 3_600_000  # between the longest short TTL (2 h) and the shortest long one (12 h)
    drop_short_lived(env)
    backed = redis_snapshot(env.production.url)
    since = time.monotonic()
    backup = backed_up(env, "redis")
    gone = {key for key, (_, ttl) in backed.items() if ttl != -1 and ttl < shift_ms}
    assert gone and len(gone) < len(backed) // 2
    disaster(env)

    # When the restore runs three hours after the backup (its clock, not the wall clock's)
    install_services(env, shifted_clock(shift_ms / 1000))
    run = run_restore(env, backup=backup["backup_id"], kinds=["redis"], mode="replace", **CONSOLE)

    summary = succeeded(run)
    assert summary["plan"]["redis"]["skipped_expired"] == len(gone)
    assert summary["results"]["redis"]["skipped_expired"] == len(gone)
    assert summary["results"]["redis"]["restored"] == len(backed) - len(gone)
    # Every other key came back with three hours less to live
    expected: Snapshot = {
        key: (payload, ttl if ttl == -1 else ttl - shift_ms)
        for key, (payload, ttl) in backed.items()
        if key not in gone
    }
    assert redis_differences(env.production.url, expected, since=since) == []


def test_selective_restore_of_the_oauth_keys(env: LocalEnvironment, seeded: SeededState) -> None:
    drop_short_lived(env)
    backed = redis_snapshot(env.production.url)
    since = time.monotonic()
    backup = backed_up(env, "redis")
    client = redis_client(env.production)
    client.flushall()
    client.close()

    run = run_restore(
        env,
        backup=backup["backup_id"],
        kinds=["redis"],
        mode="merge",
        key_patterns=list(OAUTH_KEY_PATTERNS),
        **CONSOLE,
    )

    summary = succeeded(run)
    wanted = {
        key: value
        for key, value in backed.items()
        if any(fnmatchcase(key.decode(), pattern) for pattern in OAUTH_KEY_PATTERNS)
    }
    assert {key_prefix(key) for key in wanted} >= {"dcr:", "refresh:", "google_tokens:", "webhooks:"}
    assert redis_differences(env.production.url, wanted, since=since) == []
    assert summary["results"]["redis"]["restored"] == len(wanted)
    assert summary["results"]["redis"]["skipped_pattern"] == len(backed) - len(wanted)


def test_missing_only_keeps_existing_keys(env: LocalEnvironment, seeded: SeededState) -> None:
    drop_short_lived(env)
    backed = redis_snapshot(env.production.url)
    since = time.monotonic()
    backup = backed_up(env, "redis")
    changes = drift_redis(env)

    run = run_restore(env, backup=backup["backup_id"], kinds=["redis"], mode="missing-only", **CONSOLE)

    summary = succeeded(run)
    results = summary["results"]["redis"]
    assert results["restored"] == len(changes["deleted"])
    assert results["kept_existing"] == len(backed) - len(changes["deleted"])
    client: redis.Redis = redis_client(env.production)
    try:
        assert all(client.get(key) == b"changed after the backup" for key in changes["changed"])
        assert all(client.exists(key) for key in changes["added"])
    finally:
        client.close()
    untouched = {key: value for key, value in backed.items() if key not in changes["changed"]}
    assert redis_differences(env.production.url, untouched, since=since, exact=False) == []
