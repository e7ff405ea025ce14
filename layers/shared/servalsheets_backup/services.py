"""The adapters one operation needs, built from settings; tests and the drill swap parts."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from servalsheets_backup.adapters import aws
from servalsheets_backup.adapters.secrets import secret_field
from servalsheets_backup.errors import ConfigurationError
from servalsheets_backup.format.keys import EscrowRecipient, KmsKeyring
from servalsheets_backup.observability import CollectingMetrics, MetricsSink
from servalsheets_backup.settings import ENV_ENCRYPTION_KEY, ENV_REDIS_URL, ENV_TOKEN_STORE_KEY, Settings
from servalsheets_backup.store.locks import StateTable
from servalsheets_backup.store.sets import BackupStore


@dataclass
class Services:
    """Lazily created clients plus the domain objects built on them."""

    settings: Settings
    metrics: MetricsSink = field(default_factory=CollectingMetrics)
    clock: Callable[[], float] = time.time
    snapshot_exporter: Any = None  # an elasticache.SnapshotExporter; None means the AWS one
    serverless_caches: Any = None  # an elasticache.ServerlessCaches; None means the AWS one

    @classmethod
    def from_env(cls, metrics: MetricsSink | None = None) -> Services:
        """Services for the current environment variables."""
        return cls(Settings.from_env(), metrics or CollectingMetrics())

    def client(self, service: str) -> Any:
        """A boto3 client in the settings' Region (AWS_ENDPOINT_URL honoured)."""
        if self.settings.region:
            return aws.client_in(service, self.settings.region)
        return aws.client(service)

    def serverless(self) -> Any:
        """The ElastiCache Serverless adapter (the injected one, or the AWS API)."""
        if self.serverless_caches is not None:
            return self.serverless_caches
        from servalsheets_backup.adapters.elasticache import AwsServerlessCaches

        return AwsServerlessCaches(self.client("elasticache"))

    @cached_property
    def store(self) -> BackupStore:
        """The backup store for the configured bucket and KMS key."""
        escrow = None
        if self.settings.escrow_public_key_pem:
            escrow = EscrowRecipient.from_pem(self.settings.escrow_public_key_pem.encode())
        keyring = KmsKeyring(
            self.client("kms"),
            self.settings.kms_key_id,
            escrow,
            replica_key_id=self.settings.replica_kms_key_id,
        )
        return BackupStore(
            self.client("s3"),
            self.settings.bucket,
            keyring,
            environment=self.settings.environment,
            kms_key_id=self.settings.kms_key_id,
            replica=self.settings.stack_role == "standby",
        )

    @cached_property
    def state(self) -> StateTable:
        """Locks and idempotency records."""
        return StateTable(self.client("dynamodb"), self.settings.state_table)

    def redis_url(self) -> str:
        """REDIS_URL from the environment or from its Secrets Manager secret."""
        if self.settings.redis_url:
            return self.settings.redis_url
        if self.settings.redis_url_secret_id:
            return secret_field(
                self.client("secretsmanager"), self.settings.redis_url_secret_id, (ENV_REDIS_URL,)
            )
        raise ConfigurationError("set REDIS_URL or REDIS_URL_SECRET_ID to back up or restore Redis")

    def token_key_text(self) -> str:
        """The live token store key (ENCRYPTION_KEY / TOKEN_STORE_KEY) as text; never logged."""
        if self.settings.token_key:
            return self.settings.token_key
        if self.settings.token_key_secret_id:
            return secret_field(
                self.client("secretsmanager"),
                self.settings.token_key_secret_id,
                (ENV_ENCRYPTION_KEY, ENV_TOKEN_STORE_KEY),
            )
        raise ConfigurationError(
            "the token store key is not configured: set TOKEN_KEY_SECRET_ID (Secrets Manager) or "
            "ENCRYPTION_KEY / TOKEN_STORE_KEY"
        )
