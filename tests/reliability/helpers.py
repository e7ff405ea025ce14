"""Shared pieces of the reliability suite: a stack built from template.yaml, fault injection, checks.

Everything runs on 127.0.0.1: a moto server in this process and real redis-server processes.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
from botocore.awsrequest import AWSResponse

from servalsheets_backup.adapters import aws
from servalsheets_backup.format.dump_payload import same_value
from servalsheets_backup.format.tokenstore import encrypt_store, write_token_file_atomic
from servalsheets_backup.observability import CollectingMetrics
from servalsheets_backup.services import Services
from servalsheets_backup.settings import Settings
from servalsheets_backup.store.audit import read_audit
from servalsheets_backup.store.sets import EXPIRABLE_TAG, SetRef
from servalsheets_backup_local.testing.intrinsics import Resolver
from servalsheets_backup_local.testing.local_deploy import Deployment, LocalDeployer, Site
from servalsheets_backup_local.testing.redis_server import RedisServer
from servalsheets_backup_local.testing.servalsheets_state import redis_snapshot
from servalsheets_backup_local.testing.template_file import load_template

REPO_ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_PATH = REPO_ROOT / "template.yaml"
ENVIRONMENT = "test"
ENV_SECRET = "servalsheets/test/env"
TOKEN_KEY_SECRET = "servalsheets/test/token-key"
PARAMETER_PATH = "/servalsheets/test/"
# The resources of the template that a backup or restore run in this process needs.
STACK_RESOURCES = ("BackupKey", "BackupBucket", "StateTable")


# -- a stack built from template.yaml ---------------------------------------------------------
def deploy_resources(logical_ids: tuple[str, ...], parameters: dict[str, Any] | None = None) -> Deployment:
    """Create some of the template's resources in moto, from the template's own resolved values."""
    template = load_template(TEMPLATE_PATH)
    deployer = LocalDeployer(
        REPO_ROOT, "ssbk-reliability", {"Environment": ENVIRONMENT, **(parameters or {})}
    )
    values = deployer._parameters(template)
    deployment = Deployment(template)

    def attribute(logical: str, name: str | None) -> Any:
        if name is None:
            return deployment.physical.get(logical, f"unresolved:{logical}")
        return deployment.attributes.get(logical, {}).get(name, f"unresolved:{logical}.{name}")

    resolver = Resolver(
        values, deployer._pseudo(), template.get("Conditions", {}), attribute, template.get("Mappings", {})
    )
    for logical_id in logical_ids:
        resource = template["Resources"][logical_id]
        properties = resolver.resolve(resource.get("Properties", {}))
        deployment.properties[logical_id] = properties
        site = Site(deployer, deployment, local_paths={}, runner=None)  # type: ignore[arg-type]
        deployer.create(site, logical_id, resource["Type"], properties)
    return deployment


def new_token_key() -> str:
    """A fresh 64-hex-character ServalSheets ENCRYPTION_KEY."""
    return secrets.token_hex(32)


def token_store_bytes(key_hex: str, access: str, refresh: str) -> bytes:
    """A token store file as the application writes it."""
    tokens = {
        "access_token": access,
        "refresh_token": refresh,
        "expiry_date": 1_900_000_000_000,
        "token_type": "Bearer",
        "scope": "https://www.googleapis.com/auth/spreadsheets",
    }
    return encrypt_store(tokens, bytes.fromhex(key_hex))


@dataclass
class MiniStack:
    """The backup bucket, KMS key and state table of the template in moto, plus ServalSheets state."""

    endpoint: str
    deployment: Deployment
    workdir: Path
    redis: RedisServer
    env: dict[str, str]
    secret_values: list[str] = field(default_factory=list)
    metrics: CollectingMetrics = field(default_factory=CollectingMetrics)

    @property
    def bucket(self) -> str:
        """Backup bucket name."""
        return self.deployment.physical["BackupBucket"]

    @property
    def key_arn(self) -> str:
        """Backup KMS key ARN."""
        return self.deployment.attributes["BackupKey"]["Arn"]

    @property
    def table(self) -> str:
        """State table name."""
        return self.deployment.physical["StateTable"]

    @property
    def token_path(self) -> Path:
        """The token store file."""
        return Path(self.env["GOOGLE_TOKEN_STORE_PATH"])

    def client(self, service: str) -> Any:
        """The cached boto3 client the code under test also uses."""
        return aws.client(service)

    def services(self, clock: Callable[[], float] | None = None, **overrides: str) -> Services:
        """Services as a Lambda of the stack would build them (fresh clients of the same cache)."""
        env = {**self.env, **overrides}
        services = Services(Settings.from_env(env), self.metrics)
        if clock is not None:
            services.clock = clock
        return services

    def sets(self, kind: str | None = None) -> list[SetRef]:
        """Complete sets, newest first."""
        return self.services().store.list_sets(kind)

    def keys(self, prefix: str = "") -> list[str]:
        """Every current object key under ``prefix``."""
        paginator = self.client("s3").get_paginator("list_objects_v2")
        return [
            item["Key"]
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix)
            for item in page.get("Contents", [])
        ]

    def uploads(self) -> list[dict[str, Any]]:
        """Multipart uploads that were started and neither completed nor aborted."""
        return list(self.client("s3").list_multipart_uploads(Bucket=self.bucket).get("Uploads", []))

    def lock(self, name: str) -> dict[str, Any] | None:
        """The lock item ``lock#<name>`` in the state table, or None."""
        item = self.client("dynamodb").get_item(
            TableName=self.table, Key={"pk": {"S": f"lock#{name}"}}, ConsistentRead=True
        )
        return item.get("Item")

    def audit(self) -> list[dict[str, Any]]:
        """Every audit record, oldest first."""
        return read_audit(self.client("s3"), self.bucket)

    def lifecycle(self) -> dict[str, Any]:
        """The bucket's lifecycle configuration as stored in moto."""
        return dict(self.client("s3").get_bucket_lifecycle_configuration(Bucket=self.bucket))

    def object(self, key: str) -> bytes:
        """Current bytes of one object."""
        return bytes(self.client("s3").get_object(Bucket=self.bucket, Key=key)["Body"].read())

    def put(self, key: str, body: bytes) -> str:
        """Overwrite an object (a new version); returns the version id."""
        response = self.client("s3").put_object(Bucket=self.bucket, Key=key, Body=body)
        return str(response.get("VersionId") or "")

    def drop_version(self, key: str, version_id: str) -> None:
        """Delete one version (puts the previous one back as current)."""
        self.client("s3").delete_object(Bucket=self.bucket, Key=key, VersionId=version_id)


