"""Backup operations: begin a set, add components, finalize or fail it.

A set can be built in one call (CLI, standalone Lambda) or across several Lambda invocations
driven by the backup state machine; :class:`PendingSet` is the small, JSON-serialisable state
that travels between them. Objects are uploaded first and the manifest last.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from servalsheets_backup.components.pending import PendingSet, lock_name
from servalsheets_backup.errors import BackupSystemError, InvalidInputError
from servalsheets_backup.format.manifest import (
    Manifest,
    ObjectEntry,
    new_backup_id,
    validate_kind,
)
from servalsheets_backup.services import Services
from servalsheets_backup.store.audit import write_audit
from servalsheets_backup.store.sets import SetExistsError, SetRef
from servalsheets_backup.workflows.retries import with_retries

logger = logging.getLogger(__name__)
LABEL_MAX = 128


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class BackupResult:
    """What a finished backup reports (CLI output, handler response, drill report)."""

    kind: str
    backup_id: str
    size_bytes: int
    duration_seconds: float
    objects: int
    items: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return asdict(self)


def begin(
    services: Services,
    kind: str,
    *,
    owner: str,
    label: str | None = None,
    trigger: str | None = None,
    idempotency_key: str | None = None,
) -> PendingSet:
    """Take the kind's lock and allocate a backup id (the same id when retried with the same key)."""
    validate_kind(kind)
    if label is not None and (len(label) > LABEL_MAX or not label.isprintable()):
        raise InvalidInputError(f"label must be printable text of at most {LABEL_MAX} characters")
    if kind == "pre-deploy" and not label:
        raise InvalidInputError('a pre-deploy backup needs a release label, e.g. {"label": "v2.0.1"}')
    services.state.acquire(lock_name(kind), owner)
    backup_id = new_backup_id(datetime.fromtimestamp(services.clock(), UTC))
    if idempotency_key:
        backup_id = services.state.remember(f"backup:{idempotency_key}", backup_id)
    created_ms = int(services.clock() * 1000)
    logger.info("backup started", extra={"kind": kind, "backup_id": backup_id, "trigger": trigger})
    return PendingSet(kind, backup_id, created_ms, owner, label, trigger)


def add_config(services: Services, pending: PendingSet) -> PendingSet:
    """Capture the configuration into the set."""
    from servalsheets_backup.components import config as component_config

    bundle = component_config.collect(services)
    upload = services.store.open_object(
        pending.kind, pending.backup_id, component_config.OBJECT_NAME, "config"
    )
    try:
        upload.write(bundle.to_bytes())
        summary = component_config.summary(bundle, upload.fingerprint_key)
        entry = upload.finish(
            {
                "secrets": summary["secret_count"],
                "parameters": summary["parameter_count"],
                "files": summary["file_count"],
            }
        )
    except BaseException:
        upload.abort()
        raise
    pending.add(entry)
    pending.components["config"] = summary
    return pending


def add_tokens(services: Services, pending: PendingSet) -> PendingSet:
    """Capture the token store (after proving the live key decrypts it)."""
    from servalsheets_backup.components import tokens as component_tokens

    data, summary = component_tokens.capture(services)
    entry = services.store.write_object(
        pending.kind, pending.backup_id, component_tokens.OBJECT_NAME, "tokens", data, {"files": 1}
    )
    pending.add(entry)
    pending.components["tokens"] = summary
    return pending


def add_component(
    services: Services, pending: PendingSet, component: str, deadline: float | None = None
) -> PendingSet:
    """Add one component (redis may need several calls: see ``pending.redis_done``)."""
    if component == "config":
        return add_config(services, pending)
    if component == "tokens":
        return add_tokens(services, pending)
    if component == "redis" and services.settings.redis_mode == "rdb-stream":
        from servalsheets_backup.components import redis_rdb_stream

        return redis_rdb_stream.add_rdb_stream(services, pending)
    if component == "redis":
        from servalsheets_backup.components import redis_logical

        return redis_logical.add_logical_chunk(services, pending, deadline)
    raise InvalidInputError(f"unknown component {component!r}")


def finalize(services: Services, pending: PendingSet) -> BackupResult:
    """Write the manifest, apply retention tagging, emit metrics and audit, release the lock."""
    missing = [c for c in pending.wants if c not in pending.components]
    if missing:
        raise InvalidInputError(
            f"cannot finalize {pending.kind} backup: components missing: {', '.join(missing)}"
        )
    now = services.clock()
    manifest = Manifest(
        backup_id=pending.backup_id,
        kind=pending.kind,
        created_at=_iso(pending.created_ms / 1000),
        completed_at=_iso(now),
        environment=services.settings.environment,
        objects=[ObjectEntry.from_dict(raw) for raw in pending.objects],
        source=_source(services, pending),
        components=pending.components,
        label=pending.label,
        trigger=pending.trigger,
    )
    try:
        ref = services.store.commit(manifest)
    except SetExistsError:
        # A retried finalize after the manifest was written: the set exists once, report it.
        existing = services.store.load_manifest(services.store.find(pending.backup_id, pending.kind))
        services.state.release(lock_name(pending.kind), pending.owner)
        return _result(pending, existing, now)
    result = _result(pending, manifest, now)
    _after_commit(services, pending, ref, result)
    return result


