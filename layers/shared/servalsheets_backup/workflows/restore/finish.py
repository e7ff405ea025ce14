"""The last state: release the lock, write the audit record and metrics, clean the verification target."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from servalsheets_backup.components import config as component_config
from servalsheets_backup.services import Services
from servalsheets_backup.store.audit import write_audit
from servalsheets_backup.workflows.freshness import VERIFICATION_MARKER
from servalsheets_backup.workflows.restore.apply import prefixed
from servalsheets_backup.workflows.restore.common import (
    flush_target,
    job_manifest,
    notify,
    read_job_object,
    target_services,
)

if TYPE_CHECKING:
    # pydantic loads when a step runs, not when Lambda imports the handler (cold start).
    from servalsheets_backup.workflows.restore.job import RestoreJob


# -- 8. finish -------------------------------------------------------------------------------
def finish(services: Services, job: RestoreJob, outcome: str, error: str | None = None) -> dict[str, Any]:
    """Release the lock, emit metrics and the audit record, notify, clean up a verification run."""
    duration = round(services.clock() - job.started_ms / 1000, 3)
    succeeded = outcome in ("succeeded", "planned")
    try:
        if job.verification and outcome != "planned" and job.safety is not None:
            cleanup_verification_target(services, job)
    finally:
        services.state.release(job.lock, job.owner)
    _finish_metrics(services, job, outcome, duration)
    source = job.source.model_dump()
    safety_backup_id = job.safety.backup_id if job.safety else None
    record = {
        "result": outcome,
        "source": source,
        "components": job.components,
        "mode": job.mode,
        "dry_run": job.dry_run,
        "verification": job.verification,
        "requested_by": job.requested_by,
        "reason": job.reason,
        "duration_seconds": duration,
        "error": (error or "")[:500],
        "safety_backup_id": safety_backup_id,
        "checks": job.checks or [],
    }
    write_audit(
        services.store.s3,
        services.settings.bucket,
        services.settings.kms_key_id,
        "restore",
        job.restore_id,
        record,
    )
    if outcome != "planned":
        notify(
            services,
            f"ServalSheets restore {job.restore_id}: {outcome}",
            f"Restore {job.restore_id} {outcome} after {duration:.0f}s."
            + (f" Cause: {error}" if error else ""),
        )
    summary = {
        "restore_id": job.restore_id,
        "outcome": outcome,
        "duration_seconds": duration,
        "backup": source,
        "backup_age_seconds": job.backup_age_seconds,
        "checks": job.checks or [],
        "plan": job.plan or {},
        "results": job.results or {},
        "safety_backup_id": safety_backup_id,
    }
    if not succeeded:
        summary["error"] = error
    return summary


def _finish_metrics(services: Services, job: RestoreJob, outcome: str, duration: float) -> None:
    if outcome == "planned":
        return
    if outcome == "succeeded":
        services.metrics.put("RestoreSucceeded", "Count", 1, "restore")
        services.metrics.put("RestoreDurationSeconds", "Seconds", duration, "restore")
    else:
        services.metrics.put("RestoreFailed", "Count", 1, "restore")
    if job.verification:
        if outcome == "succeeded":
            services.metrics.put("VerificationSucceeded", "Count", 1, "verification")
            services.state.put_marker(VERIFICATION_MARKER, services.clock())
        else:
            services.metrics.put("VerificationFailed", "Count", 1, "verification")


def cleanup_verification_target(services: Services, job: RestoreJob) -> None:
    """Remove what a weekly verification restored into its isolated target."""
    target = target_services(services, job)
    if "redis" in job.components and job.redis_mode == "logical":
        flush_target(target)
    if "tokens" in job.components and job.target.token_store_path:
        from servalsheets_backup.adapters.files import delete_source

        delete_source(job.target.token_store_path, services.client("s3"))
    prefix = job.target.secret_prefix
    if "config" in job.components and prefix:
        manifest = job_manifest(services, job)
        bundle = prefixed(
            component_config.ConfigBundle.from_bytes(
                read_job_object(services, job, manifest.objects_of("config")[0])
            ),
            prefix,
        )
        client = services.client("secretsmanager")
        for secret_id in bundle.secrets:
            client.delete_secret(SecretId=secret_id, ForceDeleteWithoutRecovery=True)
        from servalsheets_backup.adapters.secrets import delete_parameter

        for name in bundle.parameters:
            delete_parameter(services.client("ssm"), name)
