"""The changing steps: configuration, token store and Redis written to the target; maintenance."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from servalsheets_backup.components import config as component_config
from servalsheets_backup.components import redis_logical
from servalsheets_backup.components import tokens as component_tokens
from servalsheets_backup.errors import (
    InvalidInputError,
    RestoreVerificationError,
)
from servalsheets_backup.format.manifest import ObjectEntry
from servalsheets_backup.services import Services
from servalsheets_backup.workflows.restore.common import (
    is_isolated,
    job_manifest,
    job_object,
    maybe_fail,
    notify,
    read_job_object,
    redis_records,
    renews_lock,
    target_services,
)

if TYPE_CHECKING:
    # pydantic loads when a step runs, not when Lambda imports the handler (cold start).
    from servalsheets_backup.workflows.restore.job import ChunkCursor, RedisProgress, RestoreJob, SourceSet


# -- config helpers --------------------------------------------------------------------------
def prefixed(bundle: component_config.ConfigBundle, prefix: str | None) -> component_config.ConfigBundle:
    """The bundle with secret and parameter names moved under ``prefix`` (isolated test targets).

    Files are left out under a prefix: a verification run must never overwrite real files.
    """
    if not prefix:
        return bundle
    parameter_prefix = "/" + prefix.strip("/")
    return component_config.ConfigBundle(
        secrets={f"{prefix}{name}": value for name, value in bundle.secrets.items()},
        parameters={f"{parameter_prefix}{name}": value for name, value in bundle.parameters.items()},
        files={},
        parameter_path=f"{parameter_prefix}{bundle.parameter_path}" if bundle.parameter_path else None,
    )


def current_config(
    services: Services, bundle: component_config.ConfigBundle, prefix: str | None
) -> component_config.ConfigBundle:
    """What the target holds now for the names a bundle restores (absent secrets are left out)."""
    from servalsheets_backup.adapters.files import read_source
    from servalsheets_backup.adapters.secrets import parameters_by_path
    from servalsheets_backup.errors import ConfigurationError

    wanted = prefixed(bundle, prefix)
    secrets: dict[str, str] = {}
    for secret_id in wanted.secrets:
        try:
            from servalsheets_backup.adapters.secrets import get_secret_string

            secrets[secret_id] = get_secret_string(services.client("secretsmanager"), secret_id)
        except ConfigurationError:
            continue
    parameters = (
        parameters_by_path(services.client("ssm"), wanted.parameter_path) if wanted.parameter_path else {}
    )
    files = {source: read_source(source, services.client("s3")) for source in wanted.files}
    return component_config.ConfigBundle(secrets, parameters, files, wanted.parameter_path)


def _apply_config(
    services: Services,
    bundle: component_config.ConfigBundle,
    current: component_config.ConfigBundle,
    mode: str,
) -> dict[str, int]:
    _ensure_secrets(services, bundle, current)
    removal_base = current if mode == "replace" else None
    return component_config.apply(services, bundle, removal_base)


def _ensure_secrets(
    services: Services,
    bundle: component_config.ConfigBundle,
    current: component_config.ConfigBundle,
) -> None:
    client = services.client("secretsmanager")
    for secret_id, value in bundle.secrets.items():
        if secret_id not in current.secrets:
            try:
                client.create_secret(Name=secret_id, SecretString=value)
            except Exception as exc:
                from servalsheets_backup.adapters.aws import error_code

                if error_code(exc) not in ("ResourceExistsException",):
                    raise


# -- 3. maintenance window -------------------------------------------------------------------
@renews_lock
def maintenance(services: Services, job: RestoreJob, phase: str) -> RestoreJob:
    """Notify, and scale the ECS service down (``start``) or back up (``end``) when configured."""
    if phase not in ("start", "end"):
        raise InvalidInputError(f"phase must be 'start' or 'end', not {phase[:40]!r}")
    settings = services.settings
    if settings.ecs_cluster and settings.ecs_service and not is_isolated(job):
        ecs = services.client("ecs")
        if phase == "start":
            described = ecs.describe_services(cluster=settings.ecs_cluster, services=[settings.ecs_service])
            job.ecs_previous_desired = int(described["services"][0]["desiredCount"])
            ecs.update_service(cluster=settings.ecs_cluster, service=settings.ecs_service, desiredCount=0)
        elif job.ecs_previous_desired is not None:
            ecs.update_service(
                cluster=settings.ecs_cluster,
                service=settings.ecs_service,
                desiredCount=job.ecs_previous_desired,
            )
    notify(
        services,
        f"ServalSheets restore {job.restore_id}: maintenance window {phase}s",
        f"Restore of {job.source.kind} backup {job.source.backup_id} "
        f"({', '.join(job.components)}, mode {job.mode}) requested by {job.requested_by}: "
        f"maintenance window {phase}s.",
    )
    maybe_fail(job, f"maintenance-{phase}")
    return job


# -- 5. restore each component ---------------------------------------------------------------
@renews_lock
def restore_config(services: Services, job: RestoreJob) -> RestoreJob:
    """Write the backed-up secrets, parameters and files to the target."""
    target = target_services(services, job)
    manifest = job_manifest(services, job)
    bundle = component_config.ConfigBundle.from_bytes(
        read_job_object(services, job, manifest.objects_of("config")[0])
    )
    prefix = job.target.secret_prefix
    wanted = prefixed(bundle, prefix)
    result = _apply_config(target, wanted, current_config(target, bundle, prefix), job.mode)
    record_result(job, "config", result)
    maybe_fail(job, "restore-config")
    return job


@renews_lock
def restore_tokens(services: Services, job: RestoreJob) -> RestoreJob:
    """Write the token store atomically (mode 0600), then re-read it and decrypt with the live key."""
    target = target_services(services, job)
    manifest = job_manifest(services, job)
    data = read_job_object(services, job, manifest.objects_of("tokens")[0])
    component_tokens.write(target, data)
    written = component_tokens.read_current(target)
    if written != data:
        raise RestoreVerificationError("the token store read back differs from what was written")
    component_tokens.check_with_key(written, component_tokens.live_key(target))
    record_result(job, "tokens", {"bytes": len(data), "decrypts_with_live_key": True})
    maybe_fail(job, "restore-tokens")
    return job


@renews_lock
def restore_redis(services: Services, job: RestoreJob, deadline: float | None) -> RestoreJob:
    """RESTORE the dump chunks into the target, continuing across invocations until done."""
    from servalsheets_backup.workflows.restore.job import RedisProgress

    if job.redis is None:
        job.redis = RedisProgress()
    if job.redis_mode != "logical":
        _restore_new_cache(services, job, job.redis)
    else:
        restore_redis_from(
            target_services(services, job), job, job.redis, None, job.mode, job.key_patterns or None, deadline
        )
        if job.redis.done:
            record_result(job, "redis", job.redis.totals)
    if job.redis.done:
        maybe_fail(job, "restore-redis")
    return job


def _restore_new_cache(services: Services, job: RestoreJob, state: RedisProgress) -> None:
    from servalsheets_backup.components import redis_snapshot_restore as component_redis_restore
    from servalsheets_backup.workflows.restore.job import RedisProgress

    manifest = job_manifest(services, job)
    progress = state.model_dump(exclude_none=True)
    result = component_redis_restore.step(
        services,
        job.target.model_dump(),
        job.restore_id,
        progress,
        manifest,
        lambda entry: job_object(services, job, entry),
    )
    job.redis = RedisProgress.model_validate(progress)
    if result is not None:
        record_result(job, "redis", result)


def record_result(job: RestoreJob, component: str, result: dict[str, Any]) -> None:
    """Keep what a component's restore did, for the finish summary and the audit record."""
    job.results = {**(job.results or {}), component: result}


