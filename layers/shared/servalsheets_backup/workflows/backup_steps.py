"""The backup state machine's steps: event in, domain call, small JSON out.

Each function here is what one Lambda handler calls. Results are trimmed to what the next
state needs: no timestamps, no large payloads, never secret values.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from servalsheets_backup.adapters.elasticache import snapshot_name
from servalsheets_backup.components import redis_logical
from servalsheets_backup.components import redis_snapshot as component_snapshot
from servalsheets_backup.components.pending import PendingSet
from servalsheets_backup.errors import InvalidInputError
from servalsheets_backup.format.manifest import KIND_COMPONENTS
from servalsheets_backup.services import Services
from servalsheets_backup.workflows import backup

if TYPE_CHECKING:
    from servalsheets_backup.workflows.requests import BackupRequest


def _request(event: dict[str, Any]) -> BackupRequest:
    # pydantic is loaded by the steps that validate input, not at import
    from servalsheets_backup.workflows.requests import (
        BackupRequest,
        parse,
    )

    raw = event.get("request", event)
    if isinstance(raw, dict):
        raw = {k: v for k, v in raw.items() if k != "execution_id"}
    request: BackupRequest = parse(BackupRequest, raw, "backup request")
    return request


def _pending(event: dict[str, Any], services: Services | None = None) -> PendingSet:
    """The pending set of a step's event; with ``services``, its backup lock is extended first."""
    if "pending" not in event:
        raise InvalidInputError("this step needs the 'pending' set returned by begin_backup")
    pending = PendingSet.from_dict(event["pending"])
    if services is not None:
        services.state.acquire(backup.lock_name(pending.kind), pending.owner)  # re-entrant: renews
    return pending


@dataclass(frozen=True)
class BackupPlan:
    """What the backup state machine's Choice states branch on (``$.plan``; a test checks the ASL)."""

    config: bool
    tokens: bool
    redis: bool
    redis_mode: str
    serverless: bool
    replication_group_id: str
    snapshot_name: str
    poll_seconds: int


@dataclass(frozen=True)
class ShardingPlan:
    """The shards the backup's Map dumps (``$.sharding``; a test checks the ASL)."""

    pending: PendingSet
    shards: list[dict[str, Any]]  # ShardDump.to_dict, one per shard: the Map's items
    max_concurrency: int


@dataclass(frozen=True)
class SnapshotPoll:
    """One look at an ElastiCache snapshot (``$.snapshot``)."""

    status: str


def begin(services: Services, event: dict[str, Any], owner: str) -> dict[str, Any]:
    """Validate the request, take the lock, allocate the id, and plan the components."""
    request = _request(event)
    pending = backup.begin(
        services,
        request.kind,
        owner=owner,
        label=request.label,
        trigger=request.trigger,
        idempotency_key=event.get("execution_id"),
    )
    if request.requested_by:
        pending.source["requested_by"] = request.requested_by
    components = KIND_COMPONENTS[request.kind]
    settings = services.settings
    return {
        "request": request.model_dump(),
        "pending": pending.to_dict(),
        "plan": asdict(
            BackupPlan(
                config="config" in components,
                tokens="tokens" in components,
                redis="redis" in components,
                redis_mode=settings.redis_mode,
                serverless=bool(settings.serverless_cache_name),
                replication_group_id=settings.replication_group_id or "",
                snapshot_name=snapshot_name(pending.backup_id),
                poll_seconds=request.poll_seconds,
            )
        ),
    }


def add_config(services: Services, event: dict[str, Any]) -> dict[str, Any]:
    """Add the config component to the pending set."""
    return backup.add_config(services, _pending(event, services)).to_dict()


def add_tokens(services: Services, event: dict[str, Any]) -> dict[str, Any]:
    """Add the token store to the pending set."""
    return backup.add_tokens(services, _pending(event, services)).to_dict()


