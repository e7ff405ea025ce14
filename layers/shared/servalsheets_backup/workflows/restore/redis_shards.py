"""The logical Redis restore as the state machine runs it: planned into parts, a Map restores them.

``plan`` flushes every primary of the target (replace mode, after the safety backup) and splits
the set's Redis objects into parts, one per source shard (a standalone set is one part, an RDB
file its own part). The Map runs ``restore_part`` for every part at once, at most
REDIS_SHARD_CONCURRENCY at a time; each part routes every key to the primary that owns its slot
in the target, so a set restores into a cluster of any shard count or into a standalone server.
``merge`` checks every part finished and records the totals. A part that fails fails the Map,
and the state machine rolls the target back to its safety backup.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from servalsheets_backup.components import redis_logical
from servalsheets_backup.errors import InvalidInputError, RedisBackupError
from servalsheets_backup.format.manifest import Manifest
from servalsheets_backup.services import Services
from servalsheets_backup.workflows.restore.apply import add_totals, record_result, restore_chunks
from servalsheets_backup.workflows.restore.common import (
    job_manifest,
    maybe_fail,
    renews_lock,
    target_services,
)

if TYPE_CHECKING:
    from servalsheets_backup.workflows.restore.job import RestoreJob, RestorePart

ACTIONS = ("plan", "part", "merge")


def restore_parts(manifest: Manifest) -> list[RestorePart]:
    """The set's Redis objects grouped by the shard that wrote them, in manifest order."""
    from servalsheets_backup.workflows.restore.job import RestorePart

    groups: dict[str, list[str]] = {}
    for entry in manifest.objects_of("redis"):
        groups.setdefault(_source_shard(entry.name), []).append(entry.name)
    return [RestorePart(index=index, objects=names) for index, names in enumerate(groups.values())]


def _source_shard(name: str) -> str:
    """``redis/dump-s02-0003`` -> ``s02``; a standalone dump chunk -> ``""``; an RDB file -> its name."""
    if not name.startswith(redis_logical.CHUNK_PREFIX):
        return name
    rest = name[len(redis_logical.CHUNK_PREFIX) :]
    return rest.split("-", 1)[0] if rest.startswith("s") else ""


@renews_lock
def plan(services: Services, job: RestoreJob) -> RestoreJob:
    """Flush the target's primaries (replace mode) and list the parts the Map restores."""
    from servalsheets_backup.workflows.restore.job import RedisProgress

    if job.redis_mode != "logical":
        raise InvalidInputError(
            "the Redis restore plan is for logical restores; ElastiCache restores seed a new cache"
        )
    target = target_services(services, job)
    job.redis = RedisProgress(
        parts=restore_parts(job_manifest(target, job)),
        max_concurrency=services.settings.redis_shard_concurrency,
    )
    if job.mode == "replace":
        # only ever reached after the safety backup has been committed
        redis_logical.flush_every_primary(target.redis_url())
        job.redis.flushed = True
    return job


@renews_lock
def restore_part(
    services: Services, job: RestoreJob, part: RestorePart, deadline: float | None
) -> RestorePart:
    """RESTORE the part's objects from its cursor on, until done or ``deadline``."""
    target = target_services(services, job)
    entries = {entry.name: entry for entry in job_manifest(target, job).objects_of("redis")}
    unknown = [name for name in part.objects if name not in entries]
    if unknown:
        raise InvalidInputError(
            f"restore part {part.index} names objects the set does not hold: {unknown[:3]}"
        )
    chunks = [entries[name] for name in part.objects]
    restore_chunks(target, job, part, chunks, None, job.mode, job.key_patterns or None, deadline)
    return part


@renews_lock
def merge(services: Services, job: RestoreJob, parts: list[RestorePart]) -> RestoreJob:
    """Check that every planned part finished, and record the restore's totals."""
    progress = job.redis
    planned = progress.parts if progress else []
    finished = sorted((part for part in parts if part.done), key=lambda part: part.index)
    if progress is None or [part.index for part in finished] != [part.index for part in planned]:
        raise RedisBackupError(
            f"the Redis restore planned {len(planned)} parts but {len(finished)} finished: "
            "the target is incomplete (the state machine rolls it back)"
        )
    totals: dict[str, Any] = {}
    for part in finished:
        add_totals(totals, part.totals)
    totals["parts"] = [
        {"index": part.index, "objects": len(part.objects), "restored": part.totals.get("restored", 0)}
        for part in finished
    ]
    progress.totals = totals
    progress.parts = []  # restored; the job stays small for the states after
    progress.done = True
    record_result(job, "redis", totals)
    maybe_fail(job, "restore-redis")
    return job


def redis_step(services: Services, event: dict[str, Any], deadline: float | None) -> dict[str, Any]:
    """The restore_redis handler: ``action`` plan, part or merge (the Map path), or none (the loop
    that seeds a new ElastiCache cache, or restores logically in one driver)."""
    from servalsheets_backup.workflows.restore.apply import restore_redis
    from servalsheets_backup.workflows.restore.job import RestorePart, dump_job, parse_record
    from servalsheets_backup.workflows.restore.prepare import job_from

    action = event.get("action")
    if action is not None and action not in ACTIONS:
        raise InvalidInputError(f"the Redis restore step's 'action' must be one of {', '.join(ACTIONS)}")
    job = job_from(event)
    if action == "plan":
        return dump_job(plan(services, job))
    if action == "part":
        part = parse_record(RestorePart, event.get("part"), "part")
        return restore_part(services, job, part, deadline).model_dump()
    if action == "merge":
        raw = event.get("parts")
        if not isinstance(raw, list):
            raise InvalidInputError("the merge step needs 'parts': the Map state's list of restored parts")
        return dump_job(merge(services, job, [parse_record(RestorePart, item, "parts") for item in raw]))
    return dump_job(restore_redis(services, job, deadline))
