"""Shared fixtures: real redis-server processes, moto AWS, Lambda context, sample events."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from servalsheets_backup_local.testing.moto_patches import install as install_moto_patches
from servalsheets_backup_local.testing.redis_server import RedisServer, start_redis

install_moto_patches()  # moto cannot decrypt under multi-Region KMS keys without it (see the module)

REPO_ROOT = Path(__file__).resolve().parent.parent
EVENTS_DIR = REPO_ROOT / "events"


@pytest.fixture(autouse=True)
def _aws_test_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials and a region, so nothing can ever reach a real AWS account."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SECURITY_TOKEN", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "ServalSheets/Backup")
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "servalsheets-backup")
    # Tests restore into throwaway redis-servers named by URL; deployed stacks never set this.
    monkeypatch.setenv("ALLOW_LITERAL_REDIS_URL", "true")


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A fresh redis-server on 127.0.0.1 and a free port, stopped by pid afterwards."""
    server = start_redis()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_target() -> Iterator[RedisServer]:
    """A second, independent redis-server (restore target)."""
    server = start_redis()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class LambdaContext:
    """The attributes Powertools reads from a Lambda context."""

    function_name: str = "test-function"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:test-function"
    aws_request_id: str = "00000000-0000-0000-0000-000000000000"
    remaining_ms: int = 900_000

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds left in this invocation."""
        return self.remaining_ms


@pytest.fixture
def lambda_context() -> LambdaContext:
    """A Lambda context object for calling handlers directly."""
    return LambdaContext()


def load_event_file(name: str) -> dict[str, Any]:
    """Load ``events/<name>.json``."""
    return dict(json.loads((EVENTS_DIR / f"{name}.json").read_text()))


@pytest.fixture
def load_event() -> Any:
    """Return a loader for the sample events in events/."""
    return load_event_file


@pytest.fixture
def clean_env() -> Iterator[None]:
    """Restore os.environ after a test that sets many variables."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
