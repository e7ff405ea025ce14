"""The ServalSheets encrypted OAuth token store file: parse, decrypt, write and fingerprint it.

The file is UTF-8 JSON, indented by 2 spaces, with no trailing newline::

    {"version": 1, "iv": b64(12 bytes), "tag": b64(16 bytes), "ciphertext": b64, "createdAt": ISO}

encrypted with AES-256-GCM (no associated data) under a 64-hex-character key used directly,
without a KDF. ``"cleared": true`` marks a logged-out store whose iv, tag and ciphertext are empty.
The application rewrites the file on every token refresh through ``<path>.tmp`` and a rename.

A wrong but well-formed key only makes the application log a warning and run unauthenticated
while its health check stays green, so a restore must test-decrypt with the live key itself.
No message raised here contains the key, a token or any byte of the file.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from servalsheets_backup.errors import TokenKeyMismatchError, TokenStoreError
from servalsheets_backup.format.encoding import b64decode, b64encode

TOKEN_STORE_VERSION = 1
KEY_BYTES = 32
IV_BYTES = 12
TAG_BYTES = 16
# A token store holds a handful of tokens (a few KiB); anything far larger is the wrong file.
MAX_STORE_BYTES = 1024 * 1024
TMP_SUFFIX = ".tmp"
FINGERPRINT_LABEL = b"servalsheets-backup/v1/token-key-fingerprint"
FINGERPRINT_PREFIX = "hmac-sha256:"
TOKEN_FIELDS = ("access_token", "refresh_token", "expiry_date", "token_type", "scope", "id_token")

_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
_JSON_WORDS = ("true", "false", "null", "-")  # what a value cut short can still start with
_TYPE_NAMES: dict[type, str] = {
    bool: "a boolean",
    int: "a number",
    float: "a number",
    str: "a string",
    list: "a list",
    dict: "an object",
    type(None): "null",
}

KEY_MISMATCH_MESSAGE = (
    "the live token store key cannot decrypt this token store (AES-GCM authentication failed); "
    "ENCRYPTION_KEY/TOKEN_STORE_KEY does not match the key the file was written with"
)


@dataclass(frozen=True)
class TokenStoreFile:
    """A parsed token store file; the ciphertext is still encrypted."""

    version: int
    iv: bytes
    tag: bytes
    ciphertext: bytes = field(repr=False)
    created_at: str
    cleared: bool = False


def parse_key(text: str) -> bytes:
    """Decode the 64-hex-character token store key to 32 bytes, as the application does."""
    expected = 2 * KEY_BYTES
    if len(text) != expected:
        hint = " (it has leading or trailing whitespace)" if text != text.strip() else ""
        raise TokenStoreError(
            f"the token store key must be {expected} hexadecimal characters ({KEY_BYTES} bytes); "
            f"got {len(text)} characters{hint}"
        )
    # Checked by hand: bytes.fromhex would skip spaces and return a short key.
    if not all(char in _HEX_DIGITS for char in text):
        raise TokenStoreError(
            f"the token store key must be {expected} hexadecimal characters ({KEY_BYTES} bytes); "
            "it contains non-hex characters"
        )
    return bytes.fromhex(text)


def key_fingerprint(key: bytes) -> str:
    """Identify a key without revealing it: ``hmac-sha256:`` + HMAC-SHA256(key, fixed label).

    HMAC keyed with the key is a pseudo-random function of it: the output cannot be inverted,
    and testing a guess needs the full key, so it gives no shortcut against a 256-bit key (a
    guess is as costly to check against the fingerprint as against a file encrypted with it).
    The fixed label keeps the value from equalling any other MAC made with the same key.
    """
    return FINGERPRINT_PREFIX + hmac.new(key, FINGERPRINT_LABEL, hashlib.sha256).hexdigest()


def _decode_json(data: bytes, subject: str) -> Any:
    if not data:
        raise TokenStoreError(f"{subject} is empty (0 bytes)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TokenStoreError(
            f"{subject} is not UTF-8 text (invalid byte at offset {exc.start}); "
            "it is not a ServalSheets token store"
        ) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        if _cut_short(text, exc):
            raise TokenStoreError(
                f"{subject} is truncated: its JSON ends after {len(data)} bytes before the object "
                "is complete (an interrupted write or copy)"
            ) from None
        raise TokenStoreError(
            f"{subject} is not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        ) from None
    except ValueError:  # e.g. a number longer than Python's int-conversion limit
        raise TokenStoreError(f"{subject} is not JSON the token store can hold") from None


def _cut_short(text: str, exc: json.JSONDecodeError) -> bool:
    """True when the parser ran out of text, rather than meeting something that is not JSON."""
    rest = text[exc.pos :]
    if not rest or exc.msg.startswith("Unterminated string"):
        return True
    return exc.msg == "Expecting value" and any(word.startswith(rest) for word in _JSON_WORDS)


def _type_name(value: Any) -> str:
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def _string_field(record: dict[str, Any], name: str, subject: str) -> str:
    if name not in record:
        raise TokenStoreError(f"{subject} has no {name!r} field")
    value = record[name]
    if not isinstance(value, str):
        raise TokenStoreError(f"{subject}: field {name!r} must be a string; got {_type_name(value)}")
    return value


def _base64_field(record: dict[str, Any], name: str, subject: str, length: int | None) -> bytes:
    try:
        value = b64decode(_string_field(record, name, subject))
    except ValueError:
        raise TokenStoreError(f"{subject}: field {name!r} is not valid base64") from None
    if length is not None and len(value) != length:
        raise TokenStoreError(
            f"{subject}: field {name!r} decodes to {len(value)} bytes; it must be {length} bytes"
        )
    return value


def _check_version(record: dict[str, Any], subject: str) -> None:
    if "version" not in record:
        raise TokenStoreError(f"{subject} has no 'version' field")
    version = record["version"]
    if type(version) is not int:  # bool is an int subclass; the application wants exactly 1
        raise TokenStoreError(
            f"{subject}: field 'version' must be the number {TOKEN_STORE_VERSION}; got {_type_name(version)}"
        )
    if version != TOKEN_STORE_VERSION:
        shown = str(version) if abs(version) < 10**9 else "out of range"
        raise TokenStoreError(f"{subject}: unsupported token store version {shown}")


def _check_created_at(record: dict[str, Any], subject: str) -> str:
    created_at = _string_field(record, "createdAt", subject)
    try:
        datetime.fromisoformat(created_at)
    except ValueError:
        raise TokenStoreError(f"{subject}: field 'createdAt' is not an ISO-8601 timestamp") from None
    return created_at


def _is_cleared(record: dict[str, Any], subject: str) -> bool:
    cleared = record.get("cleared", False)
    if not isinstance(cleared, bool):
        raise TokenStoreError(f"{subject}: field 'cleared' must be true or false; got {_type_name(cleared)}")
    return cleared


def _parse_cleared(record: dict[str, Any], subject: str, created_at: str) -> TokenStoreFile:
    for name in ("iv", "tag", "ciphertext"):
        if _string_field(record, name, subject):
            raise TokenStoreError(
                f"{subject} is marked cleared but field {name!r} is not empty; "
                "a cleared store has empty iv, tag and ciphertext"
            )
    return TokenStoreFile(TOKEN_STORE_VERSION, b"", b"", b"", created_at, cleared=True)


def parse_store(data: bytes, subject: str = "token store") -> TokenStoreFile:
    """Parse and check a token store file's bytes; raises ``TokenStoreError`` naming the problem."""
    record = _decode_json(data, subject)
    if not isinstance(record, dict):
        raise TokenStoreError(f"{subject}: the JSON is {_type_name(record)}, not an object")
    _check_version(record, subject)
    created_at = _check_created_at(record, subject)
    if _is_cleared(record, subject):
        return _parse_cleared(record, subject, created_at)
    return TokenStoreFile(
        version=TOKEN_STORE_VERSION,
        iv=_base64_field(record, "iv", subject, IV_BYTES),
        tag=_base64_field(record, "tag", subject, TAG_BYTES),
        ciphertext=_base64_field(record, "ciphertext", subject, None),
        created_at=created_at,
    )


