"""Validation of Redis RDB snapshot files, in one streaming pass with bounded memory.

An RDB file (``SAVE``/``BGSAVE`` output, or an ElastiCache export) is the 9-byte header
``REDIS`` + a 4-digit ASCII version, the data set, the EOF opcode 0xFF and, from RDB version 5
(Redis 2.6) on, the little-endian CRC-64 of every byte before it. A CRC of 0 means the writer ran
with ``rdbchecksum no``; redis-server then loads the file unchecked, and so do we, reporting
``checksum_verified=False``.

The data set between header and EOF is not parsed: the CRC already proves the bytes are the
ones redis-server wrote, and a parser would need updating for each new RDB type.

Versions: Redis 7.0 writes 10, Redis 7.2 and Valkey 7.2/8.x write 11, Redis 7.4 and 8.x write
12. Valkey 9 writes ``VALKEY080`` (a new magic; version 80, 81 in later releases): it is
refused with a message saying so, because the Redis this project restores into cannot load it.

The CRC comes from anycrc (C, several GB/s) when it is installed, as it is in the layer; the
pure-Python fallback still runs at about 140 MB/s on one core (CPython 3.11), by folding whole
blocks with big-integer shifts and XORs (see :func:`_crc_block`), where a byte-table loop
manages about 10 MB/s. Tests check that both give Redis's results.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from servalsheets_backup.errors import InvalidRdbError

RDB_MAGIC = b"REDIS"
VALKEY_MAGIC = b"VALKEY"
HEADER_BYTES = 9
EOF_OPCODE = 0xFF
CHECKSUM_BYTES = 8
MIN_RDB_VERSION = 1
MAX_RDB_VERSION = 12
# RDB 5 (Redis 2.6) added the trailing CRC-64; older files simply end with the EOF opcode.
FIRST_CHECKSUMMED_VERSION = 5
DEFAULT_CHUNK_BYTES = 8 * 1024 * 1024

Bytes = bytes | bytearray | memoryview

CHECK_MAGIC = "rdb magic"
CHECK_VERSION = "rdb version"
CHECK_CHECKSUM = "rdb checksum"
CHECK_TRUNCATED = "rdb truncated"


@dataclass(frozen=True)
class RdbInfo:
    """What validation learnt about an RDB file.

    ``checksum`` is the stored CRC-64 as 16 hex digits (all zeros when the writer disabled
    checksums) or ``None`` for RDB versions before 5, which have no checksum field.
    """

    version: int
    size: int
    checksum: str | None
    checksum_verified: bool


# --- CRC-64 -----------------------------------------------------------------------------------
#
# CRC-64/Jones as in Redis's crc64.c: reflected, polynomial 0xad93d23594c935a9, initial value 0,
# no final XOR; crc64(0, b"123456789") == 0xe9c6d914c4b8d9ca. A reflected CRC shifts right, so
# it uses the bit-reversed polynomial, and in this representation bit 63 stands for x^0.

_POLY_REFLECTED = 0x95AC9329AC4BC9B5
_X0 = 1 << 63
# Fold a block of this size at a time: the big-int temporaries then stay in the CPU caches
# (16 KiB measured fastest, against 4 KiB to 8 MiB).
_BLOCK = 16 * 1024
# Below this many bytes one more fold round costs more than the byte-table loop.
_FOLD_MIN = 64


def _make_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ _POLY_REFLECTED if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_TABLE = _make_table()


def _crc_bytewise(data: Bytes, crc: int) -> int:
    table = _TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc


def _mulmod(a: int, b: int) -> int:
    """Product of two reflected polynomials modulo the CRC polynomial (zlib's multmodp)."""
    product = 0
    bit = _X0
    while bit:
        if a & bit:
            product ^= b
        bit >>= 1
        b = (b >> 1) ^ _POLY_REFLECTED if b & 1 else b >> 1
    return product


def _powers_of_x() -> tuple[int, ...]:
    powers = [_X0 >> 1]  # x^1, then x^2, x^4, ... by squaring
    for _ in range(63):
        powers.append(_mulmod(powers[-1], powers[-1]))
    return tuple(powers)


_X_POW_2K = _powers_of_x()


def _x_pow_8n(n: int) -> int:
    """x^(8n) mod P: what a CRC state is multiplied by when n zero bytes pass through it."""
    result, k = _X0, 3
    while n:
        if n & 1:
            result = _mulmod(_X_POW_2K[k], result)
        n >>= 1
        k += 1
    return result


FoldPlan = tuple[tuple[int, tuple[int, ...]], ...]


@lru_cache(maxsize=1024)
def _fold_plan(keep: int) -> FoldPlan:
    """The multiplier x^(8·keep) mod P as (byte index, set bit numbers), high byte first."""
    multiplier = _x_pow_8n(keep)
    plan = []
    for index in range(7, -1, -1):
        byte = (multiplier >> (8 * index)) & 0xFF
        if byte:
            plan.append((index, tuple(bit for bit in range(8) if byte >> bit & 1)))
    return tuple(plan)


def _clmul(value: int, plan: FoldPlan) -> int:
    """Carry-less product of a long ``value`` and a 64-bit multiplier, as whole-int operations.

    Each multiplier byte is an XOR of ``value`` shifted by 0-7 bits; the bytes are then combined
    by Horner's rule, so a product costs about 15 shifts and 35 XORs of ``value``-sized ints.
    """
    shifted = [value, *(value << bit for bit in range(1, 8))]
    result = 0
    previous = None
    for index, bits in plan:
        term = shifted[bits[0]]
        for bit in bits[1:]:
            term ^= shifted[bit]
        result = term if previous is None else (result << (8 * (previous - index))) ^ term
        previous = index
    return result << (8 * (previous or 0))


def _fold_round(lead: int, keep: int, lead_bits: int) -> int:
    """``lead``·x^(8·keep) mod P, shifted into place for XORing into the ``keep``-byte tail."""
    return _clmul(lead, _fold_plan(keep)) << (8 * keep - lead_bits - 63)


def _crc_block(data: Bytes, crc: int) -> int:
    """CRC of one block by folding, a halving per round, instead of a byte-by-byte loop.

    With initial value 0 and no final XOR the CRC of a message M is M(x)·x^64 mod P(x), so
    only M's residue matters. Split M into a lead of n-keep bytes and a tail of keep bytes:
    M = lead·x^(8·keep) + tail ≡ lead·(x^(8·keep) mod P) + tail, a message of about half the
    length (the multiplier has only 64 bits). Zero bytes in front do not change a CRC that
    starts at 0, so the shorter message can be fed to the byte loop as it is. In the
    little-endian integer of a reflected message the first bytes are the low bits.
    """
    n = len(data)
    if n <= _FOLD_MIN:
        return _crc_bytewise(data, crc)
    # keep >= lead + 8 leaves room for the 64-bit growth of the product.
    keep = (n + 9) // 2
    lead_bits = 8 * (n - keep)
    # The first round splits the bytes (cheaper than masking one big int). A CRC in state c
    # fed data equals a CRC from 0 fed data with c XORed into its first 8 bytes.
    lead = int.from_bytes(data[: n - keep], "little") ^ crc
    message = int.from_bytes(data[n - keep :], "little") ^ _fold_round(lead, keep, lead_bits)
    n = keep
    while n > _FOLD_MIN:
        keep = (n + 9) // 2
        lead_bits = 8 * (n - keep)
        lead = message & ((1 << lead_bits) - 1)
        message = (message >> lead_bits) ^ _fold_round(lead, keep, lead_bits)
        n = keep
    return _crc_bytewise(message.to_bytes(n, "little"), 0)


def crc64_python(data: Bytes, crc: int = 0) -> int:
    """Redis's ``crc64(crc, data)`` (CRC-64/Jones) in pure Python, by folding (about 140 MB/s)."""
    view = memoryview(data).cast("B")
    for start in range(0, len(view), _BLOCK):
        crc = _crc_block(view[start : start + _BLOCK], crc)
    return crc


def _native_crc64() -> Callable[[Bytes, int], int] | None:
    # anycrc (C, pinned in requirements.txt, so always in the layer) runs at several GB/s: an RDB
    # stream is then checked faster than a server sends it. Without it, the fold above serves.
    try:
        import anycrc
    except ImportError:
        return None
    model = anycrc.Model("CRC64-REDIS")
    if model.calc(b"123456789") != 0xE9C6D914C4B8D9CA:  # the check value of CRC-64/Jones
        return None
    return lambda data, crc: int(model.calc(data, crc))


_NATIVE = _native_crc64()


def crc64(data: Bytes, crc: int = 0) -> int:
    """Redis's ``crc64(crc, data)`` (CRC-64/Jones); pass a previous result to continue it."""
    if _NATIVE is not None:
        return _NATIVE(data, crc)
    return crc64_python(data, crc)


# --- RDB validation ---------------------------------------------------------------------------


def _format_hints(prefix: bytes) -> str:
    if prefix.startswith(b"\x1f\x8b"):
        return "; it looks gzip-compressed: decompress it first"
    if prefix.startswith(b"\x28\xb5\x2f\xfd"):
        return "; it looks zstd-compressed: decompress it first"
    if prefix.startswith(b"*"):
        return "; it looks like an AOF file or a RESP stream, not an RDB snapshot"
    return ""


def _check_magic(prefix: bytes, subject: str) -> None:
    """Fail as soon as the first bytes cannot become ``REDIS`` (or Valkey 9's ``VALKEY``)."""
    if RDB_MAGIC.startswith(prefix[:5]) or VALKEY_MAGIC.startswith(prefix[:6]):
        return
    detail = "the file does not start with the RDB magic REDIS" + _format_hints(prefix)
    raise InvalidRdbError(subject, CHECK_MAGIC, detail)


def _parse_version(header: bytes, subject: str) -> int:
    if header.startswith(VALKEY_MAGIC):
        digits = header[len(VALKEY_MAGIC) :]
        shown = str(int(digits)) if digits.isdigit() else "that is not a number"
        raise InvalidRdbError(
            subject,
            CHECK_VERSION,
            f"unsupported RDB version {shown} (Valkey 9+ format, magic VALKEY); "
            f"supported: REDIS versions {MIN_RDB_VERSION}-{MAX_RDB_VERSION}",
        )
    digits = header[len(RDB_MAGIC) :]
    if not digits.isdigit():
        raise InvalidRdbError(
            subject, CHECK_VERSION, "the 4 bytes after REDIS are not an ASCII version number"
        )
    version = int(digits)
    if not MIN_RDB_VERSION <= version <= MAX_RDB_VERSION:
        raise InvalidRdbError(subject, CHECK_VERSION, f"unsupported RDB version {version}")
    return version


class RdbValidator:
    """Validates an RDB file fed as chunks of any size, for checking while copying elsewhere.

    Memory stays below one 16 KiB CRC block plus the chunk being fed. ``update`` raises
    :class:`InvalidRdbError` as soon as the header is wrong, so a caller streaming the file to
    an upload can abort early; ``finish`` checks the end of the file. After an error, or after
    ``finish``, the validator must not be fed again.
    """

    def __init__(self, subject: str, *, require_checksum: bool = False) -> None:
        self.subject = subject
        self._require_checksum = require_checksum
        self._header = bytearray()
        self._version: int | None = None
        self._pending = bytearray()  # received but not yet in the CRC; the last 8 bytes stay
        self._crc = 0
        self._last_hashed = -1  # the byte before the pending ones: the EOF opcode at the end
        self._size = 0
        self._finished = False

    @property
    def size(self) -> int:
        """Bytes fed so far."""
        return self._size

    @property
    def version(self) -> int | None:
        """The RDB version, once the 9-byte header has arrived."""
        return self._version

    def update(self, chunk: Bytes) -> None:
        """Feed the next chunk of the file."""
        if self._finished:
            raise RuntimeError("RdbValidator.update() called after finish()")
        self._size += len(chunk)
        if self._version is None:
            self._read_header(chunk)
        self._pending += chunk
        self._hash_whole_blocks()

    def finish(self) -> RdbInfo:
        """Check the EOF opcode and the checksum after the last chunk; returns the file's facts."""
        if self._finished:
            raise RuntimeError("RdbValidator.finish() called twice")
        self._finished = True
        if self._version is None:
            raise InvalidRdbError(
                self.subject,
                CHECK_TRUNCATED,
                f"the file is {self._size} bytes, shorter than the {HEADER_BYTES}-byte RDB header",
            )
        if self._version < FIRST_CHECKSUMMED_VERSION:
            return self._finish_without_checksum(self._version)
        return self._finish_with_checksum(self._version)

    def _read_header(self, chunk: Bytes) -> None:
        self._header += chunk[: HEADER_BYTES - len(self._header)]
        header = bytes(self._header)
        _check_magic(header, self.subject)
        if len(header) == HEADER_BYTES:
            self._version = _parse_version(header, self.subject)

    def _hash_whole_blocks(self) -> None:
        usable = len(self._pending) - CHECKSUM_BYTES
        if usable < _BLOCK:
            return
        end = usable - usable % _BLOCK
        # The version is known here: at least one block (> 9 bytes) has arrived.
        if self._version is not None and self._version >= FIRST_CHECKSUMMED_VERSION:
            with memoryview(self._pending) as view:
                self._crc = crc64(view[:end], self._crc)
        self._last_hashed = self._pending[end - 1]
        del self._pending[:end]

    def _finish_with_checksum(self, version: int) -> RdbInfo:
        minimum = HEADER_BYTES + 1 + CHECKSUM_BYTES
        if self._size < minimum:
            raise InvalidRdbError(
                self.subject,
                CHECK_TRUNCATED,
                f"the file is {self._size} bytes; an RDB file is at least {minimum} bytes",
            )
        body = self._pending[:-CHECKSUM_BYTES]
        eof_opcode = body[-1] if body else self._last_hashed
        if eof_opcode != EOF_OPCODE:
            raise InvalidRdbError(
                self.subject,
                CHECK_TRUNCATED,
                "no EOF opcode (0xFF) before the 8-byte checksum: the file is cut short or corrupt",
            )
        stored = int.from_bytes(self._pending[-CHECKSUM_BYTES:], "little")
        if stored == 0:
            self._refuse_if_checksum_required("it was written with checksums disabled (0)")
            return RdbInfo(version, self._size, f"{stored:016x}", checksum_verified=False)
        computed = crc64(body, self._crc)
        if computed != stored:
            raise InvalidRdbError(
                self.subject,
                CHECK_CHECKSUM,
                f"CRC-64 of the content is {computed:016x} but the file records {stored:016x}",
            )
        return RdbInfo(version, self._size, f"{stored:016x}", checksum_verified=True)

    def _finish_without_checksum(self, version: int) -> RdbInfo:
        if self._size < HEADER_BYTES + 1 or self._pending[-1] != EOF_OPCODE:
            raise InvalidRdbError(
                self.subject,
                CHECK_TRUNCATED,
                "no EOF opcode (0xFF) at the end: the file is cut short or corrupt",
            )
        self._refuse_if_checksum_required(f"RDB version {version} files carry no checksum")
        return RdbInfo(version, self._size, None, checksum_verified=False)

    def _refuse_if_checksum_required(self, reason: str) -> None:
        if self._require_checksum:
            raise InvalidRdbError(self.subject, CHECK_CHECKSUM, f"a checksum is required but {reason}")


def validate_rdb_stream(chunks: Iterable[Bytes], subject: str, *, require_checksum: bool = False) -> RdbInfo:
    """Validate an RDB file given as a stream of byte chunks; raises ``InvalidRdbError``."""
    validator = RdbValidator(subject, require_checksum=require_checksum)
    for chunk in chunks:
        validator.update(chunk)
    return validator.finish()


def validate_rdb_file(
    path: str | Path,
    subject: str | None = None,
    *,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    require_checksum: bool = False,
) -> RdbInfo:
    """Validate an RDB file on disk, read in ``chunk_bytes`` pieces."""
    path = Path(path)
    with path.open("rb") as handle:
        chunks = iter(lambda: handle.read(chunk_bytes), b"")
        return validate_rdb_stream(chunks, subject or path.name, require_checksum=require_checksum)
