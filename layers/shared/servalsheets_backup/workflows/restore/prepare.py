"""Step 1: validate the console input, resolve the backup set, and build the job every later step reads."""

from __future__ import annotations

import hashlib
import logging
import os
from typing import TYPE_CHECKING, Any

from servalsheets_backup.errors import (
    BackupNotFoundError,
    InvalidInputError,
)
from servalsheets_backup.format.manifest import new_backup_id
from servalsheets_backup.services import Services
from servalsheets_backup.store.sets import SetRef
from servalsheets_backup.workflows.restore.common import (
    FAULT_INJECTION_ENV,
    LITERAL_REDIS_URL_ENV,
    is_logical_dump,
    manifest_holds,
)

if TYPE_CHECKING:
    # pydantic loads when a step runs, not when Lambda imports the handler (cold start).
    from servalsheets_backup.workflows.requests import RestoreRequest
    from servalsheets_backup.workflows.restore.job import RestoreJob

logger = logging.getLogger(__name__)


# -- 1. prepare ------------------------------------------------------------------------------
def prepare(services: Services, event: dict[str, Any], owner: str) -> RestoreJob:
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
    missing = [c for c in request.kinds if not manifest_holds(manifest, c)]
    if missing:
        raise InvalidInputError(
            f"backup {ref.backup_id} ({ref.kind}) holds no {', '.join(missing)}: choose kinds it holds "
            f"({', '.join(sorted(manifest.components))}) or another backup"
        )
    target = request.target.model_dump()
    rdb_set = bool(manifest.objects_of("redis")) and not is_logical_dump(manifest)
    seeds_new_cache = rdb_set and bool(request.target.new_cache_name)
    named_redis = request.target.redis_url_secret_id or request.target.redis_url
    # An rdb-stream set came from the configured Redis over REDIS_URL: it goes back there by default.
    streamed = manifest.components.get("redis", {}).get("mode") == "rdb-stream"
    if "redis" in request.kinds and rdb_set and not seeds_new_cache and not named_redis and not streamed:
        raise InvalidInputError(
            f"backup {ref.backup_id} holds ElastiCache RDB exports: set target.new_replication_group_id "
            "or target.new_serverless_cache_name to seed a new cache, or target.redis_url_secret_id to "
            "restore them key by key into a Redis you name (nothing is written to the running cache unless "
            "it is the one you name)"
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
        # RDB files restore key by key (converted to the logical record stream) unless they seed a new cache.
        "redis_mode": "elasticache" if seeds_new_cache else "logical",
    }
    logger.info("restore prepared", extra={"restore_id": job["restore_id"], "backup_id": ref.backup_id})
    return job_from({"job": job})  # its own output is checked against the model too


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


def job_from(event: Any) -> RestoreJob:
    """The ``job`` carried in a restore step's event, validated as a ``RestoreJob``, or InvalidInputError."""
    from servalsheets_backup.workflows.restore.job import parse_job

    job = event.get("job") if isinstance(event, dict) else None
    if not isinstance(job, dict) or "restore_id" not in job:
        raise InvalidInputError("this restore step needs the 'job' returned by prepare_restore")
    return parse_job(job)


def dump_job(job: RestoreJob) -> dict[str, Any]:
    """What a restore step returns to the state machine: ``job`` serialised (``job.dump_job``)."""
    from servalsheets_backup.workflows.restore.job import dump_job as serialise

    return serialise(job)


def describe_failure(event: dict[str, Any]) -> str:
    """A one-line cause from the Step Functions error caught into ``$.error``."""
    from servalsheets_backup.workflows.backup_steps import describe_error

    return describe_error(event.get("error"))
