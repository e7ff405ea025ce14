"""Fixtures for the workflow tests: the ASL executed by moto with the real handlers and redis-servers.

One local environment per test module (starting one takes about 5 s); each test starts from
:func:`support.reset`, so tests in a module do not depend on each other.
"""

from __future__ import annotations

import os
import types
from collections.abc import Iterator

import pytest

from servalsheets_backup_local.testing.environment import LocalEnvironment, start_environment
from servalsheets_backup_local.testing.servalsheets_state import SeededState

from .support import reset


@pytest.fixture(autouse=True)
def _aws_test_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials and a region; AWS_ENDPOINT_URL stays on the local moto server.

    Overrides the suite-wide fixture, which removes AWS_ENDPOINT_URL: here the environment
    points it at moto on 127.0.0.1, and anything else is removed so nothing reaches AWS.
    """
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    if not os.environ.get("AWS_ENDPOINT_URL", "").startswith("http://127.0.0.1:"):
        monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "ServalSheets/Backup")
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "servalsheets-backup")


@pytest.fixture(scope="session", autouse=True)
def retry_sleeps() -> Iterator[list[float]]:
    """Retry back-off intervals the interpreter asked for; it does not really sleep them.

    moto's interpreter sleeps each Retry interval for real (2 s and more, 30 s for the snapshot
    retrier). Only the sleep is replaced: which retrier matches, how many attempts, and the
    interval computed are all the interpreter's own.
    """
    from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl

    requested: list[float] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(retrier_decl, "time", types.SimpleNamespace(sleep=requested.append))
        yield requested


@pytest.fixture(scope="module")
def env() -> Iterator[LocalEnvironment]:
    """A logical-mode deployment of template.yaml (moto, two redis-servers), shared by a module."""
    environment = start_environment()
    try:
        yield environment
    finally:
        environment.close()


@pytest.fixture
def seeded(env: LocalEnvironment) -> Iterator[SeededState]:
    """A freshly seeded deployment: Redis keys, token store, config secret, SSM parameters, files."""
    state = reset(env)
    try:
        yield state
    finally:
        env.runner.before_invoke = None
