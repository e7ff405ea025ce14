"""Step 3: the safety backup (a ``pre-restore`` set of the target as it is) that rollback restores."""

from __future__ import annotations

from typing import TYPE_CHECKING

from servalsheets_backup.components import config as component_config
from servalsheets_backup.components import redis_logical
from servalsheets_backup.components import tokens as component_tokens
from servalsheets_backup.format.manifest import ObjectEntry, new_backup_id
from servalsheets_backup.services import Services
from servalsheets_backup.workflows import backup
from servalsheets_backup.workflows.restore.apply import current_config
from servalsheets_backup.workflows.restore.common import (
    SAFETY_KIND,
    iso_ms,
    job_manifest,
    maybe_fail,
    read_job_object,
    renews_lock,
    target_services,
)

if TYPE_CHECKING:
    # pydantic loads when a step runs, not when Lambda imports the handler (cold start).
    from servalsheets_backup.workflows.restore.job import RestoreJob, SafetyProgress


# -- 4. safety backup ------------------------------------------------------------------------
@renews_lock
def safety_backup(services: Services, job: RestoreJob, deadline: float | None) -> RestoreJob:
    """Capture the target's current state into a ``pre-restore`` set (in steps for large Redis)."""
    from servalsheets_backup.workflows.restore.job import SafetyProgress

    target = target_services(services, job)
    if job.safety is None:
        job.safety = SafetyProgress()
    safety = job.safety
    if safety.pending is None:
        pending = backup.PendingSet(
            SAFETY_KIND,
            new_backup_id(),
            int(services.clock() * 1000),
            job.owner,
            label=f"before restore {job.restore_id}",
            trigger="restore-safety",
        )
        _capture_small(target, job, pending, safety)
        safety.pending = pending.to_dict()
    pending = backup.PendingSet.from_dict(safety.pending)
    if (
        "redis" in job.components
        and job.redis_mode == "logical"
        and "redis" not in safety.absent
        and not pending.redis_done
    ):
        if not pending.redis_chunks and _redis_empty(target):
            safety.absent.append("redis")
        else:
            redis_logical.add_logical_chunk(target, pending, deadline)
            safety.pending = pending.to_dict()
            if not pending.redis_done:
                return job
    _commit_safety(services, job, pending, safety)
    maybe_fail(job, "safety-backup")
    return job


def _capture_small(
    services: Services, job: RestoreJob, pending: backup.PendingSet, safety: SafetyProgress
) -> None:
    if "config" in job.components:
        manifest = job_manifest(services, job)
        bundle = component_config.ConfigBundle.from_bytes(
            read_job_object(services, job, manifest.objects_of("config")[0])
        )
        current = current_config(services, bundle, job.target.secret_prefix)
        entry = services.store.write_object(
            SAFETY_KIND,
            pending.backup_id,
            component_config.OBJECT_NAME,
            "config",
            current.to_bytes(),
            {"secrets": len(current.secrets)},
        )
        pending.add(entry)
        pending.components["config"] = {"secret_count": len(current.secrets)}
    if "tokens" in job.components:
        data = component_tokens.read_current(services)
        if data is None:
            safety.absent.append("tokens")
        else:
            entry = services.store.write_object(
                SAFETY_KIND,
                pending.backup_id,
                component_tokens.OBJECT_NAME,
                "tokens",
                data,
                {"files": 1},
            )
            pending.add(entry)
            pending.components["tokens"] = {"size": len(data)}


def _redis_empty(services: Services) -> bool:
    """True when no primary of the target holds a key."""
    from servalsheets_backup.adapters.redis_cluster import discover_shards

    return discover_shards(services.redis_url()).keys == 0


def _commit_safety(
    services: Services, job: RestoreJob, pending: backup.PendingSet, safety: SafetyProgress
) -> None:
    if not pending.objects:
        safety.done, safety.empty, safety.pending = True, True, None
        return
    for component in ("config", "tokens", "redis"):
        pending.components.setdefault(component, {"absent": True})
    from servalsheets_backup.format.manifest import Manifest as _Manifest

    manifest = _Manifest(
        backup_id=pending.backup_id,
        kind=SAFETY_KIND,
        created_at=iso_ms(pending.created_ms),
        completed_at=iso_ms(int(services.clock() * 1000)),
        environment=services.settings.environment,
        objects=[ObjectEntry.from_dict(raw) for raw in pending.objects],
        source={"restore_id": job.restore_id},
        components=pending.components,
        label=pending.label,
        trigger=pending.trigger,
    )
    ref = services.store.commit(manifest)
    services.store.mark_expirable(SAFETY_KIND)  # older safety sets now age out by lifecycle
    safety.done, safety.empty, safety.pending = True, False, None
    from servalsheets_backup.workflows.restore.job import SourceSet

    safety.backup_id = pending.backup_id
    safety.set = SourceSet(kind=SAFETY_KIND, backup_id=pending.backup_id, manifest_key=ref.manifest_key)
