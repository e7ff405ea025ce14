"""Retrying transient failures (a Redis connection dropped, a server restarting) in process."""

from __future__ import annotations

import time
from typing import Any

from servalsheets_backup.errors import TransientError


def wait_seconds(attempt: int, base: float = 0.5, cap: float = 8.0) -> float:
    """Exponential back-off for transient Redis errors."""
    return float(min(cap, base * (2**attempt)))


def with_retries(operation: Any, attempts: int = 4) -> Any:
    """Run ``operation()`` retrying TransientError with back-off, then re-raise."""
    for attempt in range(attempts):
        try:
            return operation()
        except TransientError:
            if attempt == attempts - 1:
                raise
            time.sleep(wait_seconds(attempt))
    return None
