"""Comparison 3: the envelope's compress+encrypt stage alone, in memory, against its parts.

``python -m bench.stages --plain FILE --mib N --repeat R`` prints JSON: for each measurement
the median and the best MB/s (10^6 bytes of plaintext per second) over ``R`` passes. Inputs are the first
``N`` MiB of a plaintext record stream (compressible ServalSheets data) and ``N`` MiB of
random bytes (incompressible). Outputs are discarded as they are produced, so no pass pays
page faults for memory a real pipeline would reuse.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from io import BytesIO
from pathlib import Path
from typing import Any

import zstandard
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from servalsheets_backup.format.envelope import COMPRESSION_NONE, EnvelopeWriter, decrypt_stream
from servalsheets_backup.format.envelope_v2 import EnvelopeWriterV2
from servalsheets_backup.format.keys import LocalKeyring

SEGMENT = 1 << 20
CONTEXT = {"servalsheets:object": "bench"}


class NullSink:
    """Counts and discards what it is given."""

    def __init__(self) -> None:
        self.size = 0

    def write(self, data: bytes) -> int:
        """Discard ``data``."""
        self.size += len(data)
        return len(data)


def split(data: bytes, size: int = SEGMENT) -> list[bytes]:
    """``data`` cut into ``size``-byte pieces (the chunks the dump hands the writer are ~1 MB)."""
    return [data[i : i + size] for i in range(0, len(data), size)]


def envelope(
    chunks: list[bytes], writer_class: Any = EnvelopeWriter, **options: object
) -> Callable[[], None]:
    """An envelope writer (v1 by default) over ``chunks`` into a null sink (key wrapping included)."""
    ring = LocalKeyring(bytes(32))

    def run() -> None:
        writer = writer_class(NullSink(), ring.new_data_key(CONTEXT), CONTEXT, **options)
        for chunk in chunks:
            writer.write(chunk)
        writer.close()

    return run


def sealed(chunks: list[bytes], writer_class: Any = EnvelopeWriter) -> bytes:
    """One envelope of ``chunks`` kept in memory, for the decrypt measurement."""
    ring = LocalKeyring(bytes(32))
    out = BytesIO()
    writer = writer_class(out, ring.new_data_key(CONTEXT), CONTEXT)
    for chunk in chunks:
        writer.write(chunk)
    writer.close()
    return out.getvalue()


def decrypt(blob: bytes) -> Callable[[], None]:
    """decrypt_stream over an in-memory envelope (the restore side of the stage)."""
    ring = LocalKeyring(bytes(32))

    def run() -> None:
        for _ in decrypt_stream(BytesIO(blob), lambda h: ring.unwrap(h.wrapped_keys, CONTEXT), "bench"):
            pass

    return run


def raw_aes(chunks: list[bytes]) -> Callable[[], None]:
    """AES-256-GCM over 1 MiB segments with 32 bytes of associated data: the ceiling."""
    aead = AESGCM(os.urandom(32))
    nonce, aad = os.urandom(12), os.urandom(32)

    def run() -> None:
        for chunk in chunks:
            aead.encrypt(nonce, chunk, aad)

    return run


def zstd_only(chunks: list[bytes]) -> Callable[[], None]:
    """zstd level 1 streaming compression alone."""

    def run() -> None:
        compressor = zstandard.ZstdCompressor(level=1).compressobj()
        for chunk in chunks:
            compressor.compress(chunk)
        compressor.flush()

    return run


def sha_only(chunks: list[bytes]) -> Callable[[], None]:
    """SHA-256 alone (the envelope hashes the plaintext and, again, the sealed bytes)."""

    def run() -> None:
        digest = hashlib.sha256()
        for chunk in chunks:
            digest.update(chunk)
        digest.digest()

    return run


def rates(cases: dict[str, Callable[[], None]], size: int, repeat: int) -> dict[str, float]:
    """Median and best MB/s of each case over ``size`` bytes, after one warm-up pass of each.

    Rounds go through every case in turn, so a burst of other work on the machine hits all of
    them alike.
    """
    times: dict[str, list[float]] = {name: [] for name in cases}
    for run in cases.values():
        run()
    for _ in range(repeat):
        for name, run in cases.items():
            started = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - started)
    results = {name: size / statistics.median(t) / 1e6 for name, t in times.items()}
    results.update({f"{name}_best": size / min(t) / 1e6 for name, t in times.items()})
    return results


def measure(plain: bytes, repeat: int) -> dict[str, float]:
    """Every stage measurement, MB/s of plaintext."""
    text, noise = split(plain), split(os.urandom(len(plain)))
    size = len(plain)
    cases: dict[str, Callable[[], None]] = {
        "envelope_compressible": envelope(text),
        "envelope_random": envelope(noise),
        "envelope_random_no_compression": envelope(noise, compression=COMPRESSION_NONE),
        "decrypt_compressible": decrypt(sealed(text)),
        "envelope_v2_compressible": envelope(text, EnvelopeWriterV2),
        "envelope_v2_random": envelope(noise, EnvelopeWriterV2),
        "envelope_v2_random_no_compression": envelope(noise, EnvelopeWriterV2, compression=COMPRESSION_NONE),
        "decrypt_v2_compressible": decrypt(sealed(text, EnvelopeWriterV2)),
        "decrypt_v2_random": decrypt(sealed(noise, EnvelopeWriterV2)),
        "aes_gcm_1mib_random": raw_aes(noise),
        "aes_gcm_1mib_compressible": raw_aes(text),
        "zstd1_compressible": zstd_only(text),
        "zstd1_random": zstd_only(noise),
        "sha256": sha_only(noise),
    }
    results = rates(cases, size, repeat)
    compressed = zstandard.ZstdCompressor(level=1).compress(plain)
    results["zstd1_ratio_compressible"] = len(plain) / len(compressed)
    return results


def main(argv: list[str] | None = None) -> None:
    """Read the inputs, run every measurement and print JSON."""
    parser = argparse.ArgumentParser(prog="python -m bench.stages")
    parser.add_argument("--plain", required=True, help="a plaintext record stream (compressible input)")
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    with Path(args.plain).open("rb") as source:
        plain = source.read(args.mib << 20)
    result = measure(plain, args.repeat)
    result["input_bytes"] = len(plain)
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