def build_stack(endpoint: str, workdir: Path, redis_server: RedisServer) -> MiniStack:
    """Reset moto, create the template's bucket, key and table, and seed secrets and files."""
    import requests

    requests.post(f"{endpoint}/moto-api/reset", timeout=10).raise_for_status()
    aws.reset_clients()
    deployment = deploy_resources(STACK_RESOURCES)
    token_key = new_token_key()
    access, refresh = "ya29." + secrets.token_urlsafe(40), "1//" + secrets.token_urlsafe(40)
    jwt_secret, client_secret = secrets.token_urlsafe(32), "GOCSPX-" + secrets.token_urlsafe(20)
    webhook_secret = secrets.token_urlsafe(24)
    manager = aws.client("secretsmanager")
    manager.create_secret(Name=TOKEN_KEY_SECRET, SecretString=json.dumps({"ENCRYPTION_KEY": token_key}))
    manager.create_secret(
        Name=ENV_SECRET,
        SecretString=json.dumps(
            {"ENCRYPTION_KEY": token_key, "JWT_SECRET": jwt_secret, "GOOGLE_CLIENT_SECRET": client_secret}
        ),
    )
    ssm = aws.client("ssm")
    ssm.put_parameter(Name=f"{PARAMETER_PATH}PORT", Value="3000", Type="String")
    ssm.put_parameter(Name=f"{PARAMETER_PATH}WEBHOOK_SECRET", Value=webhook_secret, Type="SecureString")
    app_dir = workdir / "servalsheets"
    app_dir.mkdir(mode=0o700, exist_ok=True)
    token_path = app_dir / "tokens.encrypted"
    write_token_file_atomic(token_path, token_store_bytes(token_key, access, refresh))
    credentials = app_dir / "credentials.json"
    credentials.write_text(json.dumps({"installed": {"client_secret": client_secret}}))
    credentials.chmod(0o600)
    env = {
        "BACKUP_BUCKET": deployment.physical["BackupBucket"],
        "BACKUP_KMS_KEY_ID": deployment.attributes["BackupKey"]["Arn"],
        "BACKUP_ENVIRONMENT": ENVIRONMENT,
        "STATE_TABLE": deployment.physical["StateTable"],
        "REDIS_URL": redis_server.url,
        "GOOGLE_TOKEN_STORE_PATH": str(token_path),
        "TOKEN_KEY_SECRET_ID": TOKEN_KEY_SECRET,
        "CONFIG_SECRET_IDS": ENV_SECRET,
        "CONFIG_PARAMETER_PATH": PARAMETER_PATH,
        "CONFIG_FILES": str(credentials),
        # Tests restore into throwaway redis-servers named by URL (on AWS only secret ids are accepted).
        "ALLOW_LITERAL_REDIS_URL": "true",
    }
    values = [token_key, access, refresh, jwt_secret, client_secret, webhook_secret]
    return MiniStack(endpoint, deployment, workdir, redis_server, env, values)


