"""The envelope format: fixed vectors, and every kind of tampering fails with a named check."""

from __future__ import annotations

import hashlib
import io
import json
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from servalsheets_backup.errors import IntegrityError
from servalsheets_backup.format.envelope import (
    COMPRESSION_NONE,
    COMPRESSION_ZSTD,
    MAGIC,
    TAG_BYTES,
    decrypt_stream,
)
from servalsheets_backup.format.keys import (
    EscrowKeyring,
    EscrowRecipient,
    KmsKeyring,
    LocalKeyring,
    encryption_context,
)

from .envelope_vectors import CONTEXT, DATA_KEY, SMALL_PLAINTEXT, large_plaintext, seal

pytestmark = pytest.mark.unit
VECTORS = json.loads((Path(__file__).parents[1] / "vectors" / "envelope-v1.json").read_text())
SEGMENT = 1 << 20


def open_bytes(sealed: bytes, key: bytes = DATA_KEY) -> bytes:
    return b"".join(decrypt_stream(io.BytesIO(sealed), lambda header: key, "vector"))


def test_small_vector_is_byte_exact_and_decrypts() -> None:
    sealed = seal(SMALL_PLAINTEXT, COMPRESSION_ZSTD)
    assert sealed.hex() == VECTORS["small_zstd"]["sealed_hex"]
    assert open_bytes(sealed) == SMALL_PLAINTEXT


def test_large_vector_is_byte_exact_and_decrypts() -> None:
    plaintext = large_plaintext()
    sealed = seal(plaintext, COMPRESSION_NONE)
    assert hashlib.sha256(sealed).hexdigest() == VECTORS["large_none"]["sealed_sha256"]
    assert open_bytes(sealed) == plaintext


def test_every_single_byte_flip_fails() -> None:
    sealed = seal(SMALL_PLAINTEXT, COMPRESSION_ZSTD)
    for position in range(len(sealed)):
        tampered = bytearray(sealed)
        tampered[position] ^= 0x01
        with pytest.raises(IntegrityError) as caught:
            open_bytes(bytes(tampered))
        assert caught.value.subject == "vector"
        assert caught.value.check


def _segment_boundaries(sealed: bytes) -> list[int]:
    (header_length,) = struct.unpack(">I", sealed[len(MAGIC) : len(MAGIC) + 4])
    start = len(MAGIC) + 4 + header_length
    return list(range(start, len(sealed), SEGMENT + TAG_BYTES))


def test_truncation_at_every_segment_boundary_is_named() -> None:
    sealed = seal(large_plaintext(), COMPRESSION_NONE)
    boundaries = _segment_boundaries(sealed)
    assert len(boundaries) == 4  # 3.5 MiB: three full segments and a final half one
    for cut in boundaries[1:]:
        with pytest.raises(IntegrityError, match="truncation") as caught:
            open_bytes(sealed[:cut])
        assert "final segment is missing" in str(caught.value)
    with pytest.raises(IntegrityError, match="truncation"):
        open_bytes(sealed[: boundaries[0]])


def test_truncation_inside_the_header() -> None:
    sealed = seal(SMALL_PLAINTEXT, COMPRESSION_ZSTD)
    for cut in (0, 3, len(MAGIC), len(MAGIC) + 2, len(MAGIC) + 30):
        with pytest.raises(IntegrityError, match="header"):
            open_bytes(sealed[:cut])


def test_reordered_and_appended_segments_fail() -> None:
    sealed = seal(large_plaintext(), COMPRESSION_NONE)
    b = _segment_boundaries(sealed)
    swapped = sealed[: b[0]] + sealed[b[1] : b[2]] + sealed[b[0] : b[1]] + sealed[b[2] :]
    with pytest.raises(IntegrityError, match="segment 0 authentication"):
        open_bytes(swapped)
    with pytest.raises(IntegrityError):
        open_bytes(sealed + sealed[b[0] : b[1]])
    with pytest.raises(IntegrityError):
        open_bytes(sealed + b"\x00")


def test_header_edit_fails_even_when_syntactically_valid() -> None:
    sealed = seal(SMALL_PLAINTEXT, COMPRESSION_ZSTD)
    edited = sealed.replace(b'"tokens"', b'"config"')
    assert edited != sealed
    with pytest.raises(IntegrityError, match="segment 0 authentication"):
        open_bytes(edited)


def test_wrong_key_and_wrong_format_version() -> None:
    sealed = seal(SMALL_PLAINTEXT, COMPRESSION_ZSTD)
    with pytest.raises(IntegrityError, match="authentication"):
        open_bytes(sealed, key=bytes(32))
    with pytest.raises(IntegrityError, match="format version"):
        open_bytes(MAGIC[:6] + b"\x00\x03" + sealed[8:])
    with pytest.raises(IntegrityError, match="header magic"):
        open_bytes(b"REDIS0011" + sealed)


@settings(max_examples=60, deadline=None)
@given(position=st.integers(min_value=0), bit=st.integers(min_value=0, max_value=7))
def test_random_bit_flips_fail(position: int, bit: int) -> None:
    sealed = bytearray(seal(SMALL_PLAINTEXT, COMPRESSION_ZSTD))
    sealed[position % len(sealed)] ^= 1 << bit
    with pytest.raises(IntegrityError):
        open_bytes(bytes(sealed))


@pytest.mark.parametrize("algorithm", ["x25519", "rsa"])
def test_escrow_key_decrypts_without_kms(algorithm: str) -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa, x25519

    from servalsheets_backup.format.envelope import encrypt_bytes, keyring_resolver

    private = (
        x25519.X25519PrivateKey.generate() if algorithm == "x25519" else rsa.generate_private_key(65537, 3072)
    )
    recipient = EscrowRecipient(private.public_key())
    local = LocalKeyring(bytes(range(32)))
    data_key = local.new_data_key(CONTEXT)
    data_key.wrapped.append(recipient.wrap(data_key.plaintext, CONTEXT))
    sink = io.BytesIO()
    encrypt_bytes(b"break glass", sink, data_key, CONTEXT)
    escrow = EscrowKeyring(private)
    resolve = keyring_resolver(escrow, CONTEXT, "obj")
    assert b"".join(decrypt_stream(io.BytesIO(sink.getvalue()), resolve, "obj")) == b"break glass"
    other = encryption_context("20261125T020000Z-0badcafe", "tokens", "other-object", "prod")
    with pytest.raises(IntegrityError):
        escrow.unwrap(data_key.wrapped, other)


def test_kms_keyring_binds_the_context() -> None:
    import boto3
    from moto import mock_aws

    with mock_aws():
        kms = boto3.client("kms", region_name="us-east-1")
        key_id = kms.create_key()["KeyMetadata"]["KeyId"]
        keyring = KmsKeyring(kms, key_id)
        data_key = keyring.new_data_key(CONTEXT)
        assert keyring.unwrap(data_key.wrapped, CONTEXT) == data_key.plaintext
        other = encryption_context("20261125T020000Z-0badcafe", "tokens", "moved", "prod")
        with pytest.raises(IntegrityError, match="wrapped key"):
            keyring.unwrap(data_key.wrapped, other)
