"""The ServalSheets token store file: the documented test vector, and every malformed input."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from servalsheets_backup.errors import TokenKeyMismatchError, TokenStoreError
from servalsheets_backup.format.tokenstore import (
    FINGERPRINT_LABEL,
    KEY_MISMATCH_MESSAGE,
    TokenStoreFile,
    decrypt_store,
    encrypt_store,
    key_fingerprint,
    parse_key,
    parse_store,
    read_token_file,
    summarize_tokens,
    write_token_file_atomic,
)

pytestmark = pytest.mark.unit

# The vector from shared/servalsheets-facts.md section 1 (checked against Node and cryptography).
KEY_HEX = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
WRONG_KEY_HEX = "f" * 64
IV = bytes(range(12))
CREATED_AT = "2026-04-05T00:00:00.000Z"
PLAINTEXT = (
    '{"access_token":"ya29.test","refresh_token":"1//test","expiry_date":1775300000000,'
    '"token_type":"Bearer","scope":"https://www.googleapis.com/auth/spreadsheets"}'
)
VECTOR_IV = "AAECAwQFBgcICQoL"
VECTOR_TAG = "3iDVXQv2KTz/to7bAqGsEg=="
VECTOR_CIPHERTEXT = (
    "bTrUVSMsvsWWTwCXVLtGFUxMxkzCKg/6SlZj4AaQT1GQocYCvZu+TP84xLvOionsa2jGeL7K+FZdX8+FzMj8msIQR0rS"
    "hOPvhlyuoB8oq13VvVYNg4WHsv8g90N3qOMmTab9I9a+1BpoXKeHNqoaL+mrh/3eW+A+3Pqpi11JsYYN49xi+1jfdhDI"
    "OSe9usSuwepQwXIYq+z1YZ9No1Tt"
)
# JSON.stringify(record, null, 2): 2-space indent, this field order, no trailing newline.
VECTOR_FILE = (
    "{\n"
    '  "version": 1,\n'
    f'  "iv": "{VECTOR_IV}",\n'
    f'  "tag": "{VECTOR_TAG}",\n'
    f'  "ciphertext": "{VECTOR_CIPHERTEXT}",\n'
    f'  "createdAt": "{CREATED_AT}"\n'
    "}"
).encode()
TOKENS = json.loads(PLAINTEXT)
SECRETS = (KEY_HEX, KEY_HEX.upper(), WRONG_KEY_HEX, "ya29.test", "1//test")


def assert_no_secret(exc: BaseException) -> None:
    text = str(exc) + repr(exc)
    for secret in SECRETS:
        assert secret not in text
    assert VECTOR_CIPHERTEXT[:16] not in text


def store_error(data: bytes) -> TokenStoreError:
    with pytest.raises(TokenStoreError) as caught:
        parse_store(data, "tokens.encrypted")
    assert_no_secret(caught.value)
    return caught.value


def record(**changes: object) -> bytes:
    fields: dict[str, object] = json.loads(VECTOR_FILE)
    fields.update(changes)
    return json.dumps({k: v for k, v in fields.items() if v is not ...}, indent=2).encode()


# --- the test vector --------------------------------------------------------------------------


def test_encrypt_reproduces_the_application_file_byte_for_byte() -> None:
    data = encrypt_store(TOKENS, parse_key(KEY_HEX), iv=IV, created_at=CREATED_AT)
    assert data == VECTOR_FILE
    assert not data.endswith(b"\n")


def test_plaintext_is_compact_json_in_the_given_order() -> None:
    assert json.dumps(TOKENS, separators=(",", ":")) == PLAINTEXT


def test_vector_decrypts_with_its_key() -> None:
    store = parse_store(VECTOR_FILE)
    assert (store.version, store.iv, store.created_at, store.cleared) == (1, IV, CREATED_AT, False)
    assert len(store.tag) == 16
    assert decrypt_store(store, parse_key(KEY_HEX)) == TOKENS


def test_wrong_key_is_a_key_mismatch() -> None:
    with pytest.raises(TokenKeyMismatchError) as caught:
        decrypt_store(parse_store(VECTOR_FILE), parse_key(WRONG_KEY_HEX))
    assert str(caught.value) == KEY_MISMATCH_MESSAGE
    assert isinstance(caught.value, TokenStoreError)
    assert_no_secret(caught.value)


def test_tampered_ciphertext_also_fails_authentication() -> None:
    store = parse_store(VECTOR_FILE)
    tampered = TokenStoreFile(1, store.iv, store.tag, b"\x00" + store.ciphertext[1:], CREATED_AT)
    with pytest.raises(TokenKeyMismatchError):
        decrypt_store(tampered, parse_key(KEY_HEX))


def test_round_trip_with_random_iv_and_current_time() -> None:
    key = os.urandom(32)
    tokens = {"refresh_token": "r-é", "expiry_date": 1}
    data = encrypt_store(tokens, key)
    store = parse_store(data)
    assert store.iv != IV
    assert store.created_at.endswith("Z") and len(store.created_at) == len(CREATED_AT)
    assert decrypt_store(store, key) == tokens
    assert parse_store(encrypt_store(tokens, key)).iv != store.iv


# --- keys -------------------------------------------------------------------------------------


def test_key_parses_in_either_case() -> None:
    assert parse_key(KEY_HEX) == bytes.fromhex(KEY_HEX)
    assert parse_key(KEY_HEX.upper()) == bytes.fromhex(KEY_HEX)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (KEY_HEX[:12], "got 12 characters"),
        ("", "got 0 characters"),
        (KEY_HEX + "00", "got 66 characters"),
        (KEY_HEX + "\n", "got 65 characters (it has leading or trailing whitespace)"),
        (KEY_HEX[:-1] + "g", "contains non-hex characters"),
        (KEY_HEX[:30] + "  " + KEY_HEX[32:], "contains non-hex characters"),
        (KEY_HEX[:-1] + "é", "contains non-hex characters"),
    ],
)
def test_bad_keys_are_refused_without_echoing_them(text: str, message: str) -> None:
    with pytest.raises(TokenStoreError, match=re.escape(message)) as caught:
        parse_key(text)
    assert "64 hexadecimal characters (32 bytes)" in str(caught.value)
    assert_no_secret(caught.value)
    if len(text) > 8:
        assert text.strip()[:8] not in str(caught.value)


def test_raw_keys_of_the_wrong_length_are_refused() -> None:
    store = parse_store(VECTOR_FILE)
    with pytest.raises(TokenStoreError, match="32 bytes; got 31"):
        decrypt_store(store, bytes(31))
    with pytest.raises(TokenStoreError, match="32 bytes; got 16"):
        encrypt_store(TOKENS, bytes(16))
    with pytest.raises(TokenStoreError, match="IV must be 12 bytes"):
        encrypt_store(TOKENS, bytes(32), iv=bytes(16))


def test_fingerprint_identifies_the_key_without_revealing_it() -> None:
    key = parse_key(KEY_HEX)
    fingerprint = key_fingerprint(key)
    expected = hmac.new(key, FINGERPRINT_LABEL, hashlib.sha256).hexdigest()
    assert fingerprint == "hmac-sha256:" + expected
    assert fingerprint == key_fingerprint(parse_key(KEY_HEX.upper()))
    assert fingerprint != key_fingerprint(parse_key(WRONG_KEY_HEX))
    assert KEY_HEX not in fingerprint
    assert hashlib.sha256(key).hexdigest() not in fingerprint  # not a plain, unlabelled hash


# --- malformed files --------------------------------------------------------------------------


def test_unsupported_version() -> None:
    assert "unsupported token store version 2" in str(store_error(record(version=2)))
    assert "unsupported token store version 0" in str(store_error(record(version=0)))


@pytest.mark.parametrize(
    ("version", "got"), [("1", "a string"), (True, "a boolean"), (1.5, "a number"), (None, "null")]
)
def test_version_must_be_the_number_one(version: object, got: str) -> None:
    assert f"must be the number 1; got {got}" in str(store_error(record(version=version)))


def test_missing_fields_are_named() -> None:
    for name in ("version", "iv", "tag", "ciphertext", "createdAt"):
        assert f"has no '{name}' field" in str(store_error(record(**{name: ...})))


def test_wrong_field_types_are_named() -> None:
    assert "field 'iv' must be a string; got a number" in str(store_error(record(iv=12)))
    assert "field 'tag' must be a string; got a list" in str(store_error(record(tag=[])))
    assert "'cleared' must be true or false" in str(store_error(record(cleared="yes")))
    assert "'createdAt' is not an ISO-8601" in str(store_error(record(createdAt="yesterday")))


def test_bad_base64() -> None:
    assert "field 'ciphertext' is not valid base64" in str(store_error(record(ciphertext="%%%")))
    assert "field 'iv' is not valid base64" in str(store_error(record(iv="AAECAwQFBgcICQo")))
    assert "field 'tag' is not valid base64" in str(store_error(record(tag="é" * 4)))


def test_wrong_iv_and_tag_lengths() -> None:
    message = str(store_error(record(iv="AAECAwQFBgcICQoLDA0ODw==")))
    assert "field 'iv' decodes to 16 bytes; it must be 12 bytes" in message
    assert "field 'tag' decodes to 12 bytes" in str(store_error(record(tag=VECTOR_IV)))


def test_cleared_store_is_valid_and_decrypts_to_nothing() -> None:
    data = record(iv="", tag="", ciphertext="", cleared=True)
    store = parse_store(data)
    assert store.cleared
    assert decrypt_store(store, parse_key(WRONG_KEY_HEX)) == {}


def test_cleared_store_must_be_empty() -> None:
    message = str(store_error(record(cleared=True)))
    assert "marked cleared but field 'iv' is not empty" in message


def test_cleared_false_is_an_ordinary_store() -> None:
    store = parse_store(record(cleared=False))
    assert decrypt_store(store, parse_key(KEY_HEX)) == TOKENS


def test_unknown_fields_are_ignored_like_the_application_does() -> None:
    assert decrypt_store(parse_store(record(extra="x")), parse_key(KEY_HEX)) == TOKENS


@pytest.mark.parametrize("cut", [1, 2, 20, 60, len(VECTOR_FILE) // 2, len(VECTOR_FILE) - 1])
def test_truncated_json(cut: int) -> None:
    message = str(store_error(VECTOR_FILE[:cut]))
    assert "is truncated" in message
    assert f"after {cut} bytes" in message


def test_truncated_inside_a_literal() -> None:
    assert "is truncated" in str(store_error(b'{"version": 1, "cleared": tr'))
    assert "is truncated" in str(store_error(b'{"version": -'))


def test_not_json() -> None:
    assert "is not JSON (Expecting value at line 1 column 1)" in str(store_error(b"hello"))
    assert "is not JSON" in str(store_error(VECTOR_FILE + b"x"))
    assert "is not JSON" in str(store_error(b"{}t"))
    assert "the JSON is a list, not an object" in str(store_error(b"[1, 2]"))


def test_not_utf8_and_empty() -> None:
    assert "is not UTF-8 text (invalid byte at offset 0)" in str(store_error(b"\xff\xfe{}"))
    assert "is empty (0 bytes)" in str(store_error(b""))


def test_decrypted_garbage_is_reported_without_the_plaintext() -> None:
    key = parse_key(KEY_HEX)
    for plaintext in ([1, 2], "ya29.test"):
        store = parse_store(encrypt_store(plaintext, key))  # type: ignore[arg-type]
        with pytest.raises(TokenStoreError) as caught:
            decrypt_store(store, key)
        assert_no_secret(caught.value)


@settings(max_examples=200, deadline=None)
@given(data=st.one_of(st.binary(max_size=300), st.builds(lambda n: VECTOR_FILE[:n], st.integers(0, 400))))
def test_any_input_gives_a_token_store_error_or_a_store(data: bytes) -> None:
    try:
        store = parse_store(data)
    except TokenStoreError as exc:
        assert_no_secret(exc)
    else:
        assert isinstance(store, TokenStoreFile)


# --- summaries --------------------------------------------------------------------------------


def test_summary_has_metadata_and_no_values() -> None:
    summary = summarize_tokens({**TOKENS, "id_token": "eyJ.secret", "custom": "x"})
    assert summary == {
        "fields": [
            "access_token",
            "refresh_token",
            "expiry_date",
            "token_type",
            "scope",
            "id_token",
        ],
        "other_field_count": 1,
        "expiry_date": "2026-04-04T10:53:20.000Z",
        "scope_count": 1,
    }
    dumped = json.dumps(summary)
    for value in ("ya29.test", "1//test", "Bearer", "googleapis", "eyJ.secret"):
        assert value not in dumped


def test_summary_of_odd_values() -> None:
    assert summarize_tokens({}) == {
        "fields": [],
        "other_field_count": 0,
        "expiry_date": None,
        "scope_count": None,
    }
    odd = summarize_tokens({"expiry_date": "soon", "scope": "a b  c"})
    assert (odd["expiry_date"], odd["scope_count"]) == (None, 3)
    assert summarize_tokens({"expiry_date": 10**30})["expiry_date"] is None
    assert summarize_tokens({"expiry_date": True})["expiry_date"] is None


# --- files ------------------------------------------------------------------------------------


def test_atomic_write_is_mode_0600_and_leaves_no_tmp(tmp_path: Path) -> None:
    path = tmp_path / "home" / ".servalsheets" / "tokens.encrypted"
    write_token_file_atomic(path, VECTOR_FILE)
    assert path.read_bytes() == VECTOR_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not (path.parent / "tokens.encrypted.tmp").exists()
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_atomic_write_replaces_and_fixes_a_leftover_tmp(tmp_path: Path) -> None:
    path = tmp_path / "tokens.encrypted"
    path.write_bytes(b"old")
    leftover = tmp_path / "tokens.encrypted.tmp"
    leftover.write_bytes(b"half a file from a crash")
    leftover.chmod(0o644)
    write_token_file_atomic(path, VECTOR_FILE)
    assert read_token_file(path) == VECTOR_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not leftover.exists()


def test_atomic_write_refuses_a_planted_tmp_symlink(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_bytes(b"")
    (tmp_path / "tokens.encrypted.tmp").symlink_to(target)
    with pytest.raises(OSError):
        write_token_file_atomic(tmp_path / "tokens.encrypted", VECTOR_FILE)
    assert target.read_bytes() == b""


def test_read_ignores_a_leftover_tmp(tmp_path: Path) -> None:
    path = tmp_path / "tokens.encrypted"
    path.write_bytes(VECTOR_FILE)
    (tmp_path / "tokens.encrypted.tmp").write_bytes(b'{"version": 1, "iv": "AAEC')
    assert read_token_file(path) == VECTOR_FILE


def test_missing_file_with_a_leftover_tmp_says_so(tmp_path: Path) -> None:
    path = tmp_path / "tokens.encrypted"
    (tmp_path / "tokens.encrypted.tmp").write_bytes(VECTOR_FILE)
    with pytest.raises(TokenStoreError) as caught:
        read_token_file(path)
    assert str(caught.value) == (
        f"token store file {path} is missing; a leftover {path}.tmp exists from an "
        "interrupted write and is not a token store"
    )


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(TokenStoreError, match="does not exist"):
        read_token_file(tmp_path / "tokens.encrypted")
    with pytest.raises(TokenStoreError, match="cannot read token store file"):
        read_token_file(tmp_path)


def test_oversized_file_is_not_a_token_store(tmp_path: Path) -> None:
    path = tmp_path / "dump.rdb"
    path.write_bytes(bytes(2 * 1024 * 1024))
    with pytest.raises(TokenStoreError, match="larger than"):
        read_token_file(path)
