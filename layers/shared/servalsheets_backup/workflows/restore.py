"""Restore operations, one function per state of the restore state machine.

The job (a JSON dict carried in the state data) records what was resolved, verified and done,
so each step can run in a separate Lambda invocation and a failure can be rolled back:
- nothing is written to a target before :func:`preflight` has fully verified the backup;
- :func:`safety_backup` captures the target's current state first (a ``pre-restore`` set);
- :func:`rollback` restores that state (mode ``replace``) when a later step fails.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from servalsheets_backup.adapters.app_health import Check, check_application
from servalsheets_backup.components import config as component_config
from servalsheets_backup.components import redis_logical
from servalsheets_backup.components import tokens as component_tokens
from servalsheets_backup.errors import (
    ApplicationNotReadyError,
    BackupNotFoundError,
    BackupSystemError,
    IntegrityError,
    InvalidInputError,
    RestoreVerificationError,
    TokenKeyMismatchError,
)
from servalsheets_backup.format.manifest import Manifest, ObjectEntry, new_backup_id
from servalsheets_backup.services import Services
from servalsheets_backup.store.audit import write_audit
from servalsheets_backup.store.sets import SetRef
from servalsheets_backup.workflows import backup
from servalsheets_backup.workflows.freshness import VERIFICATION_MARKER

if TYPE_CHECKING:
    from servalsheets_backup.workflows.requests import RestoreRequest

logger = logging.getLogger(__name__)

FAULT_INJECTION_ENV = "ALLOW_FAULT_INJECTION"
LITERAL_REDIS_URL_ENV = "ALLOW_LITERAL_REDIS_URL"
SAFETY_KIND = "pre-restore"
APP_READY_ATTEMPTS = 20  # with the interval below: up to five minutes for the service to come up
APP_READY_INTERVAL_SECONDS = 15
ISOLATING_TARGET_FIELDS = ("redis_url", "redis_url_secret_id", "token_store_path", "secret_prefix")
COUNT_WINDOW_MS = 10_000  # how long counting the keys of a restored target may take


def renews_lock(step: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    """Extend the run's restore lock before ``step`` (re-entrant for its owner).

    A long restore then keeps its exclusion however long it runs, while a run that died still
    releases the target once the lock's expiry passes.
    """

    @functools.wraps(step)
    def renewed(services: Services, job: dict[str, Any], *args: Any) -> dict[str, Any]:
        services.state.acquire(job["lock"], job["owner"])
        return step(services, job, *args)

    return renewed


class InjectedFault(BackupSystemError):
    """A failure injected on purpose (drill scenarios and tests only)."""


# -- services for the target ---------------------------------------------------------------
def target_services(services: Services, job: dict[str, Any]) -> Services:
    """Services whose settings point at the restore target (overrides from the request)."""
    target = job["target"]
    changes: dict[str, Any] = {}
    if target.get("redis_url"):
        changes["redis_url"] = target["redis_url"]
    if target.get("redis_url_secret_id"):
        changes.update(redis_url=None, redis_url_secret_id=target["redis_url_secret_id"])
    if target.get("token_store_path"):
        changes["token_store_path"] = target["token_store_path"]
    if not changes:
        return services
    return dataclasses.replace(services, settings=dataclasses.replace(services.settings, **changes))


def _ref(job: dict[str, Any], key: str = "source") -> SetRef:
    source = job[key]
    return SetRef(source["kind"], source["backup_id"], source["manifest_key"])


def _manifest(services: Services, job: dict[str, Any], key: str = "source") -> Manifest:
    return services.store.load_manifest(_ref(job, key))


def maybe_fail(job: dict[str, Any], step: str) -> None:
    """Raise InjectedFault after ``step`` when the request asked for it (tests and drill only)."""
    if job.get("fail_after") == step:
        raise InjectedFault(f"fault injected after step {step!r} (fail_after)")


# -- 1. prepare ------------------------------------------------------------------------------
def prepare(services: Services, event: dict[str, Any], owner: str) -> dict[str, Any]:
    """Validate the request, resolve the backup set, and take the target's restore lock."""
    raw = event.get("request", event)
    raw = (
        {k: v for k, v in raw.items() if k not in ("execution_id", "job", "error")}
        if isinstance(raw, dict)
        else raw
    )
    from servalsheets_backup.workflows.requests import (  # pydantic is loaded only where input is validated
        RestoreRequest,
        parse,
    )

    request: RestoreRequest = parse(RestoreRequest, raw, "restore input")
    if request.fail_after and os.environ.get(FAULT_INJECTION_ENV) != "true":
        raise InvalidInputError("fail_after is a test hook; it is refused unless ALLOW_FAULT_INJECTION=true")
    if request.target.redis_url and os.environ.get(LITERAL_REDIS_URL_ENV) != "true":
        raise InvalidInputError(
            "target.redis_url is only accepted where ALLOW_LITERAL_REDIS_URL=true (local drills and tests): "
            "on AWS pass target.redis_url_secret_id, a secret the restore functions are allowed to read, "
            "so a restore cannot be pointed at an arbitrary endpoint"
        )
    if request.target.redis_url and "@" in request.target.redis_url:
        raise InvalidInputError(
            "target.redis_url must not carry credentials (they would show in the execution history): "
            "store the URL in Secrets Manager and pass target.redis_url_secret_id"
        )
    ref = resolve_source(services, request)
    manifest = services.store.load_manifest(ref)
    missing = [c for c in request.kinds if not _holds(manifest, c)]
    if missing:
        raise InvalidInputError(
            f"backup {ref.backup_id} ({ref.kind}) holds no {', '.join(missing)}: choose kinds it holds "
            f"({', '.join(sorted(manifest.components))}) or another backup"
        )
    target = request.target.model_dump()
    logical = not manifest.objects_of("redis") or _is_logical(manifest)
    if "redis" in request.kinds and not logical and not request.target.new_cache_name:
        raise InvalidInputError(
            f"backup {ref.backup_id} holds ElastiCache RDB exports: set target.new_replication_group_id "
            "or target.new_serverless_cache_name to seed a new cache (the running one is never overwritten)"
        )
    if request.verification and not (
        request.target.redis_url_secret_id
        or request.target.secret_prefix
        or request.target.token_store_path
        or request.target.new_cache_name
    ):
        raise InvalidInputError(
            "a verification run must restore into an isolated target (target.redis_url_secret_id, "
            "secret_prefix, token_store_path): it would otherwise overwrite production"
        )
    lock = "restore:" + hashlib.sha256(repr(sorted(target.items())).encode()).hexdigest()[:16]
    services.state.acquire(lock, owner)
    job = {
        "restore_id": new_backup_id(),
        "source": {"kind": ref.kind, "backup_id": ref.backup_id, "manifest_key": ref.manifest_key},
        "components": list(request.kinds),
        "with": {kind: kind in request.kinds for kind in ("config", "tokens", "redis")},
        "mode": request.mode,
        "key_patterns": request.key_patterns,
        "dry_run": request.dry_run,
        "verification": request.verification,
        "requested_by": request.requested_by,
        "reason": request.reason,
        "fail_after": request.fail_after,
        "poll_seconds": request.poll_seconds,
        "target": target,
        "lock": lock,
        "owner": owner,
        "started_ms": int(services.clock() * 1000),
        "backup_age_seconds": round(services.clock() - ref.created_at.timestamp(), 1),
        "redis_mode": "logical" if logical else "elasticache",
    }
    logger.info("restore prepared", extra={"restore_id": job["restore_id"], "backup_id": ref.backup_id})
    return job


