"""File sources: a local path (EFS mount in Lambda) or an ``s3://bucket/key`` URI."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from servalsheets_backup.errors import ConfigurationError, InvalidInputError

MAX_FILE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class FileContent:
    """Bytes of a file plus the mode to restore it with (S3 objects default to 0600)."""

    data: bytes
    mode: int


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> (bucket, key)."""
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket or not key:
        raise InvalidInputError(f"{uri!r} is not an s3://bucket/key URI")
    return bucket, key


def check_local_path(path: str) -> Path:
    """Reject relative paths and ``..`` components (file targets come from operators' input)."""
    candidate = Path(path)
    if not candidate.is_absolute() or ".." in candidate.parts:
        raise InvalidInputError(f"file path {path!r} must be absolute and must not contain '..'")
    return candidate


def read_source(source: str, s3: Any | None = None) -> FileContent | None:
    """Read a file source; None when it does not exist."""
    if source.startswith("s3://"):
        if s3 is None:
            raise ConfigurationError("an S3 client is needed to read s3:// sources")
        bucket, key = split_s3_uri(source)
        try:
            body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except Exception as exc:
            if getattr(exc, "response", {}).get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise
        return FileContent(body, 0o600)
    path = check_local_path(source)
    try:
        info = path.stat()
    except FileNotFoundError:
        return None
    if info.st_size > MAX_FILE_BYTES:
        raise InvalidInputError(f"{source} is larger than {MAX_FILE_BYTES} bytes; not a config file")
    return FileContent(path.read_bytes(), stat.S_IMODE(info.st_mode))


def write_source(source: str, content: FileContent, s3: Any | None = None) -> None:
    """Write a file source atomically (temp file, fsync, rename) with its mode."""
    if source.startswith("s3://"):
        if s3 is None:
            raise ConfigurationError("an S3 client is needed to write s3:// targets")
        bucket, key = split_s3_uri(source)
        # The application's own bucket encrypts with its own default key: never our backup key,
        # or the application could no longer read its own file.
        s3.put_object(Bucket=bucket, Key=key, Body=content.data)
        return
    path = check_local_path(source)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".restore-tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, content.mode & 0o777)
    try:
        os.write(descriptor, content.data)
        os.fchmod(descriptor, content.mode & 0o777)
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    temporary.replace(path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def delete_source(source: str, s3: Any | None = None) -> None:
    """Remove a file source if it exists (used when rolling back to 'file did not exist')."""
    if source.startswith("s3://") and s3 is not None:
        bucket, key = split_s3_uri(source)
        s3.delete_object(Bucket=bucket, Key=key)
        return
    check_local_path(source).unlink(missing_ok=True)
