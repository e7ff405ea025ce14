"""The restore job: the typed state every restore step receives and returns through the state machine.

``prepare`` builds it; each later step validates it at its handler boundary (``job_from``), so a
job whose fields are missing, mistyped or unknown (a misspelt key) is refused with a message that
names them instead of reading as ``None`` further on. The step's result is serialised back with
``dump_job``: what the state machine carries is exactly the model's fields.

The steps read and extend the model itself (``job.target.secret_prefix``, ``job.redis.done``), so
a misspelt field is a type error (mypy) before it is a runtime error. The nested progress records
(``safety``, ``redis``, ``rollback``) declare every field their step keeps, the ones the ASL's
Choice states read (``done``, ``waiting``) among them; ``tests/unit/test_asl_contract.py`` checks
that every field a Choice state reads is declared here.
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from servalsheets_backup.errors import InvalidInputError
from servalsheets_backup.workflows.requests import RestoreTarget


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


_RecordT = TypeVar("_RecordT", bound=_Record)


class SourceSet(_Record):
    """A backup set a restore reads: the source, or the safety set a rollback replays."""

    kind: str
    backup_id: str
    manifest_key: str


class ComponentSwitches(_Record):
    """Which components the restore writes (the Choice states branch on these)."""

    config: bool
    tokens: bool
    redis: bool


class ChunkCursor(_Record):
    """Where a resumable RESTORE of a set's dump chunks stands (restore, and rollback's replay)."""

    chunk: int = 0
    records: int = 0
    flushed: bool = False
    done: bool = False
    totals: dict[str, Any] = Field(default_factory=dict)


class SafetyProgress(_Record):
    """The safety backup: ``done`` once the pre-restore set is committed (``set`` then names it)."""

    done: bool = False
    absent: list[Literal["config", "tokens", "redis"]] = Field(default_factory=list)
    pending: dict[str, Any] | None = None  # the PendingSet while Redis is still being dumped
    empty: bool | None = None
    backup_id: str | None = None
    set: SourceSet | None = None


class RestorePart(ChunkCursor):
    """One iteration of the logical restore's Map: a source shard's objects, restored in order.

    ``chunk`` indexes ``objects`` (names of the set's Redis objects); ``done`` ends the iteration.
    """

    index: int
    objects: list[str]


class RedisProgress(ChunkCursor):
    """The Redis step: ``done`` when every chunk is restored, ``waiting`` while a new cache starts.

    Logical restores are planned into ``parts`` (one per source shard) that the state machine's
    Map restores side by side, at most ``max_concurrency`` at once, into every primary of the
    target; ElastiCache restores move ``phase`` (creating, available) and record the REDIS_URL
    secret versions a rollback puts back.
    """

    parts: list[RestorePart] = Field(default_factory=list)
    max_concurrency: int | None = None

    waiting: bool = False
    phase: Literal["creating", "available"] | None = None
    endpoint: str | None = None
    previous_secret_version: str | None = None
    new_secret_version: str | None = None


class RollbackProgress(_Record):
    """The rollback: ``done`` when the target is back to its safety backup."""

    done: bool = False
    needed: bool = True
    small_done: bool = False
    redis: ChunkCursor = Field(default_factory=ChunkCursor)


class RestoreJob(_Record):
    """Everything the restore steps share, as prepare_restore built it and the steps extended it."""

    restore_id: str
    source: SourceSet
    components: list[Literal["config", "tokens", "redis"]]
    with_: ComponentSwitches = Field(alias="with")
    mode: Literal["merge", "replace", "missing-only"]
    key_patterns: list[str]
    dry_run: bool
    verification: bool
    requested_by: str | None = None
    reason: str | None = None
    fail_after: str | None = None
    poll_seconds: int | None = None  # a Wait state's SecondsPath: whole seconds
    target: RestoreTarget
    lock: str
    owner: str
    started_ms: int
    backup_age_seconds: float | None = None
    redis_mode: Literal["logical", "elasticache"]
    # Added by the steps as they run.
    versions: dict[str, str] | None = None
    plan: dict[str, Any] | None = None
    safety: SafetyProgress | None = None
    redis: RedisProgress | None = None
    results: dict[str, Any] | None = None
    checks: list[dict[str, Any]] | None = None
    rollback: RollbackProgress | None = None
    ecs_previous_desired: int | None = None


def parse_job(raw: Any) -> RestoreJob:
    """Validate a job from a step's event; InvalidInputError names each field that is wrong."""
    try:
        return RestoreJob.model_validate(raw)
    except ValidationError as exc:
        fields = sorted({".".join(str(part) for part in error["loc"]) or "job" for error in exc.errors()})
        raise InvalidInputError(
            f"the 'job' returned by prepare_restore is malformed ({', '.join(fields)}): pass it on unchanged"
        ) from None


def parse_record(model: type[_RecordT], raw: Any, name: str) -> _RecordT:
    """Validate one progress record a step receives beside the job (a Map iteration's ``part``)."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        fields = sorted({".".join(str(part) for part in error["loc"]) or name for error in exc.errors()})
        raise InvalidInputError(
            f"the {name!r} the state machine passed is malformed ({', '.join(fields)}): pass it on unchanged"
        ) from None


def dump_job(job: RestoreJob) -> dict[str, Any]:
    """The JSON the state machine carries: the model's fields, those without a value left out.

    Progress records are written in full (their defaults too), so every field a Choice state
    reads is present once the record exists.
    """
    return job.model_dump(by_alias=True, exclude_none=True)
