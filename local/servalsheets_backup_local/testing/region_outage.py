"""A Region made unusable for this process: every AWS request to it fails as unreachable.

moto keeps Regions apart but cannot lose one. ``region_outage`` refuses, in botocore itself,
every request a client in ``region`` makes (its bucket, key, state machine, secrets, everything),
the way a Regional outage looks to a caller, so nothing in a standby restore can lean on the
lost Region without failing loudly. Clients in other Regions are untouched.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

NAME = "Regional outage (stand-in: botocore refuses every request to the Region)"


@contextmanager
def region_outage(region: str) -> Iterator[list[str]]:
    """Refuse every AWS request to ``region`` inside the block; yields the operations refused."""
    from botocore.endpoint import Endpoint
    from botocore.exceptions import EndpointConnectionError

    refused: list[str] = []
    original = Endpoint.make_request

    def make_request(self: Endpoint, operation_model: Any, request_dict: dict[str, Any]) -> Any:
        if request_dict.get("context", {}).get("client_region") == region:
            refused.append(f"{operation_model.service_model.service_name}:{operation_model.name}")
            raise EndpointConnectionError(endpoint_url=f"https://{region}.amazonaws.com (Region is down)")
        return original(self, operation_model, request_dict)

    Endpoint.make_request = make_request
    try:
        yield refused
    finally:
        Endpoint.make_request = original
