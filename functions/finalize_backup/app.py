"""Finalize a backup set: write the manifest, retention tags, metrics, audit record; release the lock."""

from typing import Any

from servalsheets_backup.handler_support import logger, require_object, services, tracer
from servalsheets_backup.workflows import backup_steps


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Return the backup result (kind, id, size, duration, item counts)."""
    return backup_steps.finalize(services(), require_object(event))
