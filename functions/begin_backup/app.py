"""Begin a backup set: validate the request, take the kind's lock, allocate the backup id."""

from typing import Any

from servalsheets_backup.handler_support import logger, owner_of, require_object, services, tracer
from servalsheets_backup.workflows import backup_steps


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Return ``{"request", "pending", "plan"}`` for the backup state machine."""
    event = require_object(event)
    return backup_steps.begin(services(), event, owner_of(event, context))