def restore_redis_from(
    services: Services,
    job: RestoreJob,
    cursor: ChunkCursor,
    source: SourceSet | None,
    mode: str,
    patterns: list[str] | None,
    deadline: float | None,
) -> None:
    """RESTORE one set's dump chunks (the job's source, or ``source``) into ``services``' Redis,
    every primary of it, resumable through ``cursor``."""
    chunks = job_manifest(services, job, source).objects_of("redis")
    if mode == "replace" and not cursor.flushed:
        # only ever reached after the safety backup has been committed
        redis_logical.flush_every_primary(services.redis_url())
        cursor.flushed = True
    restore_chunks(services, job, cursor, chunks, source, mode, patterns, deadline)


def restore_chunks(
    services: Services,
    job: RestoreJob,
    cursor: ChunkCursor,
    chunks: list[ObjectEntry],
    source: SourceSet | None,
    mode: str,
    patterns: list[str] | None,
    deadline: float | None,
) -> None:
    """RESTORE ``chunks`` from ``cursor`` on, each key into the primary owning its slot; ``cursor.done``
    once the last is complete."""
    with redis_logical.ClusterTargets(services.redis_url()) as cluster:
        while cursor.chunk < len(chunks):
            entry = chunks[cursor.chunk]
            result = redis_logical.restore_records(
                cluster.targets,
                redis_records(services, job, entry, source),
                now_ms=int(services.clock() * 1000),
                mode=mode,
                patterns=patterns,
                skip_records=cursor.records,
                deadline=deadline,
                subject=entry.name,
            )
            add_totals(cursor.totals, result.as_dict())
            if not result.complete:
                cursor.records = result.records_processed
                return
            cursor.chunk += 1
            cursor.records = 0
    cursor.done = True


def add_totals(totals: dict[str, Any], result: dict[str, Any]) -> None:
    """Add one restore's counts (``RestoreResult.as_dict`` or earlier totals) into ``totals``."""
    for name in ("restored", "skipped_expired", "skipped_pattern", "kept_existing"):
        totals[name] = totals.get(name, 0) + int(result[name])
    prefixes = totals.setdefault("prefix_counts", {})
    for prefix, count in result["prefix_counts"].items():
        prefixes[prefix] = prefixes.get(prefix, 0) + count
