"""Environment variable names and the typed settings parsed from them.

Settings are read when a handler or CLI command runs, never at import: in the local drill every
function shares one process and its environment.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from servalsheets_backup.errors import ConfigurationError

# Backup store
ENV_BUCKET = "BACKUP_BUCKET"
ENV_KMS_KEY_ID = "BACKUP_KMS_KEY_ID"
ENV_ENVIRONMENT = "BACKUP_ENVIRONMENT"
ENV_ESCROW_PUBLIC_KEY = "ESCROW_PUBLIC_KEY"
ENV_STATE_TABLE = "STATE_TABLE"
ENV_NOTIFY_TOPIC_ARN = "NOTIFY_TOPIC_ARN"
# Standby Region
ENV_STACK_ROLE = "STACK_ROLE"
ENV_REPLICA_KMS_KEY_ID = "BACKUP_REPLICA_KMS_KEY_ID"
STACK_ROLES = ("primary", "standby")
# bandit B105 below: these are the names of environment variables, not secrets.
# Redis
ENV_REDIS_MODE = "REDIS_MODE"
ENV_REDIS_URL = "REDIS_URL"
ENV_REDIS_URL_SECRET_ID = "REDIS_URL_SECRET_ID"  # nosec B105
ENV_REPLICATION_GROUP_ID = "ELASTICACHE_REPLICATION_GROUP_ID"
ENV_SERVERLESS_CACHE_NAME = "ELASTICACHE_SERVERLESS_CACHE_NAME"
ENV_REDIS_RETENTION_DAYS = "REDIS_RETENTION_DAYS"
ENV_REDIS_SHARD_CONCURRENCY = "REDIS_SHARD_CONCURRENCY"
# Token store
ENV_TOKEN_STORE_PATH = "GOOGLE_TOKEN_STORE_PATH"  # nosec B105
ENV_ENCRYPTION_KEY = "ENCRYPTION_KEY"
ENV_TOKEN_STORE_KEY = "TOKEN_STORE_KEY"  # nosec B105
ENV_TOKEN_KEY_SECRET_ID = "TOKEN_KEY_SECRET_ID"  # nosec B105
# Configuration
ENV_CONFIG_SECRET_IDS = "CONFIG_SECRET_IDS"  # nosec B105
ENV_CONFIG_PARAMETER_PATH = "CONFIG_PARAMETER_PATH"
ENV_CONFIG_FILES = "CONFIG_FILES"
# Restore and verification
ENV_APP_URL = "APP_URL"
ENV_APP_HOST = "APP_HOST"
ENV_OAUTH_ISSUER = "OAUTH_ISSUER"
ENV_ECS_CLUSTER = "ECS_CLUSTER"
ENV_ECS_SERVICE = "ECS_SERVICE"

REDIS_MODES = ("logical", "rdb-stream", "elasticache")
_ENVIRONMENT_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")


def _split_list(value: str | None) -> tuple[str, ...]:
    return tuple(item.strip() for item in (value or "").split(",") if item.strip())


@dataclass(frozen=True)
class Settings:
    """Everything a handler, the CLI or the drill needs from its environment."""

    bucket: str
    kms_key_id: str
    environment: str = "prod"
    escrow_public_key_pem: str | None = None
    state_table: str | None = None
    notify_topic_arn: str | None = None
    redis_mode: str = "logical"
    redis_url: str | None = field(default=None, repr=False)
    redis_url_secret_id: str | None = None
    replication_group_id: str | None = None
    serverless_cache_name: str | None = None
    redis_retention_days: int = 7
    redis_shard_concurrency: int = 4  # shards a Map state dumps or restores at once
    stack_role: str = "primary"  # standby: the bucket is a replica, filled by S3 Replication
    # standby: the replica here of the primary's multi-Region key, which unwraps replicated sets
    replica_kms_key_id: str | None = None
    region: str | None = None  # AWS_REGION (Lambda sets it); None: boto3's own resolution
    token_store_path: str | None = None
    token_key: str | None = field(default=None, repr=False)
    token_key_secret_id: str | None = None
    config_secret_ids: tuple[str, ...] = ()
    config_parameter_path: str | None = None
    config_files: tuple[str, ...] = ()
    app_url: str | None = None
    app_host: str | None = None
    oauth_issuer: str | None = None
    ecs_cluster: str | None = None
    ecs_service: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Parse and validate settings; raises ConfigurationError naming the bad variable."""
        env = os.environ if env is None else env
        bucket = env.get(ENV_BUCKET, "").strip()
        kms_key_id = env.get(ENV_KMS_KEY_ID, "").strip()
        if not bucket:
            raise ConfigurationError(f"{ENV_BUCKET} is not set: export {ENV_BUCKET}=<backup bucket name>")
        if not kms_key_id:
            raise ConfigurationError(
                f"{ENV_KMS_KEY_ID} is not set: export {ENV_KMS_KEY_ID}=<KMS key id, ARN or alias>"
            )
        environment = env.get(ENV_ENVIRONMENT, "prod").strip() or "prod"
        if not _ENVIRONMENT_NAME.match(environment):
            raise ConfigurationError(
                f"{ENV_ENVIRONMENT}={environment!r} is invalid: use lowercase letters, digits and '-'"
            )
        redis_mode = env.get(ENV_REDIS_MODE, "logical").strip() or "logical"
        if redis_mode not in REDIS_MODES:
            raise ConfigurationError(f"{ENV_REDIS_MODE} must be one of {', '.join(REDIS_MODES)}")
        retention = env.get(ENV_REDIS_RETENTION_DAYS, "7").strip() or "7"
        if not retention.isdigit() or int(retention) < 1:
            raise ConfigurationError(f"{ENV_REDIS_RETENTION_DAYS} must be a whole number of days >= 1")
        concurrency = env.get(ENV_REDIS_SHARD_CONCURRENCY, "4").strip() or "4"
        if not concurrency.isdigit() or not 1 <= int(concurrency) <= 40:
            raise ConfigurationError(f"{ENV_REDIS_SHARD_CONCURRENCY} must be a whole number from 1 to 40")
        stack_role = env.get(ENV_STACK_ROLE, "primary").strip() or "primary"
        if stack_role not in STACK_ROLES:
            raise ConfigurationError(f"{ENV_STACK_ROLE} must be one of {', '.join(STACK_ROLES)}")
        parameter_path = env.get(ENV_CONFIG_PARAMETER_PATH) or None
        if parameter_path and not parameter_path.startswith("/"):
            raise ConfigurationError(f"{ENV_CONFIG_PARAMETER_PATH} must start with '/'")
        return cls(
            bucket=bucket,
            kms_key_id=kms_key_id,
            environment=environment,
            escrow_public_key_pem=env.get(ENV_ESCROW_PUBLIC_KEY) or None,
            state_table=env.get(ENV_STATE_TABLE) or None,
            notify_topic_arn=env.get(ENV_NOTIFY_TOPIC_ARN) or None,
            redis_mode=redis_mode,
            redis_url=env.get(ENV_REDIS_URL) or None,
            redis_url_secret_id=env.get(ENV_REDIS_URL_SECRET_ID) or None,
            replication_group_id=env.get(ENV_REPLICATION_GROUP_ID) or None,
            serverless_cache_name=env.get(ENV_SERVERLESS_CACHE_NAME) or None,
            redis_retention_days=int(retention),
            redis_shard_concurrency=int(concurrency),
            stack_role=stack_role,
            replica_kms_key_id=env.get(ENV_REPLICA_KMS_KEY_ID) or None,
            region=env.get("AWS_REGION") or None,
            token_store_path=env.get(ENV_TOKEN_STORE_PATH) or None,
            token_key=env.get(ENV_ENCRYPTION_KEY) or env.get(ENV_TOKEN_STORE_KEY) or None,
            token_key_secret_id=env.get(ENV_TOKEN_KEY_SECRET_ID) or None,
            config_secret_ids=_split_list(env.get(ENV_CONFIG_SECRET_IDS)),
            config_parameter_path=parameter_path,
            config_files=_split_list(env.get(ENV_CONFIG_FILES)),
            app_url=env.get(ENV_APP_URL) or None,
            app_host=env.get(ENV_APP_HOST) or None,
            oauth_issuer=env.get(ENV_OAUTH_ISSUER) or None,
            ecs_cluster=env.get(ENV_ECS_CLUSTER) or None,
            ecs_service=env.get(ENV_ECS_SERVICE) or None,
        )
