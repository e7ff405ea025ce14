"""Data keys and the keyrings that wrap them (AWS KMS, an escrow recipient, a local key).

Every backup object and every manifest gets a fresh 256-bit data key. The keyring returns the
plaintext key (kept only in memory) plus one or more *wrapped* copies that travel in the object
header. Each wrapped copy is bound to an encryption context naming the backup, kind, object and
environment, so a key cannot be replayed for another object.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from servalsheets_backup.errors import ConfigurationError, IntegrityError
from servalsheets_backup.format.encoding import b64decode, b64encode, canonical_json

DATA_KEY_BYTES = 32
WRAP_KMS = "aws-kms"
WRAP_X25519 = "x25519-hkdf-sha256-aes256gcm"
WRAP_RSA = "rsa-oaep-sha256"
WRAP_LOCAL = "local-aes256gcm"
ESCROW_INFO = b"servalsheets-backup/v1/escrow-x25519"

WrappedKey = dict[str, Any]
Context = Mapping[str, str]


@dataclass(frozen=True)
class DataKey:
    """A plaintext data key with its wrapped copies (the header's ``wrapped_keys``)."""

    plaintext: bytes = field(repr=False)
    wrapped: list[WrappedKey]


class Keyring(Protocol):
    """Creates data keys and unwraps them again for a given encryption context."""

    def new_data_key(self, context: Context) -> DataKey:
        """Return a fresh data key wrapped for ``context``."""
        ...

    def unwrap(self, wrapped: Sequence[Mapping[str, Any]], context: Context) -> bytes:
        """Return the plaintext data key, or raise ``IntegrityError`` naming the failure."""
        ...


def encryption_context(backup_id: str, kind: str, object_name: str, environment: str) -> dict[str, str]:
    """The context every wrapped key of one object is bound to."""
    return {
        "servalsheets:backup-id": backup_id,
        "servalsheets:kind": kind,
        "servalsheets:object": object_name,
        "servalsheets:environment": environment,
    }


FINGERPRINT_INFO = b"servalsheets-backup/v1/value-fingerprint"


def fingerprint_key(data_key: bytes) -> bytes:
    """The HMAC key for value fingerprints of one object, derived from its data key.

    Fingerprints of low-entropy secrets must not be brute-forceable from the manifest alone, so
    they are keyed with material only KMS (or the escrow key) can release.
    """
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=FINGERPRINT_INFO).derive(data_key)


def value_fingerprint(key: bytes, name: str, value: bytes) -> str:
    """HMAC-SHA256 of ``name`` and ``value`` under ``key``, as ``hmac-sha256:<hex>``."""
    import hmac
    from hashlib import sha256

    message = name.encode() + b"\x00" + value
    return "hmac-sha256:" + hmac.new(key, message, sha256).hexdigest()


def _subject(context: Context) -> str:
    return context.get("servalsheets:object", "object")


class EscrowRecipient:
    """A break-glass public key: the data key is also wrapped for it (X25519 or RSA-OAEP)."""

    def __init__(self, public_key: x25519.X25519PublicKey | rsa.RSAPublicKey) -> None:
        self._public_key = public_key

    @classmethod
    def from_pem(cls, pem: bytes) -> EscrowRecipient:
        """Load an X25519 or RSA (>= 3072 bit) public key from PEM."""
        try:
            key = serialization.load_pem_public_key(pem)
        except ValueError as exc:
            raise ConfigurationError(
                "ESCROW_PUBLIC_KEY is not a PEM public key; generate one with "
                "`servalsheets-backup escrow-keygen`"
            ) from exc
        if isinstance(key, rsa.RSAPublicKey):
            if key.key_size < 3072:
                raise ConfigurationError("ESCROW_PUBLIC_KEY: RSA escrow keys need at least 3072 bits")
            return cls(key)
        if isinstance(key, x25519.X25519PublicKey):
            return cls(key)
        raise ConfigurationError("ESCROW_PUBLIC_KEY must be an X25519 or RSA public key")

    def fingerprint(self) -> str:
        """SHA-256 of the DER public key, hex: identifies the recipient in headers."""
        der = self._public_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        digest = hashes.Hash(hashes.SHA256())
        digest.update(der)
        return digest.finalize().hex()

    def wrap(self, data_key: bytes, context: Context) -> WrappedKey:
        """Wrap ``data_key`` for this recipient, bound to ``context``."""
        aad = canonical_json(dict(context))
        if isinstance(self._public_key, rsa.RSAPublicKey):
            blob = self._public_key.encrypt(data_key, _oaep(aad))
            return {"type": WRAP_RSA, "recipient": self.fingerprint(), "blob": b64encode(blob)}
        ephemeral = x25519.X25519PrivateKey.generate()
        ephemeral_public = ephemeral.public_key().public_bytes_raw()
        recipient_public = self._public_key.public_bytes_raw()
        wrap_key = _x25519_wrap_key(ephemeral.exchange(self._public_key), ephemeral_public, recipient_public)
        nonce = os.urandom(12)
        blob = AESGCM(wrap_key).encrypt(nonce, data_key, aad)
        return {
            "type": WRAP_X25519,
            "recipient": self.fingerprint(),
            "ephemeral_public": b64encode(ephemeral_public),
            "nonce": b64encode(nonce),
            "blob": b64encode(blob),
        }


