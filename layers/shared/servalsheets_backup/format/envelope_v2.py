"""The encrypted backup object format, version 2 (docs/format.md, section 6): no whole-object hash.

Layout: ``MAGIC_V2`` | header length (u32) | header (canonical JSON) | frames. The plaintext is
cut into segments of ``segment_size`` bytes; each is compressed on its own with zstandard when
that pays (stored as it is when it does not, so incompressible data costs no compression time
after the first probe) and sealed with AES-256-GCM (STREAM: nonce = prefix || u32 counter ||
final flag). A frame is ``flags (u8) || sealed length (u32) || ciphertext || tag`` and its
associated data is the header digest plus those five bytes, so editing a flag or a length,
reordering, dropping or appending frames and truncating at any boundary all fail. The object
is bound to its manifest by ``tags_sha256``: SHA-256 over the header digest and every frame's
tag, 16 bytes per segment instead of a hash over every stored and plaintext byte.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any, BinaryIO

import zstandard
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from servalsheets_backup.errors import IntegrityError
from servalsheets_backup.format.encoding import b64encode, canonical_json
from servalsheets_backup.format.keys import DataKey

MAGIC_V2 = b"SSBKUP\x00\x02"
FORMAT_VERSION_V2 = 2
ALGORITHM_V2 = "AES-256-GCM-STREAM-FRAMED/HKDF-SHA256"
COMPRESSION_ZSTD_SEGMENTS = "zstd-per-segment"
COMPRESSION_NONE = "none"
MIN_SEGMENT_SIZE_V2 = 64 << 10
MAX_SEGMENT_SIZE_V2 = 4 << 20
DEFAULT_SEGMENT_SIZE_V2 = 1 << 20
FLAG_FINAL = 0x01
FLAG_ZSTD = 0x02
FRAME_HEADER = struct.Struct(">BI")
TAG_BYTES = 16
NONCE_PREFIX_BYTES = 7
SALT_BYTES = 32
MAX_SEGMENTS = 2**32 - 1
SEGMENT_KEY_INFO_V2 = b"servalsheets-backup/v2/segment-key"
DEFAULT_ZSTD_LEVEL = 1
COMPRESSION_PAYS = 0.95  # keep a compressed segment only when it saves at least 5%
SKIP_AFTER_MISS = 15  # segments stored without trying zstd after one that did not compress
# Each further miss in a row doubles the segments skipped, up to this: on incompressible data
# the probes then cost 1/64 of a zstd pass instead of 1/16 (about 1% of the writer's time).
MAX_SKIP_AFTER_MISSES = 63


@dataclass(frozen=True)
class ObjectDigestV2:
    """What the manifest records about one v2 object."""

    plaintext_size: int
    stored_size: int
    segments: int
    tags_sha256: str

    def as_dict(self) -> dict[str, Any]:
        """Manifest form."""
        return asdict(self)


def derive_segment_key(data_key: bytes, salt: bytes, info: bytes) -> bytes:
    """HKDF-SHA256 of the object's data key: the AES-256-GCM segment key (``info`` names the version)."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(data_key)


def segment_key_v2(data_key: bytes, salt: bytes) -> bytes:
    """Derive the v2 AES-256-GCM segment key from the object's data key."""
    return derive_segment_key(data_key, salt, SEGMENT_KEY_INFO_V2)


def frame_nonce(prefix: bytes, counter: int, final: bool) -> bytes:
    """STREAM nonce: prefix || big-endian u32 counter || final flag."""
    return prefix + struct.pack(">IB", counter, 1 if final else 0)


