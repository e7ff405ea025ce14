"""Create or poll the manual snapshot of the ElastiCache replication group or serverless cache."""

from typing import Any

from servalsheets_backup.handler_support import logger, require_object, services, tracer
from servalsheets_backup.workflows import backup_steps


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Return ``{"status": ...}``; the state machine waits and polls until it is ``available``."""
    return backup_steps.snapshot(services(), require_object(event))
