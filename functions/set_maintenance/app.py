"""Start or end the maintenance window: notify, and scale the ECS service when one is configured."""

from typing import Any

from servalsheets_backup.handler_support import logger, require_object, services, tracer
from servalsheets_backup.workflows import restore


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Return the job (with the previous ECS desired count after 'start')."""
    event = require_object(event)
    return restore.dump_job(
        restore.maintenance(services(), restore.job_from(event), str(event.get("phase", "start")))
    )
