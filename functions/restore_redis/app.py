"""RESTORE the logical dump into the target Redis (planned, per part in a Map, merged), or seed a
new ElastiCache cache, continuing across invocations."""

from typing import Any

from servalsheets_backup.handler_support import deadline_of, logger, require_object, services, tracer
from servalsheets_backup.workflows.restore.redis_shards import redis_step


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Return the job (a part for ``action: part``); redis.done is false while the restore continues."""
    return redis_step(services(), require_object(event), deadline_of(context))
