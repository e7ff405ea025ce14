"""Record a failed backup run: BackupFailed metric, audit record, partial objects removed, lock released."""

from typing import Any

from servalsheets_backup.handler_support import logger, owner_of, require_object, services, tracer
from servalsheets_backup.workflows import backup_steps


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Return what was recorded; the state machine then fails with the original error."""
    event = require_object(event)
    return backup_steps.fail(services(), event, owner_of(event, context))
