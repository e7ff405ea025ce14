"""Sets in a standby bucket: complete only once every object the manifest lists has arrived.

S3 Replication copies objects in no particular order, so the manifest, written last in the
primary, may reach the standby before the objects it lists. A standby's store therefore counts
a set as complete only when every object named in its manifest is there with its stored size
(and, for objects uploaded with one, its CRC64NVME); anything else is an incomplete set, never
listed, resolved or restored. The manifest's body is read without authenticating it here (it
only names what to look for): restores authenticate it as always.
"""

from __future__ import annotations

from typing import Any, Protocol, TypeVar

from servalsheets_backup.errors import IncompleteSetError
from servalsheets_backup.format.manifest import peek_manifest

_Ref = TypeVar("_Ref", bound="SetRef")


class BackupStore(Protocol):
    """What this module reads of ``store.sets.BackupStore`` (which imports this module)."""

    s3: Any
    bucket: str


class SetRef(Protocol):
    """What this module reads of ``store.sets.SetRef``."""

    @property
    def backup_id(self) -> str:
        """The set's backup id."""
        ...

    @property
    def manifest_key(self) -> str:
        """The key of the set's manifest."""
        ...

    @property
    def prefix(self) -> str:
        """The key prefix of the set's objects."""
        ...


def missing_objects(store: BackupStore, ref: SetRef) -> list[str]:
    """Names of the objects ``ref``'s manifest lists that are not (yet) in the bucket as listed."""
    body = peek_manifest(store.s3.get_object(Bucket=store.bucket, Key=ref.manifest_key)["Body"].read())
    present: dict[str, int] = {}
    for page in store.s3.get_paginator("list_objects_v2").paginate(Bucket=store.bucket, Prefix=ref.prefix):
        for item in page.get("Contents", []):
            present[item["Key"][len(ref.prefix) :]] = int(item.get("Size", -1))
    entries: list[dict[str, Any]] = [e for e in body.get("objects", []) if isinstance(e, dict)]
    return [str(e.get("name")) for e in entries if present.get(str(e.get("name"))) != e.get("stored_size")]


def require_complete(store: BackupStore, ref: _Ref) -> _Ref:
    """``ref`` when every object has arrived; IncompleteSetError naming what is missing otherwise."""
    missing = missing_objects(store, ref)
    if missing:
        raise IncompleteSetError(
            f"backup set {ref.backup_id} is incomplete in the standby bucket {store.bucket}: "
            f"{len(missing)} of its objects have not arrived ({', '.join(missing[:3])}"
            f"{', ...' if len(missing) > 3 else ''}); replication is still running or failed. Restore an "
            "older set (servalsheets-backup list shows only complete ones) or wait for replication"
        )
    return ref


def only_complete(store: BackupStore, refs: list[_Ref]) -> list[_Ref]:
    """The sets of ``refs`` whose every object has arrived, in the same order."""
    return [ref for ref in refs if not missing_objects(store, ref)]


def compare_copies(
    s3: Any, bucket: str, other_s3: Any, other_bucket: str, ref: SetRef
) -> list[tuple[str, str]]:
    """(object, what differs) between a set in ``bucket`` and its copy in ``other_bucket``.

    The manifest must be byte for byte the same (it authenticates every object's digests) and
    every object it lists must be in both with its stored size; ``verify`` then checks the
    copies' contents end to end.
    """
    manifest = s3.get_object(Bucket=bucket, Key=ref.manifest_key)["Body"].read()
    try:
        copy = other_s3.get_object(Bucket=other_bucket, Key=ref.manifest_key)["Body"].read()
    except Exception:  # NoSuchKey, or the bucket cannot be read
        return [("manifest.json", f"absent from {other_bucket}")]
    if copy != manifest:
        return [("manifest.json", "differs: the two buckets hold different sets under one id")]
    differences = []
    for entry in peek_manifest(manifest).get("objects", []):
        name, size = str(entry.get("name")), entry.get("stored_size")
        sizes = [
            _size(client, name_of_bucket, ref.prefix + name)
            for client, name_of_bucket in ((s3, bucket), (other_s3, other_bucket))
        ]
        if sizes != [size, size]:
            differences.append((name, f"stored size {size}, found {sizes[0]} and {sizes[1]}"))
    return differences


def _size(s3: Any, bucket: str, key: str) -> int | None:
    try:
        return int(s3.head_object(Bucket=bucket, Key=key)["ContentLength"])
    except Exception:  # absent (404) or unreadable: reported as missing
        return None
