"""The whole restore in one process (the CLI without the state machine), step for step as the ASL runs it."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from servalsheets_backup.errors import (
    ApplicationNotReadyError,
)
from servalsheets_backup.services import Services
from servalsheets_backup.workflows.restore.apply import (
    maintenance,
    restore_config,
    restore_redis,
    restore_tokens,
)
from servalsheets_backup.workflows.restore.common import APP_READY_ATTEMPTS, APP_READY_INTERVAL_SECONDS
from servalsheets_backup.workflows.restore.finish import finish
from servalsheets_backup.workflows.restore.preflight import preflight
from servalsheets_backup.workflows.restore.prepare import prepare
from servalsheets_backup.workflows.restore.rollback import rollback
from servalsheets_backup.workflows.restore.safety import safety_backup
from servalsheets_backup.workflows.restore.verify import verify

if TYPE_CHECKING:
    # pydantic loads when a step runs, not when Lambda imports the handler (cold start).
    from servalsheets_backup.workflows.restore.job import RestoreJob


def run_restore(
    services: Services, event: dict[str, Any], owner: str, progress: Any = None
) -> dict[str, Any]:
    """Run every restore step in this process, in the state machine's order (the CLI's restore).

    Failures after the safety backup roll back exactly as the state machine's compensation
    states do; the error is raised again after the rollback is recorded.
    """
    say = progress or (lambda step: None)
    say("Prepare restore")
    job = prepare(services, event, owner)
    try:
        say("Verify backup before touching anything")
        job = preflight(services, job)
    except BaseException as exc:
        finish(services, job, "refused", f"{type(exc).__name__}: {exc}")
        raise
    if job.dry_run:
        return finish(services, job, "planned")
    try:
        _run_changing_steps(services, job, say)
    except BaseException as exc:
        error = f"{type(exc).__name__}: {exc}"
        say("Roll back")
        try:
            while not (job.rollback and job.rollback.done):
                job = rollback(services, job, None)
            maintenance(services, job.model_copy(update={"fail_after": None}), "end")
        except BaseException as rollback_error:
            finish(services, job, "rollback_failed", f"{error}; rollback: {type(rollback_error).__name__}")
            raise
        finish(services, job, "rolled_back", error)
        raise
    say("Record success")
    return finish(services, job, "succeeded")


def _run_changing_steps(services: Services, job: RestoreJob, say: Any) -> None:
    say("Start maintenance window")
    maintenance(services, job, "start")
    say("Take safety backup")
    while not (job.safety and job.safety.done):
        safety_backup(services, job, None)
    if job.with_.config:
        say("Restore configuration")
        restore_config(services, job)
    if job.with_.tokens:
        say("Restore token store")
        restore_tokens(services, job)
    if job.with_.redis:
        say("Restore Redis keys")
        while not (job.redis and job.redis.done):
            restore_redis(services, job, None)
    say("End maintenance window")
    maintenance(services, job, "end")
    say("Verify restored deployment")
    for attempt in range(APP_READY_ATTEMPTS):
        try:
            verify(services, job)
            return
        except ApplicationNotReadyError:
            if attempt == APP_READY_ATTEMPTS - 1:
                raise
            time.sleep(APP_READY_INTERVAL_SECONDS)