def _holds(manifest: Manifest, component: str) -> bool:
    """True when the set has data for ``component`` (a safety set records absent ones too)."""
    summary = manifest.components.get(component)
    if isinstance(summary, dict) and summary.get("absent"):
        return False
    return bool(manifest.objects_of(component)) or (component == "redis" and summary is not None)


def _is_logical(manifest: Manifest) -> bool:
    return any(entry.name.startswith(redis_logical.CHUNK_PREFIX) for entry in manifest.objects_of("redis"))


def resolve_source(services: Services, request: RestoreRequest) -> SetRef:
    """The set to restore from: an id, ``latest``, or ``as_of``, among the kinds that hold the data."""
    store = services.store
    selector: Any = request.backup if isinstance(request.backup, str) else request.backup.model_dump()
    if isinstance(selector, str) and selector != "latest":
        return store.find(selector, request.source_kind)
    if request.source_kind:
        return store.resolve(selector, request.source_kind)
    candidates = [request.kinds[0], "full"] if len(request.kinds) == 1 else ["full"]
    found: list[SetRef] = []
    for kind in candidates:
        try:
            found.append(store.resolve(selector, kind))
        except BackupNotFoundError:
            continue
    if not found:
        raise BackupNotFoundError(
            f"no complete backup holding {', '.join(request.kinds)} matches {selector!r} "
            f"(looked in kinds {', '.join(candidates)}); run `servalsheets-backup list`"
        )
    return max(found, key=lambda ref: (ref.created_at, ref.backup_id))


