"""Lifecycle: when backups stop, the newest successful set of every kind is never expired.

moto stores the bucket's lifecycle configuration (deployed here from template.yaml) but never
applies it, so a small evaluator applies it the way S3 does: every current object, its age from a
simulated clock, its tags from GetObjectTagging, each enabled rule's prefix and tag filter and
expiration days. Backups of every kind are taken on four simulated days, then nothing succeeds
for 400 days (later runs fail): day by day, the newest set of each kind must stay untouched while
every superseded set goes once it is older than its kind's retention.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
import redis

from servalsheets_backup.errors import BackupSystemError
from servalsheets_backup.format.manifest import MANIFEST_NAME, new_backup_id
from servalsheets_backup.store.sets import EXPIRABLE_TAG, set_prefix
from servalsheets_backup.workflows import restore
from servalsheets_backup.workflows.backup import run_backup
from servalsheets_backup.workflows.restore import safety as restore_safety
from servalsheets_backup_local.testing.redis_server import RedisServer, start_redis
from servalsheets_backup_local.testing.template_file import load_template

from .helpers import (
    TEMPLATE_PATH,
    LifecycleRule,
    MiniStack,
    expiring_rules,
    lifecycle_rules,
    object_tags,
)

pytestmark = pytest.mark.reliability
DAY = 86_400
BACKUP_DAYS = (0, 1, 2, 3)
STOPPED_FOR = 400
KINDS = ("config", "tokens", "redis", "full", "pre-deploy", "pre-restore")
RETENTION_PARAMETERS = {
    "config": "ConfigRetentionDays",
    "tokens": "TokensRetentionDays",
    "redis": "RedisRetentionDays",
    "full": "FullRetentionDays",
    "pre-deploy": "PreDeployRetentionDays",
    "pre-restore": "PreRestoreRetentionDays",
}


@dataclass
class History:
    """Sets made on simulated days, and the simulated creation time of every object."""

    stack: MiniStack
    start: float
    sets: dict[str, list[tuple[int, str]]] = field(default_factory=dict)
    created: dict[str, float] = field(default_factory=dict)

    def record(self, day: int) -> None:
        """Give every object that appeared since the last call the creation time ``day``."""
        for key in self.stack.keys():
            self.created.setdefault(key, self.start + day * DAY)

    def newest(self, kind: str) -> str:
        """Backup id of the kind's newest set."""
        return max(self.sets[kind])[1]


def _restore_into(stack: MiniStack, target: RedisServer, clock: float) -> str:
    """A restore of redis into ``target``: it leaves a pre-restore safety set behind."""
    request = {"backup": "latest", "kinds": ["redis"], "mode": "merge", "target": {"redis_url": target.url}}
    services = stack.services(clock=lambda: clock)
    # Safety sets take their id from the wall clock; give them the simulated day's instead.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            restore_safety, "new_backup_id", lambda: new_backup_id(datetime.fromtimestamp(clock, UTC))
        )
        summary = restore.run_restore(services, request, "lifecycle")
    return str(summary["safety_backup_id"])


@pytest.fixture(scope="module")
def history(module_stack: MiniStack) -> Iterator[History]:
    """Every kind backed up on days 0..3 (simulated), then every kind failing on day 4."""
    stack = module_stack
    start = time.time() - 30 * DAY
    found = History(stack, start)
    found.record(-1)
    target = start_redis()
    client = redis.Redis.from_url(target.url)
    client.set("target:key", "x")
    client.close()
    try:
        for day in BACKUP_DAYS:
            for offset, kind in enumerate(KINDS[:-1]):
                clock = start + day * DAY + offset
                label = f"v{day}" if kind == "pre-deploy" else None
                result = run_backup(stack.services(clock=lambda c=clock: c), kind, owner="day", label=label)
                found.sets.setdefault(kind, []).append((day, result.backup_id))
            safety = _restore_into(stack, target, start + day * DAY + 10)
            found.sets.setdefault("pre-restore", []).append((day, safety))
            found.record(day)
        # After day 3 nothing succeeds any more: Redis gone, secrets unreadable, a bad key.
        failing = {
            "REDIS_URL": "redis://127.0.0.1:1/0",
            "CONFIG_SECRET_IDS": "gone",
            "ENCRYPTION_KEY": "00" * 32,
        }
        for kind in ("config", "tokens", "redis", "full"):
            with pytest.raises(BackupSystemError):
                run_backup(stack.services(clock=lambda: start + 4 * DAY, **failing), kind, owner="broken")
        found.record(4)
        yield found
    finally:
        target.stop()


