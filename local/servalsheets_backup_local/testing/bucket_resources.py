"""The backup bucket in moto: versioning, encryption, public access block, lifecycle, Object Lock
and replication rules, each translated from CloudFormation's property names to the S3 API's."""

from __future__ import annotations

from typing import Any

from servalsheets_backup.adapters import aws


def create_bucket(name: str, region: str, p: dict[str, Any]) -> None:
    """Create the bucket and apply each configuration the template gives it."""
    s3 = aws.client("s3")
    location = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
    s3.create_bucket(Bucket=name, ObjectLockEnabledForBucket=bool(p.get("ObjectLockEnabled")), **location)
    if "VersioningConfiguration" in p:
        s3.put_bucket_versioning(Bucket=name, VersioningConfiguration=p["VersioningConfiguration"])
    if "ReplicationConfiguration" in p:
        s3.put_bucket_replication(
            Bucket=name, ReplicationConfiguration=replication_rules(p["ReplicationConfiguration"])
        )
    if "BucketEncryption" in p:
        rules = [
            {
                "ApplyServerSideEncryptionByDefault": rule["ServerSideEncryptionByDefault"],
                "BucketKeyEnabled": bool(rule.get("BucketKeyEnabled", False)),
            }
            for rule in p["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        ]
        s3.put_bucket_encryption(Bucket=name, ServerSideEncryptionConfiguration={"Rules": rules})
    if "PublicAccessBlockConfiguration" in p:
        s3.put_public_access_block(
            Bucket=name, PublicAccessBlockConfiguration=p["PublicAccessBlockConfiguration"]
        )
    if "LifecycleConfiguration" in p:
        s3.put_bucket_lifecycle_configuration(
            Bucket=name, LifecycleConfiguration=_lifecycle(p["LifecycleConfiguration"])
        )
    if p.get("ObjectLockConfiguration"):
        s3.put_object_lock_configuration(Bucket=name, ObjectLockConfiguration=p["ObjectLockConfiguration"])


def replication_rules(config: dict[str, Any]) -> dict[str, Any]:
    """A bucket's replication rules in the S3 API's form (CloudFormation's ``Id`` is ``ID``)."""
    rules = [
        {("ID" if key == "Id" else key): value for key, value in rule.items()} for rule in config["Rules"]
    ]
    return {"Role": config["Role"], "Rules": rules}


def _lifecycle(config: dict[str, Any]) -> dict[str, Any]:
    """CloudFormation's lifecycle property names -> the S3 API's."""
    rules = []
    for rule in config.get("Rules", []):
        api: dict[str, Any] = {
            "ID": rule.get("Id", "rule"),
            "Status": rule.get("Status", "Enabled"),
        }
        filter_: dict[str, Any] = {}
        tags = [{"Key": t["Key"], "Value": t["Value"]} for t in rule.get("TagFilters", [])]
        prefix = rule.get("Prefix")
        if tags:
            filter_ = (
                {"And": {"Prefix": prefix or "", "Tags": tags}}
                if (prefix or len(tags) > 1)
                else {"Tag": tags[0]}
            )
        else:
            filter_ = {"Prefix": prefix or ""}
        api["Filter"] = filter_
        if "ExpirationInDays" in rule:
            api["Expiration"] = {"Days": int(rule["ExpirationInDays"])}
        if "AbortIncompleteMultipartUpload" in rule:
            api["AbortIncompleteMultipartUpload"] = {
                "DaysAfterInitiation": int(rule["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"])
            }
        if "NoncurrentVersionExpiration" in rule:
            api["NoncurrentVersionExpiration"] = {
                "NoncurrentDays": int(rule["NoncurrentVersionExpiration"]["NoncurrentDays"])
            }
        if "ExpiredObjectDeleteMarker" in rule:
            api.setdefault("Expiration", {})["ExpiredObjectDeleteMarker"] = bool(
                rule["ExpiredObjectDeleteMarker"]
            )
        rules.append(api)
    return {"Rules": rules}
