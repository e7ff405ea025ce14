"""Support for the reliability modules that run the real state machines (one environment each).

The environment is ``testing.environment.start_environment()``: moto with Step Functions really
executing the ASL, the handlers run in this process, and two real redis-servers.
"""

from __future__ import annotations

import logging
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from servalsheets_backup.adapters.secrets import parameters_by_path
from servalsheets_backup_local.testing.environment import ENV_SECRET, PARAMETER_PATH, LocalEnvironment
from servalsheets_backup_local.testing.executions import Run, finish

from .helpers import Snapshot, redis_differences, redis_state, restore_snapshot


def execute(env: LocalEnvironment, logical_id: str, payload: dict[str, Any], timeout: float = 180) -> Run:
    """Start an execution and wait for it to end."""
    return finish(env, env.start_execution(logical_id, payload), timeout)


def locks_held(env: LocalEnvironment) -> list[str]:
    """Every lock item in the state table."""
    table = env.function_env("PrepareRestoreFunction")["STATE_TABLE"]
    items = env.client("dynamodb").scan(TableName=table).get("Items", [])
    return [item["pk"]["S"] for item in items if item["pk"]["S"].startswith("lock#")]


# -- the whole target: Redis key by key, files byte by byte with modes, secret and parameters ----
@dataclass
class Target:
    """Everything a restore may change on the production target."""

    redis: Snapshot
    files: dict[str, tuple[bytes, int]]
    env_secret: str
    secrets: list[str]
    parameters: dict[str, dict[str, str]]
    taken: float


def app_files(env: LocalEnvironment) -> dict[str, tuple[bytes, int]]:
    """Every file in the application's directory: bytes and mode (leftover temp files show up)."""
    directory = env.token_path.parent
    return {
        path.name: (path.read_bytes(), stat.S_IMODE(path.stat().st_mode))
        for path in sorted(directory.iterdir())
        if path.is_file()
    }


def capture(env: LocalEnvironment) -> Target:
    """The production target as it is now."""
    manager = env.client("secretsmanager")
    return Target(
        redis=redis_state(env.production.url),
        files=app_files(env),
        env_secret=manager.get_secret_value(SecretId=ENV_SECRET)["SecretString"],
        secrets=sorted(s["Name"] for s in manager.list_secrets()["SecretList"]),
        parameters=parameters_by_path(env.client("ssm"), PARAMETER_PATH),
        taken=time.monotonic(),
    )


def differences(before: Target, after: Target) -> list[str]:
    """Everything that differs between two captures, allowing only for TTLs running down."""
    elapsed = int((after.taken - before.taken) * 1000)
    found = [f"redis: {p}" for p in redis_differences(before.redis, after.redis, elapsed)]
    for name in sorted(set(before.files) | set(after.files)):
        if before.files.get(name) != after.files.get(name):
            found.append(f"file {name} differs (bytes or mode)")
    if before.env_secret != after.env_secret:
        found.append("config secret value differs")
    if before.secrets != after.secrets:
        found.append(f"secrets differ: {sorted(set(before.secrets) ^ set(after.secrets))}")
    if before.parameters != after.parameters:
        found.append(f"parameters differ: {sorted(set(before.parameters) ^ set(after.parameters))}")
    return found


def put_back(env: LocalEnvironment, target: Target) -> None:
    """Make the production target exactly ``target`` again."""
    restore_snapshot(env.production.url, target.redis)
    directory = env.token_path.parent
    for path in directory.iterdir():
        if path.is_file() and path.name not in target.files:
            path.unlink()
    for name, (data, mode) in target.files.items():
        path = directory / name
        path.write_bytes(data)
        path.chmod(mode)
    env.client("secretsmanager").put_secret_value(SecretId=ENV_SECRET, SecretString=target.env_secret)
    ssm = env.client("ssm")
    for name in parameters_by_path(ssm, PARAMETER_PATH):
        if name not in target.parameters:
            ssm.delete_parameter(Name=name)
    for name, parameter in target.parameters.items():
        ssm.put_parameter(Name=name, Value=parameter["value"], Type=parameter["type"], Overwrite=True)


class LogCollector(logging.Handler):
    """Keeps every log record, formatted as the Lambda handlers' JSON logger formats it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        from servalsheets_backup.handler_support import logger

        self.setFormatter(logger.registered_formatter)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        """Format and keep the record (its message, extra fields and any traceback)."""
        try:
            self.lines.append(self.format(record))
        except Exception:  # a record that cannot be formatted is kept raw
            self.lines.append(repr(record.__dict__))

    @property
    def text(self) -> str:
        """All records, one per line."""
        return "\n".join(self.lines)


def app_dir(env: LocalEnvironment) -> Path:
    """The application's directory (token store, credentials.json)."""
    return env.token_path.parent
