"""Finish a restore run: release the lock, metrics, audit record, notification, verification clean-up."""

from typing import Any

from servalsheets_backup.handler_support import logger, require_object, services, tracer
from servalsheets_backup.workflows import restore


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Return the run's summary (outcome, duration, checks, plan)."""
    event = require_object(event)
    return restore.finish(
        services(),
        restore.job_from(event),
        str(event.get("outcome", "failed")),
        restore.describe_failure(event) if event.get("error") else None,
    )