def dump_redis(services: Services, event: dict[str, Any], deadline: float | None) -> dict[str, Any]:
    """One step of the Redis dump, chosen by ``action``.

    - ``plan``: discover the shards (``{"pending", "shards", "max_concurrency"}`` for the Map);
    - ``shard``: dump one chunk of ``shard`` (a Map iteration loops until ``shard.done``);
    - ``merge``: merge the Map's shard dumps into the pending set (``redis_done``);
    - none: in rdb-stream mode the server's whole RDB snapshot, in logical mode one chunk of the
      shards one after another (the state machine loops until ``redis_done``).
    """
    pending = _pending(event, services)
    action = event.get("action")
    if action not in DUMP_ACTIONS:
        raise InvalidInputError(f"the dump step's 'action' must be one of {', '.join(DUMP_ACTIONS[1:])}")
    if action == "plan":
        shards = redis_logical.plan_shards(services, pending)
        items = [shard.to_dict() for shard in shards]
        return asdict(ShardingPlan(pending, items, services.settings.redis_shard_concurrency))
    if action == "shard":
        shard = redis_logical.ShardDump.from_dict(event.get("shard"))
        return redis_logical.dump_shard_chunk(services, pending, shard, deadline).to_dict()
    if action == "merge":
        dumps = event.get("shards")
        if not isinstance(dumps, list):
            raise InvalidInputError("the merge step needs 'shards': the Map state's list of shard dumps")
        shards = [redis_logical.ShardDump.from_dict(raw) for raw in dumps]
        return redis_logical.finish_shards(services, pending, shards).to_dict()
    if services.settings.redis_mode == "rdb-stream":
        from servalsheets_backup.components import redis_rdb_stream

        return redis_rdb_stream.add_rdb_stream(services, pending).to_dict()
    return redis_logical.add_logical_chunk(services, pending, deadline).to_dict()


DUMP_ACTIONS = (None, "plan", "shard", "merge")


def _snapshot_name(event: dict[str, Any], step: str) -> str:
    name = event.get("snapshot_name")
    if not isinstance(name, str) or not name:
        raise InvalidInputError(
            f"{step} needs 'snapshot_name' (the state machine passes $.plan.snapshot_name)"
        )
    return name


SNAPSHOT_ACTIONS = ("create", "check")


def snapshot(services: Services, event: dict[str, Any]) -> dict[str, Any]:
    """Create (``action: create``) or poll (``action: check``) the ElastiCache snapshot."""
    action = event.get("action")
    if action not in SNAPSHOT_ACTIONS:
        raise InvalidInputError(f"the snapshot step needs 'action': one of {', '.join(SNAPSHOT_ACTIONS)}")
    name = _snapshot_name(event, "the snapshot step")
    _pending(event, services)  # the backup lock is renewed on every poll
    if action == "create":
        return asdict(SnapshotPoll(component_snapshot.create_snapshot(services, name)))
    return asdict(SnapshotPoll(component_snapshot.snapshot_status(services, name)))


def export_snapshot(services: Services, event: dict[str, Any]) -> dict[str, Any]:
    """Start exporting the finished ElastiCache snapshot to the bucket."""
    name = _snapshot_name(event, "export_snapshot")
    return component_snapshot.start_export(services, _pending(event, services), name).to_dict()


def ingest_snapshot(services: Services, event: dict[str, Any]) -> dict[str, Any]:
    """Ingest the staged .rdb files if all have arrived (``redis_done`` says whether they had)."""
    pending, _ready = component_snapshot.ingest_exports(services, _pending(event, services))
    return pending.to_dict()


def finalize(services: Services, event: dict[str, Any]) -> dict[str, Any]:
    """Write the manifest and report the result; prune old snapshots in ElastiCache mode."""
    pending = _pending(event)
    result = backup.finalize(services, pending)
    return {**result.to_dict(), "snapshots_pruned": component_snapshot.prune_after(services, pending)}


def fail(services: Services, event: dict[str, Any], owner: str) -> dict[str, Any]:
    """Record a failed run: metric, audit record, partial objects removed, lock released."""
    event = event.get("state", event) if isinstance(event.get("state"), dict) else event
    raw_pending = event.get("pending")
    pending = PendingSet.from_dict(raw_pending) if isinstance(raw_pending, dict) else None
    request = event.get("request")
    if not isinstance(request, dict):
        request = event
    kind = pending.kind if pending else str(request.get("kind", ""))
    error = describe_error(event.get("error"))
    if kind not in KIND_COMPONENTS:
        return {"recorded": False, "error": error}
    backup.fail(services, pending, kind, error, owner=owner)
    return {"recorded": True, "kind": kind, "error": error}


def describe_error(error: Any) -> str:
    """A one-line description of a Step Functions Catch result ``{"Error", "Cause"}``."""
    if not isinstance(error, dict):
        return "unknown error"
    name = str(error.get("Error", "Error"))
    cause = error.get("Cause", "")
    try:
        message = json.loads(cause).get("errorMessage", "") if isinstance(cause, str) and cause else ""
    except ValueError:
        message = ""
    return f"{name}: {message}"[:500] if message else name
