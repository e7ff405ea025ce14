"""What every Lambda handler shares: Powertools logger and tracer, and the services factory.

Logs go to stderr (CloudWatch captures it like stdout) so a local run's stdout stays clean;
EMF metrics go to stdout in Lambda. The local drill and the workflow tests replace the services
factory to inject a snapshot exporter and an in-memory metrics sink.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger, Tracer

from servalsheets_backup.errors import InvalidInputError
from servalsheets_backup.observability import SERVICE, PowertoolsMetrics
from servalsheets_backup.services import Services

logger = Logger(service=SERVICE, logger_handler=logging.StreamHandler(sys.stderr))
tracer = Tracer(service=SERVICE)
# Domain modules log through the standard library; give them the Powertools JSON formatter.
_domain_logger = logging.getLogger("servalsheets_backup")
_domain_logger.handlers = logger.handlers
_domain_logger.setLevel(logger.log_level)
_domain_logger.propagate = False


def _default_services() -> Services:
    return Services.from_env(PowertoolsMetrics())


_factory: Callable[[], Services] = _default_services


def services() -> Services:
    """Services for this invocation (settings are read now, not at import)."""
    return _factory()


def set_services_factory(factory: Callable[[], Services] | None) -> None:
    """Replace how handlers build their services (local drill, workflow tests); None restores."""
    global _factory
    _factory = factory or _default_services


def owner_of(event: dict[str, Any], context: Any) -> str:
    """Who holds locks for this run: the state machine execution, else the request id."""
    execution = event.get("execution_id")
    if isinstance(execution, str) and execution:
        return execution
    return f"lambda:{getattr(context, 'aws_request_id', 'local')}"


def deadline_of(context: Any, reserve_seconds: float = 60.0) -> float | None:
    """A time.monotonic() deadline that leaves ``reserve_seconds`` of the invocation unused."""
    import time

    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if remaining is None:
        return None
    return time.monotonic() + max(1.0, remaining() / 1000 - reserve_seconds)


def require_object(event: Any) -> dict[str, Any]:
    """The event as a dict, or InvalidInputError."""
    if not isinstance(event, dict):
        raise InvalidInputError("the event must be a JSON object")
    return event
