"""Inputs of the checked-in envelope test vectors (tests/vectors/envelope-v1.json).

Regenerate the expected bytes only when the format version changes:
``python -m tests.unit.envelope_vectors > tests/vectors/envelope-v1.json``.
"""

from __future__ import annotations

import hashlib
import io
import json
from typing import Any

from servalsheets_backup.format.envelope import COMPRESSION_NONE, COMPRESSION_ZSTD, encrypt_bytes
from servalsheets_backup.format.keys import DataKey, encryption_context

DATA_KEY = bytes(range(32))
NONCE_PREFIX = bytes.fromhex("a0a1a2a3a4a5a6")
SALT = bytes(range(100, 132))
WRAPPED = [{"type": "test-vector", "blob": "AAAA"}]
CONTEXT = encryption_context("20261125T020000Z-0badcafe", "tokens", "tokens.encrypted", "prod")
SMALL_PLAINTEXT = b'{"access_token":"ya29.vector","refresh_token":"1//vector"}' * 3


def large_plaintext() -> bytes:
    """3.5 MiB of deterministic, incompressible bytes (SHA-256 in counter mode)."""
    blocks = (hashlib.sha256(i.to_bytes(8, "big")).digest() for i in range((7 << 20) // 64))
    return b"".join(blocks)


def seal(plaintext: bytes, compression: str) -> bytes:
    """Seal ``plaintext`` with the fixed key, nonce prefix and salt."""
    sink = io.BytesIO()
    encrypt_bytes(
        plaintext,
        sink,
        DataKey(DATA_KEY, WRAPPED),
        CONTEXT,
        compression=compression,
        nonce_prefix=NONCE_PREFIX,
        salt=SALT,
    )
    return sink.getvalue()


def vectors() -> dict[str, Any]:
    """The vector file's content."""
    small = seal(SMALL_PLAINTEXT, COMPRESSION_ZSTD)
    large = seal(large_plaintext(), COMPRESSION_NONE)
    return {
        "small_zstd": {"sealed_hex": small.hex()},
        "large_none": {
            "sealed_sha256": hashlib.sha256(large).hexdigest(),
            "sealed_size": len(large),
        },
    }


if __name__ == "__main__":
    print(json.dumps(vectors(), indent=2))
