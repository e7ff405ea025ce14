"""Backup and verification age, emitted hourly so stale-backup alarms work on one metric.

Alarms on the age (rather than on the absence of success metrics) also cover weekly kinds,
whose interval is longer than a CloudWatch alarm can look back.
"""

from __future__ import annotations

import logging
from typing import Any

from servalsheets_backup.services import Services

logger = logging.getLogger(__name__)

WATCHED_KINDS = ("config", "tokens", "redis", "full")
VERIFICATION_MARKER = "verification-succeeded"
NEVER_SECONDS = 10 * 365 * 86400  # reported when nothing exists yet, so the alarm fires


def report(services: Services) -> dict[str, Any]:
    """Emit BackupAgeSeconds per kind and VerificationAgeSeconds; return the ages.

    In a standby stack the ages are those of the newest sets complete in its bucket, so they
    include the replication delay, and the stale-backup alarms there page when replication
    falls behind or stops.
    """
    now = services.clock()
    ages: dict[str, float] = {}
    missing: list[str] = []
    for kind in WATCHED_KINDS:
        refs = services.store.list_sets(kind)
        age = now - refs[0].created_at.timestamp() if refs else NEVER_SECONDS
        ages[kind] = round(age, 1)
        services.metrics.put("BackupAgeSeconds", "Seconds", ages[kind], kind)
        if not refs:
            missing.append(kind)
    result: dict[str, Any] = {"backup_age_seconds": ages}
    if missing and services.settings.stack_role == "standby":
        # The first sign of a replication set-up that does not work (role, key policy, rules).
        result["warning"] = (
            f"no complete {', '.join(missing)} set has arrived in the standby bucket "
            f"{services.settings.bucket}: check the primary's StandbyBucketName, its replication role "
            "and this stack's key policy (docs/operations.md, Region is down)"
        )
        logger.warning("standby has no complete set", extra={"kinds": missing})
    last = services.state.get_marker(VERIFICATION_MARKER)
    verification_age = round(now - last, 1) if last is not None else NEVER_SECONDS
    services.metrics.put("VerificationAgeSeconds", "Seconds", verification_age, "verification")
    return {**result, "verification_age_seconds": verification_age}