# -- 2. preflight ----------------------------------------------------------------------------
@renews_lock
def preflight(services: Services, job: dict[str, Any]) -> dict[str, Any]:
    """Verify everything before touching anything, then plan what the restore would change."""
    report = services.store.verify_set(_ref(job))
    failure = report.first_failure()
    if failure is not None or report.manifest is None:
        raise IntegrityError(
            failure.name if failure else "manifest",
            failure.check if failure else "manifest",
            (failure.detail if failure else "") + "; nothing was restored",
        )
    manifest = report.manifest
    job["versions"] = {name: version for name, version in report.versions().items() if version}
    target = target_services(services, job)
    plan: dict[str, Any] = {}
    if "tokens" in job["components"]:
        plan["tokens"] = _preflight_tokens(target, job, manifest)
    if "config" in job["components"]:
        plan["config"] = _preflight_config(target, job, manifest)
    if "redis" in job["components"]:
        plan["redis"] = _preflight_redis(target, job, manifest)
    job["plan"] = plan
    maybe_fail(job, "preflight")
    return job


def _object(
    services: Services, job: dict[str, Any], entry: ObjectEntry, key: str = "source"
) -> Iterator[bytes]:
    version = job.get("versions", {}).get(entry.name) if key == "source" else None
    return services.store.read_object(_ref(job, key), entry, version_id=version)


def _read_all(services: Services, job: dict[str, Any], entry: ObjectEntry, key: str = "source") -> bytes:
    return b"".join(_object(services, job, entry, key))


def _preflight_tokens(services: Services, job: dict[str, Any], manifest: Manifest) -> dict[str, Any]:
    entry = manifest.objects_of("tokens")[0]
    data = _read_all(services, job, entry)
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


def _preflight_config(services: Services, job: dict[str, Any], manifest: Manifest) -> dict[str, Any]:
    bundle = component_config.ConfigBundle.from_bytes(
        _read_all(services, job, manifest.objects_of("config")[0])
    )
    current = current_config(services, bundle, job["target"].get("secret_prefix"))
    return component_config.plan(current, prefixed(bundle, job["target"].get("secret_prefix")))


def _preflight_redis(services: Services, job: dict[str, Any], manifest: Manifest) -> dict[str, Any]:
    if job["redis_mode"] != "logical":
        shards = manifest.objects_of("redis")
        return {
            "mode": "elasticache",
            "rdb_files": len(shards),
            "new_replication_group_id": job["target"].get("new_replication_group_id"),
            "new_serverless_cache_name": job["target"].get("new_serverless_cache_name"),
        }
    now_ms = int(services.clock() * 1000)
    totals: dict[str, Any] = {
        "would_restore": {},
        "would_restore_total": 0,
        "skipped_expired": 0,
        "skipped_pattern": 0,
        "records": 0,
    }
    matched = dict.fromkeys(job["key_patterns"], 0)
    # One pass over the dump gives the plan and, per pattern, the keys it matches.
    for chunk in _plans(
        services, job, manifest, now_ms, job["key_patterns"] or None, count_each_pattern=True
    ):
        for prefix, count in chunk["would_restore"].items():
            totals["would_restore"][prefix] = totals["would_restore"].get(prefix, 0) + count
        for name in ("would_restore_total", "skipped_expired", "skipped_pattern", "records"):
            totals[name] += chunk[name]
        for pattern, count in chunk.get("keys_per_pattern", {}).items():
            matched[pattern] += count
    for pattern in job["key_patterns"]:
        if matched[pattern] == 0:
            raise InvalidInputError(
                f"key pattern {pattern!r} matches no key in backup "
                f"{job['source']['backup_id']}; fix the pattern (Redis glob syntax)"
            )
    client = redis_logical.connect(services.redis_url())
    try:
        totals["target_endpoint"] = redis_logical.redact_url(services.redis_url())
        totals["target_keys_now"] = int(client.dbsize())
        totals["target_version"] = str(client.info("server").get("redis_version", ""))
    finally:
        client.close()
    _check_engine(totals["target_version"], manifest)
    return totals


def _plans(
    services: Services,
    job: dict[str, Any],
    manifest: Manifest,
    now_ms: int,
    patterns: list[str] | None,
    later_ms: int | None = None,
    count_each_pattern: bool = False,
) -> Iterator[dict[str, Any]]:
    """The dry-run plan of every Redis dump chunk of the source set, in order."""
    for entry in manifest.objects_of("redis"):
        yield redis_logical.plan_restore(
            _object(services, job, entry),
            now_ms=now_ms,
            patterns=patterns,
            subject=entry.name,
            later_ms=later_ms,
            count_each_pattern=count_each_pattern,
        )


def _check_engine(target_version: str, manifest: Manifest) -> None:
    """A DUMP payload only loads on the same or a newer engine major version."""
    source = str(manifest.components.get("redis", {}).get("source_version", ""))
    if source and target_version and _major(target_version) < _major(source):
        raise InvalidInputError(
            f"the target runs Redis {target_version} but the backup came from {source}: "
            "DUMP payloads do not load on an older engine; restore into a target of the same or newer version"
        )