def _oaep(label: bytes) -> padding.OAEP:
    return padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=label)


def _x25519_wrap_key(shared: bytes, ephemeral_public: bytes, recipient_public: bytes) -> bytes:
    hkdf = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=ephemeral_public + recipient_public,
        info=ESCROW_INFO,
    )
    return hkdf.derive(shared)


class EscrowKeyring:
    """Unwraps data keys offline with the escrow private key (no AWS needed)."""

    def __init__(self, private_key: x25519.X25519PrivateKey | rsa.RSAPrivateKey) -> None:
        self._private_key = private_key

    @classmethod
    def from_pem(cls, pem: bytes, password: bytes | None = None) -> EscrowKeyring:
        """Load the escrow private key from PEM (PKCS#8)."""
        try:
            key = serialization.load_pem_private_key(pem, password=password)
        except (ValueError, TypeError) as exc:
            raise ConfigurationError("the escrow key file is not a readable PEM private key") from exc
        if not isinstance(key, x25519.X25519PrivateKey | rsa.RSAPrivateKey):
            raise ConfigurationError("the escrow key must be an X25519 or RSA private key")
        return cls(key)

    def new_data_key(self, context: Context) -> DataKey:
        """Escrow keys only decrypt; backups are always written through KMS."""
        raise ConfigurationError("an escrow private key can decrypt backups but not create them")

    def unwrap(self, wrapped: Sequence[Mapping[str, Any]], context: Context) -> bytes:
        """Find the entry wrapped for this key and unwrap it."""
        fingerprint = EscrowRecipient(self._private_key.public_key()).fingerprint()
        entries = [w for w in wrapped if w.get("recipient") == fingerprint]
        if not entries:
            raise IntegrityError(
                _subject(context), "escrow key", "no data key is wrapped for this escrow key"
            )
        entry = entries[0]
        aad = canonical_json(dict(context))
        try:
            if isinstance(self._private_key, rsa.RSAPrivateKey):
                return self._private_key.decrypt(b64decode(entry["blob"]), _oaep(aad))
            ephemeral_public = b64decode(entry["ephemeral_public"])
            shared = self._private_key.exchange(x25519.X25519PublicKey.from_public_bytes(ephemeral_public))
            recipient_public = self._private_key.public_key().public_bytes_raw()
            wrap_key = _x25519_wrap_key(shared, ephemeral_public, recipient_public)
            return AESGCM(wrap_key).decrypt(b64decode(entry["nonce"]), b64decode(entry["blob"]), aad)
        except Exception as exc:  # any failure here means the wrapped key is not authentic
            raise IntegrityError(_subject(context), "escrow key unwrap", "wrapped key rejected") from exc


