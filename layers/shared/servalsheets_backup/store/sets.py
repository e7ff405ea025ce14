"""The S3 backup store: write-once backup sets laid out by kind, listed, resolved and verified.

Layout: ``<kind>/YYYY/MM/DD/<backup-id>/<object>`` and ``.../manifest.json``. A set exists only
once its manifest is written (last, write-once). "Latest" is found by listing, never through a
mutable pointer object.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from servalsheets_backup.adapters.aws import error_code
from servalsheets_backup.adapters.s3 import MultipartSink, S3ObjectReader
from servalsheets_backup.errors import (
    BackupNotFoundError,
    BackupSystemError,
    IntegrityError,
    InvalidInputError,
)
from servalsheets_backup.format.envelope import keyring_resolver, read_header
from servalsheets_backup.format.envelope_v2 import EnvelopeWriterV2
from servalsheets_backup.format.keys import Keyring, encryption_context, fingerprint_key
from servalsheets_backup.format.manifest import (
    KINDS,
    MANIFEST_NAME,
    Manifest,
    ObjectEntry,
    backup_time,
    open_manifest,
    seal_manifest,
    validate_kind,
)
from servalsheets_backup.store.object_reader import read_entry

EXPIRABLE_TAG = "servalsheets-backup:expirable"


class SetExistsError(BackupSystemError):
    """The manifest already exists: the set was completed before (a retried finalize)."""


NOT_EXPIRABLE = f"{EXPIRABLE_TAG}=false"


@dataclass(frozen=True)
class SetRef:
    """Where a complete backup set lives."""

    kind: str
    backup_id: str
    manifest_key: str

    @property
    def created_at(self) -> datetime:
        """Creation time encoded in the backup id."""
        return backup_time(self.backup_id)

    @property
    def prefix(self) -> str:
        """The key prefix of the set's objects."""
        return self.manifest_key[: -len(MANIFEST_NAME)]


@dataclass
class ObjectCheck:
    """The outcome of verifying one object (or the manifest)."""

    name: str
    ok: bool
    check: str = "all checks"
    detail: str = ""
    version_id: str | None = None


