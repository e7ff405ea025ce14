"""The ``tokens`` component: the ServalSheets encrypted OAuth token store file.

It is stored byte for byte inside the envelope. At backup time it is test-decrypted with the
live key, because the application only warns and runs unauthenticated when its key cannot
read the file; a keyed fingerprint of that key goes into the manifest.
"""

from __future__ import annotations

import logging
from typing import Any

from servalsheets_backup.adapters.files import FileContent, check_local_path, read_source, write_source
from servalsheets_backup.errors import ConfigurationError, TokenStoreError
from servalsheets_backup.format.tokenstore import (
    decrypt_store,
    key_fingerprint,
    parse_key,
    parse_store,
    summarize_tokens,
)
from servalsheets_backup.services import Services

logger = logging.getLogger(__name__)
OBJECT_NAME = "tokens.encrypted"


def token_path(services: Services) -> str:
    """The configured token store location (path or s3:// URI)."""
    if not services.settings.token_store_path:
        raise ConfigurationError(
            "GOOGLE_TOKEN_STORE_PATH is not set: point it at the token store file (EFS path or s3:// URI)"
        )
    path = services.settings.token_store_path
    if not path.startswith("s3://"):
        check_local_path(path)
    return path


def live_key(services: Services) -> bytes:
    """The live ENCRYPTION_KEY / TOKEN_STORE_KEY as 32 bytes."""
    return parse_key(services.token_key_text())


def read_current(services: Services, *, must_exist: bool = False) -> bytes | None:
    """The token store bytes as they are now (None when absent, unless ``must_exist``)."""
    from pathlib import Path

    from servalsheets_backup.format.tokenstore import read_token_file

    path = token_path(services)
    if path.startswith("s3://"):
        content = read_source(path, services.client("s3"))
        if content is None and must_exist:
            raise TokenStoreError(f"token store object {path} does not exist; nothing to back up")
        return None if content is None else content.data
    if not must_exist and not Path(path).exists():
        return None
    return read_token_file(path)  # names a leftover <path>.tmp when the store itself is missing


def check_with_key(data: bytes, key: bytes) -> dict[str, Any]:
    """Parse and decrypt ``data`` with ``key``; returns safe metadata (TokenStoreError otherwise)."""
    store = parse_store(data)
    tokens = decrypt_store(store, key)
    return {
        "cleared": bool(getattr(store, "cleared", False)),
        "created_at": getattr(store, "created_at", None),
        "key_fingerprint": key_fingerprint(key),
        "tokens": summarize_tokens(tokens),
    }


def capture(services: Services) -> tuple[bytes, dict[str, Any]]:
    """Read the token store and prove the live key decrypts it; returns (bytes, summary)."""
    data = read_current(services, must_exist=True)
    if data is None:  # must_exist raises first; an explicit check, as asserts vanish under -O
        raise TokenStoreError(f"token store {token_path(services)} does not exist; nothing to back up")
    summary = check_with_key(data, live_key(services))
    summary["source"] = token_path(services)
    summary["size"] = len(data)
    logger.info("token store checked", extra={"cleared": summary["cleared"], "size": len(data)})
    return data, summary


def write(services: Services, data: bytes) -> None:
    """Write the token store atomically with mode 0600."""
    path = token_path(services)
    if path.startswith("s3://"):
        write_source(path, FileContent(data, 0o600), services.client("s3"))
        return
    from servalsheets_backup.format.tokenstore import write_token_file_atomic

    write_token_file_atomic(path, data)
