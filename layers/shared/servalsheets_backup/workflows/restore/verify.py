"""Step 6: check the restored target against the backup; RestoreVerificationError names every failed check."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from servalsheets_backup.adapters.app_health import Check, check_application
from servalsheets_backup.components import config as component_config
from servalsheets_backup.components import redis_logical
from servalsheets_backup.components import tokens as component_tokens
from servalsheets_backup.errors import (
    ApplicationNotReadyError,
    BackupSystemError,
    RestoreVerificationError,
)
from servalsheets_backup.format.manifest import Manifest
from servalsheets_backup.services import Services
from servalsheets_backup.workflows.restore.apply import current_config, prefixed
from servalsheets_backup.workflows.restore.common import (
    COUNT_WINDOW_MS,
    is_isolated,
    job_manifest,
    maybe_fail,
    read_job_object,
    redis_records,
    renews_lock,
    set_ref,
    target_services,
)
from servalsheets_backup.workflows.restore.preflight import redis_plans

if TYPE_CHECKING:
    # pydantic loads when a step runs, not when Lambda imports the handler (cold start).
    from servalsheets_backup.workflows.restore.job import RestoreJob


# -- 6. verify the restored deployment -------------------------------------------------------
@renews_lock
def verify(services: Services, job: RestoreJob) -> RestoreJob:
    """Check the target against the backup; RestoreVerificationError names every failed check."""
    target = target_services(services, job)
    manifest = job_manifest(services, job)
    checks: list[Check] = []
    if "redis" in job.components and job.redis_mode == "logical":
        checks += _verify_redis(target, job, manifest)
    elif "redis" in job.components:
        from servalsheets_backup.components import redis_snapshot_restore as component_redis_restore

        checks += component_redis_restore.verify(target, job.target.model_dump())
    if "tokens" in job.components:
        checks.append(_verify_tokens(target))
    if "config" in job.components:
        checks += _verify_config(target, job, manifest)
    app_checks: list[Check] = []
    if services.settings.app_url and not is_isolated(job):
        app_checks = check_application(
            services.settings.app_url, services.settings.app_host, services.settings.oauth_issuer
        )
    job.checks = [check.as_dict() for check in checks + app_checks]
    failed = [check for check in checks if not check.ok]
    maybe_fail(job, "verify")
    if failed:
        raise RestoreVerificationError(
            "restore verification failed: " + "; ".join(f"{c.name} ({c.detail})" for c in failed)
        )
    unready = [check for check in app_checks if not check.ok]
    if unready:
        # The data is right; the application may still be starting after the scale-up.
        raise ApplicationNotReadyError(
            "the application is not healthy yet: " + "; ".join(f"{c.name} ({c.detail})" for c in unready)
        )
    return job


def _verify_redis(services: Services, job: RestoreJob, manifest: Manifest) -> list[Check]:
    """PING every primary, count keys per prefix over all of them, and sample values on their owners."""
    with redis_logical.ClusterTargets(services.redis_url()) as cluster:
        client = cluster.targets
        shards = cluster.plan.shards
        pings = [bool(node.ping()) for node in client.clients]
        checks = [Check("redis PING", all(pings), f"{sum(pings)}/{len(pings)} primaries answered")]
        # Keys keep expiring after the restore: the count must lie between the keys of the backup
        # still alive now and those still alive once the count has finished. One pass over the
        # dump gives both, for a count that ends within COUNT_WINDOW_MS; a slower count needs
        # the lower bound again, for when it ended.
        started_ms = int(services.clock() * 1000)
        at_most, at_least = _alive_by_prefix(
            services, job, manifest, started_ms, started_ms + COUNT_WINDOW_MS
        )
        actual = redis_logical.count_keys_by_prefix(client)
        ended_ms = int(services.clock() * 1000)
        if ended_ms > started_ms + COUNT_WINDOW_MS:
            at_least = _alive_by_prefix(services, job, manifest, ended_ms, ended_ms)[0]
        exact = job.mode == "replace"
        differing = sorted(
            prefix
            for prefix in set(at_most) | set(actual)
            if actual.get(prefix, 0) < at_least.get(prefix, 0)
            or (exact and actual.get(prefix, 0) > at_most.get(prefix, 0))
        )
        detail = (
            "every prefix as expected"
            if not differing
            else f"{len(differing)} prefixes differ: {differing[:5]}"
        )
        if len(shards) > 1:
            sizes = [int(node.dbsize()) for node in client.clients]
            detail += "; keys per shard: " + ", ".join(
                f"{shard.address}={size}" for shard, size in zip(shards, sizes, strict=True)
            )
        checks.append(Check("redis key counts per prefix", not differing, detail))
        if job.mode != "missing-only":
            checks.append(_sample_check(services, job, manifest, client))
        return checks


def _alive_by_prefix(
    services: Services, job: RestoreJob, manifest: Manifest, at_ms: int, later_ms: int
) -> tuple[dict[str, int], dict[str, int]]:
    """Keys of the backup (matching the patterns) alive at ``at_ms`` and at ``later_ms``, per prefix."""
    now: dict[str, int] = {}
    later: dict[str, int] = {}
    for plan in redis_plans(services, job, manifest, at_ms, job.key_patterns or None, later_ms=later_ms):
        for counts, found in ((now, plan["would_restore"]), (later, plan["still_alive_later"])):
            for prefix, count in found.items():
                counts[prefix] = counts.get(prefix, 0) + count
    return now, later


def _sample_check(services: Services, job: RestoreJob, manifest: Manifest, client: Any) -> Check:
    now_ms = int(services.clock() * 1000)
    sampled = matched = 0
    for entry in manifest.objects_of("redis"):
        report = redis_logical.compare_sample(
            redis_records(services, job, entry),
            client,
            now_ms=now_ms,
            sample_size=100,
            patterns=job.key_patterns or None,
            subject=entry.name,
        )
        sampled += report.sampled
        matched += report.matched
    return Check(
        "redis sample DUMP and TTL",
        sampled == matched,
        f"{matched}/{sampled} sampled keys identical",
    )


def _verify_tokens(services: Services) -> Check:
    data = component_tokens.read_current(services)
    if data is None:
        return Check("token store decrypts with live key", False, "token store file missing")
    try:
        component_tokens.check_with_key(data, component_tokens.live_key(services))
    except BackupSystemError as exc:
        return Check("token store decrypts with live key", False, type(exc).__name__)
    return Check("token store decrypts with live key", True)


def _verify_config(services: Services, job: RestoreJob, manifest: Manifest) -> list[Check]:
    entry = manifest.objects_of("config")[0]
    bundle = component_config.ConfigBundle.from_bytes(read_job_object(services, job, entry))
    prefix = job.target.secret_prefix
    current = current_config(services, bundle, prefix)
    key = services.store.fingerprint_key_for(set_ref(job.source), entry)
    expected = component_config.fingerprints(prefixed(bundle, prefix) if prefix else bundle, key)
    if not prefix:
        recorded = manifest.components.get("config", {}).get("fingerprints", {})
        if recorded and recorded != expected:
            return [
                Check(
                    "config fingerprints match manifest",
                    False,
                    "backup bundle differs from its manifest",
                )
            ]
    actual = component_config.fingerprints(current, key)
    differing = sorted(name for name, fp in expected.items() if actual.get(name) != fp)
    return [
        Check(
            "config values match backup fingerprints",
            not differing,
            f"{len(expected) - len(differing)}/{len(expected)} match"
            + (f"; differ: {differing[:5]}" if differing else ""),
        )
    ]