@dataclass
class VerifyReport:
    """Every check run by :meth:`BackupStore.verify_set`."""

    ref: SetRef
    manifest: Manifest | None = None
    checks: list[ObjectCheck] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True only when the manifest and every object passed every check."""
        return self.manifest is not None and all(check.ok for check in self.checks)

    def first_failure(self) -> ObjectCheck | None:
        """The first failed check, if any."""
        return next((check for check in self.checks if not check.ok), None)

    def versions(self) -> dict[str, str | None]:
        """Object name -> the S3 version that was verified (restore reads exactly these)."""
        return {check.name: check.version_id for check in self.checks}


def set_prefix(kind: str, backup_id: str) -> str:
    """``<kind>/YYYY/MM/DD/<backup-id>/``."""
    created = backup_time(backup_id)
    return f"{kind}/{created:%Y/%m/%d}/{backup_id}/"


def parse_as_of(value: str) -> datetime:
    """Parse an ISO-8601 time (``Z`` or offset; naive means UTC)."""
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidInputError(
            f"as_of {value!r} is not an ISO-8601 time; use e.g. 2026-11-25T02:00:00Z"
        ) from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class ObjectUpload:
    """An object being written: an envelope streaming into a multipart upload."""

    def __init__(
        self,
        sink: MultipartSink,
        writer: EnvelopeWriterV2,
        name: str,
        component: str,
        fingerprint: bytes,
    ) -> None:
        self.fingerprint_key = fingerprint
        self._sink = sink
        self._writer = writer
        self.name = name
        self.component = component
        self.items: dict[str, Any] = {}

    def write(self, data: bytes) -> int:
        """Compress, encrypt and upload ``data``."""
        return self._writer.write(data)

    def finish(self, items: Mapping[str, Any] | None = None) -> ObjectEntry:
        """Seal the envelope, complete the upload and return the manifest entry."""
        digest = self._writer.close()
        self._sink.close()
        return ObjectEntry(
            name=self.name,
            component=self.component,
            items=dict(items or self.items),
            stored_crc64nvme=self._sink.checksum,
            **digest.as_dict(),
        )

    def abort(self) -> None:
        """Abort the multipart upload."""
        self._sink.abort()


class BackupStore:
    """Reads and writes backup sets in one bucket with one keyring."""

    def __init__(
        self,
        s3: Any,
        bucket: str,
        keyring: Keyring,
        *,
        environment: str,
        kms_key_id: str,
        replica: bool = False,
    ) -> None:
        self.s3 = s3
        self.bucket = bucket
        self.keyring = keyring
        self.environment = environment
        self.kms_key_id = kms_key_id
        # A standby's bucket, filled by S3 Replication: a set counts only once all of it arrived.
        self.replica = replica

    # -- writing -------------------------------------------------------------------------
    def open_object(self, kind: str, backup_id: str, name: str, component: str) -> ObjectUpload:
        """Start writing object ``name`` of a set; finish() or abort() it."""
        _check_object_name(name)
        context = encryption_context(backup_id, kind, name, self.environment)
        sink = MultipartSink(
            self.s3,
            self.bucket,
            set_prefix(kind, backup_id) + name,
            kms_key_id=self.kms_key_id,
            tags=NOT_EXPIRABLE,
        )
        data_key = self.keyring.new_data_key(context)
        writer = EnvelopeWriterV2(sink, data_key, context)
        return ObjectUpload(sink, writer, name, component, fingerprint_key(data_key.plaintext))

    def write_object(
        self,
        kind: str,
        backup_id: str,
        name: str,
        component: str,
        data: bytes,
        items: Mapping[str, Any],
    ) -> ObjectEntry:
        """Write a small object in one go."""
        upload = self.open_object(kind, backup_id, name, component)
        try:
            upload.write(data)
            return upload.finish(items)
        except BaseException:
            upload.abort()
            raise

    def fingerprint_key_for(self, ref: SetRef, entry: ObjectEntry, keyring: Keyring | None = None) -> bytes:
        """The value-fingerprint key of a stored object (unwraps its data key)."""
        context = encryption_context(ref.backup_id, ref.kind, entry.name, self.environment)
        reader = S3ObjectReader(self.s3, self.bucket, ref.prefix + entry.name)
        try:
            header = read_header(reader, entry.name)  # type: ignore[arg-type]
        finally:
            reader.close()
        data_key = keyring_resolver(keyring or self.keyring, context, entry.name)(header)
        return fingerprint_key(data_key)

    def commit(self, manifest: Manifest) -> SetRef:
        """Write the manifest (write-once): from now on the set exists."""
        key = set_prefix(manifest.kind, manifest.backup_id) + MANIFEST_NAME
        body = seal_manifest(manifest, self.keyring)
        sink = MultipartSink(
            self.s3,
            self.bucket,
            key,
            kms_key_id=self.kms_key_id,
            tags=NOT_EXPIRABLE,
            content_type="application/json",
            write_once=True,
        )
        sink.write(body)
        try:
            sink.close()
        except Exception as exc:
            if error_code(exc) in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                raise SetExistsError(f"backup set {manifest.backup_id} already has a manifest") from exc
            raise
        return SetRef(manifest.kind, manifest.backup_id, key)

    # -- finding -------------------------------------------------------------------------
    def list_sets(self, kind: str | None = None) -> list[SetRef]:
        """Complete sets (those with a manifest), newest first."""
        kinds = [validate_kind(kind)] if kind else list(KINDS)
        refs: list[SetRef] = []
        paginator = self.s3.get_paginator("list_objects_v2")
        for each_kind in kinds:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=f"{each_kind}/"):
                for item in page.get("Contents", []):
                    ref = _ref_from_key(each_kind, item["Key"])
                    if ref is not None:
                        refs.append(ref)
        refs.sort(key=lambda ref: (ref.created_at, ref.backup_id), reverse=True)
        if self.replica:
            from servalsheets_backup.store.replicas import only_complete

            return only_complete(self, refs)
        return refs

    def find(self, backup_id: str, kind: str | None = None) -> SetRef:
        """The set with ``backup_id`` (any kind unless given), or BackupNotFoundError."""
        backup_time(backup_id)
        kinds = [validate_kind(kind)] if kind else list(KINDS)
        for each_kind in kinds:
            key = set_prefix(each_kind, backup_id) + MANIFEST_NAME
            try:
                self.s3.head_object(Bucket=self.bucket, Key=key)
            except Exception as exc:
                if error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                    continue
                raise
            ref = SetRef(each_kind, backup_id, key)
            if self.replica:
                from servalsheets_backup.store.replicas import require_complete

                return require_complete(self, ref)
            return ref
        raise BackupNotFoundError(
            f"no complete backup set {backup_id}: run `servalsheets-backup list` to see what exists"
        )

    def resolve(self, selector: str | Mapping[str, Any], kind: str | None = None) -> SetRef:
        """Resolve ``latest``, a backup id, or ``{"as_of": ISO}`` to one complete set."""
        if isinstance(selector, Mapping):
            if set(selector) != {"as_of"} or not isinstance(selector["as_of"], str):
                raise InvalidInputError('backup must be "latest", a backup id, or {"as_of": "<ISO time>"}')
            return self._as_of(parse_as_of(selector["as_of"]), kind)
        if selector == "latest":
            refs = self.list_sets(kind)
            if not refs:
                raise BackupNotFoundError(f"no complete backup of kind {kind or 'any'} exists yet")
            return refs[0]
        return self.find(selector, kind)

    def _as_of(self, as_of: datetime, kind: str | None) -> SetRef:
        for ref in self.list_sets(kind):
            if ref.created_at <= as_of:
                return ref
        raise BackupNotFoundError(
            f"no complete backup of kind {kind or 'any'} at or before {as_of.isoformat()}"
        )

    # -- reading and verifying -----------------------------------------------------------
    def load_manifest(self, ref: SetRef, keyring: Keyring | None = None) -> Manifest:
        """Download and authenticate the manifest of ``ref`` (with ``keyring``, e.g. an escrow key)."""
        reader = S3ObjectReader(self.s3, self.bucket, ref.manifest_key)
        try:
            data = reader.read()
        finally:
            reader.close()
        return open_manifest(
            data,
            keyring or self.keyring,
            backup_id=ref.backup_id,
            kind=ref.kind,
            environment=self.environment,
        )

    def read_object(
        self,
        ref: SetRef,
        entry: ObjectEntry,
        *,
        version_id: str | None = None,
        keyring: Keyring | None = None,
    ) -> Iterator[bytes]:
        """Yield the plaintext of ``entry``, checking it against the manifest entry at the end.

        Every chunk comes from an authenticated segment, but whether the object is the one the
        manifest names (sizes, and the tags digest or whole-object hashes) is only known at the
        end: callers that must not act on unverified data verify the set first.
        """
        context = encryption_context(ref.backup_id, ref.kind, entry.name, self.environment)
        resolve = keyring_resolver(keyring or self.keyring, context, entry.name)
        # A generator, so the GET is sent when the caller starts reading.
        yield from read_entry(
            S3ObjectReader(self.s3, self.bucket, ref.prefix + entry.name, version_id), entry, resolve
        )

    def verify_set(
        self,
        ref: SetRef,
        *,
        progress: Callable[[int], None] | None = None,
        keyring: Keyring | None = None,
    ) -> VerifyReport:
        """Authenticate the manifest, then fully decrypt and hash every object."""
        report = VerifyReport(ref)
        try:
            report.manifest = self.load_manifest(ref, keyring)
        except IntegrityError as exc:
            report.checks.append(ObjectCheck(MANIFEST_NAME, False, exc.check, exc.detail))
            return report
        report.checks.append(ObjectCheck(MANIFEST_NAME, True, "manifest authenticity"))
        for entry in report.manifest.objects:
            report.checks.append(self._verify_object(ref, entry, progress, keyring))
        return report

    def _verify_object(
        self,
        ref: SetRef,
        entry: ObjectEntry,
        progress: Callable[[int], None] | None,
        keyring: Keyring | None,
    ) -> ObjectCheck:
        version = self._current_version(ref, entry)
        if version is None:
            return ObjectCheck(entry.name, False, "presence", "object listed in the manifest is missing")
        try:
            for chunk in self.read_object(ref, entry, version_id=version or None, keyring=keyring):
                if progress is not None:
                    progress(len(chunk))
        except IntegrityError as exc:
            return ObjectCheck(entry.name, False, exc.check, exc.detail, version or None)
        return ObjectCheck(entry.name, True, "hashes and decryption", version_id=version or None)

    def _current_version(self, ref: SetRef, entry: ObjectEntry) -> str | None:
        """The current version id ('' when unversioned), or None when the object is missing."""
        try:
            head = self.s3.head_object(Bucket=self.bucket, Key=ref.prefix + entry.name)
        except Exception as exc:
            if error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return str(head.get("VersionId") or "")

    def delete_incomplete_set(self, kind: str, backup_id: str) -> int:
        """Delete the objects of a set that has no manifest (a failed run); returns the count."""
        prefix = set_prefix(kind, backup_id)
        keys = self._set_keys(SetRef(kind, backup_id, prefix + MANIFEST_NAME))
        if prefix + MANIFEST_NAME in keys:
            return 0  # complete sets are never deleted here
        for key in keys:
            self.s3.delete_object(Bucket=self.bucket, Key=key)
        return len(keys)

    # -- retention -----------------------------------------------------------------------
    def mark_expirable(self, kind: str) -> list[str]:
        """Tag every set of ``kind`` except the newest as expirable; returns the ids tagged.

        Lifecycle expiration rules only match objects tagged expirable=true, so the newest
        complete set of each kind can never age out, whatever happens to later backups.
        """
        refs = self.list_sets(kind)
        tagged: list[str] = []
        for ref in refs[1:]:
            if self._is_expirable(ref.manifest_key):
                continue
            for key in self._set_keys(ref):
                if key != ref.manifest_key:
                    self._tag(key, "true")
            self._tag(ref.manifest_key, "true")  # last: a tagged manifest means the set is done
            tagged.append(ref.backup_id)
        return tagged

    def _set_keys(self, ref: SetRef) -> list[str]:
        paginator = self.s3.get_paginator("list_objects_v2")
        return [
            item["Key"]
            for page in paginator.paginate(Bucket=self.bucket, Prefix=ref.prefix)
            for item in page.get("Contents", [])
        ]

    def _is_expirable(self, key: str) -> bool:
        tags = self.s3.get_object_tagging(Bucket=self.bucket, Key=key).get("TagSet", [])
        return any(tag["Key"] == EXPIRABLE_TAG and tag["Value"] == "true" for tag in tags)

    def _tag(self, key: str, value: str) -> None:
        self.s3.put_object_tagging(
            Bucket=self.bucket,
            Key=key,
            Tagging={"TagSet": [{"Key": EXPIRABLE_TAG, "Value": value}]},
        )


def _check_object_name(name: str) -> None:
    parts = name.split("/")
    if not name or name == MANIFEST_NAME or any(part in ("", ".", "..") for part in parts):
        raise InvalidInputError(f"invalid object name {name!r}")


def _ref_from_key(kind: str, key: str) -> SetRef | None:
    parts = key.split("/")
    if len(parts) != 6 or parts[-1] != MANIFEST_NAME:
        return None
    try:
        backup_time(parts[4])
    except InvalidInputError:
        return None
    return SetRef(kind, parts[4], key)