def _check_key(key: bytes) -> None:
    if len(key) != KEY_BYTES:
        raise TokenStoreError(f"the token store key must be {KEY_BYTES} bytes; got {len(key)}")


def decrypt_store(store: TokenStoreFile, key: bytes) -> dict[str, Any]:
    """Decrypt the tokens; a wrong key raises ``TokenKeyMismatchError``.

    A cleared (logged-out) store decrypts to ``{}`` without any cryptography: it holds no
    ciphertext, so it cannot tell whether ``key`` is the right one.
    """
    _check_key(key)
    if store.cleared:
        return {}
    try:
        plaintext = AESGCM(key).decrypt(store.iv, store.ciphertext + store.tag, None)
    except InvalidTag:
        raise TokenKeyMismatchError(KEY_MISMATCH_MESSAGE) from None
    try:
        tokens = json.loads(plaintext.decode("utf-8"))
    except ValueError:  # also UnicodeDecodeError; neither message may echo the plaintext
        raise TokenStoreError("the decrypted token store is not UTF-8 JSON") from None
    if not isinstance(tokens, dict):
        raise TokenStoreError(f"the decrypted token store is {_type_name(tokens)}, not a JSON object")
    return tokens


def _now_iso() -> str:
    """The current time as JavaScript's ``Date.prototype.toISOString`` writes it."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def encrypt_store(
    tokens: dict[str, Any],
    key: bytes,
    *,
    iv: bytes | None = None,
    created_at: str | None = None,
) -> bytes:
    """Encrypt ``tokens`` into file bytes identical to what the application writes.

    The plaintext is ``JSON.stringify(tokens)``: compact, in the dict's order, non-ASCII kept
    as UTF-8 (hence ``ensure_ascii=False``). Pass ``iv`` and ``created_at`` only to reproduce
    a test vector; a fixed IV reused with the same key breaks AES-GCM.
    """
    _check_key(key)
    nonce = os.urandom(IV_BYTES) if iv is None else iv
    if len(nonce) != IV_BYTES:
        raise TokenStoreError(f"the token store IV must be {IV_BYTES} bytes; got {len(nonce)}")
    plaintext = json.dumps(tokens, separators=(",", ":"), ensure_ascii=False).encode()
    sealed = AESGCM(key).encrypt(nonce, plaintext, None)
    record = {
        "version": TOKEN_STORE_VERSION,
        "iv": b64encode(nonce),
        "tag": b64encode(sealed[-TAG_BYTES:]),
        "ciphertext": b64encode(sealed[:-TAG_BYTES]),
        "createdAt": created_at or _now_iso(),
    }
    return json.dumps(record, indent=2).encode()


def _expiry_iso(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        moment = datetime.fromtimestamp(value / 1000, UTC)
    except (OverflowError, OSError, ValueError):
        return None
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def summarize_tokens(tokens: dict[str, Any]) -> dict[str, Any]:
    """Metadata that is safe to log: which fields exist, the expiry, the scope count; no values.

    ``expiry_date`` is ISO-8601 UTC, or ``None`` when absent or not epoch milliseconds;
    ``scope_count`` is ``None`` when there is no ``scope`` string.
    """
    scope = tokens.get("scope")
    return {
        "fields": [name for name in TOKEN_FIELDS if name in tokens],
        "other_field_count": sum(1 for name in tokens if name not in TOKEN_FIELDS),
        "expiry_date": _expiry_iso(tokens.get("expiry_date")),
        "scope_count": len(scope.split()) if isinstance(scope, str) else None,
    }


def _tmp_path(path: Path) -> Path:
    return path.with_name(path.name + TMP_SUFFIX)


def read_token_file(path: str | Path) -> bytes:
    """Read the store at ``path`` in one open; a leftover ``<path>.tmp`` is never read.

    The application replaces the file by rename, so the single open sees either the old or
    the new file, complete.
    """
    path = Path(path)
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_STORE_BYTES + 1)
    except FileNotFoundError:
        if _tmp_path(path).exists():
            raise TokenStoreError(
                f"token store file {path} is missing; a leftover {_tmp_path(path)} exists from "
                "an interrupted write and is not a token store"
            ) from None
        raise TokenStoreError(f"token store file {path} does not exist") from None
    except OSError as exc:
        raise TokenStoreError(f"cannot read token store file {path}: {exc.strerror}") from None
    if len(data) > MAX_STORE_BYTES:
        raise TokenStoreError(
            f"token store file {path} is larger than {MAX_STORE_BYTES} bytes; it is not a token store"
        )
    return data


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_token_file_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` as the application does: ``<path>.tmp`` (mode 0600), fsync, rename.

    The directory is fsynced too, so the rename survives a crash. Run it while the application
    is stopped: it writes the same ``.tmp`` name on every token refresh.
    """
    path = Path(path)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = _tmp_path(path)
    # O_NOFOLLOW: a planted .tmp symlink must not redirect the tokens elsewhere.
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(tmp, flags, 0o600)
    try:
        os.fchmod(fd, 0o600)  # O_CREAT leaves the mode of an existing leftover .tmp alone
        _write_all(fd, data)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    tmp.replace(path)
    _fsync_directory(path.parent)
