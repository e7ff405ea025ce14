"""Backup sets in S3, audit records, and the DynamoDB locks."""
