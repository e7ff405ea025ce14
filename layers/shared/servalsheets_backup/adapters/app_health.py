"""Checks of a restored ServalSheets deployment over HTTP (health and OAuth metadata).

In production the application answers 426 without ``X-Forwarded-Proto: https`` and 403 for a
Host that is not localhost or the issuer's host, so every request carries both headers.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from servalsheets_backup.errors import InvalidInputError


@dataclass
class Check:
    """One named verification check."""

    name: str
    ok: bool
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        """Report form."""
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


def _get(url: str, host: str, timeout: float) -> tuple[int, Any]:
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https"):
        raise InvalidInputError(f"APP_URL must be http(s); got {parsed.scheme!r}")
    request = urllib.request.Request(
        url,
        headers={  # noqa: S310 - scheme checked above
            "X-Forwarded-Proto": "https",
            "Host": host,
            "Accept": "application/json",
            "User-Agent": "servalsheets-backup-verifier",
        },
    )
    try:
        # bandit B310: the scheme is checked to be http or https at the top of _get.
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310  # nosec B310
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        try:
            body = json.loads(error.read() or b"null")
        except ValueError:
            body = None
        return error.code, body
    except ValueError:
        return 200, None


def check_application(
    app_url: str, host: str | None, issuer: str | None, timeout: float = 10.0
) -> list[Check]:
    """GET /health and /.well-known/oauth-authorization-server as the facts file prescribes."""
    base = app_url.rstrip("/")
    host = host or (urlparse(issuer).hostname if issuer else None) or "localhost"
    checks: list[Check] = []
    try:
        status, body = _get(f"{base}/health", host, timeout)
        state = body.get("status") if isinstance(body, dict) else None
        checks.append(
            Check(
                "application /health",
                status == 200 and state in ("healthy", "degraded"),
                f"HTTP {status}, status {state}",
            )
        )
        failing = (
            [c.get("name") for c in (body or {}).get("checks", []) if c.get("status") == "error"]
            if isinstance(body, dict)
            else []
        )
        if failing:
            checks.append(
                Check("application health checks", False, "failing: " + ", ".join(map(str, failing)))
            )
        status, body = _get(f"{base}/.well-known/oauth-authorization-server", host, timeout)
        found = body.get("issuer") if isinstance(body, dict) else None
        ok = status == 200 and isinstance(body, dict) and (issuer is None or found == issuer)
        checks.append(
            Check("OAuth metadata issuer", ok, f"HTTP {status}, issuer {'matches' if ok else found!r}")
        )
    except OSError as exc:
        checks.append(Check("application reachable", False, f"{type(exc).__name__} connecting to {base}"))
    return checks
