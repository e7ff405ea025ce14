"""Step 2: verify the whole backup before anything is touched (objects, token key, config, Redis plan)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from servalsheets_backup.components import config as component_config
from servalsheets_backup.components import redis_logical
from servalsheets_backup.components import tokens as component_tokens
from servalsheets_backup.errors import (
    IntegrityError,
    InvalidInputError,
    TokenKeyMismatchError,
)
from servalsheets_backup.format.manifest import Manifest
from servalsheets_backup.services import Services
from servalsheets_backup.workflows.restore.apply import current_config, prefixed
from servalsheets_backup.workflows.restore.common import (
    maybe_fail,
    read_job_object,
    redis_records,
    renews_lock,
    set_ref,
    target_services,
)

if TYPE_CHECKING:
    # pydantic loads when a step runs, not when Lambda imports the handler (cold start).
    from servalsheets_backup.workflows.restore.job import RestoreJob


# -- 2. preflight ----------------------------------------------------------------------------
@renews_lock
def preflight(services: Services, job: RestoreJob) -> RestoreJob:
    """Verify everything before touching anything, then plan what the restore would change."""
    report = services.store.verify_set(set_ref(job.source))
    failure = report.first_failure()
    if failure is not None or report.manifest is None:
        raise IntegrityError(
            failure.name if failure else "manifest",
            failure.check if failure else "manifest",
            (failure.detail if failure else "") + "; nothing was restored",
        )
    manifest = report.manifest
    job.versions = {name: version for name, version in report.versions().items() if version}
    target = target_services(services, job)
    plan: dict[str, Any] = {}
    if "tokens" in job.components:
        plan["tokens"] = _preflight_tokens(target, job, manifest)
    if "config" in job.components:
        plan["config"] = _preflight_config(target, job, manifest)
    if "redis" in job.components:
        plan["redis"] = _preflight_redis(target, job, manifest)
    job.plan = plan
    maybe_fail(job, "preflight")
    return job


def _preflight_tokens(services: Services, job: RestoreJob, manifest: Manifest) -> dict[str, Any]:
    entry = manifest.objects_of("tokens")[0]
    data = read_job_object(services, job, entry)
    live = component_tokens.live_key(services)
    recorded = manifest.components.get("tokens", {}).get("key_fingerprint")
    from servalsheets_backup.format.tokenstore import key_fingerprint

    if recorded and recorded != key_fingerprint(live):
        raise TokenKeyMismatchError(
            "the live ENCRYPTION_KEY/TOKEN_STORE_KEY is not the key this token store backup was made "
            "with (key fingerprints differ): restore the matching key (config) first, or the "
            "application would run unauthenticated; nothing was restored"
        )
    component_tokens.check_with_key(data, live)
    current = component_tokens.read_current(services)
    return {
        "path": component_tokens.token_path(services),
        "exists": current is not None,
        "differs": current != data,
        "key_matches": True,
    }


def _preflight_config(services: Services, job: RestoreJob, manifest: Manifest) -> dict[str, Any]:
    bundle = component_config.ConfigBundle.from_bytes(
        read_job_object(services, job, manifest.objects_of("config")[0])
    )
    current = current_config(services, bundle, job.target.secret_prefix)
    return component_config.plan(current, prefixed(bundle, job.target.secret_prefix))


def _preflight_redis(services: Services, job: RestoreJob, manifest: Manifest) -> dict[str, Any]:
    if job.redis_mode != "logical":
        shards = manifest.objects_of("redis")
        return {
            "mode": "elasticache",
            "rdb_files": len(shards),
            "new_replication_group_id": job.target.new_replication_group_id,
            "new_serverless_cache_name": job.target.new_serverless_cache_name,
        }
    now_ms = int(services.clock() * 1000)
    totals: dict[str, Any] = {
        "would_restore": {},
        "would_restore_total": 0,
        "skipped_expired": 0,
        "skipped_pattern": 0,
        "records": 0,
    }
    matched = dict.fromkeys(job.key_patterns, 0)
    sources: set[str] = set()
    # One pass over the dump gives the plan and, per pattern, the keys it matches.
    for chunk in redis_plans(
        services, job, manifest, now_ms, job.key_patterns or None, count_each_pattern=True
    ):
        for prefix, count in chunk["would_restore"].items():
            totals["would_restore"][prefix] = totals["would_restore"].get(prefix, 0) + count
        for name in ("would_restore_total", "skipped_expired", "skipped_pattern", "records"):
            totals[name] += chunk[name]
        for pattern, count in chunk.get("keys_per_pattern", {}).items():
            matched[pattern] += count
        sources.add(str(chunk.get("source_version", "")))
    for pattern in job.key_patterns:
        if matched[pattern] == 0:
            raise InvalidInputError(
                f"key pattern {pattern!r} matches no key in backup "
                f"{job.source.backup_id}; fix the pattern (Redis glob syntax)"
            )
    from servalsheets_backup.adapters.redis_cluster import discover_shards

    # Every primary of the target takes keys: the slot layout is read now, before anything is written.
    target_plan = discover_shards(services.redis_url())
    client = redis_logical.connect(services.redis_url())
    try:
        totals["target_endpoint"] = redis_logical.redact_url(services.redis_url())
        totals["target_keys_now"] = target_plan.keys
        totals["target_shards"] = len(target_plan.shards)
        totals["target_version"] = str(client.info("server").get("redis_version", ""))
    finally:
        client.close()
    _check_engine(totals["target_version"], manifest, sources)
    return totals


def redis_plans(
    services: Services,
    job: RestoreJob,
    manifest: Manifest,
    now_ms: int,
    patterns: list[str] | None,
    later_ms: int | None = None,
    count_each_pattern: bool = False,
) -> Iterator[dict[str, Any]]:
    """The dry-run plan of every Redis dump chunk of the source set, in order."""
    for entry in manifest.objects_of("redis"):
        yield redis_logical.plan_restore(
            redis_records(services, job, entry),
            now_ms=now_ms,
            patterns=patterns,
            subject=entry.name,
            later_ms=later_ms,
            count_each_pattern=count_each_pattern,
        )


def _check_engine(target_version: str, manifest: Manifest, sources: set[str]) -> None:
    """A DUMP payload only loads on the same or a newer engine (major.minor: 7.2 writes RDB 11)."""
    recorded = str(manifest.components.get("redis", {}).get("source_version", ""))
    for source in {recorded, *sources}:
        if source and target_version and _major_minor(target_version) < _major_minor(source):
            raise InvalidInputError(
                f"the target runs Redis {target_version} but the backup came from {source}: "
                "DUMP payloads do not load on an older engine; restore into a target of the same or "
                "newer version"
            )


def _major_minor(version: str) -> tuple[int, int]:
    major, minor = ([int(part) if part.isdigit() else 0 for part in version.split(".")[:2]] + [0, 0])[:2]
    return major, minor