# -- fault injection ----------------------------------------------------------------------------
class _Raw:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._body


def error_response(status: int, code: str, message: str, protocol: str) -> AWSResponse:
    """An AWS error response in the service's wire format (S3's XML or the JSON protocols)."""
    if protocol == "xml":
        body = (
            f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
            f"<Message>{message}</Message><RequestId>injected</RequestId></Error>"
        ).encode()
        headers = {"Content-Type": "application/xml", "x-amz-request-id": "injected"}
    else:
        body = json.dumps({"__type": code, "message": message}).encode()
        headers = {"Content-Type": "application/x-amz-json-1.1", "x-amzn-RequestId": "injected"}
    return AWSResponse("https://injected.invalid/", status, headers, _Raw(body))


@dataclass
class Injection:
    """Counts calls of one operation; after the first ``after``, answers ``times`` with an error."""

    status: int
    code: str
    message: str
    protocol: str
    times: int | None
    after: int = 0
    calls: int = 0
    injected: int = 0

    def __call__(self, request: Any = None, **_: Any) -> AWSResponse | None:
        self.calls += 1
        if self.calls <= self.after or (self.times is not None and self.injected >= self.times):
            return None
        self.injected += 1
        return error_response(self.status, self.code, self.message, self.protocol)


@contextmanager
def inject_error(
    client: Any,
    operation: str,
    status: int,
    code: str,
    message: str = "injected by the reliability suite",
    times: int | None = None,
    after: int = 0,
) -> Iterator[Injection]:
    """Answer ``operation`` on ``client`` with an AWS error (``times`` times, or always)."""
    service = client.meta.service_model.service_id.hyphenize()
    protocol = "xml" if service == "s3" else "json"
    injection = Injection(status, code, message, protocol, times, after)
    event = f"before-send.{service}.{operation}"
    client.meta.events.register(event, injection, unique_id=f"inject-{operation}")
    try:
        yield injection
    finally:
        client.meta.events.unregister(event, unique_id=f"inject-{operation}")


# -- Redis --------------------------------------------------------------------------------------
def seed_random_values(url: str, count: int, size: int, prefix: str = "servalsheets:etag:big") -> None:
    """``count`` incompressible string values of ``size`` bytes (data that spans parts and segments)."""
    client = redis.Redis.from_url(url)
    try:
        pipe = client.pipeline(transaction=False)
        for index in range(count):
            pipe.set(f"{prefix}:{index}", os.urandom(size))
        pipe.execute()
    finally:
        client.close()


Snapshot = dict[bytes, tuple[bytes | None, int]]
redis_state = redis_snapshot  # every key's DUMP payload and PTTL


def redis_differences(before: Snapshot, after: Snapshot, elapsed_ms: int, slack_ms: int = 2_000) -> list[str]:
    """Why ``after`` is not ``before`` (key by key), allowing only for time passing.

    Keys whose TTL ran out in between may be missing; every other key must be present with the
    same value (``same_value``: hash-table-encoded hashes and sets may list elements in another
    order) and a TTL that has gone down by no more than the time elapsed.
    """
    problems: list[str] = []
    for key, (payload, ttl) in before.items():
        if ttl != -1 and ttl <= elapsed_ms + slack_ms:
            continue  # may legitimately have expired
        if key not in after:
            problems.append(f"missing {key!r}")
            continue
        value, ttl_now = after[key]
        if payload is None or value is None or not same_value(payload, value):
            problems.append(f"value of {key!r} differs")
        if (ttl == -1) != (ttl_now == -1):
            problems.append(f"TTL of {key!r} was {ttl}, now {ttl_now}")
        elif ttl != -1 and not (ttl - elapsed_ms - slack_ms <= ttl_now <= ttl + slack_ms):
            problems.append(f"TTL of {key!r} was {ttl} ms, now {ttl_now} ms after {elapsed_ms} ms")
    problems += [f"unexpected {key!r}" for key in after if key not in before]
    return problems


