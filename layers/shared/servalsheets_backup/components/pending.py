"""A backup set under construction: the state the backup workflow and the components share.

A set is built in one call (CLI, standalone Lambda) or across several Lambda invocations driven
by the backup state machine; :class:`PendingSet` is the small, JSON-serialisable state that
travels between them. Components add their objects to it; the workflow commits it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from servalsheets_backup.errors import InvalidInputError
from servalsheets_backup.format.manifest import KIND_COMPONENTS, ObjectEntry, backup_time, validate_kind


@dataclass
class PendingSet:
    """A backup set under construction (carried in the state machine's data)."""

    kind: str
    backup_id: str
    created_ms: int
    owner: str
    label: str | None = None
    trigger: str | None = None
    objects: list[dict[str, Any]] = field(default_factory=list)
    components: dict[str, Any] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)
    redis_chunks: int = 0
    redis_done: bool = False
    # Logical mode: the shards behind REDIS_URL (ShardPlan.as_dict) and, when the shards are
    # dumped one after another in one driver, each one's progress (ShardDump.to_dict).
    redis_plan: dict[str, Any] | None = None
    redis_shards: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON form for the state machine."""
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: Any) -> PendingSet:
        """Parse the JSON form (InvalidInputError naming what is wrong)."""
        if not isinstance(raw, dict):
            raise InvalidInputError("pending must be the object returned by begin_backup")
        try:
            pending = cls(**raw)
        except TypeError as exc:
            raise InvalidInputError(f"pending set is malformed: {exc}") from exc
        # The kind and id become S3 key prefixes: check them, and the types the steps rely on.
        validate_kind(pending.kind)
        backup_time(pending.backup_id)
        wrong = [
            name for name, kind in _PENDING_TYPES.items() if not isinstance(getattr(pending, name), kind)
        ]
        if wrong:
            raise InvalidInputError(f"pending set is malformed: wrong type for {', '.join(wrong)}")
        return pending

    def add(self, entry: ObjectEntry) -> None:
        """Record an uploaded object."""
        self.objects.append(entry.as_dict())

    @property
    def wants(self) -> tuple[str, ...]:
        """The components this kind of set holds."""
        return KIND_COMPONENTS[self.kind]


_PENDING_TYPES: dict[str, type | tuple[type, ...]] = {
    "created_ms": int,
    "owner": str,
    "label": (str, type(None)),
    "trigger": (str, type(None)),
    "objects": list,
    "components": dict,
    "source": dict,
    "redis_chunks": int,
    "redis_done": bool,
    "redis_plan": (dict, type(None)),
    "redis_shards": list,
}


def lock_name(kind: str) -> str:
    """The lock that keeps two backups of one kind apart."""
    return f"backup:{kind}"
