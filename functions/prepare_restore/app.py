"""Validate a restore request, resolve the backup set and take the target's restore lock."""

from typing import Any

from servalsheets_backup.handler_support import logger, owner_of, require_object, services, tracer
from servalsheets_backup.workflows import restore


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Return the restore job carried through the state machine."""
    event = require_object(event)
    return restore.dump_job(restore.prepare(services(), event, owner_of(event, context)))
