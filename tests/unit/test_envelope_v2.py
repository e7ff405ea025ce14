"""Format v2: per-segment compression that pays or is skipped, framing, and every tamper named."""

from __future__ import annotations

import hashlib
import io
import os
import struct

import pytest

from servalsheets_backup.errors import IntegrityError
from servalsheets_backup.format import envelope_v2 as v2
from servalsheets_backup.format.envelope import decrypt_stream
from servalsheets_backup.format.keys import DataKey

from .envelope_vectors import CONTEXT, DATA_KEY, NONCE_PREFIX, SALT, WRAPPED, large_plaintext

pytestmark = pytest.mark.unit
SEGMENT = 64 << 10
TEXT = b'{"access_token":"ya29.vector","refresh_token":"1//vector"}\n' * 4000  # ~236 KB, compressible


def seal(plaintext: bytes, segment_size: int = SEGMENT, **options: object) -> tuple[bytes, v2.ObjectDigestV2]:
    sink = io.BytesIO()
    writer = v2.EnvelopeWriterV2(
        sink,
        DataKey(DATA_KEY, WRAPPED),
        CONTEXT,
        segment_size=segment_size,
        nonce_prefix=NONCE_PREFIX,
        salt=SALT,
        **options,  # type: ignore[arg-type]
    )
    for start in range(0, len(plaintext), 100_000):
        writer.write(plaintext[start : start + 100_000])
    digest = writer.close()
    return sink.getvalue(), digest


def open_all(sealed: bytes, key: bytes = DATA_KEY) -> tuple[bytes, v2.FrameReader]:
    readers: list[v2.FrameReader] = []
    plain = b"".join(decrypt_stream(io.BytesIO(sealed), lambda header: key, "vector", readers.append))
    return plain, readers[0]


def frames(sealed: bytes) -> list[tuple[int, int, int]]:
    """(offset, flags, sealed length) of every frame."""
    (header_length,) = struct.unpack(">I", sealed[8:12])
    offset, found = 12 + header_length, []
    while offset < len(sealed):
        flags, length = v2.FRAME_HEADER.unpack_from(sealed, offset)
        found.append((offset, flags, length))
        offset += v2.FRAME_HEADER.size + length
    return found


