"""Reading one stored object back: decrypt it, and check it against its manifest entry.

Every chunk comes from an authenticated segment, but whether the object is the one the manifest
names (sizes, and the tags digest or the whole-object hashes of format v1) is only known at the
end, when ``read_entry`` raises ``IntegrityError`` for a mismatch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import closing

from servalsheets_backup.adapters.s3 import S3ObjectReader, checksum_header, crc64nvme
from servalsheets_backup.errors import IntegrityError
from servalsheets_backup.format.envelope import EnvelopeHeader, KeyResolver, decrypt_stream
from servalsheets_backup.format.envelope_v2 import FrameReader
from servalsheets_backup.format.manifest import ObjectEntry
from servalsheets_backup.read_ahead import read_ahead


def read_entry(reader: S3ObjectReader, entry: ObjectEntry, resolve: KeyResolver) -> Iterator[bytes]:
    """Yield the plaintext of the object ``reader`` reads, checked against ``entry`` at the end."""
    v1 = entry.format_version == 1
    stored = _HashingReader(reader, hashing=v1, crc=entry.stored_crc64nvme is not None)
    plain_sha = hashlib.sha256() if v1 else None
    frames: list[FrameReader] = []
    plain_size = 0
    try:
        plaintext = decrypt_stream(stored, _version_checked(entry, resolve), entry.name, frames.append)  # type: ignore[arg-type]
        # S3 reads, decryption and decompression run a chunk or two ahead of the caller.
        with closing(read_ahead(plaintext)) as chunks:
            for chunk in chunks:
                if plain_sha is not None:
                    plain_sha.update(chunk)
                plain_size += len(chunk)
                yield chunk
        if stored.read(1):
            raise IntegrityError(entry.name, "trailing data", "bytes after the final segment")
    finally:
        reader.close()
    _compare(entry.name, "stored size", stored.size, entry.stored_size)
    _compare(entry.name, "plaintext size", plain_size, entry.plaintext_size)
    if plain_sha is not None:
        _compare(entry.name, "stored SHA-256", stored.hexdigest(), entry.stored_sha256)
        _compare(entry.name, "plaintext SHA-256", plain_sha.hexdigest(), entry.plaintext_sha256)
    else:
        _compare(entry.name, "segment count", frames[0].segments, entry.segments)
        _compare(entry.name, "segment tags digest", frames[0].tags_sha256, entry.tags_sha256)
    if entry.stored_crc64nvme is not None:
        _compare(entry.name, "stored CRC64NVME", stored.checksum(), entry.stored_crc64nvme)


def _compare(subject: str, check: str, actual: object, expected: object) -> None:
    if actual != expected:
        raise IntegrityError(subject, check, "does not match the manifest")


def _version_checked(entry: ObjectEntry, resolve: KeyResolver) -> KeyResolver:
    """Refuse an object whose format version is not the one its manifest entry records."""

    def checked(header: EnvelopeHeader) -> bytes:
        if header.version != entry.format_version:
            raise IntegrityError(
                entry.name,
                "format version",
                f"the object is format v{header.version}; the manifest records v{entry.format_version}",
            )
        return resolve(header)

    return checked


class _HashingReader:
    """Counts the stored bytes as the decryptor reads them, hashing them (v1) and CRCing them."""

    def __init__(self, reader: S3ObjectReader, *, hashing: bool, crc: bool) -> None:
        self._reader = reader
        self._sha = hashlib.sha256() if hashing else None
        self._crc: int | None = 0 if crc else None
        self.size = 0

    def read(self, size: int = -1) -> bytes:
        data = self._reader.read(size)
        if self._sha is not None:
            self._sha.update(data)
        if self._crc is not None:
            self._crc = crc64nvme(data, self._crc)
        self.size += len(data)
        return data

    def hexdigest(self) -> str:
        return self._sha.hexdigest() if self._sha is not None else ""

    def checksum(self) -> str:
        """The CRC64NVME of the bytes read, as S3 reports it."""
        return checksum_header(self._crc or 0)