def _major(version: str) -> int:
    head = version.split(".", 1)[0]
    return int(head) if head.isdigit() else 0


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
def maintenance(services: Services, job: dict[str, Any], phase: str) -> dict[str, Any]:
    """Notify, and scale the ECS service down (``start``) or back up (``end``) when configured."""
    if phase not in ("start", "end"):
        raise InvalidInputError(f"phase must be 'start' or 'end', not {phase[:40]!r}")
    settings = services.settings
    if settings.ecs_cluster and settings.ecs_service and not is_isolated(job):
        ecs = services.client("ecs")
        if phase == "start":
            described = ecs.describe_services(cluster=settings.ecs_cluster, services=[settings.ecs_service])
            job["ecs_previous_desired"] = int(described["services"][0]["desiredCount"])
            ecs.update_service(cluster=settings.ecs_cluster, service=settings.ecs_service, desiredCount=0)
        elif "ecs_previous_desired" in job:
            ecs.update_service(
                cluster=settings.ecs_cluster,
                service=settings.ecs_service,
                desiredCount=int(job["ecs_previous_desired"]),
            )
    notify(
        services,
        f"ServalSheets restore {job['restore_id']}: maintenance window {phase}s",
        f"Restore of {job['source']['kind']} backup {job['source']['backup_id']} "
        f"({', '.join(job['components'])}, mode {job['mode']}) requested by {job['requested_by']}: "
        f"maintenance window {phase}s.",
    )
    maybe_fail(job, f"maintenance-{phase}")
    return job


def is_isolated(job: dict[str, Any]) -> bool:
    """True when the restore goes to a target other than production (or is a verification run).

    Such restores never scale the production service down and never judge production's health.
    """
    target = job["target"]
    if job.get("verification") or any(target.get(name) for name in ISOLATING_TARGET_FIELDS):
        return True
    # A new cache is production only once the REDIS_URL secret is switched to it.
    new_cache = target.get("new_replication_group_id") or target.get("new_serverless_cache_name")
    return bool(new_cache) and not target.get("update_redis_url_secret")


def notify(services: Services, subject: str, message: str) -> None:
    """Publish to the notification topic when one is configured."""
    if services.settings.notify_topic_arn:
        services.client("sns").publish(
            TopicArn=services.settings.notify_topic_arn, Subject=subject[:100], Message=message
        )


# -- 4. safety backup ------------------------------------------------------------------------
@renews_lock
def safety_backup(services: Services, job: dict[str, Any], deadline: float | None) -> dict[str, Any]:
    """Capture the target's current state into a ``pre-restore`` set (in steps for large Redis)."""
    target = target_services(services, job)
    safety = job.setdefault("safety", {"absent": [], "done": False})
    if "pending" not in safety:
        pending = backup.PendingSet(
            SAFETY_KIND,
            new_backup_id(),
            int(services.clock() * 1000),
            job["owner"],
            label=f"before restore {job['restore_id']}",
            trigger="restore-safety",
        )
        _capture_small(target, job, pending, safety)
        safety["pending"] = pending.to_dict()
    pending = backup.PendingSet.from_dict(safety["pending"])
    if (
        "redis" in job["components"]
        and job["redis_mode"] == "logical"
        and "redis" not in safety["absent"]
        and not pending.redis_done
    ):
        if not pending.redis_chunks and _redis_empty(target):
            safety["absent"].append("redis")
        else:
            redis_logical.add_logical_chunk(target, pending, deadline)
            safety["pending"] = pending.to_dict()
            if not pending.redis_done:
                return job
    _commit_safety(services, job, pending, safety)
    maybe_fail(job, "safety-backup")
    return job


def _capture_small(
    services: Services, job: dict[str, Any], pending: backup.PendingSet, safety: dict[str, Any]
) -> None:
    if "config" in job["components"]:
        manifest = _manifest(services, job)
        bundle = component_config.ConfigBundle.from_bytes(
            _read_all(services, job, manifest.objects_of("config")[0])
        )
        current = current_config(services, bundle, job["target"].get("secret_prefix"))
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
    if "tokens" in job["components"]:
        data = component_tokens.read_current(services)
        if data is None:
            safety["absent"].append("tokens")
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
    client = redis_logical.connect(services.redis_url())
    try:
        return int(client.dbsize()) == 0
    finally:
        client.close()