class EnvelopeWriterV2:
    """Streams plaintext in, framed sealed segments out; memory stays at about two segments."""

    def __init__(
        self,
        sink: Any,
        data_key: DataKey,
        context: Mapping[str, str],
        *,
        compression: str = COMPRESSION_ZSTD_SEGMENTS,
        zstd_level: int = DEFAULT_ZSTD_LEVEL,
        segment_size: int = DEFAULT_SEGMENT_SIZE_V2,
        nonce_prefix: bytes | None = None,
        salt: bytes | None = None,
    ) -> None:
        if not MIN_SEGMENT_SIZE_V2 <= segment_size <= MAX_SEGMENT_SIZE_V2:
            raise ValueError("segment_size must be between 64 KiB and 4 MiB")
        if compression not in (COMPRESSION_ZSTD_SEGMENTS, COMPRESSION_NONE):
            raise ValueError(f"unknown compression {compression!r}")
        self._sink = sink
        self._segment_size = segment_size
        self._prefix = nonce_prefix if nonce_prefix is not None else os.urandom(NONCE_PREFIX_BYTES)
        salt = salt if salt is not None else os.urandom(SALT_BYTES)
        header = {
            "format_version": FORMAT_VERSION_V2,
            "alg": ALGORITHM_V2,
            "compression": compression,
            "segment_size": segment_size,
            "nonce_prefix": b64encode(self._prefix),
            "salt": b64encode(salt),
            "context": dict(context),
            "wrapped_keys": data_key.wrapped,
        }
        header_bytes = canonical_json(header)
        preamble = MAGIC_V2 + struct.pack(">I", len(header_bytes)) + header_bytes
        self._header_digest = hashlib.sha256(preamble).digest()
        self._tags = hashlib.sha256(self._header_digest)
        self._aead = AESGCM(segment_key_v2(data_key.plaintext, salt))
        self._compressor = (
            zstandard.ZstdCompressor(level=zstd_level) if compression == COMPRESSION_ZSTD_SEGMENTS else None
        )
        self._skip = 0
        self._misses = 0
        self._pending = bytearray()
        self._counter = 0
        self._plain_size = 0
        self._stored_size = 0
        self._closed = False
        self._emit(preamble)

    def _emit(self, data: bytes) -> None:
        self._stored_size += len(data)
        self._sink.write(data)

    def write(self, data: bytes) -> int:
        """Buffer ``data`` and seal every full segment; returns its length (file-like)."""
        self._plain_size += len(data)
        self._pending += data
        size = self._segment_size
        if len(self._pending) > size:
            offset = 0
            with memoryview(self._pending) as view:  # released before the bytearray is resized
                # Keep at least one byte back: the final segment is empty only for empty plaintext.
                while len(self._pending) - offset > size:
                    self._seal(view[offset : offset + size], final=False)
                    offset += size
            del self._pending[:offset]
        return len(data)

    def _compress(self, segment: memoryview | bytes) -> tuple[int, memoryview | bytes]:
        if self._compressor is None or not segment:
            return 0, segment
        if self._skip:
            self._skip -= 1
            return 0, segment
        packed = self._compressor.compress(segment)
        if len(packed) <= len(segment) * COMPRESSION_PAYS:
            self._misses = 0
            return FLAG_ZSTD, packed
        self._skip = min((SKIP_AFTER_MISS + 1) << self._misses, MAX_SKIP_AFTER_MISSES + 1) - 1
        self._misses += 1
        return 0, segment

    def _seal(self, segment: memoryview | bytes, final: bool) -> None:
        if self._counter >= MAX_SEGMENTS:
            raise ValueError("object too large for one envelope (2^32 segments)")
        flags, body = self._compress(segment)
        flags |= FLAG_FINAL if final else 0
        frame_header = FRAME_HEADER.pack(flags, len(body) + TAG_BYTES)
        sealed = self._aead.encrypt(
            frame_nonce(self._prefix, self._counter, final), body, self._header_digest + frame_header
        )
        self._tags.update(sealed[-TAG_BYTES:])
        self._emit(frame_header)
        self._emit(sealed)
        self._counter += 1

    def close(self) -> ObjectDigestV2:
        """Seal the final segment and return what the manifest records."""
        if self._closed:
            raise ValueError("envelope already closed")
        self._seal(bytes(self._pending), final=True)
        self._pending.clear()
        self._closed = True
        return ObjectDigestV2(self._plain_size, self._stored_size, self._counter, self._tags.hexdigest())


