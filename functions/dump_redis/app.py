"""Dump one chunk of Redis keys (logical mode) into the pending set; the state machine loops."""

from typing import Any

from servalsheets_backup.handler_support import (
    deadline_of,
    logger,
    require_object,
    services,
    tracer,
)
from servalsheets_backup.workflows import backup_steps


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Return the pending set with the next SCAN cursor (``redis_done`` when finished)."""
    return backup_steps.dump_redis(services(), require_object(event), deadline_of(context))
