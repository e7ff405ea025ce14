"""What this system reads in a DUMP payload: the RDB object type, and value equality.

A DUMP of a restored key equals the backed-up payload byte for byte, except for sets and
hashes in hash-table encoding, whose elements DUMP lists in the order of each server's
randomly seeded hash table; ``same_value`` compares those element by element.
"""

from __future__ import annotations

# First byte of a DUMP payload: the RDB object type (rdb.h, Redis 2.x to 8.x).
RDB_TYPES = {
    **dict.fromkeys((0,), "string"),
    **dict.fromkeys((1, 10, 14, 18), "list"),
    **dict.fromkeys((2, 11, 20), "set"),
    **dict.fromkeys((3, 5, 12, 17), "zset"),
    **dict.fromkeys((4, 9, 13, 16, 22, 23, 24, 25), "hash"),
    **dict.fromkeys((15, 19, 21, 26, 27), "stream"),
    **dict.fromkeys((6, 7), "module"),
}


# RDB types whose DUMP lists elements in hash-table order, which depends on each server's
# random hash seed: a faithful copy can serialise the same elements in another order.
_UNORDERED_TYPES = {2: 1, 4: 2}  # RDB_TYPE_SET: 1 string per element, RDB_TYPE_HASH: 2
_DUMP_TRAILER = 10  # u16 RDB version + CRC64


def same_value(expected: bytes, actual: bytes) -> bool:
    """True when two DUMP payloads hold the same value.

    Byte for byte, except hash-table encoded sets and hashes (RDB types 2 and 4): those are
    compared as multisets of their serialised elements (and the same RDB version), since the
    element order in their DUMP follows the server's randomly seeded hash table.
    """
    if expected == actual:
        return True
    if not expected or not actual or expected[0] != actual[0]:
        return False
    per_item = _UNORDERED_TYPES.get(expected[0])
    if per_item is None or expected[-_DUMP_TRAILER:-8] != actual[-_DUMP_TRAILER:-8]:
        return False
    try:
        mine, theirs = _elements(expected, per_item), _elements(actual, per_item)
    except (IndexError, ValueError):
        return False
    return mine is not None and mine == theirs


def _elements(payload: bytes, per_item: int) -> list[bytes] | None:
    """The serialised elements of a type 2/4 payload, sorted; None if it does not parse."""
    count, i, encoded = _rdb_length(payload, 1)
    if encoded:
        return None
    items: list[bytes] = []
    for _ in range(count):
        start = i
        for _ in range(per_item):
            i = _rdb_string_end(payload, i)
        items.append(payload[start:i])
    return sorted(items) if i == len(payload) - _DUMP_TRAILER else None


def _rdb_length(buf: bytes, i: int) -> tuple[int, int, bool]:
    """An RDB length at ``i``: (value, next index, is a special string encoding)."""
    first = buf[i]
    kind = first >> 6
    if kind == 0:
        return first & 0x3F, i + 1, False
    if kind == 1:
        return ((first & 0x3F) << 8) | buf[i + 1], i + 2, False
    if kind == 3:
        return first & 0x3F, i + 1, True
    if first in (0x80, 0x81):
        width = 4 if first == 0x80 else 8
        return int.from_bytes(buf[i + 1 : i + 1 + width], "big"), i + 1 + width, False
    raise ValueError("bad RDB length")


def _rdb_string_end(buf: bytes, i: int) -> int:
    """Index just past the RDB string (raw, integer or LZF) starting at ``i``."""
    length, i, encoded = _rdb_length(buf, i)
    if not encoded:
        return i + length
    if length in (0, 1, 2):  # int8, int16, int32
        return i + (1, 2, 4)[length]
    if length == 3:  # LZF: compressed length, original length, data
        compressed, i, _ = _rdb_length(buf, i)
        _, i, _ = _rdb_length(buf, i)
        return i + compressed
    raise ValueError("unknown RDB string encoding")


def rdb_type_name(payload: bytes) -> str:
    """The Redis type a DUMP payload holds, read from its leading RDB type byte."""
    return RDB_TYPES.get(payload[0], "unknown") if payload else "unknown"
