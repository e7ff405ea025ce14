"""The CLI round-trips a backup set through a local S3 endpoint (moto server) and catches tampering."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from servalsheets_backup.adapters.aws import reset_clients
from servalsheets_backup.cli.main import program
from servalsheets_backup_local.testing.moto_server import start_moto

pytestmark = pytest.mark.integration
SECRET_VALUE = "jwt-secret-value-that-must-never-leak-0123456789"


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[dict[str, str]]:
    server = start_moto(execute_state_machines=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", server.endpoint)
    reset_clients()
    s3 = boto3.client("s3", endpoint_url=server.endpoint)
    s3.create_bucket(Bucket="cli-bucket")
    s3.put_bucket_versioning(Bucket="cli-bucket", VersioningConfiguration={"Status": "Enabled"})
    key = boto3.client("kms", endpoint_url=server.endpoint).create_key()["KeyMetadata"]["Arn"]
    boto3.client("dynamodb", endpoint_url=server.endpoint).create_table(
        TableName="state",
        BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
    )
    boto3.client("secretsmanager", endpoint_url=server.endpoint).create_secret(
        Name="servalsheets/env", SecretString=json.dumps({"JWT_SECRET": SECRET_VALUE})
    )
    env = {
        "BACKUP_BUCKET": "cli-bucket",
        "BACKUP_KMS_KEY_ID": key,
        "BACKUP_ENVIRONMENT": "test",
        "STATE_TABLE": "state",
        "CONFIG_SECRET_IDS": "servalsheets/env",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    yield {**env, "AWS_ENDPOINT_URL": server.endpoint}
    reset_clients()
    server.stop()


def run(argv: list[str]) -> tuple[int, str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    from servalsheets_backup.errors import BackupSystemError

    try:
        code = program(argv, stdout, stderr)
    except BackupSystemError as exc:
        code = exc.exit_code
        stderr.write(str(exc))
    return code, stdout.getvalue(), stderr.getvalue()


def test_backup_list_verify_decrypt_round_trip(aws_env: dict[str, str], tmp_path: Path) -> None:
    code, out, _ = run(["backup", "config", "--json"])
    assert code == 0
    backup_id = json.loads(out)["backup_id"]
    code, out, _ = run(["list", "--json"])
    assert [s["backup_id"] for s in json.loads(out)] == [backup_id]
    code, out, _ = run(["verify", "latest", "--kind", "config", "--json"])
    assert code == 0 and json.loads(out)["ok"] is True
    code, out, _ = run(["decrypt", backup_id, "--kind", "config", "--out", str(tmp_path / "out"), "--json"])
    assert code == 0
    bundle = json.loads((tmp_path / "out" / "config.bundle").read_bytes())
    assert SECRET_VALUE in bundle["secrets"]["servalsheets/env"]
    code, out, _ = run(["show", backup_id, "--json"])
    assert code == 0 and SECRET_VALUE not in out


def _flip(endpoint: str, key: str, position: int) -> None:
    s3 = boto3.client("s3", endpoint_url=endpoint)
    body = bytearray(s3.get_object(Bucket="cli-bucket", Key=key)["Body"].read())
    body[position % len(body)] ^= 0x80
    s3.put_object(Bucket="cli-bucket", Key=key, Body=bytes(body))


@pytest.mark.parametrize("target", ["manifest.json", "config.bundle"])
def test_verify_exits_4_after_any_changed_byte(aws_env: dict[str, str], target: str) -> None:
    code, out, _ = run(["backup", "config", "--json"])
    backup_id = json.loads(out)["backup_id"]
    s3 = boto3.client("s3", endpoint_url=aws_env["AWS_ENDPOINT_URL"])
    key = next(
        o["Key"]
        for o in s3.list_objects_v2(Bucket="cli-bucket", Prefix="config/")["Contents"]
        if o["Key"].endswith("/" + target)
    )
    size = s3.head_object(Bucket="cli-bucket", Key=key)["ContentLength"]
    for position in sorted({0, 9, size // 2, size - 1}):
        _flip(aws_env["AWS_ENDPOINT_URL"], key, position)
        code, out, err = run(["verify", backup_id, "--json"])
        assert code == 4, (position, out, err)
        failed = [c for c in json.loads(out)["checks"] if not c["ok"]] if out else []
        assert not out or failed[0]["object"] == target
        _flip(aws_env["AWS_ENDPOINT_URL"], key, position)  # restore the byte
        assert run(["verify", backup_id, "--json"])[0] == 0


def test_console_script_in_another_process(aws_env: dict[str, str]) -> None:
    assert run(["backup", "config", "--json"])[0] == 0
    env = {**os.environ, **aws_env}
    script = Path(sys.executable).with_name("servalsheets-backup")
    done = subprocess.run(
        [str(script), "verify", "latest", "--kind", "config"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "VERIFIED" in done.stdout
    missing = subprocess.run(
        [str(script), "show", "20200101T000000Z-00000000"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert missing.returncode == 3
    assert "error: no complete backup set" in missing.stderr
    usage = subprocess.run(
        [str(script), "verify"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert usage.returncode == 2


def test_deploy_check_lists_every_missing_answer_and_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "samconfig.toml"
    config.write_text(
        'version = 0.1\n[default.deploy.parameters]\nparameter_overrides = "RedisMode=elasticache"\n'
    )
    code, out, _err = run(["deploy-check", "--config", str(config)])
    assert code == 2
    for rule in ("ElastiCacheModeNeedsCache", "ElastiCacheModeNeedsVpc", "TokenBackupsNeedTheStore"):
        assert f"FAIL {rule}:" in out
    assert "cannot deploy" in out


def test_deploy_check_of_an_example_lists_what_the_stack_creates_as_json() -> None:
    example = Path(__file__).resolve().parents[2] / "deploy" / "samconfig.logical.toml"
    code, out, _err = run(["deploy-check", "--json", "--config", str(example)])
    report = json.loads(out)
    assert code == 0 and report["ok"] and report["problems"] == []
    assert report["creates"]["BackupBucket"] == "AWS::S3::Bucket"
    assert "servalsheets/prod/redis-url" not in out  # names parameters, never echoes answers


def test_deploy_check_refuses_a_missing_file_by_name(tmp_path: Path) -> None:
    code, _out, err = run(["deploy-check", "--config", str(tmp_path / "nope.toml")])
    assert code == 2 and "nope.toml: no such file" in err
