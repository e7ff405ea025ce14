"""boto3 clients, created lazily so importing a handler does not pay for boto3."""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Any


@lru_cache(maxsize=32)
def _client(service: str, endpoint_url: str | None, region: str | None) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=10, read_timeout=60)
    return boto3.client(service, endpoint_url=endpoint_url, region_name=region, config=config)


def client(service: str) -> Any:
    """A boto3 client for ``service`` honouring AWS_ENDPOINT_URL and the region at call time."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL") or None
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None
    return _client(service, endpoint, region)


def client_in(service: str, region: str) -> Any:
    """A boto3 client for ``service`` in ``region`` (a standby's or primary's), AWS_ENDPOINT_URL honoured."""
    return _client(service, os.environ.get("AWS_ENDPOINT_URL") or None, region)


def reset_clients() -> None:
    """Forget cached clients (tests switch endpoints and credentials)."""
    _client.cache_clear()


def error_code(exc: BaseException) -> str:
    """The AWS error code of a botocore ClientError, or ''."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def describe_aws_error(exc: BaseException) -> str | None:
    """``"<ErrorCode> from <Operation>"`` for a botocore ClientError, else None.

    Only the error code and the operation: enough to name the cause (AccessDeniedException from
    GenerateDataKey, SlowDown from UploadPart) without quoting a service's message text.
    """
    code = error_code(exc)
    operation = getattr(exc, "operation_name", None)
    if not code or not operation:
        return None
    return f"{code} from {operation}"
