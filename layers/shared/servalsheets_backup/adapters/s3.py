"""S3: streaming multipart uploads with SHA-256 checksums and SSE-KMS, and ranged reads."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from typing import Any

PART_SIZE = 8 * 1024 * 1024  # S3 needs >= 5 MiB parts; 8 MiB keeps memory flat and calls few
READ_CHUNK = 4 * 1024 * 1024


def _sha256_b64(data: bytes | bytearray | memoryview) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode("ascii")


def delete_every_version(s3: Any, bucket: str, key: str) -> None:
    """Remove an object outright: every version and delete marker, not just the current one.

    For plaintext that must not linger behind a delete marker (exports, restore seeds).
    """
    listing = s3.list_object_versions(Bucket=bucket, Prefix=key)
    versions = [v for v in listing.get("Versions", []) + listing.get("DeleteMarkers", []) if v["Key"] == key]
    if not versions:  # an unversioned bucket
        s3.delete_object(Bucket=bucket, Key=key)
    for version in versions:
        s3.delete_object(Bucket=bucket, Key=key, VersionId=version["VersionId"])


class MultipartSink:
    """A write-only file-like sink that streams to one S3 object.

    Data is buffered up to one part; small objects become a single PutObject. Every request
    carries a SHA-256 checksum (required by Object Lock buckets) and SSE-KMS headers.
    """

    def __init__(
        self,
        s3: Any,
        bucket: str,
        key: str,
        *,
        kms_key_id: str,
        tags: str = "",
        content_type: str = "application/octet-stream",
        part_size: int = PART_SIZE,
        write_once: bool = False,
        sse: str = "aws:kms",
    ) -> None:
        self._s3 = s3
        self._bucket = bucket
        self._key = key
        self._part_size = part_size
        self._buffer = bytearray()
        self._parts: list[dict[str, Any]] = []
        self._upload_id: str | None = None
        self._write_once = write_once
        self._common: dict[str, Any] = {"ServerSideEncryption": sse, "ContentType": content_type}
        if sse == "aws:kms":
            self._common.update(SSEKMSKeyId=kms_key_id, BucketKeyEnabled=True)
        if tags:
            self._common["Tagging"] = tags
        self.version_id: str | None = None

    def write(self, data: bytes) -> int:
        """Buffer ``data`` and upload every full part."""
        self._buffer += data
        while len(self._buffer) >= self._part_size:
            self._upload_part(bytes(self._buffer[: self._part_size]))
            del self._buffer[: self._part_size]
        return len(data)

    def _upload_part(self, part: bytes) -> None:
        if self._upload_id is None:
            response = self._s3.create_multipart_upload(
                Bucket=self._bucket, Key=self._key, ChecksumAlgorithm="SHA256", **self._common
            )
            self._upload_id = response["UploadId"]
        number = len(self._parts) + 1
        checksum = _sha256_b64(part)
        response = self._s3.upload_part(
            Bucket=self._bucket,
            Key=self._key,
            UploadId=self._upload_id,
            PartNumber=number,
            Body=part,
            ChecksumAlgorithm="SHA256",
            ChecksumSHA256=checksum,
        )
        self._parts.append({"PartNumber": number, "ETag": response["ETag"], "ChecksumSHA256": checksum})

    def close(self) -> None:
        """Upload what is left and complete the object."""
        if self._upload_id is None:
            body = bytes(self._buffer)
            # If-None-Match: * makes the write fail instead of replacing an existing object.
            condition = {"IfNoneMatch": "*"} if self._write_once else {}
            response = self._s3.put_object(
                **condition,
                Bucket=self._bucket,
                Key=self._key,
                Body=body,
                ChecksumAlgorithm="SHA256",
                ChecksumSHA256=_sha256_b64(body),
                **self._common,
            )
        else:
            if self._buffer:
                self._upload_part(bytes(self._buffer))
            response = self._s3.complete_multipart_upload(
                Bucket=self._bucket,
                Key=self._key,
                UploadId=self._upload_id,
                MultipartUpload={"Parts": self._parts},
            )
        self._buffer.clear()
        self.version_id = response.get("VersionId")

    def abort(self) -> None:
        """Abandon the upload; nothing becomes visible (lifecycle also aborts after a day)."""
        if self._upload_id is not None:
            self._s3.abort_multipart_upload(Bucket=self._bucket, Key=self._key, UploadId=self._upload_id)
            self._upload_id = None
        self._buffer.clear()


class S3ObjectReader:
    """A read-only file-like view of one S3 object version, streamed in chunks."""

    def __init__(self, s3: Any, bucket: str, key: str, version_id: str | None = None) -> None:
        extra = {"VersionId": version_id} if version_id else {}
        response = s3.get_object(Bucket=bucket, Key=key, **extra)
        self.version_id: str | None = response.get("VersionId")
        self.size = int(response.get("ContentLength", 0))
        self._body = response["Body"]

    def read(self, size: int = -1) -> bytes:
        """Read up to ``size`` bytes (all when negative)."""
        data: bytes = self._body.read() if size < 0 else self._body.read(size)
        return data

    def chunks(self, size: int = READ_CHUNK) -> Iterator[bytes]:
        """Iterate over the object in chunks of ``size``."""
        while chunk := self.read(size):
            yield chunk

    def close(self) -> None:
        """Release the HTTP connection."""
        self._body.close()
