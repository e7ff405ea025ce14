"""Hourly: emit the age of the newest backup of each kind and of the last restore verification."""

from typing import Any

from servalsheets_backup.handler_support import logger, services, tracer
from servalsheets_backup.workflows import freshness


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Return the ages that were emitted as metrics."""
    return freshness.report(services())
