"""S3: streaming multipart uploads with full-object CRC64NVME checksums and SSE-KMS, and reads."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import anycrc

PART_SIZE = 8 * 1024 * 1024  # S3 needs >= 5 MiB parts; 8 MiB keeps memory flat and calls few
READ_CHUNK = 4 * 1024 * 1024
CHECKSUM_ALGORITHM = "CRC64NVME"
# CRC-64/NVME (reflected polynomial 0x9A6C9329AC4BC9B5, init and xorout all ones), the checksum S3
# computes for CRC64NVME; anycrc's table-driven C code runs at over 10 GB/s on this machine type.
_CRC64NVME = anycrc.Model("CRC64-NVME")


def crc64nvme(data: bytes | bytearray | memoryview, running: int = 0) -> int:
    """CRC-64/NVME of ``data``, continuing the CRC ``running`` of the bytes before it."""
    value: int = _CRC64NVME.calc(data, running)  # the CRC of no bytes is 0: a fresh start
    return value


def crc64nvme_combine(before: int, after: int, after_length: int) -> int:
    """The CRC of two byte runs joined, from the CRC of each (no second pass over the bytes)."""
    value: int = _CRC64NVME.combine(before, after, after_length)
    return value


def checksum_header(value: int) -> str:
    """A CRC64NVME as S3 sends and expects it: the 8 big-endian bytes, base64."""
    return base64.b64encode(value.to_bytes(8, "big")).decode("ascii")


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
    carries a CRC64NVME checksum of its body (S3 rejects a part whose bytes do not match; Object
    Lock buckets require a checksum), and completing the upload sends the full-object CRC64NVME,
    which S3 checks against the parts and keeps with the object (``checksum``, after close).
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
        self._crc = 0
        self.checksum: str | None = None

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
                Bucket=self._bucket,
                Key=self._key,
                ChecksumAlgorithm=CHECKSUM_ALGORITHM,
                ChecksumType="FULL_OBJECT",
                **self._common,
            )
            self._upload_id = response["UploadId"]
        number = len(self._parts) + 1
        part_crc = crc64nvme(part)
        self._crc = crc64nvme_combine(self._crc, part_crc, len(part))
        part_checksum = checksum_header(part_crc)
        response = self._s3.upload_part(
            Bucket=self._bucket,
            Key=self._key,
            UploadId=self._upload_id,
            PartNumber=number,
            Body=part,
            ChecksumAlgorithm=CHECKSUM_ALGORITHM,
            ChecksumCRC64NVME=part_checksum,
        )
        self._parts.append(
            {"PartNumber": number, "ETag": response["ETag"], "ChecksumCRC64NVME": part_checksum}
        )

    def close(self) -> None:
        """Upload what is left and complete the object."""
        if self._upload_id is None:
            body = bytes(self._buffer)
            # If-None-Match: * makes the write fail instead of replacing an existing object.
            condition = {"IfNoneMatch": "*"} if self._write_once else {}
            self._crc = crc64nvme(body)
            response = self._s3.put_object(
                **condition,
                Bucket=self._bucket,
                Key=self._key,
                Body=body,
                ChecksumAlgorithm=CHECKSUM_ALGORITHM,
                ChecksumCRC64NVME=checksum_header(self._crc),
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
                ChecksumType="FULL_OBJECT",
                ChecksumCRC64NVME=checksum_header(self._crc),
            )
        self._buffer.clear()
        self.version_id = response.get("VersionId")
        self.checksum = checksum_header(self._crc)

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
