"""The audit trail: one JSON line per operation, written once under ``audit/`` and logged."""

from __future__ import annotations

import json
import logging
import secrets
from datetime import UTC, datetime
from typing import Any

from servalsheets_backup.adapters.s3 import MultipartSink

logger = logging.getLogger(__name__)
AUDIT_PREFIX = "audit/"


def audit_key(operation: str, subject_id: str, now: datetime) -> str:
    """``audit/YYYY/MM/DD/<time>-<operation>-<id>-<rand>.jsonl`` (write-once, sortable)."""
    stamp = now.strftime("%Y%m%dT%H%M%S.%fZ")
    return f"{AUDIT_PREFIX}{now:%Y/%m/%d}/{stamp}-{operation}-{subject_id}-{secrets.token_hex(3)}.jsonl"


def write_audit(
    s3: Any, bucket: str, kms_key_id: str, operation: str, subject_id: str, record: dict[str, Any]
) -> dict[str, Any]:
    """Write one audit record (no secret values may be passed in) and log it."""
    now = datetime.now(UTC)
    entry = {
        "time": now.isoformat().replace("+00:00", "Z"),
        "operation": operation,
        "id": subject_id,
        **record,
    }
    sink = MultipartSink(
        s3,
        bucket,
        audit_key(operation, subject_id, now),
        kms_key_id=kms_key_id,
        content_type="application/x-ndjson",
    )
    sink.write(json.dumps(entry, sort_keys=True).encode() + b"\n")
    sink.close()
    logger.info("audit record", extra={"audit": entry})
    return entry


def read_audit(s3: Any, bucket: str, prefix: str = AUDIT_PREFIX) -> list[dict[str, Any]]:
    """All audit records under ``prefix``, oldest first."""
    records: list[dict[str, Any]] = []
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            body = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            records.extend(json.loads(line) for line in body.splitlines() if line.strip())
    records.sort(key=lambda record: record["time"])
    return records
