"""Locks and idempotency records in the DynamoDB state table (conditional writes).

A lock has an owner (the execution or request that took it) and an expiry, so a run that died
without releasing it blocks others only until the expiry passes.
"""

from __future__ import annotations

import time
from typing import Any

from servalsheets_backup.adapters.aws import error_code
from servalsheets_backup.errors import ConfigurationError, LockHeldError

DEFAULT_LOCK_SECONDS = 4 * 3600


class StateTable:
    """Conditional-write locks and idempotency markers in one DynamoDB table (pk, expires_at)."""

    def __init__(self, dynamodb: Any, table: str | None) -> None:
        if not table:
            raise ConfigurationError(
                "STATE_TABLE is not set: export STATE_TABLE=<the stack's StateTableName output>; "
                "backups and restores take a lock there so two runs never overlap"
            )
        self._db = dynamodb
        self._table = table

    def acquire(self, name: str, owner: str, seconds: int = DEFAULT_LOCK_SECONDS) -> None:
        """Take lock ``name`` for ``owner``; re-entrant for the same owner; LockHeldError if taken."""
        now = int(time.time())
        try:
            self._db.put_item(
                TableName=self._table,
                Item={
                    "pk": {"S": f"lock#{name}"},
                    "owner": {"S": owner},
                    "acquired_at": {"N": str(now)},
                    "expires_at": {"N": str(now + seconds)},
                },
                ConditionExpression="attribute_not_exists(pk) OR #o = :owner OR expires_at < :now",
                ExpressionAttributeNames={"#o": "owner"},
                ExpressionAttributeValues={":owner": {"S": owner}, ":now": {"N": str(now)}},
            )
        except Exception as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                raise LockHeldError(self._held_message(name)) from exc
            raise

    def _held_message(self, name: str) -> str:
        item = self._db.get_item(TableName=self._table, Key={"pk": {"S": f"lock#{name}"}}).get("Item", {})
        owner = item.get("owner", {}).get("S", "another run")
        expires = item.get("expires_at", {}).get("N", "?")
        return (
            f"{name} is locked by {owner} until epoch {expires}: wait for that run to finish, "
            "or stop it (its lock then expires)"
        )

    def release(self, name: str, owner: str) -> None:
        """Release lock ``name`` if ``owner`` holds it (a no-op otherwise)."""
        try:
            self._db.delete_item(
                TableName=self._table,
                Key={"pk": {"S": f"lock#{name}"}},
                ConditionExpression="#o = :owner",
                ExpressionAttributeNames={"#o": "owner"},
                ExpressionAttributeValues={":owner": {"S": owner}},
            )
        except Exception as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise

    def remember(self, key: str, value: str, seconds: int = 7 * 86400) -> str:
        """Store ``value`` under idempotency ``key`` unless present; return the stored value."""
        now = int(time.time())
        try:
            self._db.put_item(
                TableName=self._table,
                Item={
                    "pk": {"S": f"idem#{key}"},
                    "value": {"S": value},
                    "expires_at": {"N": str(now + seconds)},
                },
                ConditionExpression="attribute_not_exists(pk)",
            )
            return value
        except Exception as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise
        item = self._db.get_item(TableName=self._table, Key={"pk": {"S": f"idem#{key}"}}, ConsistentRead=True)
        return str(item["Item"]["value"]["S"])

    def put_marker(self, name: str, value: float) -> None:
        """Record a timestamp-like number under ``name`` (e.g. the last successful verification)."""
        self._db.put_item(
            TableName=self._table,
            Item={"pk": {"S": f"marker#{name}"}, "value": {"N": repr(float(value))}},
        )

    def get_marker(self, name: str) -> float | None:
        """The number recorded under ``name``, or None."""
        item = self._db.get_item(
            TableName=self._table, Key={"pk": {"S": f"marker#{name}"}}, ConsistentRead=True
        )
        raw = item.get("Item", {}).get("value", {}).get("N")
        return float(raw) if raw is not None else None
