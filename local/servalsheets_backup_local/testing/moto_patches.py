"""One fix to moto the standby-Region tests need, named as a stand-in wherever it is used.

moto 5.2.5 writes the KMS key id into its (moto-specific) ciphertext blob in a fixed 36-byte
field: a multi-Region key's id (``mrk-`` and 36 more characters: 40)
is truncated, so nothing encrypted under a multi-Region key can be decrypted again, in any
Region. ``install`` widens that field for long ids only (blobs of ordinary keys are unchanged):
KMS's own behaviour (a replica decrypts what its primary encrypted) is what moto then does.
"""

from __future__ import annotations

import struct
from typing import Any

NAME = "moto KMS with multi-Region key ids (patched: testing/moto_patches.py)"
_MARK = b"\x00mrk"  # cannot start an ordinary blob: those start with a printable key id
_LONG_ID = 40
_installed = False


def install() -> None:
    """Patch moto's KMS ciphertext blob format for ids longer than 36 characters (idempotent)."""
    global _installed
    if _installed:
        return
    from moto.kms import utils

    serialize, deserialize = utils._serialize_ciphertext_blob, utils._deserialize_ciphertext_blob
    long_header = f">4s{_LONG_ID}s{utils.IV_LEN}s{utils.TAG_LEN}s"

    def serialize_long(ciphertext: Any) -> bytes:
        key_id = ciphertext.key_id.encode("utf-8")
        if len(key_id) <= utils.KEY_ID_LEN:
            return bytes(serialize(ciphertext))
        header = struct.pack(long_header, _MARK, key_id, ciphertext.iv, ciphertext.tag)
        return header + ciphertext.ciphertext

    def deserialize_long(ciphertext_blob: bytes) -> Any:
        if not ciphertext_blob.startswith(_MARK):
            return deserialize(ciphertext_blob)
        size = struct.calcsize(long_header)
        _, key_id, iv, tag = struct.unpack(long_header, ciphertext_blob[:size])
        return utils.Ciphertext(key_id=key_id.decode(), iv=iv, ciphertext=ciphertext_blob[size:], tag=tag)

    utils._serialize_ciphertext_blob = serialize_long
    utils._deserialize_ciphertext_blob = deserialize_long
    _installed = True
