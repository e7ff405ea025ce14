"""Back up the configuration: into a pending set (state machine) or as a standalone set."""

from typing import Any

from servalsheets_backup.handler_support import logger, owner_of, require_object, services, tracer
from servalsheets_backup.workflows import backup, backup_steps


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """With ``pending``: add the config object and return the pending set; else run a whole set."""
    event = require_object(event)
    if "pending" in event:
        return backup_steps.add_config(services(), event)
    result = backup.run_backup(
        services(),
        "config",
        owner=owner_of(event, context),
        trigger=str(event.get("trigger", "manual")),
    )
    return result.to_dict()