@pytest.mark.parametrize("size", [0, 1, SEGMENT - 1, SEGMENT, SEGMENT + 1, 3 * SEGMENT, 5 * SEGMENT + 17])
def test_round_trip_and_digest(size: int) -> None:
    plaintext = (TEXT * 2)[:size] if size < len(TEXT) * 2 else os.urandom(size)
    sealed, digest = seal(plaintext)
    plain, reader = open_all(sealed)
    assert plain == plaintext
    assert digest.plaintext_size == size and digest.stored_size == len(sealed)
    assert digest.segments == reader.segments == len(frames(sealed)) == max(1, -(-size // SEGMENT))
    assert reader.tags_sha256 == digest.tags_sha256


def test_the_vector_is_byte_exact() -> None:
    sealed, digest = seal(large_plaintext(), segment_size=1 << 20)
    assert (
        hashlib.sha256(sealed).hexdigest()
        == "b8e8b85dd24ea822a040e6cde56328bc8725bd25d6f2659c5cd00e69b5ff58d0"
    )
    assert digest.segments == 4


def test_compressible_segments_are_compressed_and_random_ones_stored() -> None:
    text = (TEXT * 6)[: 20 * SEGMENT]
    mixed = text[: 2 * SEGMENT] + os.urandom(SEGMENT) + text
    sealed, _ = seal(mixed)
    zstd = [bool(f & v2.FLAG_ZSTD) for _, f, _ in frames(sealed)]
    skipped = 3 + v2.SKIP_AFTER_MISS
    # Text compressed; the random segment stored; then no zstd attempt for a while; then again.
    assert zstd[:3] == [True, True, False]
    assert not any(zstd[3:skipped]) and all(zstd[skipped:])
    assert len(sealed) < len(mixed)
    assert open_all(sealed)[0] == mixed


def test_misses_in_a_row_probe_ever_more_rarely_and_a_hit_resets() -> None:
    noise = os.urandom(200 * SEGMENT)
    sealed, _ = seal(noise + (TEXT * 40)[: 70 * SEGMENT])
    probes = [i for i, (_, f, body) in enumerate(frames(sealed)) if f & v2.FLAG_ZSTD]
    assert probes and probes[0] >= 200  # nothing in the noise compressed
    # The noise was probed at 0, 16, 48, 112 and 176 (skips of 15, 31, 63, 63): the text that
    # follows at segment 200 is found by the probe at 240 and compressed from there on.
    assert probes[0] == 240
    assert all(i in probes for i in range(240, 270))
    assert open_all(sealed)[0] == noise + (TEXT * 40)[: 70 * SEGMENT]


def test_compression_none_never_compresses() -> None:
    sealed, _ = seal(TEXT, compression=v2.COMPRESSION_NONE)
    assert all(f & v2.FLAG_ZSTD == 0 for _, f, _ in frames(sealed))
    assert open_all(sealed)[0] == TEXT


def test_every_byte_flip_of_a_small_object_fails() -> None:
    sealed, _ = seal(TEXT[:3000])
    for position in range(len(sealed)):
        tampered = bytearray(sealed)
        tampered[position] ^= 0x01
        with pytest.raises(IntegrityError):
            open_all(bytes(tampered))


def test_truncation_at_every_frame_boundary_names_the_missing_final_segment() -> None:
    sealed, _ = seal(os.urandom(4 * SEGMENT + 5))
    offsets = [offset for offset, _, _ in frames(sealed)]
    with pytest.raises(IntegrityError, match="no segment follows"):
        open_all(sealed[: offsets[0]])
    for index, cut in enumerate(offsets[1:]):
        with pytest.raises(IntegrityError, match=f"ends after segment {index}; its final segment is missing"):
            open_all(sealed[:cut])
    for cut in (offsets[1] + 3, offsets[2] - 10, len(sealed) - 1):
        with pytest.raises(IntegrityError, match="cut short"):
            open_all(sealed[:cut])


def test_reordered_dropped_appended_and_reflagged_frames_fail() -> None:
    sealed, _ = seal(os.urandom(3 * SEGMENT + 5))
    (a, _, _), (b, _, _), (c, _, _), _ = frames(sealed)
    with pytest.raises(IntegrityError, match="segment 0 authentication"):
        open_all(sealed[:a] + sealed[b:c] + sealed[a:b] + sealed[c:])
    with pytest.raises(IntegrityError, match="segment 1 authentication"):
        open_all(sealed[:b] + sealed[c:])
    with pytest.raises(IntegrityError, match="trailing data"):
        open_all(sealed + sealed[a:b])
    early_final = bytearray(sealed)
    early_final[b] |= v2.FLAG_FINAL
    with pytest.raises(IntegrityError, match="segment 1 authentication"):
        open_all(bytes(early_final))
    bad_length = bytearray(sealed)
    struct.pack_into(">I", bad_length, a + 1, SEGMENT + 17)
    with pytest.raises(IntegrityError, match="segment 0 framing"):
        open_all(bytes(bad_length))


def test_wrong_key_fails_and_the_header_is_authenticated() -> None:
    sealed, _ = seal(TEXT)
    with pytest.raises(IntegrityError, match="segment 0 authentication"):
        open_all(sealed, key=bytes(32))
    with pytest.raises(IntegrityError, match="segment 0 authentication"):
        open_all(sealed.replace(b'"tokens"', b'"config"'))


def test_tags_digest_changes_with_any_other_object_under_the_same_key() -> None:
    first, one = seal(TEXT)
    second, two = seal(TEXT[:-1] + b"!")
    assert one.tags_sha256 != two.tags_sha256
    assert open_all(second)[1].tags_sha256 == two.tags_sha256