class KmsKeyring:
    """Data keys from AWS KMS ``GenerateDataKey``, optionally also wrapped for an escrow key."""

    def __init__(
        self,
        kms_client: Any,
        key_id: str,
        escrow: EscrowRecipient | None = None,
        replica_key_id: str | None = None,
    ) -> None:
        self._kms = kms_client
        self._key_id = key_id
        self._escrow = escrow
        # A standby's replica of the primary's multi-Region key (new data keys use ``key_id``).
        self._replica_key_id = replica_key_id

    def new_data_key(self, context: Context) -> DataKey:
        """Ask KMS for a fresh AES-256 data key bound to ``context``."""
        response = self._kms.generate_data_key(
            KeyId=self._key_id, KeySpec="AES_256", EncryptionContext=dict(context)
        )
        plaintext: bytes = response["Plaintext"]
        wrapped: list[WrappedKey] = [
            {
                "type": WRAP_KMS,
                "key_id": response["KeyId"],
                "blob": b64encode(response["CiphertextBlob"]),
            }
        ]
        if self._escrow is not None:
            wrapped.append(self._escrow.wrap(plaintext, context))
        return DataKey(plaintext, wrapped)

    def unwrap(self, wrapped: Sequence[Mapping[str, Any]], context: Context) -> bytes:
        """Decrypt the KMS-wrapped copy; KMS checks the encryption context."""
        from botocore.exceptions import ClientError

        entries = [w for w in wrapped if w.get("type") == WRAP_KMS]
        if not entries:
            raise IntegrityError(_subject(context), "wrapped key", "no KMS-wrapped data key in the header")
        recorded = str(entries[0].get("key_id", ""))
        # In another Region, decrypt with the related multi-Region key there (same mrk- key id).
        candidates = [key for key in (self._replica_key_id, self._key_id) if key]
        local = next((key for key in candidates if _is_replica_of(key, recorded)), None)
        try:
            response = self._kms.decrypt(
                CiphertextBlob=b64decode(entries[0]["blob"]),
                EncryptionContext=dict(context),
                **({"KeyId": local} if local else {}),
            )
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("InvalidCiphertextException", "IncorrectKeyException"):
                raise IntegrityError(
                    _subject(context),
                    "wrapped key",
                    "KMS rejected the data key: it was not wrapped for this backup object",
                ) from exc
            region = getattr(getattr(self._kms, "meta", None), "region_name", None) or "this Region"
            if code in _KEY_UNUSABLE and region != _region_of(recorded):
                # Another Region than the key's (a standby): the replica there is what is wrong.
                raise ConfigurationError(
                    f"KMS in {region} cannot decrypt the data key of {_subject(context)}, wrapped under "
                    f"{recorded or 'an unrecorded key'} ({code}); this stack's key is {self._key_id}. In a "
                    "standby Region, BACKUP_KMS_KEY_ID must be the replica there of the primary's "
                    "multi-Region key, usable by this role (docs/operations.md, Region is down)"
                ) from None
            raise
        except ValueError as exc:
            raise IntegrityError(_subject(context), "wrapped key", "not valid base64") from exc
        key: bytes = response["Plaintext"]
        if len(key) != DATA_KEY_BYTES:
            raise IntegrityError(_subject(context), "wrapped key", "data key has the wrong length")
        return key


_KEY_UNUSABLE = (
    "AccessDeniedException",
    "NotFoundException",
    "KMSInvalidStateException",
    "DisabledException",
)


def _region_of(key_arn: str) -> str:
    """The Region of a KMS key ARN (``arn:aws:kms:<region>:...``), or '' for an id or alias."""
    parts = key_arn.split(":")
    return parts[3] if len(parts) > 5 and parts[0] == "arn" else ""


def _key_id_of(key_arn: str) -> str:
    return key_arn.rsplit("/", 1)[-1] if key_arn.startswith("arn:") else key_arn


def _is_replica_of(configured: str, recorded: str) -> bool:
    """True when ``configured`` is the same multi-Region key as ``recorded`` in another Region."""
    key_id = _key_id_of(configured)
    return (
        key_id.startswith("mrk-")
        and key_id == _key_id_of(recorded)
        and _region_of(configured) != _region_of(recorded)
    )


class LocalKeyring:
    """Wraps data keys with a local 256-bit master key (benchmarks and offline tests only).

    Deployed code always uses :class:`KmsKeyring`; this exists so the format can be exercised
    with no KMS at all, for example when benchmarking to a local file sink.
    """

    def __init__(self, master_key: bytes) -> None:
        if len(master_key) != DATA_KEY_BYTES:
            raise ConfigurationError("a local master key must be 32 bytes")
        self._aead = AESGCM(master_key)

    def new_data_key(self, context: Context) -> DataKey:
        """Generate a random data key and wrap it under the master key."""
        plaintext = os.urandom(DATA_KEY_BYTES)
        nonce = os.urandom(12)
        blob = self._aead.encrypt(nonce, plaintext, canonical_json(dict(context)))
        return DataKey(plaintext, [{"type": WRAP_LOCAL, "nonce": b64encode(nonce), "blob": b64encode(blob)}])

    def unwrap(self, wrapped: Sequence[Mapping[str, Any]], context: Context) -> bytes:
        """Unwrap the local copy; the context is the AEAD's associated data."""
        entries = [w for w in wrapped if w.get("type") == WRAP_LOCAL]
        if not entries:
            raise IntegrityError(
                _subject(context), "wrapped key", "no locally wrapped data key in the header"
            )
        try:
            return self._aead.decrypt(
                b64decode(entries[0]["nonce"]),
                b64decode(entries[0]["blob"]),
                canonical_json(dict(context)),
            )
        except Exception as exc:  # InvalidTag, bad base64, wrong types: all mean not authentic
            raise IntegrityError(_subject(context), "wrapped key", "data key rejected") from exc
