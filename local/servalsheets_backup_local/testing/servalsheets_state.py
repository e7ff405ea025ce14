"""Realistic ServalSheets state for the drill and the workflow tests: Redis keys, token store, config.

Every secret value generated here is returned in :attr:`SeededState.secret_values`, so tests can
search logs, metrics, manifests, audit records and CLI output for each of them.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from servalsheets_backup.adapters.secrets import secret_field
from servalsheets_backup.format.tokenstore import encrypt_store, parse_key

from .environment import ENV_SECRET, PARAMETER_PATH, TOKEN_KEY_SECRET, LocalEnvironment
from .seed import seed_servalsheets


@dataclass
class SeededState:
    """What was seeded (counts and the secret values to hunt for in outputs)."""

    redis_keys: int
    token_path: Path
    secret_values: list[str] = field(default_factory=list)
    parameters: dict[str, str] = field(default_factory=dict)


def seed_state(
    environment: LocalEnvironment,
    keys: int,
    seed: int = 7,
    redis_client: redis.Redis | redis.RedisCluster | None = None,
) -> SeededState:
    """Seed Redis (production, or ``redis_client``'s), the token store file, the .env secret, SSM
    parameters and credentials.json."""
    client = redis_client or redis.Redis.from_url(environment.production.url)
    try:
        summary = seed_servalsheets(client, keys, seed=seed)
        redis_keys = int(client.dbsize())
    finally:
        client.close()
    del summary
    values: list[str] = []
    manager = environment.client("secretsmanager")
    token_key = secret_field(manager, TOKEN_KEY_SECRET, ("ENCRYPTION_KEY",))
    values.append(token_key)
    values += _write_token_store(environment.token_path, parse_key(token_key))
    env_values = {
        "ENCRYPTION_KEY": token_key,
        "JWT_SECRET": secrets.token_urlsafe(48),
        "STATE_SECRET": secrets.token_urlsafe(32),
        "OAUTH_CLIENT_SECRET": secrets.token_urlsafe(32),
        "OAUTH_ISSUER": "https://servalsheets.example.com",
        "GOOGLE_CLIENT_ID": "1234567890-drill.apps.googleusercontent.com",
        "GOOGLE_CLIENT_SECRET": "GOCSPX-" + secrets.token_urlsafe(24),
        "ALLOWED_REDIRECT_URIS": "https://servalsheets.example.com/oauth/callback",
    }
    manager.create_secret(Name=ENV_SECRET, SecretString=json.dumps(env_values))
    values += [
        v
        for k, v in env_values.items()
        if k not in ("OAUTH_ISSUER", "ALLOWED_REDIRECT_URIS", "GOOGLE_CLIENT_ID")
    ]
    parameters = _put_parameters(environment)
    values += [v for k, v in parameters.items() if k.endswith("SECRET")]
    credentials = {
        "installed": {
            "client_id": env_values["GOOGLE_CLIENT_ID"],
            "client_secret": env_values["GOOGLE_CLIENT_SECRET"],
            "redirect_uris": [env_values["ALLOWED_REDIRECT_URIS"]],
        }
    }
    descriptor = os.open(environment.credentials_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        json.dump(credentials, handle)
    return SeededState(redis_keys, environment.token_path, values, parameters)


def _write_token_store(path: Path, key: bytes) -> list[str]:
    access, refresh = "ya29." + secrets.token_urlsafe(60), "1//" + secrets.token_urlsafe(60)
    tokens: dict[str, Any] = {
        "access_token": access,
        "refresh_token": refresh,
        "expiry_date": 1_900_000_000_000,
        # bandit B105: the OAuth token type, not a credential.
        "token_type": "Bearer",  # nosec B105
        "scope": "https://www.googleapis.com/auth/spreadsheets https://www.googleapis.com/auth/drive.file",
    }
    from servalsheets_backup.format.tokenstore import write_token_file_atomic

    write_token_file_atomic(path, encrypt_store(tokens, key))
    return [access, refresh]


def _put_parameters(environment: LocalEnvironment) -> dict[str, str]:
    ssm = environment.client("ssm")
    parameters = {
        f"{PARAMETER_PATH}PORT": "3000",
        f"{PARAMETER_PATH}NODE_ENV": "production",
        f"{PARAMETER_PATH}oauth/WEBHOOK_SECRET": secrets.token_urlsafe(32),
    }
    for name, value in parameters.items():
        kind = "SecureString" if name.endswith("SECRET") else "String"
        ssm.put_parameter(Name=name, Value=value, Type=kind, Overwrite=True)
    return parameters


def redis_snapshot(url: str) -> dict[bytes, tuple[bytes | None, int]]:
    """Every key's DUMP payload and PTTL (for exact before/after comparisons)."""
    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(count=1000))
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.dump(key)
            pipe.pttl(key)
        values = pipe.execute()
        return {key: (values[2 * i], int(values[2 * i + 1])) for i, key in enumerate(keys)}
    finally:
        client.close()


def describe(state: SeededState) -> dict[str, Any]:
    """Report form (never the values)."""
    return {
        "redis_keys": state.redis_keys,
        "token_store": str(state.token_path),
        "secrets_seeded": len(state.secret_values),
    }
