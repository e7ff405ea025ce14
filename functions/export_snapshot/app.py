"""Export a finished ElastiCache snapshot to the bucket's staging prefix."""

from typing import Any

from servalsheets_backup.handler_support import logger, require_object, services, tracer
from servalsheets_backup.workflows import backup_steps


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Start the export; returns the pending set with the expected shard count."""
    return backup_steps.export_snapshot(services(), require_object(event))
