"""The minimal AWS side a backup needs, created in moto: a versioned bucket, a KMS key, the state table."""

from __future__ import annotations

import boto3


def create_backup_account(bucket: str, table: str = "state") -> str:
    """Create the bucket, key and lock table inside an active mock_aws(); returns the key ARN."""
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    boto3.client("dynamodb").create_table(
        TableName=table,
        BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
    )
    return str(boto3.client("kms").create_key()["KeyMetadata"]["Arn"])
