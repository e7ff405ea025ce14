"""A stand-in for S3 Replication (moto stores a bucket's replication configuration but copies nothing).

``ReplicationStandIn.run`` does what S3 does with the replication rules the stack put on the
source bucket (taken from the deployment: moto 5.2.5 reads a rule's ``Filter.Prefix`` and
``SourceSelectionCriteria`` back empty). For each enabled rule, in priority order, every object
version under the rule's prefix that was not replicated yet is copied into the destination
bucket (in its Region), with its tags and SSE-KMS under the rule's ``ReplicaKmsKeyID``, and only
if it is SSE-KMS encrypted when the rule selects those. Delete markers are not replicated (the
template disables it), and tag changes on replicated objects are copied again, as S3 does for
``ReplicateTags``. Objects the caller holds back stay pending, so tests can show a standby with
a manifest but not all objects. Nothing here is S3's timing: the copy happens when ``run`` is
called, and the report measures the delay from each object's upload to its copy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from servalsheets_backup.adapters import aws

NAME = "S3 Replication (stand-in: copies by the bucket's own replication rules when run)"


@dataclass
class ReplicationReport:
    """What one ``run`` copied, what it held back, and the longest upload-to-copy delay."""

    copied: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    tags_updated: int = 0
    max_delay_seconds: float = 0.0


class ReplicationStandIn:
    """Replicates ``bucket`` (in ``region``) the way ``configuration`` (its replication rules) says."""

    def __init__(self, bucket: str, region: str, configuration: dict[str, Any]) -> None:
        self.bucket, self.region, self.configuration = bucket, region, configuration
        self._done: dict[tuple[str, str], str] = {}  # (key, version) -> destination bucket

    def run(self, hold_back: Callable[[str], bool] | None = None) -> ReplicationReport:
        """Copy every not yet replicated version the rules select (except those held back)."""
        source = aws.client_in("s3", self.region)
        if not source.get_bucket_replication(Bucket=self.bucket).get("ReplicationConfiguration"):
            raise RuntimeError(f"{self.bucket} has no replication configuration: nothing would be replicated")
        enabled = (r for r in self.configuration["Rules"] if r["Status"] == "Enabled")
        rules = sorted(enabled, key=lambda r: r.get("Priority", 0))
        report = ReplicationReport()
        for rule in rules:
            self._run_rule(source, rule, hold_back or (lambda key: False), report)
        return report

    def _run_rule(
        self, source: Any, rule: dict[str, Any], hold_back: Callable[[str], bool], report: ReplicationReport
    ) -> None:
        prefix = rule.get("Filter", {}).get("Prefix", rule.get("Prefix", ""))
        destination = rule["Destination"]
        target_bucket = destination["Bucket"].split(":::", 1)[1]
        target = aws.client_in("s3", _bucket_region(source, target_bucket))
        for version in _current_versions(source, self.bucket, prefix):
            key, version_id = version["Key"], version["VersionId"]
            if (key, version_id) in self._done:
                report.tags_updated += _sync_tags(source, target, self.bucket, target_bucket, key, version_id)
                continue
            if hold_back(key):
                report.pending.append(key)
                continue
            if self._copy(source, target, rule, target_bucket, key, version_id):
                self._done[(key, version_id)] = target_bucket
                report.copied.append(key)
                delay = (datetime.now(UTC) - version["LastModified"]).total_seconds()
                report.max_delay_seconds = max(report.max_delay_seconds, round(delay, 3))

    def _copy(
        self, source: Any, target: Any, rule: dict[str, Any], target_bucket: str, key: str, version_id: str
    ) -> bool:
        head = source.head_object(Bucket=self.bucket, Key=key, VersionId=version_id)
        kms_only = rule.get("SourceSelectionCriteria", {}).get("SseKmsEncryptedObjects", {}).get("Status")
        if kms_only == "Enabled" and head.get("ServerSideEncryption") != "aws:kms":
            return False  # S3 skips objects the rule does not select
        body = source.get_object(Bucket=self.bucket, Key=key, VersionId=version_id)["Body"].read()
        tags = source.get_object_tagging(Bucket=self.bucket, Key=key, VersionId=version_id)["TagSet"]
        replica_key = rule["Destination"].get("EncryptionConfiguration", {}).get("ReplicaKmsKeyID")
        encryption = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": replica_key} if replica_key else {}
        target.put_object(
            Bucket=target_bucket,
            Key=key,
            Body=body,
            Metadata=head.get("Metadata", {}),
            Tagging="&".join(f"{t['Key']}={t['Value']}" for t in tags),
            **encryption,
        )
        return True


def _bucket_region(client: Any, bucket: str) -> str:
    location = client.get_bucket_location(Bucket=bucket).get("LocationConstraint")
    return str(location or "us-east-1")


def _current_versions(client: Any, bucket: str, prefix: str) -> list[dict[str, Any]]:
    found = []
    for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
        # the prefix again: moto 5.2.5's ListObjectVersions does not always apply it
        found += [v for v in page.get("Versions", []) if v.get("IsLatest") and v["Key"].startswith(prefix)]
    return found


def _sync_tags(source: Any, target: Any, bucket: str, target_bucket: str, key: str, version_id: str) -> int:
    """Copy the source version's tags when they changed since (retagged expirable, say)."""
    tags = source.get_object_tagging(Bucket=bucket, Key=key, VersionId=version_id)["TagSet"]
    current = target.get_object_tagging(Bucket=target_bucket, Key=key)["TagSet"]
    if sorted(map(str, tags)) == sorted(map(str, current)):
        return 0
    target.put_object_tagging(Bucket=target_bucket, Key=key, Tagging={"TagSet": tags})
    return 1