def _source(services: Services, pending: PendingSet) -> dict[str, Any]:
    settings = services.settings
    source: dict[str, Any] = {"environment": settings.environment, **pending.source}
    if "redis" in pending.wants:
        source["redis_mode"] = settings.redis_mode
    if "tokens" in pending.wants:
        source["token_store_path"] = settings.token_store_path
    if "config" in pending.wants:
        source["config_secret_ids"] = list(settings.config_secret_ids)
        source["config_parameter_path"] = settings.config_parameter_path
        source["config_files"] = list(settings.config_files)
    return source


def _result(pending: PendingSet, manifest: Manifest, now: float) -> BackupResult:
    items: dict[str, Any] = {}
    for entry in manifest.objects:
        for name, value in entry.items.items():
            if isinstance(value, int | float):
                items[name] = items.get(name, 0) + value
    return BackupResult(
        kind=pending.kind,
        backup_id=pending.backup_id,
        size_bytes=manifest.total_stored_size,
        duration_seconds=round(now - pending.created_ms / 1000, 3),
        objects=len(manifest.objects),
        items=items,
    )


def _after_commit(services: Services, pending: PendingSet, ref: SetRef, result: BackupResult) -> None:
    try:
        services.store.mark_expirable(pending.kind)
    finally:
        services.state.release(lock_name(pending.kind), pending.owner)
    item_count = sum(v for v in result.items.values() if isinstance(v, int))
    services.metrics.put("BackupSucceeded", "Count", 1, pending.kind)
    services.metrics.put("BackupSizeBytes", "Bytes", result.size_bytes, pending.kind)
    services.metrics.put("BackupDurationSeconds", "Seconds", result.duration_seconds, pending.kind)
    services.metrics.put("BackupItemCount", "Count", item_count, pending.kind)
    write_audit(
        services.store.s3,
        services.settings.bucket,
        services.settings.kms_key_id,
        "backup",
        pending.backup_id,
        {
            "kind": pending.kind,
            "result": "succeeded",
            "trigger": pending.trigger,
            "label": pending.label,
            "size_bytes": result.size_bytes,
            "objects": result.objects,
            "duration_seconds": result.duration_seconds,
            "manifest_key": ref.manifest_key,
            "requested_by": pending.owner,
        },
    )
    logger.info("backup completed", extra=result.to_dict())


def fail(
    services: Services, pending: PendingSet | None, kind: str, error: str, owner: str | None = None
) -> None:
    """Record a failed backup: metric, audit, remove partial objects, release the lock."""
    validate_kind(kind)
    services.metrics.put("BackupFailed", "Count", 1, kind)
    backup_id = pending.backup_id if pending else "none"
    try:
        if pending is not None:
            services.store.delete_incomplete_set(kind, pending.backup_id)
    finally:
        lock_owner = pending.owner if pending else owner
        if lock_owner:
            services.state.release(lock_name(kind), lock_owner)
        write_audit(
            services.store.s3,
            services.settings.bucket,
            services.settings.kms_key_id,
            "backup",
            backup_id,
            {
                "kind": kind,
                "result": "failed",
                "error": error[:500],
                "trigger": pending.trigger if pending else None,
            },
        )
    logger.error("backup failed", extra={"kind": kind, "backup_id": backup_id, "error": error[:500]})


def run_backup(
    services: Services,
    kind: str,
    *,
    owner: str,
    label: str | None = None,
    trigger: str | None = None,
    poll_seconds: float = 15.0,
) -> BackupResult:
    """Make one complete backup set of ``kind`` in this process (the CLI).

    In ElastiCache mode the redis component is the state machine's snapshot, export and ingest
    path run here, polling every ``poll_seconds``.
    """
    pending = begin(services, kind, owner=owner, label=label, trigger=trigger)
    try:
        from servalsheets_backup.components import redis_snapshot as component_snapshot

        for component in pending.wants:
            if component == "redis" and services.settings.redis_mode == "elasticache":
                component_snapshot.add_snapshot_in_process(services, pending, poll_seconds)
                continue
            # Transient Redis errors are retried with back-off, as the state machine does.
            with_retries(lambda c=component: add_component(services, pending, c))
            while component == "redis" and not pending.redis_done:
                with_retries(lambda: add_component(services, pending, "redis"))
        result = finalize(services, pending)
        component_snapshot.prune_after(services, pending)
        return result
    except BaseException as exc:
        fail(services, pending, kind, _describe(exc))
        raise


def _describe(exc: BaseException) -> str:
    from servalsheets_backup.adapters.aws import describe_aws_error

    if isinstance(exc, BackupSystemError):
        return f"{type(exc).__name__}: {exc}"
    aws_error = describe_aws_error(exc)
    if aws_error:
        return f"ClientError: {aws_error}"  # botocore's modelled subclasses repeat the code as name
    return type(exc).__name__  # messages of foreign exceptions may quote data; keep only the type


def now_monotonic() -> float:
    """A monotonic clock for deadlines."""
    return time.monotonic()
