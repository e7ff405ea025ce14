"""Backup set manifests: what a set holds, authenticated with an HMAC under a KMS-wrapped key.

The manifest is written last; its presence is what makes a backup set exist. Its body is
canonical JSON and its ``auth`` block carries a wrapped data key (bound to the set's id, kind
and the object name ``manifest.json``) from which the HMAC-SHA256 key is derived. Editing any
field, or moving a manifest to another backup's location, fails verification.
"""

from __future__ import annotations

import hmac
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from hashlib import sha256
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from servalsheets_backup import TOOL_NAME, __version__
from servalsheets_backup.errors import IntegrityError, InvalidInputError
from servalsheets_backup.format.encoding import b64decode, b64encode, canonical_json
from servalsheets_backup.format.envelope_v2 import FORMAT_VERSION_V2
from servalsheets_backup.format.keys import Keyring, encryption_context

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "servalsheets-backup-manifest"
MANIFEST_VERSION = 2  # v2: object entries may carry format v2 digests (segments, tags_sha256)
READABLE_MANIFEST_VERSIONS = (1, 2)
MAC_INFO = b"servalsheets-backup/v1/manifest-mac"
KINDS = ("config", "tokens", "redis", "full", "pre-deploy", "pre-restore")
COMPONENT_KINDS = ("config", "tokens", "redis")
KIND_COMPONENTS: dict[str, tuple[str, ...]] = {
    "config": ("config",),
    "tokens": ("tokens",),
    "redis": ("redis",),
    "full": COMPONENT_KINDS,
    "pre-deploy": COMPONENT_KINDS,
    "pre-restore": COMPONENT_KINDS,
}
SUBJECT = "manifest"


def validate_kind(kind: str) -> str:
    """Return ``kind`` if it is a known backup kind, else raise InvalidInputError."""
    if kind not in KINDS:
        raise InvalidInputError(f"unknown backup kind {kind!r}: use one of {', '.join(KINDS)}")
    return kind


def new_backup_id(now: datetime | None = None) -> str:
    """A sortable, unique backup id: UTC timestamp plus 8 random hex digits."""
    now = now or datetime.now(UTC)
    return f"{now.strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(4)}"


