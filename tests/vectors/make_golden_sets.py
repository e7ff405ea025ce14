"""Write golden backup sets with the current code: ``python -m tests.vectors.make_golden_sets``.

Deploys the template locally (moto, real redis-servers) in logical and rdb-stream mode, seeds
ServalSheets-shaped state, fires the ``full`` schedule and copies the set's S3 objects into
``tests/vectors/sets-v<format>/<mode>/`` with ``expected.json`` computed from the source. Data
keys are wrapped by (moto) KMS and for the checked-in test escrow key, which is how tests read
them without the KMS that wrote them. Run it once per new format version; never overwrite a
committed directory (the script refuses).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import redis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import x25519

from servalsheets_backup.format.envelope import FORMAT_VERSION
from servalsheets_backup.store.sets import set_prefix
from servalsheets_backup_local.testing.environment import start_environment
from tests.vectors.golden import ESCROW_KEY_FILE, VECTORS, keyspace
from tests.workflow.support import backed_up, reset

MODES = {"logical": {}, "rdb-stream": {"RedisMode": "rdb-stream"}}
KEYS = 300


def escrow_public_pem() -> str:
    """The public half of the checked-in test escrow key (created on first use)."""
    path = VECTORS / ESCROW_KEY_FILE
    if not path.exists():
        private = x25519.X25519PrivateKey.generate()
        path.write_bytes(
            private.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    private_key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    return (
        private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def write_golden_set(mode: str, out: Path) -> None:
    """Back up freshly seeded state in ``mode`` and copy the set and what it must restore to."""
    env = start_environment(extra_parameters={**MODES[mode], "EscrowPublicKey": escrow_public_pem()})
    try:
        reset(env, keys=KEYS)
        client = redis.Redis.from_url(env.production.url)
        source = keyspace(client)
        client.close()
        result = backed_up(env, "full")
        s3 = env.client("s3")
        bucket = env.output("BackupBucketName")
        prefix = set_prefix("full", result["backup_id"])
        listing = s3.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]
        for item in listing:
            target = out / "objects" / item["Key"]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read())
        tokens = env.token_path.read_bytes()
        expected = {
            "mode": mode,
            "format_version": FORMAT_VERSION,
            "kind": "full",
            "backup_id": result["backup_id"],
            "environment": env.function_env("PrepareRestoreFunction")["BACKUP_ENVIRONMENT"],
            "tokens_sha256": hashlib.sha256(tokens).hexdigest(),
            "redis": source,
        }
        (out / "expected.json").write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")
    finally:
        env.close()


def main() -> int:
    """Write every mode's golden set for the current format version."""
    root = VECTORS / f"sets-v{FORMAT_VERSION}"
    for mode in MODES:
        out = root / mode
        if out.exists():
            print(f"{out} exists: golden sets are never regenerated", file=sys.stderr)
            return 1
        write_golden_set(mode, out)
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
