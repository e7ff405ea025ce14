"""Fixtures of the reliability suite: one moto server per module, a template-built stack per test."""

from __future__ import annotations

import logging
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from servalsheets_backup.adapters import aws
from servalsheets_backup_local.testing.environment import LocalEnvironment
from servalsheets_backup_local.testing.moto_server import MotoServer, start_moto
from servalsheets_backup_local.testing.redis_server import RedisServer, start_redis
from servalsheets_backup_local.testing.seed import seed_servalsheets

from .envsupport import LogCollector
from .helpers import MiniStack, build_stack


@pytest.fixture(scope="module")
def moto_server() -> Iterator[MotoServer]:
    """A moto server in this process on 127.0.0.1 (the CLI in a subprocess reaches it too)."""
    server = start_moto(execute_state_machines=False)
    try:
        yield server
    finally:
        server.stop()
        aws.reset_clients()


@pytest.fixture
def stack(
    moto_server: MotoServer, redis_server: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[MiniStack]:
    """Bucket, KMS key and state table from template.yaml, secrets, token store, seeded Redis.

    The process environment is the one a backup Lambda gets, so the CLI (``main``) sees it too.
    """
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.endpoint)
    built = _seeded_stack(monkeypatch, moto_server, tmp_path, redis_server)
    try:
        yield built
    finally:
        aws.reset_clients()  # drop clients carrying injected event handlers


@pytest.fixture(scope="module")
def module_stack(moto_server: MotoServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MiniStack]:
    """Like ``stack``, but built once for a module (tests undo what they change)."""
    server = start_redis()
    patch = pytest.MonkeyPatch()
    try:
        patch.setenv("AWS_ENDPOINT_URL", moto_server.endpoint)
        patch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        patch.setenv("AWS_ACCESS_KEY_ID", "testing")
        patch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        yield _seeded_stack(patch, moto_server, tmp_path_factory.mktemp("stack"), server)
    finally:
        patch.undo()
        server.stop()
        aws.reset_clients()


@pytest.fixture
def shared_stack(module_stack: MiniStack, monkeypatch: pytest.MonkeyPatch) -> MiniStack:
    """The module's stack, with this test's process environment pointing at it."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", module_stack.endpoint)
    for name, value in module_stack.env.items():
        monkeypatch.setenv(name, value)
    module_stack.metrics.points.clear()
    return module_stack


# -- for the modules that run the state machines (each defines a module-scoped ``env``) ----------
@pytest.fixture(scope="module")
def retrier_sleeps() -> Iterator[list[float]]:
    """Retry intervals the ASL interpreter computed (recorded instead of slept)."""
    from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl

    requested: list[float] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(retrier_decl, "time", types.SimpleNamespace(sleep=requested.append))
        yield requested


@pytest.fixture
def on_moto(env: LocalEnvironment, monkeypatch: pytest.MonkeyPatch) -> LocalEnvironment:
    """Point this test's AWS clients at the environment's moto (the suite-wide fixture unsets it)."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", env.moto.endpoint)
    monkeypatch.setenv("MOTO_PORT", str(env.moto.port))
    return env


@pytest.fixture(scope="module")
def module_logs() -> Iterator[LogCollector]:
    """Every record logged by the domain code, the handlers and the libraries during a module."""
    collector = LogCollector()
    from servalsheets_backup.handler_support import logger

    # Ours at DEBUG (stricter than the deployed INFO); the root logger (libraries) as it is.
    ours = [logging.getLogger("servalsheets_backup"), logger._logger]
    root = logging.getLogger()
    levels = [each.level for each in ours]
    for each in ours:
        each.setLevel(logging.DEBUG)
    for each in [*ours, root]:
        if collector not in each.handlers:
            each.addHandler(collector)
    try:
        yield collector
    finally:
        for each in [*ours, root]:
            if collector in each.handlers:
                each.removeHandler(collector)
        for each, level in zip(ours, levels, strict=True):
            each.setLevel(level)


def _seeded_stack(
    patch: pytest.MonkeyPatch, moto_server: MotoServer, directory: Path, server: RedisServer
) -> MiniStack:
    """The stack's resources in moto, its environment variables set, and 100 ServalSheets keys."""
    built = build_stack(moto_server.endpoint, directory, server)
    for name, value in built.env.items():
        patch.setenv(name, value)
    client = redis.Redis.from_url(server.url)
    try:
        seed_servalsheets(client, 100, seed=3)
    finally:
        client.close()
    return built
