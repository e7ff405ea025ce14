"""Backup and verification age, emitted hourly so stale-backup alarms work on one metric.

Alarms on the age (rather than on the absence of success metrics) also cover weekly kinds,
whose interval is longer than a CloudWatch alarm can look back.
"""

from __future__ import annotations

from typing import Any

from servalsheets_backup.services import Services

WATCHED_KINDS = ("config", "tokens", "redis", "full")
VERIFICATION_MARKER = "verification-succeeded"
NEVER_SECONDS = 10 * 365 * 86400  # reported when nothing exists yet, so the alarm fires


def report(services: Services) -> dict[str, Any]:
    """Emit BackupAgeSeconds per kind and VerificationAgeSeconds; return the ages."""
    now = services.clock()
    ages: dict[str, float] = {}
    for kind in WATCHED_KINDS:
        refs = services.store.list_sets(kind)
        age = now - refs[0].created_at.timestamp() if refs else NEVER_SECONDS
        ages[kind] = round(age, 1)
        services.metrics.put("BackupAgeSeconds", "Seconds", ages[kind], kind)
    last = services.state.get_marker(VERIFICATION_MARKER)
    verification_age = round(now - last, 1) if last is not None else NEVER_SECONDS
    services.metrics.put("VerificationAgeSeconds", "Seconds", verification_age, "verification")
    return {"backup_age_seconds": ages, "verification_age_seconds": verification_age}