def backup_time(backup_id: str) -> datetime:
    """The creation time encoded in a backup id."""
    try:
        return datetime.strptime(backup_id.split("-", 1)[0], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError as exc:
        raise InvalidInputError(
            f"{backup_id!r} is not a backup id (expected YYYYMMDDTHHMMSSZ-xxxxxxxx)"
        ) from exc


@dataclass
class ObjectEntry:
    """One encrypted object of a set, as recorded in the manifest.

    A format v1 object is recorded with SHA-256 digests of its plaintext and stored bytes; a v2
    object with its segment count and the digest over its GCM tags (docs/format.md, section 6).
    """

    name: str
    component: str
    plaintext_size: int
    stored_size: int
    plaintext_sha256: str | None = None
    stored_sha256: str | None = None
    segments: int | None = None
    tags_sha256: str | None = None
    stored_crc64nvme: str | None = None
    items: dict[str, Any] = field(default_factory=dict)

    @property
    def format_version(self) -> int:
        """The object format version the entry's digests belong to."""
        return 2 if self.tags_sha256 is not None else 1

    def as_dict(self) -> dict[str, Any]:
        """Manifest form (only the digests of the entry's format version)."""
        digests = {name: getattr(self, name) for name in _DIGEST_FIELDS if getattr(self, name) is not None}
        return {
            "name": self.name,
            "component": self.component,
            "plaintext_size": self.plaintext_size,
            "stored_size": self.stored_size,
            **digests,
            "items": self.items,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> ObjectEntry:
        """Parse the manifest form (v1 or v2 digests, exactly one of the two)."""
        v1 = raw.get("stored_sha256") is not None and raw.get("plaintext_sha256") is not None
        v2 = raw.get("tags_sha256") is not None and raw.get("segments") is not None
        if v1 == v2:
            raise ValueError(f"object {raw.get('name')!r} has neither or both digest kinds")
        return cls(
            name=str(raw["name"]),
            component=str(raw["component"]),
            plaintext_size=int(raw["plaintext_size"]),
            stored_size=int(raw["stored_size"]),
            plaintext_sha256=str(raw["plaintext_sha256"]) if v1 else None,
            stored_sha256=str(raw["stored_sha256"]) if v1 else None,
            segments=int(raw["segments"]) if v2 else None,
            tags_sha256=str(raw["tags_sha256"]) if v2 else None,
            stored_crc64nvme=str(raw["stored_crc64nvme"]) if raw.get("stored_crc64nvme") else None,
            items=dict(raw.get("items") or {}),
        )


_DIGEST_FIELDS = ("plaintext_sha256", "stored_sha256", "segments", "tags_sha256", "stored_crc64nvme")


@dataclass
class Manifest:
    """The body of a manifest (everything but the ``auth`` block)."""

    backup_id: str
    kind: str
    created_at: str
    environment: str
    objects: list[ObjectEntry]
    source: dict[str, Any] = field(default_factory=dict)
    components: dict[str, Any] = field(default_factory=dict)
    label: str | None = None
    trigger: str | None = None
    completed_at: str | None = None

    def body(self) -> dict[str, Any]:
        """The authenticated body as a JSON-ready dict."""
        return {
            "format": MANIFEST_FORMAT,
            "manifest_version": MANIFEST_VERSION,
            "object_format_version": FORMAT_VERSION_V2,
            "tool": {"name": TOOL_NAME, "version": __version__},
            "backup_id": self.backup_id,
            "kind": self.kind,
            "created_at": self.created_at,
            "completed_at": self.completed_at,
            "environment": self.environment,
            "label": self.label,
            "trigger": self.trigger,
            "source": self.source,
            "components": self.components,
            "objects": [entry.as_dict() for entry in self.objects],
        }

    @property
    def total_stored_size(self) -> int:
        """Bytes stored in S3 for this set's objects."""
        return sum(entry.stored_size for entry in self.objects)

    def objects_of(self, component: str) -> list[ObjectEntry]:
        """The objects holding ``component`` (config, tokens or redis), in order."""
        return [entry for entry in self.objects if entry.component == component]


def _mac_key(data_key: bytes, salt: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=MAC_INFO).derive(data_key)


def seal_manifest(manifest: Manifest, keyring: Keyring) -> bytes:
    """Serialise and authenticate ``manifest``; returns the bytes to store."""
    context = encryption_context(manifest.backup_id, manifest.kind, MANIFEST_NAME, manifest.environment)
    data_key = keyring.new_data_key(context)
    salt = secrets.token_bytes(32)
    body = manifest.body()
    auth_header = {
        "alg": "HMAC-SHA256/HKDF-SHA256",
        "salt": b64encode(salt),
        "wrapped_keys": data_key.wrapped,
    }
    mac = hmac.new(_mac_key(data_key.plaintext, salt), _mac_input(body, auth_header), sha256).hexdigest()
    document = {"manifest": body, "auth": {**auth_header, "mac": mac}}
    return json.dumps(document, indent=2, sort_keys=True).encode() + b"\n"


def _mac_input(body: Mapping[str, Any], auth_header: Mapping[str, Any]) -> bytes:
    return canonical_json({"manifest": body, "auth": auth_header})


def open_manifest(data: bytes, keyring: Keyring, *, backup_id: str, kind: str, environment: str) -> Manifest:
    """Parse and authenticate manifest bytes found at the location of ``backup_id``/``kind``."""
    try:
        document = json.loads(data)
        body = document["manifest"]
        auth = document["auth"]
        auth_header = {k: auth[k] for k in ("alg", "salt", "wrapped_keys")}
        salt = b64decode(auth["salt"])
        expected_mac = str(auth["mac"])
    except (ValueError, KeyError, TypeError) as exc:
        raise IntegrityError(SUBJECT, "manifest syntax", "not a servalsheets-backup manifest") from exc
    context = encryption_context(backup_id, kind, MANIFEST_NAME, environment)
    data_key = keyring.unwrap(auth_header["wrapped_keys"], context)
    mac = hmac.new(_mac_key(data_key, salt), _mac_input(body, auth_header), sha256).hexdigest()
    if not hmac.compare_digest(mac, expected_mac):
        raise IntegrityError(SUBJECT, "manifest authenticity", "the manifest was modified")
    return _parse_body(body, backup_id, kind)


def _parse_body(body: Mapping[str, Any], backup_id: str, kind: str) -> Manifest:
    if (
        body.get("format") != MANIFEST_FORMAT
        or body.get("manifest_version") not in READABLE_MANIFEST_VERSIONS
    ):
        raise IntegrityError(SUBJECT, "manifest version", "unsupported manifest format or version")
    if body.get("backup_id") != backup_id or body.get("kind") != kind:
        raise IntegrityError(SUBJECT, "manifest location", "manifest names another backup id or kind")
    try:
        return Manifest(
            backup_id=backup_id,
            kind=kind,
            created_at=str(body["created_at"]),
            completed_at=body.get("completed_at"),
            environment=str(body["environment"]),
            objects=[ObjectEntry.from_dict(raw) for raw in body["objects"]],
            source=dict(body.get("source") or {}),
            components=dict(body.get("components") or {}),
            label=body.get("label"),
            trigger=body.get("trigger"),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise IntegrityError(SUBJECT, "manifest syntax", "a required field is missing") from exc


def peek_manifest(data: bytes) -> dict[str, Any]:
    """Read a manifest body WITHOUT authenticating it (listings only; never for restore)."""
    try:
        return dict(json.loads(data)["manifest"])
    except (ValueError, KeyError, TypeError) as exc:
        raise IntegrityError(SUBJECT, "manifest syntax", "not a servalsheets-backup manifest") from exc
