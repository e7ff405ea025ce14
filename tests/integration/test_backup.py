"""Backups of each kind through the domain code, against moto and real files: contents and hygiene."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from servalsheets_backup.adapters.aws import reset_clients
from servalsheets_backup.components import config as component_config
from servalsheets_backup.errors import LockHeldError, TokenKeyMismatchError, TokenStoreError
from servalsheets_backup.format.tokenstore import (
    decrypt_store,
    encrypt_store,
    key_fingerprint,
    parse_key,
    parse_store,
)
from servalsheets_backup.observability import CollectingMetrics
from servalsheets_backup.services import Services
from servalsheets_backup.settings import Settings
from servalsheets_backup.store.audit import read_audit
from servalsheets_backup.workflows import backup

from .aws_account import create_backup_account

pytestmark = pytest.mark.integration
BUCKET = "ssbk-backup-tests"
VECTOR_KEY = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
VECTOR_TOKENS = {
    "access_token": "ya29.test",
    "refresh_token": "1//test",
    "expiry_date": 1775300000000,
    "token_type": "Bearer",
    "scope": "https://www.googleapis.com/auth/spreadsheets",
}
SECRETS = {
    "JWT_SECRET": "jwt-Secret-Value-0f9e8d7c6b5a",
    "OAUTH_CLIENT_SECRET": "oauth-Client-Secret-1a2b3c4d",
}
PARAMETER_SECRET = "webhook-Hmac-Secret-5e6f7a8b"


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    with mock_aws():
        reset_clients()
        key = create_backup_account(BUCKET)
        manager = boto3.client("secretsmanager")
        manager.create_secret(Name="servalsheets/env", SecretString=json.dumps(SECRETS))
        manager.create_secret(
            Name="servalsheets/token-key", SecretString=json.dumps({"TOKEN_STORE_KEY": VECTOR_KEY})
        )
        ssm = boto3.client("ssm")
        ssm.put_parameter(Name="/servalsheets/prod/PORT", Value="3000", Type="String")
        ssm.put_parameter(
            Name="/servalsheets/prod/hooks/WEBHOOK_SECRET", Value=PARAMETER_SECRET, Type="SecureString"
        )
        credentials = tmp_path / "credentials.json"
        credentials.write_text(json.dumps({"installed": {"client_secret": "GOCSPX-credentials-secret"}}))
        credentials.chmod(0o640)
        token_path = tmp_path / "tokens.encrypted"
        token_path.write_bytes(encrypt_store(VECTOR_TOKENS, parse_key(VECTOR_KEY)))
        (tmp_path / "tokens.encrypted.tmp").write_bytes(b"half-written leftover")
        settings = Settings.from_env(
            {
                "BACKUP_BUCKET": BUCKET,
                "BACKUP_KMS_KEY_ID": key,
                "BACKUP_ENVIRONMENT": "test",
                "STATE_TABLE": "state",
                "CONFIG_SECRET_IDS": "servalsheets/env",
                "CONFIG_PARAMETER_PATH": "/servalsheets/prod/",
                "CONFIG_FILES": str(credentials),
                "GOOGLE_TOKEN_STORE_PATH": str(token_path),
                "TOKEN_KEY_SECRET_ID": "servalsheets/token-key",
            }
        )
        yield Services(settings, CollectingMetrics())
        reset_clients()


def _all_text(services: Services, caplog: pytest.LogCaptureFixture) -> str:
    store = services.store
    manifests = [json.dumps(store.load_manifest(ref).body()) for ref in store.list_sets()]
    metrics = services.metrics.points  # type: ignore[attr-defined]
    return "\n".join([caplog.text, *manifests, json.dumps(read_audit(store.s3, BUCKET)), json.dumps(metrics)])


def test_config_backup_holds_every_value_and_leaks_none(
    services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="servalsheets_backup")
    result = backup.run_backup(services, "config", owner="test", trigger="test")
    ref = services.store.find(result.backup_id, "config")
    manifest = services.store.load_manifest(ref)
    bundle = component_config.ConfigBundle.from_bytes(
        b"".join(services.store.read_object(ref, manifest.objects[0]))
    )
    assert json.loads(bundle.secrets["servalsheets/env"]) == SECRETS
    assert bundle.parameters["/servalsheets/prod/hooks/WEBHOOK_SECRET"] == {
        "type": "SecureString",
        "value": PARAMETER_SECRET,
    }
    assert [content.mode for content in bundle.files.values() if content] == [0o640]
    assert sorted(manifest.components["config"]["fingerprints"]) == [
        f"file:{next(iter(bundle.files))}",
        "parameter:/servalsheets/prod/PORT",
        "parameter:/servalsheets/prod/hooks/WEBHOOK_SECRET",
        "secret:servalsheets/env",
    ]
    text = _all_text(services, caplog)
    for secret in [*SECRETS.values(), PARAMETER_SECRET, "GOCSPX-credentials-secret"]:
        assert secret not in text


def test_token_backup_matches_the_facts_vector_and_records_the_fingerprint(services: Services) -> None:
    result = backup.run_backup(services, "tokens", owner="test")
    ref = services.store.find(result.backup_id, "tokens")
    manifest = services.store.load_manifest(ref)
    stored = b"".join(services.store.read_object(ref, manifest.objects[0]))
    assert stored == Path(services.settings.token_store_path or "").read_bytes()  # byte for byte
    assert decrypt_store(parse_store(stored), parse_key(VECTOR_KEY)) == VECTOR_TOKENS
    assert json.loads(stored)["iv"] and b"half-written" not in stored
    assert manifest.components["tokens"]["key_fingerprint"] == key_fingerprint(parse_key(VECTOR_KEY))
    assert VECTOR_KEY not in json.dumps(manifest.body())


def test_wrong_live_key_fails_the_backup_loudly(services: Services, caplog: pytest.LogCaptureFixture) -> None:
    boto3.client("secretsmanager").put_secret_value(
        SecretId="servalsheets/token-key", SecretString=json.dumps({"ENCRYPTION_KEY": "ff" * 32})
    )
    with pytest.raises(TokenKeyMismatchError, match="cannot decrypt"):
        backup.run_backup(services, "tokens", owner="test")
    assert services.metrics.values("BackupFailed", "tokens") == [1]  # type: ignore[attr-defined]
    assert services.store.list_sets("tokens") == []
    failures = [r for r in read_audit(services.store.s3, BUCKET) if r["result"] == "failed"]
    assert failures and "TokenKeyMismatchError" in failures[0]["error"]
    assert "ff" * 32 not in caplog.text
    assert backup.run_backup(services, "config", owner="test").kind == "config"  # the lock was released


def test_missing_token_file_names_the_leftover(services: Services) -> None:
    path = Path(services.settings.token_store_path or "")
    path.unlink()
    with pytest.raises(TokenStoreError, match=r"leftover .*\.tmp"):
        backup.run_backup(services, "tokens", owner="test")


def test_two_backups_of_one_kind_cannot_overlap(services: Services) -> None:
    pending = backup.begin(services, "config", owner="first")
    with pytest.raises(LockHeldError, match="locked by first"):
        backup.begin(services, "config", owner="second")
    backup.add_config(services, pending)
    backup.finalize(services, pending)
    assert backup.begin(services, "config", owner="second").kind == "config"


def test_retried_finalize_does_not_duplicate_the_set(services: Services) -> None:
    pending = backup.begin(services, "config", owner="run-1", idempotency_key="execution-1")
    backup.add_config(services, pending)
    first = backup.finalize(services, pending)
    again = backup.finalize(services, pending)
    assert again.backup_id == first.backup_id
    assert [ref.backup_id for ref in services.store.list_sets("config")] == [first.backup_id]
    retried = backup.begin(services, "config", owner="run-1", idempotency_key="execution-1")
    assert retried.backup_id == first.backup_id
