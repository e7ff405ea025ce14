"""Roll the target back to the safety backup after a failed restore step."""

from typing import Any

from servalsheets_backup.handler_support import deadline_of, logger, require_object, services, tracer
from servalsheets_backup.workflows import restore


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Return the job; rollback.done is false while a large Redis rollback continues."""
    event = require_object(event)
    return restore.dump_job(restore.rollback(services(), restore.job_from(event), deadline_of(context)))
