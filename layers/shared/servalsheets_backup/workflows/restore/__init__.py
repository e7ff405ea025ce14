"""Restore operations, one function per state of the restore state machine.

The job (a :class:`RestoreJob`, carried in the state data as JSON: ``job_from`` reads it from a
step's event, ``dump_job`` writes it back) records what was resolved, verified and done, so each
step can run in a separate Lambda invocation and a failure can be rolled back:
- nothing is written to a target before :func:`preflight` has fully verified the backup;
- :func:`safety_backup` captures the target's current state first (a ``pre-restore`` set);
- :func:`rollback` restores that state (mode ``replace``) when a later step fails.

One module per step (or group of steps); handlers call the functions re-exported here.
"""

from __future__ import annotations

from servalsheets_backup.workflows.restore.apply import (
    maintenance,
    restore_config,
    restore_redis,
    restore_tokens,
)
from servalsheets_backup.workflows.restore.common import (
    SAFETY_KIND,
    InjectedFault,
    is_isolated,
    maybe_fail,
    target_services,
)
from servalsheets_backup.workflows.restore.finish import cleanup_verification_target, finish
from servalsheets_backup.workflows.restore.preflight import preflight
from servalsheets_backup.workflows.restore.prepare import (
    describe_failure,
    dump_job,
    job_from,
    prepare,
    resolve_source,
)
from servalsheets_backup.workflows.restore.rollback import rollback
from servalsheets_backup.workflows.restore.run import run_restore
from servalsheets_backup.workflows.restore.safety import safety_backup
from servalsheets_backup.workflows.restore.verify import verify

__all__ = [
    "InjectedFault",
    "SAFETY_KIND",
    "cleanup_verification_target",
    "describe_failure",
    "dump_job",
    "finish",
    "is_isolated",
    "job_from",
    "maintenance",
    "maybe_fail",
    "preflight",
    "prepare",
    "resolve_source",
    "restore_config",
    "restore_redis",
    "restore_tokens",
    "rollback",
    "run_restore",
    "safety_backup",
    "target_services",
    "verify",
]