def restore_snapshot(url: str, snapshot: Snapshot) -> None:
    """Make a Redis hold exactly ``snapshot`` (FLUSHDB, then RESTORE every key with its TTL)."""
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
        pipe = client.pipeline(transaction=False)
        for key, (payload, ttl) in snapshot.items():
            if payload is not None:
                pipe.restore(key, max(ttl, 0), payload, replace=True)
        pipe.execute()
    finally:
        client.close()


def start_redis_on(port: int, workdir: Path, password: str | None = None) -> subprocess.Popen[bytes]:
    """Start redis-server on a fixed port (a restarted server comes back where clients expect it)."""
    args = [
        "redis-server",
        "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
        "--dir", str(workdir), "--protected-mode", "yes", "--loglevel", "warning",
    ]  # fmt: skip
    if password:
        args += ["--requirepass", password]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            redis.Redis(port=port, password=password, socket_timeout=1).ping()
            return process
        except redis.ConnectionError:
            time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    raise RuntimeError(f"redis-server did not come back on port {port}")


# -- S3 lifecycle, evaluated the way S3 would -------------------------------------------------
@dataclass(frozen=True)
class LifecycleRule:
    """One lifecycle rule in the form the evaluator needs."""

    rule_id: str
    prefix: str
    tags: tuple[tuple[str, str], ...]
    expiration_days: int | None
    abort_upload_days: int | None

    def matches(self, key: str, tags: dict[str, str]) -> bool:
        """True when the rule's filter selects an object with ``key`` and ``tags``."""
        return key.startswith(self.prefix) and all(tags.get(k) == v for k, v in self.tags)


def lifecycle_rules(configuration: dict[str, Any]) -> list[LifecycleRule]:
    """Parse GetBucketLifecycleConfiguration's answer (enabled rules only)."""
    rules = []
    for raw in configuration.get("Rules", []):
        if raw.get("Status") != "Enabled":
            continue
        filter_ = raw.get("Filter", {})
        conjunction = filter_.get("And", {})
        prefix = conjunction.get("Prefix", filter_.get("Prefix", raw.get("Prefix", ""))) or ""
        tag_list = conjunction.get("Tags", []) + ([filter_["Tag"]] if "Tag" in filter_ else [])
        expiration = raw.get("Expiration", {}).get("Days")
        abort = raw.get("AbortIncompleteMultipartUpload", {}).get("DaysAfterInitiation")
        rules.append(
            LifecycleRule(
                raw.get("ID", ""),
                prefix,
                tuple((t["Key"], t["Value"]) for t in tag_list),
                int(expiration) if expiration is not None else None,
                int(abort) if abort is not None else None,
            )
        )
    return rules


def expiring_rules(rules: list[LifecycleRule], key: str, tags: dict[str, str], age_days: float) -> list[str]:
    """Ids of the expiration rules that would have expired this current object at ``age_days``."""
    return [
        rule.rule_id
        for rule in rules
        if rule.expiration_days is not None and rule.matches(key, tags) and age_days >= rule.expiration_days
    ]


def aborting_rules(rules: list[LifecycleRule], key: str, age_days: float) -> list[str]:
    """Ids of the rules that would abort an incomplete multipart upload of ``key`` at ``age_days``."""
    return [
        rule.rule_id
        for rule in rules
        if rule.abort_upload_days is not None
        and not rule.tags
        and key.startswith(rule.prefix)
        and age_days >= rule.abort_upload_days
    ]


def object_tags(s3: Any, bucket: str, key: str) -> dict[str, str]:
    """An object's tags as a dict."""
    return {t["Key"]: t["Value"] for t in s3.get_object_tagging(Bucket=bucket, Key=key)["TagSet"]}


def expirable(s3: Any, bucket: str, key: str) -> str | None:
    """The value of the servalsheets-backup:expirable tag of an object."""
    return object_tags(s3, bucket, key).get(EXPIRABLE_TAG)


# -- secret search ------------------------------------------------------------------------------
def encodings(value: str) -> list[str]:
    """The forms in which a leaked value could appear in text: as is, base64, JSON-escaped."""
    import base64

    forms = {value, base64.b64encode(value.encode()).decode().rstrip("="), json.dumps(value)[1:-1]}
    return [form for form in forms if len(form) >= 8]


def find_leaks(values: list[str], texts: dict[str, str]) -> list[str]:
    """Which secret values (in any encoding) occur in which of the named texts."""
    leaks = []
    for index, value in enumerate(values):
        for form in encodings(value):
            for name, text in texts.items():
                if form in text:
                    leaks.append(f"secret #{index} found in {name}")
    return sorted(set(leaks))


def utc_now_iso() -> str:
    """Now, ISO-8601 UTC."""
    return datetime.now(UTC).isoformat()
