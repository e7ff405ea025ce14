"""Redis failing under a backup: dropped connections, a killed and restarted server, AUTH, TLS.

Each failure must end in a clear error naming the cause (TransientError when retrying can help,
RedisBackupError when it cannot), a BackupFailed metric and no set at all; never a "successful"
set holding part of the keyspace. The state machine's retries of TransientError are exercised in
test_state_machine_faults.py.
"""

from __future__ import annotations

import functools
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import redis

from servalsheets_backup.adapters import redis_client
from servalsheets_backup.cli.main import main
from servalsheets_backup.components.redis_logical import dump as logical_dump
from servalsheets_backup.errors import RedisBackupError, TransientError
from servalsheets_backup.workflows.backup import lock_name, run_backup
from servalsheets_backup_local.testing.redis_server import RedisServer, start_redis
from servalsheets_backup_local.testing.seed import seed_servalsheets

from .helpers import MiniStack, start_redis_on

pytestmark = pytest.mark.reliability


def _assert_failed_cleanly(stack: MiniStack, error: type[Exception], count: int = 1) -> None:
    assert stack.sets("redis") == [], "a failed dump must never become a set"
    assert stack.keys("redis/") == []
    assert stack.uploads() == []
    assert stack.lock(lock_name("redis")) is None
    assert stack.metrics.values("BackupFailed", "redis") == [1] * count
    assert stack.metrics.values("BackupSucceeded", "redis") == []
    failures = [r for r in stack.audit() if r["operation"] == "backup" and r["result"] == "failed"]
    assert len(failures) == count and failures[-1]["error"].startswith(f"{error.__name__}: ")


@contextmanager
def _on_second_batch(action: Any) -> Iterator[list[int]]:
    """Run ``action`` just before the dump collects its second batch of DUMP replies."""
    calls: list[int] = []
    original = logical_dump._collect_dumps

    def collect(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:
            action()
        return original(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(logical_dump, "_collect_dumps", collect)
        yield calls


@pytest.fixture
def bigger_keyspace(stack: MiniStack) -> MiniStack:
    """Several SCAN/DUMP batches' worth of keys (the dump sends 1000 keys per round trip)."""
    client = redis.Redis.from_url(stack.redis.url)
    try:
        seed_servalsheets(client, 2500, seed=11)
    finally:
        client.close()
    return stack


def test_connection_killed_mid_dump_is_retried_and_the_set_is_whole(
    bigger_keyspace: MiniStack,
) -> None:
    stack = bigger_keyspace

    def client_kill() -> None:
        admin = redis.Redis.from_url(stack.redis.url)
        try:
            assert admin.client_kill_filter(_type="normal", skipme=True) >= 1
        finally:
            admin.close()

    with _on_second_batch(client_kill) as calls:
        result = run_backup(stack.services(), "redis", owner="run-1")
    assert len(calls) >= 2  # the connection really was killed during the first attempt
    expected = redis.Redis.from_url(stack.redis.url).dbsize()
    assert result.items["keys"] == expected  # the retried chunk starts over: nothing lost or doubled
    assert [ref.backup_id for ref in stack.sets("redis")] == [result.backup_id]
    assert stack.services().store.verify_set(stack.sets("redis")[0]).ok


def test_server_killed_mid_dump_then_restarted(bigger_keyspace: MiniStack) -> None:
    stack = bigger_keyspace
    server = stack.redis
    assert server._process is not None
    process = server._process

    with (
        _on_second_batch(lambda: (process.send_signal(signal.SIGKILL), process.wait())),
        pytest.raises(TransientError, match="unreachable or timed out"),
    ):
        run_backup(stack.services(), "redis", owner="run-1")
    _assert_failed_cleanly(stack, TransientError)
    # While it is down, a new attempt fails at once with the same clear cause.
    with pytest.raises(TransientError, match=r"connect: Redis at 127\.0\.0\.1:\d+ is unreachable"):
        run_backup(stack.services(), "redis", owner="run-2")
    _assert_failed_cleanly(stack, TransientError, count=2)

    restarted = start_redis_on(server.port, server.workdir)
    try:
        client = redis.Redis.from_url(server.url)
        seed_servalsheets(client, 200, seed=5)
        keys = client.dbsize()
        client.close()
        result = run_backup(stack.services(), "redis", owner="run-3")
        assert result.items["keys"] == keys
        assert [ref.backup_id for ref in stack.sets("redis")] == [result.backup_id]
    finally:
        restarted.send_signal(signal.SIGTERM)
        restarted.wait(timeout=10)


@pytest.fixture
def password_redis() -> Iterator[RedisServer]:
    server = start_redis(password="the-right-redis-password-42")
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize("password", ["a-wrong-password-17", None], ids=["wrong-password", "no-password"])
def test_wrong_or_missing_auth_is_a_clear_permanent_failure(
    stack: MiniStack,
    password_redis: RedisServer,
    password: str | None,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    auth = f":{password}@" if password else ""
    url = f"redis://{auth}127.0.0.1:{password_redis.port}/0"
    with pytest.raises(RedisBackupError) as failure:
        run_backup(stack.services(REDIS_URL=url), "redis", owner="run-1")
    message = str(failure.value)
    assert message == (
        f"connect: Redis at 127.0.0.1:{password_redis.port} rejected the credentials "
        "(check the user and password)"
    )
    _assert_failed_cleanly(stack, RedisBackupError)

    # The CLI says the same on one line, with the documented exit status, and no password.
    monkeypatch.setenv("REDIS_URL", url)
    assert main(["backup", "redis"]) == RedisBackupError.exit_code
    err = capsys.readouterr().err
    assert err == f"error: {message}\n"
    for secret in ("a-wrong-password-17", "the-right-redis-password-42"):
        assert secret not in err and secret not in str(stack.audit())


def test_tls_url_against_a_plain_server_names_the_cause(
    stack: MiniStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A TLS handshake against a plain-text server only ends by timeout; keep it short here.
    monkeypatch.setattr(redis_client, "connect", functools.partial(redis_client.connect, socket_timeout=2))
    url = stack.redis.url.replace("redis://", "rediss://")
    with pytest.raises(RedisBackupError) as failure:
        run_backup(stack.services(REDIS_URL=url), "redis", owner="run-1")
    assert str(failure.value) == (
        f"connect: Redis at 127.0.0.1:{stack.redis.port} answers in plain text, not TLS: the URL "
        "says rediss:// but this port has no TLS; use redis:// or the server's TLS port"
    )
    _assert_failed_cleanly(stack, RedisBackupError)


def test_unreachable_server_is_transient_and_names_the_address(stack: MiniStack) -> None:
    from servalsheets_backup_local.testing.redis_server import free_port

    port = free_port()
    with pytest.raises(TransientError, match=rf"connect: Redis at 127\.0\.0\.1:{port} is unreachable"):
        run_backup(stack.services(REDIS_URL=f"redis://127.0.0.1:{port}/0"), "redis", owner="run-1")
    _assert_failed_cleanly(stack, TransientError)