@pytest.fixture
def lifecycle(history: History, shared_stack: MiniStack) -> History:
    """The module's history, with this test's environment pointing at its stack."""
    return history


def _objects(history: History) -> dict[str, dict[str, str]]:
    """Every current object and its tags (nothing changes them once backups have stopped)."""
    s3, bucket = history.stack.client("s3"), history.stack.bucket
    return {key: object_tags(s3, bucket, key) for key in history.stack.keys()}


def _expired_at(
    history: History, rules: list[LifecycleRule], objects: dict[str, dict[str, str]], now_day: float
) -> set[str]:
    now = history.start + now_day * DAY
    return {
        key
        for key, tags in objects.items()
        if expiring_rules(rules, key, tags, (now - history.created[key]) / DAY)
    }


def _set_keys(history: History, kind: str, backup_id: str) -> list[str]:
    keys = history.stack.keys(set_prefix(kind, backup_id))
    assert any(key.endswith(MANIFEST_NAME) for key in keys)
    return keys


def test_retention_rules_come_from_the_template(lifecycle: History) -> None:
    history = lifecycle
    defaults = {
        name: spec.get("Default") for name, spec in load_template(TEMPLATE_PATH)["Parameters"].items()
    }
    rules = {rule.prefix: rule for rule in lifecycle_rules(history.stack.lifecycle()) if rule.tags}
    for kind, parameter in RETENTION_PARAMETERS.items():
        rule = rules[f"{kind}/"]
        assert rule.tags == ((EXPIRABLE_TAG, "true"),)
        assert rule.expiration_days == int(defaults[parameter])


def test_every_object_is_written_not_expirable_and_only_superseded_sets_are_retagged(
    lifecycle: History,
) -> None:
    history = lifecycle
    s3, bucket = history.stack.client("s3"), history.stack.bucket
    for kind in KINDS:
        for _, backup_id in history.sets[kind]:
            expected = "false" if backup_id == history.newest(kind) else "true"
            for key in _set_keys(history, kind, backup_id):
                assert object_tags(s3, bucket, key).get(EXPIRABLE_TAG) == expected, key
    assert [key for key in history.stack.keys() if "/broken" in key] == []


def test_newest_set_of_every_kind_survives_backups_stopping_for_400_days(lifecycle: History) -> None:
    history = lifecycle
    rules = lifecycle_rules(history.stack.lifecycle())
    objects = _objects(history)
    sets = {
        (kind, backup_id): set(_set_keys(history, kind, backup_id))
        for kind in KINDS
        for _, backup_id in history.sets[kind]
    }
    newest = {kind: sets[(kind, history.newest(kind))] for kind in KINDS}
    retention = {rule.prefix.rstrip("/"): rule.expiration_days for rule in rules if rule.tags}
    last_day = max(BACKUP_DAYS)
    for day in range(last_day, last_day + STOPPED_FOR + 1):
        expired = _expired_at(history, rules, objects, day)
        for kind in KINDS:
            assert not newest[kind] & expired, f"the newest {kind} set would expire on day {day}"
            for created_day, backup_id in history.sets[kind]:
                keys = sets[(kind, backup_id)] - newest[kind]
                due = day - created_day >= retention[kind]
                assert keys <= expired if due else not keys & expired, (kind, backup_id, day)
    # After 400 days, only the newest set of each kind (and nothing else of the backups) remains.
    expired = _expired_at(history, rules, objects, last_day + STOPPED_FOR)
    backups = {key for key in objects if key.split("/", 1)[0] in KINDS}
    assert backups - expired == set().union(*newest.values())
