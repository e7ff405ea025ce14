"""Validated shapes of Lambda events and state machine inputs (pydantic models).

Every handler validates its event here first, so bad input fails in the first state with a
message that names the field and says what to fix.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from servalsheets_backup.errors import InvalidInputError
from servalsheets_backup.format.manifest import COMPONENT_KINDS, KINDS

MAX_TEXT = 256
Component = Literal["config", "tokens", "redis"]


def _all_components() -> list[Component]:
    return ["config", "tokens", "redis"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_max_length=4096)


class BackupRequest(_Strict):
    """The backup state machine's input (and the standalone backup Lambdas' event)."""

    kind: str
    label: str | None = Field(default=None, max_length=128)
    trigger: str = Field(default="manual", max_length=64)
    requested_by: str | None = Field(default=None, max_length=MAX_TEXT)
    poll_seconds: int = Field(default=30, ge=0, le=900)

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, value: str) -> str:
        if value not in KINDS or value == "pre-restore":
            raise ValueError(f"unknown kind {value!r}; use one of config, tokens, redis, full, pre-deploy")
        return value


class AsOf(_Strict):
    """``{"as_of": "<ISO time>"}``: the newest backup at or before that time."""

    as_of: str = Field(max_length=64)


class RestoreTarget(_Strict):
    """Where to restore; every field defaults to the configured production target."""

    redis_url_secret_id: str | None = Field(default=None, max_length=MAX_TEXT)
    redis_url: str | None = Field(default=None, max_length=1024)
    token_store_path: str | None = Field(default=None, max_length=1024)
    secret_prefix: str | None = Field(default=None, max_length=MAX_TEXT)
    new_replication_group_id: str | None = Field(
        default=None, max_length=40, pattern=r"^[a-z][a-z0-9-]{0,39}$"
    )
    new_serverless_cache_name: str | None = Field(
        default=None, max_length=40, pattern=r"^[a-z][a-z0-9-]{0,39}$"
    )
    update_redis_url_secret: bool = False

    @model_validator(mode="after")
    def _one_new_cache(self) -> RestoreTarget:
        if self.new_replication_group_id and self.new_serverless_cache_name:
            raise ValueError(
                "give either new_replication_group_id or new_serverless_cache_name: an ElastiCache-mode "
                "backup seeds one new cache"
            )
        if self.update_redis_url_secret and not self.new_cache_name:
            raise ValueError(
                "update_redis_url_secret needs new_replication_group_id or new_serverless_cache_name: "
                "it points REDIS_URL at the newly seeded cache"
            )
        return self

    @property
    def new_cache_name(self) -> str | None:
        """The new replication group or serverless cache an ElastiCache-mode backup seeds."""
        return self.new_replication_group_id or self.new_serverless_cache_name

    @field_validator("token_store_path")
    @classmethod
    def _safe_path(cls, value: str | None) -> str | None:
        if value is None or value.startswith("s3://"):
            return value
        if not value.startswith("/") or ".." in value.split("/"):
            raise ValueError("token_store_path must be an absolute path without '..' (or an s3:// URI)")
        return value


class RestoreRequest(_Strict):
    """The restore state machine's input, as an operator types it in the console."""

    backup: str | AsOf = "latest"
    kinds: list[Component] = Field(default_factory=_all_components)
    source_kind: str | None = Field(default=None, description="kind of set to restore from; default full")
    target: RestoreTarget = Field(default_factory=RestoreTarget)
    mode: Literal["replace", "merge", "missing-only"] = "merge"
    key_patterns: list[str] = Field(default_factory=list, max_length=64)
    dry_run: bool = False
    verification: bool = False
    requested_by: str = Field(default="unknown", max_length=MAX_TEXT)
    reason: str = Field(default="", max_length=1024)
    poll_seconds: int = Field(default=30, ge=0, le=900)
    fail_after: str | None = Field(default=None, max_length=64, description="fault injection (tests)")

    @field_validator("kinds")
    @classmethod
    def _non_empty(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("kinds must name at least one of config, tokens, redis")
        return sorted(set(value), key=COMPONENT_KINDS.index)

    @field_validator("key_patterns")
    @classmethod
    def _patterns(cls, value: list[str]) -> list[str]:
        for pattern in value:
            if not pattern or len(pattern) > 512:
                raise ValueError("each key pattern must be 1 to 512 characters")
        return value

    @model_validator(mode="after")
    def _replace_restores_everything(self) -> RestoreRequest:
        if self.mode == "replace" and self.key_patterns:
            raise ValueError(
                'mode "replace" flushes the whole target first, so it cannot be combined with key_patterns: '
                'use mode "merge" or "missing-only" for a selective restore'
            )
        return self

    @field_validator("source_kind")
    @classmethod
    def _source(cls, value: str | None) -> str | None:
        if value is not None and value not in KINDS:
            raise ValueError(f"source_kind must be one of {', '.join(KINDS)}")
        return value


def parse(model: type[Any], event: Any, what: str) -> Any:
    """Validate ``event`` against ``model``; InvalidInputError lists every problem."""
    try:
        return model.model_validate(event)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or what}: {error['msg']}" for error in exc.errors()
        )
        raise InvalidInputError(f"invalid {what}: {problems}") from None
