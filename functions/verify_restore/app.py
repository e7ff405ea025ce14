"""Verify the restored target: Redis counts and samples, token decryption, config fingerprints, app health."""

from typing import Any

from servalsheets_backup.handler_support import logger, require_object, services, tracer
from servalsheets_backup.workflows import restore


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Return the job with its checks; raise RestoreVerificationError if any failed."""
    event = require_object(event)
    return restore.dump_job(restore.verify(services(), restore.job_from(event)))
