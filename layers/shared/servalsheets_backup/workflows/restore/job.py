"""The restore job: the typed state every restore step receives and returns through the state machine.

``prepare`` builds it; each later step validates it at its handler boundary (``job_from``), so a
job whose fields are missing, mistyped or unknown (a misspelt key) is refused with a message that
names them instead of reading as ``None`` further on. The step's result is serialised back with
``dump_job``: what the state machine carries is exactly the model's fields.

The nested progress records (``safety``, ``redis``, ``rollback``) declare the fields the ASL's
Choice states read (``done``, ``waiting``); their other bookkeeping belongs to the step that owns
them and passes through unchanged. ``tests/unit/test_asl_contract.py`` checks that every
field a Choice state reads is declared here.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from servalsheets_backup.errors import InvalidInputError


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class _Progress(BaseModel):
    # Steps keep their own counters and cursors here; only the declared fields are the contract.
    model_config = ConfigDict(extra="allow")


class SourceSet(_Record):
    """The backup set the restore reads."""

    kind: str
    backup_id: str
    manifest_key: str


class ComponentSwitches(_Record):
    """Which components the restore writes (the Choice states branch on these)."""

    config: bool
    tokens: bool
    redis: bool


class SafetyProgress(_Progress):
    """The safety backup: ``done`` once the pre-restore set is committed."""

    done: bool = False


class RedisProgress(_Progress):
    """The Redis step: ``done`` when every chunk is restored, ``waiting`` while a new cache starts."""

    done: bool = False
    waiting: bool = False


class RollbackProgress(_Progress):
    """The rollback: ``done`` when the target is back to its safety backup."""

    done: bool = False


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
    target: dict[str, Any]
    lock: str
    owner: str
    started_ms: int
    backup_age_seconds: float | None = None
    redis_mode: Literal["logical", "elasticache"]
    # Added by the steps as they run.
    versions: dict[str, str] | None = None
    plan: dict[str, Any] | None = None
    safety: SafetyProgress | None = None
    safety_set: dict[str, Any] | None = None
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


def dump_job(job: RestoreJob) -> dict[str, Any]:
    """The JSON the state machine carries: the model's fields, absent ones left out."""
    return job.model_dump(by_alias=True, exclude_unset=True)
