"""Restore the token store file atomically (mode 0600) and prove the live key decrypts it."""

from typing import Any

from servalsheets_backup.handler_support import logger, require_object, services, tracer
from servalsheets_backup.workflows import restore


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Return the job with the token results."""
    event = require_object(event)
    return restore.dump_job(restore.restore_tokens(services(), restore.job_from(event)))