class FrameReader:
    """Opens the frames of a v2 object whose header was read; ``tags_sha256`` is known at the end."""

    def __init__(self, header: Any, data_key: bytes, subject: str) -> None:
        self._header = header
        self._aead = AESGCM(segment_key_v2(data_key, header.salt))
        self._tags = hashlib.sha256(header.aad)
        self._subject = subject
        self.segments = 0

    @property
    def tags_sha256(self) -> str:
        """SHA-256 over the header digest and every tag read so far."""
        return self._tags.hexdigest()

    def plaintext(self, stream: BinaryIO) -> Iterator[bytes]:
        """Yield each segment's plaintext once it is authenticated; fail on any defect."""
        while True:
            flags, sealed = self._next_frame(stream)
            final = bool(flags & FLAG_FINAL)
            body = self._open(flags, sealed, final)
            self._tags.update(sealed[-TAG_BYTES:])
            plain = self._decompress(body) if flags & FLAG_ZSTD else body
            self._check_length(len(plain), final)
            self.segments += 1
            if plain:
                yield plain
            if final:
                if stream.read(1):
                    raise IntegrityError(self._subject, "trailing data", "bytes follow the final segment")
                return

    def _next_frame(self, stream: BinaryIO) -> tuple[int, bytes]:
        counter = self.segments
        raw = read_exact(stream, FRAME_HEADER.size)
        if not raw:
            raise IntegrityError(
                self._subject,
                "truncation",
                f"object ends after segment {counter - 1}; its final segment is missing"
                if counter
                else "object ends after its header; no segment follows",
            )
        if len(raw) < FRAME_HEADER.size:
            raise IntegrityError(self._subject, "truncation", f"segment {counter} is cut short")
        flags, length = FRAME_HEADER.unpack(raw)
        allowed = FLAG_FINAL | (FLAG_ZSTD if self._header.compression == COMPRESSION_ZSTD_SEGMENTS else 0)
        if flags & ~allowed or not TAG_BYTES <= length <= self._header.segment_size + TAG_BYTES:
            raise IntegrityError(self._subject, f"segment {counter} framing", "invalid flags or length")
        sealed = read_exact(stream, length)
        if len(sealed) != length:
            raise IntegrityError(self._subject, "truncation", f"segment {counter} is cut short")
        self._frame_header = raw
        return flags, sealed

    def _open(self, flags: int, sealed: bytes, final: bool) -> bytes:
        nonce = frame_nonce(self._header.nonce_prefix, self.segments, final)
        try:
            return self._aead.decrypt(nonce, sealed, self._header.aad + self._frame_header)
        except InvalidTag:
            raise IntegrityError(
                self._subject,
                f"segment {self.segments} authentication",
                "ciphertext, header, framing or segment order was modified, or the key is wrong",
            ) from None

    def _decompress(self, body: bytes) -> bytes:
        try:
            return zstandard.ZstdDecompressor().decompress(body, max_output_size=self._header.segment_size)
        except zstandard.ZstdError as exc:
            raise IntegrityError(
                self._subject, "decompression", "authentic data failed to decompress"
            ) from exc

    def _check_length(self, size: int, final: bool) -> None:
        if size > self._header.segment_size or (not final and size != self._header.segment_size):
            raise IntegrityError(
                self._subject, f"segment {self.segments} length", "a segment holds the wrong number of bytes"
            )


def read_exact(stream: BinaryIO, size: int) -> bytes:
    """Up to ``size`` bytes: fewer only at the end of the stream."""
    data = bytearray()
    while len(data) < size:
        chunk = stream.read(size - len(data))
        if not chunk:
            break
        data += chunk
    return bytes(data)
