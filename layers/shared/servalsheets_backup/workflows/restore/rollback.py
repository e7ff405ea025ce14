"""Undo a failed restore: the target goes back to its safety backup."""

from __future__ import annotations

from typing import TYPE_CHECKING

from servalsheets_backup.components import config as component_config
from servalsheets_backup.components import tokens as component_tokens
from servalsheets_backup.errors import RestoreVerificationError
from servalsheets_backup.services import Services
from servalsheets_backup.workflows.restore.apply import prefixed, restore_redis_from
from servalsheets_backup.workflows.restore.common import (
    flush_target,
    job_manifest,
    read_job_object,
    target_services,
)

if TYPE_CHECKING:
    # pydantic loads when a step runs, not when Lambda imports the handler (cold start).
    from servalsheets_backup.workflows.restore.job import (
        RestoreJob,
        SafetyProgress,
        SourceSet,
    )


# -- 7. rollback -----------------------------------------------------------------------------
def rollback(services: Services, job: RestoreJob, deadline: float | None) -> RestoreJob:
    """Put the target back exactly as the safety backup found it (continues for large Redis)."""
    from servalsheets_backup.workflows.restore.job import RollbackProgress

    safety = job.safety
    if safety is None or not safety.done:
        job.rollback = RollbackProgress(done=True, needed=False)
        return job
    target = target_services(services, job)
    if job.rollback is None:
        job.rollback = RollbackProgress()
    state = job.rollback
    if not state.small_done:
        _rollback_small(target, job, safety)
        state.small_done = True
    if "redis" in job.components and job.redis_mode != "logical":
        from servalsheets_backup.components import redis_snapshot_restore as component_redis_restore

        progress = job.redis.model_dump(exclude_none=True) if job.redis else {}
        component_redis_restore.rollback(target, job.target.model_dump(), progress)
    elif "redis" in job.components:
        if "redis" in safety.absent:
            flush_target(target)
            state.redis.done = True
        elif not state.redis.done:
            restore_redis_from(target, job, state.redis, _safety_set(safety), "replace", None, deadline)
            if not state.redis.done:
                return job
    state.done = True
    return job


def _rollback_small(services: Services, job: RestoreJob, safety: SafetyProgress) -> None:
    if "tokens" in job.components:
        if "tokens" in safety.absent:
            from servalsheets_backup.adapters.files import delete_source

            delete_source(component_tokens.token_path(services), services.client("s3"))
        else:
            previous = _safety_object(services, job, safety, "tokens")
            component_tokens.write(services, previous)
    if "config" in job.components:
        before = component_config.ConfigBundle.from_bytes(_safety_object(services, job, safety, "config"))
        restored = prefixed(
            component_config.ConfigBundle.from_bytes(
                read_job_object(services, job, job_manifest(services, job).objects_of("config")[0])
            ),
            job.target.secret_prefix,
        )
        component_config.apply(services, before, restored)
        _delete_new_secrets(services, before, restored)


def _safety_set(safety: SafetyProgress) -> SourceSet:
    if safety.set is None:  # done without a set: nothing was there to back up
        raise RestoreVerificationError("the safety backup recorded no set to roll back to")
    return safety.set


def _safety_object(services: Services, job: RestoreJob, safety: SafetyProgress, component: str) -> bytes:
    source = _safety_set(safety)
    manifest = job_manifest(services, job, source)
    return read_job_object(services, job, manifest.objects_of(component)[0], source)


def _delete_new_secrets(
    services: Services,
    before: component_config.ConfigBundle,
    restored: component_config.ConfigBundle,
) -> None:
    client = services.client("secretsmanager")
    for secret_id in sorted(set(restored.secrets) - set(before.secrets)):
        client.delete_secret(SecretId=secret_id, RecoveryWindowInDays=7)