def _commit_safety(
    services: Services, job: dict[str, Any], pending: backup.PendingSet, safety: dict[str, Any]
) -> None:
    if not pending.objects:
        safety.update(done=True, empty=True)
        safety.pop("pending", None)
        return
    for component in ("config", "tokens", "redis"):
        pending.components.setdefault(component, {"absent": True})
    from servalsheets_backup.format.manifest import Manifest as _Manifest

    manifest = _Manifest(
        backup_id=pending.backup_id,
        kind=SAFETY_KIND,
        created_at=_iso_ms(pending.created_ms),
        completed_at=_iso_ms(int(services.clock() * 1000)),
        environment=services.settings.environment,
        objects=[ObjectEntry.from_dict(raw) for raw in pending.objects],
        source={"restore_id": job["restore_id"]},
        components=pending.components,
        label=pending.label,
        trigger=pending.trigger,
    )
    ref = services.store.commit(manifest)
    services.store.mark_expirable(SAFETY_KIND)  # older safety sets now age out by lifecycle
    safety.update(
        done=True,
        empty=False,
        backup_id=pending.backup_id,
        set={"kind": SAFETY_KIND, "backup_id": pending.backup_id, "manifest_key": ref.manifest_key},
    )
    safety.pop("pending", None)


def _iso_ms(ms: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# -- 5. restore each component ---------------------------------------------------------------
@renews_lock
def restore_config(services: Services, job: dict[str, Any]) -> dict[str, Any]:
    """Write the backed-up secrets, parameters and files to the target."""
    target = target_services(services, job)
    manifest = _manifest(services, job)
    bundle = component_config.ConfigBundle.from_bytes(
        _read_all(services, job, manifest.objects_of("config")[0])
    )
    prefix = job["target"].get("secret_prefix")
    wanted = prefixed(bundle, prefix)
    result = _apply_config(target, wanted, current_config(target, bundle, prefix), job["mode"])
    job.setdefault("results", {})["config"] = result
    maybe_fail(job, "restore-config")
    return job


@renews_lock
def restore_tokens(services: Services, job: dict[str, Any]) -> dict[str, Any]:
    """Write the token store atomically (mode 0600), then re-read it and decrypt with the live key."""
    target = target_services(services, job)
    manifest = _manifest(services, job)
    data = _read_all(services, job, manifest.objects_of("tokens")[0])
    component_tokens.write(target, data)
    written = component_tokens.read_current(target)
    if written != data:
        raise RestoreVerificationError("the token store read back differs from what was written")
    component_tokens.check_with_key(written, component_tokens.live_key(target))
    job.setdefault("results", {})["tokens"] = {"bytes": len(data), "decrypts_with_live_key": True}
    maybe_fail(job, "restore-tokens")
    return job


@renews_lock
def restore_redis(services: Services, job: dict[str, Any], deadline: float | None) -> dict[str, Any]:
    """RESTORE the dump chunks into the target, continuing across invocations until done."""
    if job["redis_mode"] != "logical":
        from servalsheets_backup.components import redis_snapshot_restore as component_redis_restore

        job.setdefault("redis", {"done": False, "waiting": False})
        manifest = _manifest(services, job)
        component_redis_restore.step(services, job, manifest, lambda entry: _object(services, job, entry))
        if job["redis"]["done"]:
            maybe_fail(job, "restore-redis")
        return job
    state = job.setdefault(
        "redis", {"chunk": 0, "records": 0, "flushed": False, "done": False, "waiting": False, "totals": {}}
    )
    _restore_redis_from(
        target_services(services, job),
        job,
        state,
        "source",
        job["mode"],
        job["key_patterns"] or None,
        deadline,
    )
    if state["done"]:
        job.setdefault("results", {})["redis"] = state["totals"]
        maybe_fail(job, "restore-redis")
    return job


def _restore_redis_from(
    services: Services,
    job: dict[str, Any],
    state: dict[str, Any],
    source_key: str,
    mode: str,
    patterns: list[str] | None,
    deadline: float | None,
) -> None:
    manifest = services.store.load_manifest(_ref(job, source_key))
    chunks = manifest.objects_of("redis")
    client = redis_logical.connect(services.redis_url())
    try:
        if mode == "replace" and not state["flushed"]:
            client.flushdb()  # only ever reached after the safety backup has been committed
            state["flushed"] = True
        while state["chunk"] < len(chunks):
            entry = chunks[state["chunk"]]
            result = redis_logical.restore_records(
                client,
                _object(services, job, entry, source_key),
                now_ms=int(services.clock() * 1000),
                mode=mode,
                patterns=patterns,
                skip_records=state["records"],
                deadline=deadline,
                subject=entry.name,
            )
            _add_totals(state["totals"], result.as_dict())
            if not result.complete:
                state["records"] = result.records_processed
                return
            state.update(chunk=state["chunk"] + 1, records=0)
        state["done"] = True
    finally:
        client.close()


def _add_totals(totals: dict[str, Any], result: dict[str, Any]) -> None:
    for name in ("restored", "skipped_expired", "skipped_pattern", "kept_existing"):
        totals[name] = totals.get(name, 0) + int(result[name])
    prefixes = totals.setdefault("prefix_counts", {})
    for prefix, count in result["prefix_counts"].items():
        prefixes[prefix] = prefixes.get(prefix, 0) + count


# -- 6. verify the restored deployment -------------------------------------------------------
@renews_lock
def verify(services: Services, job: dict[str, Any]) -> dict[str, Any]:
    """Check the target against the backup; RestoreVerificationError names every failed check."""
    target = target_services(services, job)
    manifest = _manifest(services, job)
    checks: list[Check] = []
    if "redis" in job["components"] and job["redis_mode"] == "logical":
        checks += _verify_redis(target, job, manifest)
    elif "redis" in job["components"]:
        from servalsheets_backup.components import redis_snapshot_restore as component_redis_restore

        checks += component_redis_restore.verify(target, job)
    if "tokens" in job["components"]:
        checks.append(_verify_tokens(target))
    if "config" in job["components"]:
        checks += _verify_config(target, job, manifest)
    app_checks: list[Check] = []
    if services.settings.app_url and not is_isolated(job):
        app_checks = check_application(
            services.settings.app_url, services.settings.app_host, services.settings.oauth_issuer
        )
    job["checks"] = [check.as_dict() for check in checks + app_checks]
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


def _verify_redis(services: Services, job: dict[str, Any], manifest: Manifest) -> list[Check]:
    client = redis_logical.connect(services.redis_url())
    try:
        checks = [Check("redis PING", bool(client.ping()))]
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
        exact = job["mode"] == "replace"
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
        checks.append(Check("redis key counts per prefix", not differing, detail))
        if job["mode"] != "missing-only":
            checks.append(_sample_check(services, job, manifest, client))
        return checks
    finally:
        client.close()


def _alive_by_prefix(
    services: Services, job: dict[str, Any], manifest: Manifest, at_ms: int, later_ms: int
) -> tuple[dict[str, int], dict[str, int]]:
    """Keys of the backup (matching the patterns) alive at ``at_ms`` and at ``later_ms``, per prefix."""
    now: dict[str, int] = {}
    later: dict[str, int] = {}
    for plan in _plans(services, job, manifest, at_ms, job["key_patterns"] or None, later_ms=later_ms):
        for counts, found in ((now, plan["would_restore"]), (later, plan["still_alive_later"])):
            for prefix, count in found.items():
                counts[prefix] = counts.get(prefix, 0) + count
    return now, later


def _sample_check(services: Services, job: dict[str, Any], manifest: Manifest, client: Any) -> Check:
    now_ms = int(services.clock() * 1000)
    sampled = matched = 0
    for entry in manifest.objects_of("redis"):
        report = redis_logical.compare_sample(
            _object(services, job, entry),
            client,
            now_ms=now_ms,
            sample_size=100,
            patterns=job["key_patterns"] or None,
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


def _verify_config(services: Services, job: dict[str, Any], manifest: Manifest) -> list[Check]:
    entry = manifest.objects_of("config")[0]
    bundle = component_config.ConfigBundle.from_bytes(_read_all(services, job, entry))
    prefix = job["target"].get("secret_prefix")
    current = current_config(services, bundle, prefix)
    key = services.store.fingerprint_key_for(_ref(job), entry)
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


# -- 7. rollback -----------------------------------------------------------------------------
def rollback(services: Services, job: dict[str, Any], deadline: float | None) -> dict[str, Any]:
    """Put the target back exactly as the safety backup found it (continues for large Redis)."""
    safety = job.get("safety") or {}
    if not safety.get("done"):
        job["rollback"] = {"done": True, "needed": False}
        return job
    target = target_services(services, job)
    state = job.setdefault(
        "rollback",
        {
            "done": False,
            "needed": True,
            "small_done": False,
            "redis": {"chunk": 0, "records": 0, "flushed": False, "done": False, "totals": {}},
        },
    )
    if not state["small_done"]:
        _rollback_small(target, job, safety)
        state["small_done"] = True
    if "redis" in job["components"] and job["redis_mode"] != "logical":
        from servalsheets_backup.components import redis_snapshot_restore as component_redis_restore

        component_redis_restore.rollback(target, job)
    elif "redis" in job["components"]:
        if "redis" in safety["absent"]:
            _flush(target)
            state["redis"]["done"] = True
        elif not state["redis"]["done"]:
            job["safety_set"] = safety["set"]
            _restore_redis_from(target, job, state["redis"], "safety_set", "replace", None, deadline)
            if not state["redis"]["done"]:
                return job
    state["done"] = True
    return job


def _rollback_small(services: Services, job: dict[str, Any], safety: dict[str, Any]) -> None:
    if "tokens" in job["components"]:
        if "tokens" in safety["absent"]:
            from servalsheets_backup.adapters.files import delete_source

            delete_source(component_tokens.token_path(services), services.client("s3"))
        else:
            previous = _safety_object(services, job, safety, "tokens")
            component_tokens.write(services, previous)
    if "config" in job["components"]:
        before = component_config.ConfigBundle.from_bytes(_safety_object(services, job, safety, "config"))
        restored = prefixed(
            component_config.ConfigBundle.from_bytes(
                _read_all(services, job, _manifest(services, job).objects_of("config")[0])
            ),
            job["target"].get("secret_prefix"),
        )
        component_config.apply(services, before, restored)
        _delete_new_secrets(services, before, restored)


def _safety_object(services: Services, job: dict[str, Any], safety: dict[str, Any], component: str) -> bytes:
    job["safety_set"] = safety["set"]
    manifest = _manifest(services, job, "safety_set")
    return _read_all(services, job, manifest.objects_of(component)[0], "safety_set")


def _delete_new_secrets(
    services: Services,
    before: component_config.ConfigBundle,
    restored: component_config.ConfigBundle,
) -> None:
    client = services.client("secretsmanager")
    for secret_id in sorted(set(restored.secrets) - set(before.secrets)):
        client.delete_secret(SecretId=secret_id, RecoveryWindowInDays=7)


def _flush(services: Services) -> None:
    client = redis_logical.connect(services.redis_url())
    try:
        client.flushdb()
    finally:
        client.close()


# -- 8. finish -------------------------------------------------------------------------------
def finish(services: Services, job: dict[str, Any], outcome: str, error: str | None = None) -> dict[str, Any]:
    """Release the lock, emit metrics and the audit record, notify, clean up a verification run."""
    duration = round(services.clock() - job["started_ms"] / 1000, 3)
    succeeded = outcome in ("succeeded", "planned")
    try:
        if job.get("verification") and outcome != "planned" and job.get("safety") is not None:
            cleanup_verification_target(services, job)
    finally:
        services.state.release(job["lock"], job["owner"])
    _finish_metrics(services, job, outcome, duration)
    record = {
        "result": outcome,
        "source": job["source"],
        "components": job["components"],
        "mode": job["mode"],
        "dry_run": job["dry_run"],
        "verification": job["verification"],
        "requested_by": job["requested_by"],
        "reason": job["reason"],
        "duration_seconds": duration,
        "error": (error or "")[:500],
        "safety_backup_id": (job.get("safety") or {}).get("backup_id"),
        "checks": job.get("checks", []),
    }
    write_audit(
        services.store.s3,
        services.settings.bucket,
        services.settings.kms_key_id,
        "restore",
        job["restore_id"],
        record,
    )
    if outcome != "planned":
        notify(
            services,
            f"ServalSheets restore {job['restore_id']}: {outcome}",
            f"Restore {job['restore_id']} {outcome} after {duration:.0f}s."
            + (f" Cause: {error}" if error else ""),
        )
    summary = {
        "restore_id": job["restore_id"],
        "outcome": outcome,
        "duration_seconds": duration,
        "backup": job["source"],
        "backup_age_seconds": job.get("backup_age_seconds"),
        "checks": job.get("checks", []),
        "plan": job.get("plan", {}),
        "results": job.get("results", {}),
        "safety_backup_id": (job.get("safety") or {}).get("backup_id"),
    }
    if not succeeded:
        summary["error"] = error
    return summary


def _finish_metrics(services: Services, job: dict[str, Any], outcome: str, duration: float) -> None:
    if outcome == "planned":
        return
    if outcome == "succeeded":
        services.metrics.put("RestoreSucceeded", "Count", 1, "restore")
        services.metrics.put("RestoreDurationSeconds", "Seconds", duration, "restore")
    else:
        services.metrics.put("RestoreFailed", "Count", 1, "restore")
    if job.get("verification"):
        if outcome == "succeeded":
            services.metrics.put("VerificationSucceeded", "Count", 1, "verification")
            services.state.put_marker(VERIFICATION_MARKER, services.clock())
        else:
            services.metrics.put("VerificationFailed", "Count", 1, "verification")


def cleanup_verification_target(services: Services, job: dict[str, Any]) -> None:
    """Remove what a weekly verification restored into its isolated target."""
    target = target_services(services, job)
    if "redis" in job["components"] and job["redis_mode"] == "logical":
        _flush(target)
    if "tokens" in job["components"] and job["target"].get("token_store_path"):
        from servalsheets_backup.adapters.files import delete_source

        delete_source(job["target"]["token_store_path"], services.client("s3"))
    prefix = job["target"].get("secret_prefix")
    if "config" in job["components"] and prefix:
        manifest = _manifest(services, job)
        bundle = prefixed(
            component_config.ConfigBundle.from_bytes(
                _read_all(services, job, manifest.objects_of("config")[0])
            ),
            prefix,
        )
        client = services.client("secretsmanager")
        for secret_id in bundle.secrets:
            client.delete_secret(SecretId=secret_id, ForceDeleteWithoutRecovery=True)
        from servalsheets_backup.adapters.secrets import delete_parameter

        for name in bundle.parameters:
            delete_parameter(services.client("ssm"), name)


def elapsed_since(start: float) -> float:
    """Seconds since a time.monotonic() value."""
    return time.monotonic() - start


def job_from(event: Any) -> dict[str, Any]:
    """The ``job`` carried in a restore step's event, or InvalidInputError."""
    job = event.get("job") if isinstance(event, dict) else None
    if not isinstance(job, dict) or "restore_id" not in job:
        raise InvalidInputError("this restore step needs the 'job' returned by prepare_restore")
    wrong = [name for name, kind in _JOB_TYPES.items() if not isinstance(job.get(name), kind)]
    source = job.get("source")
    if isinstance(source, dict) and not all(isinstance(source.get(k), str) for k in _SOURCE_FIELDS):
        wrong.append("source")
    if wrong:
        raise InvalidInputError(
            f"the 'job' returned by prepare_restore is malformed ({', '.join(wrong)}): pass it on unchanged"
        )
    return job


_JOB_TYPES: dict[str, type] = {
    "restore_id": str,
    "source": dict,
    "components": list,
    "with": dict,
    "mode": str,
    "key_patterns": list,
    "dry_run": bool,
    "verification": bool,
    "target": dict,
    "lock": str,
    "owner": str,
    "started_ms": int,
    "redis_mode": str,
}
_SOURCE_FIELDS = ("kind", "backup_id", "manifest_key")


def describe_failure(event: dict[str, Any]) -> str:
    """A one-line cause from the Step Functions error caught into ``$.error``."""
    from servalsheets_backup.workflows.backup_steps import describe_error

    return describe_error(event.get("error"))


def run_restore(
    services: Services, event: dict[str, Any], owner: str, progress: Any = None
) -> dict[str, Any]:
    """Run every restore step in this process, in the state machine's order (the CLI's restore).

    Failures after the safety backup roll back exactly as the state machine's compensation
    states do; the error is raised again after the rollback is recorded.
    """
    say = progress or (lambda step: None)
    say("Prepare restore")
    job = prepare(services, event, owner)
    try:
        say("Verify backup before touching anything")
        job = preflight(services, job)
    except BaseException as exc:
        finish(services, job, "refused", f"{type(exc).__name__}: {exc}")
        raise
    if job["dry_run"]:
        return finish(services, job, "planned")
    try:
        _run_changing_steps(services, job, say)
    except BaseException as exc:
        error = f"{type(exc).__name__}: {exc}"
        say("Roll back")
        try:
            while not job.get("rollback", {}).get("done"):
                job = rollback(services, job, None)
            maintenance(services, {**job, "fail_after": None}, "end")
        except BaseException as rollback_error:
            finish(services, job, "rollback_failed", f"{error}; rollback: {type(rollback_error).__name__}")
            raise
        finish(services, job, "rolled_back", error)
        raise
    say("Record success")
    return finish(services, job, "succeeded")


def _run_changing_steps(services: Services, job: dict[str, Any], say: Any) -> None:
    say("Start maintenance window")
    maintenance(services, job, "start")
    say("Take safety backup")
    while not job.get("safety", {}).get("done"):
        safety_backup(services, job, None)
    if job["with"]["config"]:
        say("Restore configuration")
        restore_config(services, job)
    if job["with"]["tokens"]:
        say("Restore token store")
        restore_tokens(services, job)
    if job["with"]["redis"]:
        say("Restore Redis keys")
        while not job.get("redis", {}).get("done"):
            restore_redis(services, job, None)
    say("End maintenance window")
    maintenance(services, job, "end")
    say("Verify restored deployment")
    for attempt in range(APP_READY_ATTEMPTS):
        try:
            verify(services, job)
            return
        except ApplicationNotReadyError:
            if attempt == APP_READY_ATTEMPTS - 1:
                raise
            time.sleep(APP_READY_INTERVAL_SECONDS)
