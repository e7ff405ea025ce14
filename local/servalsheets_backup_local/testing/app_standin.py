"""A STAND-IN for the ServalSheets application's health and OAuth metadata endpoints.

This is not ServalSheets. It answers ``GET /health``, ``/health/ready``, ``/health/live`` and
``/.well-known/oauth-authorization-server`` in the shapes documented in
shared/servalsheets-facts.md (section 3), with production behaviour: 426 without
``X-Forwarded-Proto: https``, 403 for a foreign Host, and a ``redis`` check that fails when its
Redis is unreachable. The drill uses it so the restore verification has a real HTTP peer.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlparse

import redis

from .redis_server import free_port

HEALTH_PATHS = ("/health", "/health/ready", "/health/live")


class AppStandIn:
    """The stand-in HTTP server on 127.0.0.1 and a free port."""

    def __init__(self, redis_url: str, issuer: str) -> None:
        self.redis_url = redis_url
        self.issuer = issuer
        self.port = free_port()
        self.started = time.monotonic()
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler_class())
        self._thread = threading.Thread(target=self._server.serve_forever, name="app-stand-in", daemon=True)

    @property
    def url(self) -> str:
        """Base URL."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> AppStandIn:
        """Serve in a background thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()

    def redis_check(self) -> dict[str, Any]:
        """The ``redis`` health check of newer ServalSheets versions."""
        started = time.monotonic()
        client = redis.Redis.from_url(self.redis_url, socket_timeout=2)
        try:
            client.ping()
            status, message = "ok", "Redis reachable"
        except redis.RedisError:
            status, message = "error", "Redis unreachable"
        finally:
            client.close()
        return {
            "name": "redis",
            "status": status,
            "message": message,
            "latency": round((time.monotonic() - started) * 1000, 1),
            "metadata": {},
        }

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        app = self
        issuer_host = urlparse(self.issuer).hostname

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
                return

            def _send(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802 - stdlib name
                path = urlparse(self.path).path
                host = (self.headers.get("Host") or "").split(":")[0]
                if path not in HEALTH_PATHS and self.headers.get("X-Forwarded-Proto") != "https":
                    self._send(426, {"error": "HTTPS required"})
                    return
                if host not in ("localhost", "127.0.0.1", issuer_host):
                    self._send(403, {"error": "forbidden host"})
                    return
                if path == "/health/live":
                    self._send(200, {"status": "healthy"})
                elif path in ("/health", "/health/ready"):
                    check = app.redis_check()
                    status = "healthy" if check["status"] == "ok" else "unhealthy"
                    self._send(
                        200 if status == "healthy" else 503,
                        {
                            "status": status,
                            "timestamp": datetime.now(UTC).isoformat(),
                            "uptime": int((time.monotonic() - app.started) * 1000),
                            "version": "2.0.0",
                            "checks": [check],
                        },
                    )
                elif path == "/.well-known/oauth-authorization-server":
                    self._send(
                        200,
                        {
                            "issuer": app.issuer,
                            "authorization_endpoint": f"{app.issuer}/authorize",
                            "token_endpoint": f"{app.issuer}/token",
                            "registration_endpoint": f"{app.issuer}/register",
                            "response_types_supported": ["code"],
                            "grant_types_supported": ["authorization_code", "refresh_token"],
                            "code_challenge_methods_supported": ["S256"],
                        },
                    )
                else:
                    self._send(404, {"error": "not found"})

        return Handler
