"""Validate and encrypt the exported .rdb files into the pending set, then delete the staging copies."""

from typing import Any

from servalsheets_backup.handler_support import logger, require_object, services, tracer
from servalsheets_backup.workflows import backup_steps


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Return the pending set; ``redis_done`` is false while the export is still arriving."""
    return backup_steps.ingest_snapshot(services(), require_object(event))
