"""CRC64NVME as S3 computes it, checked against a reference written from the CRC catalogue."""

from __future__ import annotations

import base64
import os

import pytest

from servalsheets_backup.adapters.s3 import checksum_header, crc64nvme

pytestmark = pytest.mark.unit
# CRC-64/NVME in the CRC catalogue: width 64, poly 0xad93d23594c93659, init and xorout all ones,
# reflected in and out; check value (CRC of b"123456789") 0xae8b14860a799888.
REFLECTED_POLY = int(f"{0xAD93D23594C93659:064b}"[::-1], 2)
ALL_ONES = (1 << 64) - 1
TABLE = []
for byte in range(256):
    value = byte
    for _ in range(8):
        value = (value >> 1) ^ REFLECTED_POLY if value & 1 else value >> 1
    TABLE.append(value)


def reference(data: bytes) -> int:
    crc = ALL_ONES
    for byte in data:
        crc = TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ ALL_ONES


def test_check_value_of_the_catalogue() -> None:
    assert reference(b"123456789") == 0xAE8B14860A799888
    assert crc64nvme(b"123456789") == 0xAE8B14860A799888


@pytest.mark.parametrize("size", [0, 1, 7, 8, 9, 4095, 65_537])
def test_matches_the_reference(size: int) -> None:
    data = os.urandom(size)
    assert crc64nvme(data) == reference(data)


@pytest.mark.parametrize("split", [0, 1, 13, 4096, 30_000])
def test_a_running_crc_equals_the_crc_of_the_whole(split: int) -> None:
    data = os.urandom(30_000)
    assert crc64nvme(data[split:], crc64nvme(data[:split])) == crc64nvme(data)


def test_header_form_is_the_big_endian_bytes_in_base64() -> None:
    assert base64.b64decode(checksum_header(0xAE8B14860A799888)) == bytes.fromhex("ae8b14860a799888")
