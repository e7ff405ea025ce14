"""What every restore step shares: the job's source set and target, lock renewal, fault injection."""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from servalsheets_backup.components import redis_logical
from servalsheets_backup.errors import (
    BackupSystemError,
)
from servalsheets_backup.format.manifest import Manifest, ObjectEntry
from servalsheets_backup.services import Services
from servalsheets_backup.store.sets import SetRef

if TYPE_CHECKING:
    # pydantic loads when a step runs, not when Lambda imports the handler (cold start).
    from servalsheets_backup.workflows.restore.job import RestoreJob, SourceSet

FAULT_INJECTION_ENV = "ALLOW_FAULT_INJECTION"


LITERAL_REDIS_URL_ENV = "ALLOW_LITERAL_REDIS_URL"


SAFETY_KIND = "pre-restore"


APP_READY_ATTEMPTS = 20  # with the interval below: up to five minutes for the service to come up


APP_READY_INTERVAL_SECONDS = 15


ISOLATING_TARGET_FIELDS = ("redis_url", "redis_url_secret_id", "token_store_path", "secret_prefix")


_StepResult = TypeVar("_StepResult")


COUNT_WINDOW_MS = 10_000  # how long counting the keys of a restored target may take


def renews_lock(step: Callable[..., _StepResult]) -> Callable[..., _StepResult]:
    """Extend the run's restore lock before ``step`` (re-entrant for its owner).

    A long restore then keeps its exclusion however long it runs, while a run that died still
    releases the target once the lock's expiry passes.
    """

    @functools.wraps(step)
    def renewed(services: Services, job: RestoreJob, *args: Any) -> _StepResult:
        services.state.acquire(job.lock, job.owner)
        return step(services, job, *args)

    return renewed


class InjectedFault(BackupSystemError):
    """A failure injected on purpose (drill scenarios and tests only)."""


# -- services for the target ---------------------------------------------------------------
def target_services(services: Services, job: RestoreJob) -> Services:
    """Services whose settings point at the restore target (overrides from the request)."""
    target = job.target
    changes: dict[str, Any] = {}
    if target.redis_url:
        changes["redis_url"] = target.redis_url
    if target.redis_url_secret_id:
        changes.update(redis_url=None, redis_url_secret_id=target.redis_url_secret_id)
    if target.token_store_path:
        changes["token_store_path"] = target.token_store_path
    if not changes:
        return services
    return dataclasses.replace(services, settings=dataclasses.replace(services.settings, **changes))


def set_ref(source: SourceSet) -> SetRef:
    """The store's reference to a set the job names (its source, or its safety set)."""
    return SetRef(source.kind, source.backup_id, source.manifest_key)


def job_manifest(services: Services, job: RestoreJob, source: SourceSet | None = None) -> Manifest:
    """The manifest of the job's source set (or of ``source``), authenticated."""
    return services.store.load_manifest(set_ref(source or job.source))


def maybe_fail(job: RestoreJob, step: str) -> None:
    """Raise InjectedFault after ``step`` when the request asked for it (tests and drill only)."""
    if job.fail_after == step:
        raise InjectedFault(f"fault injected after step {step!r} (fail_after)")


def manifest_holds(manifest: Manifest, component: str) -> bool:
    """True when the set has data for ``component`` (a safety set records absent ones too)."""
    summary = manifest.components.get(component)
    if isinstance(summary, dict) and summary.get("absent"):
        return False
    return bool(manifest.objects_of(component)) or (component == "redis" and summary is not None)


def is_logical_dump(manifest: Manifest) -> bool:
    """True when the set's Redis objects are logical dump chunks (not RDB files)."""
    return any(entry.name.startswith(redis_logical.CHUNK_PREFIX) for entry in manifest.objects_of("redis"))


def job_object(
    services: Services, job: RestoreJob, entry: ObjectEntry, source: SourceSet | None = None
) -> Iterator[bytes]:
    """Plaintext chunks of one object of the source set (at the version preflight verified) or ``source``."""
    version = (job.versions or {}).get(entry.name) if source is None else None
    return services.store.read_object(set_ref(source or job.source), entry, version_id=version)


def redis_records(
    services: Services, job: RestoreJob, entry: ObjectEntry, source: SourceSet | None = None
) -> Iterator[bytes]:
    """One Redis object of that set as a logical record stream: a dump chunk as stored, an RDB
    file (an ElastiCache export) converted entry by entry (``format/rdb_entries.py``)."""
    chunks = job_object(services, job, entry, source)
    if entry.name.startswith(redis_logical.CHUNK_PREFIX):
        return chunks
    from servalsheets_backup.format.rdb_entries import record_stream_from_rdb

    return record_stream_from_rdb(chunks, entry.name)


def read_job_object(
    services: Services, job: RestoreJob, entry: ObjectEntry, source: SourceSet | None = None
) -> bytes:
    """The whole plaintext of one (small) object of that set."""
    return b"".join(job_object(services, job, entry, source))


def is_isolated(job: RestoreJob) -> bool:
    """True when the restore goes to a target other than production (or is a verification run).

    Such restores never scale the production service down and never judge production's health.
    """
    target = job.target
    if job.verification or any(getattr(target, name) for name in ISOLATING_TARGET_FIELDS):
        return True
    # A new cache is production only once the REDIS_URL secret is switched to it.
    new_cache = target.new_replication_group_id or target.new_serverless_cache_name
    return bool(new_cache) and not target.update_redis_url_secret


def notify(services: Services, subject: str, message: str) -> None:
    """Publish to the notification topic when one is configured."""
    if services.settings.notify_topic_arn:
        services.client("sns").publish(
            TopicArn=services.settings.notify_topic_arn, Subject=subject[:100], Message=message
        )


def iso_ms(ms: int) -> str:
    """An epoch-milliseconds time as ISO 8601 UTC."""
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def flush_target(services: Services) -> None:
    """FLUSHDB on every primary of the target Redis: a rollback before it replays the safety set,
    or a scratch clean-up."""
    redis_logical.flush_every_primary(services.redis_url())


def elapsed_since(start: float) -> float:
    """Seconds since a time.monotonic() value."""
    return time.monotonic() - start
