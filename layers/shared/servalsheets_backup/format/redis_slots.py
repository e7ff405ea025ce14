"""Redis Cluster hash slots: which of the 16384 slots a key belongs to, and slot-range sets.

A cluster assigns each key to ``CRC16(key) mod 16384`` (CRC-16/XMODEM), where only the part
between the first ``{`` and the first ``}`` after it is hashed when that part is not empty (a
"hash tag", so related keys share a slot). This is the cluster specification's ``keyHashSlot``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import anycrc

SLOTS = 16384
_CRC16_XMODEM = anycrc.Model("CRC16-XMODEM")

SlotRange = tuple[int, int]
"""An inclusive range of slots, ``(first, last)``."""


def key_slot(key: bytes) -> int:
    """The hash slot of ``key``, exactly as Redis Cluster computes it."""
    start = key.find(b"{")
    if start >= 0:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            key = key[start + 1 : end]
    slot: int = _CRC16_XMODEM.calc(key) & (SLOTS - 1)
    return slot


def normalise_ranges(ranges: Iterable[SlotRange]) -> list[SlotRange]:
    """Sorted, merged ranges; ``ValueError`` for a range outside 0..16383 or reversed."""
    ordered = sorted(ranges)
    for first, last in ordered:
        if not 0 <= first <= last < SLOTS:
            raise ValueError(f"slot range {first}-{last} is not within 0-{SLOTS - 1}")
    merged: list[SlotRange] = []
    for first, last in ordered:
        if merged and first <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return merged


def uncovered_slots(shard_ranges: Sequence[Sequence[SlotRange]]) -> tuple[list[SlotRange], list[int]]:
    """The slots no shard serves, and the slots more than one shard claims (at most 10 listed)."""
    owners = [0] * SLOTS
    for ranges in shard_ranges:
        for first, last in ranges:
            for slot in range(first, last + 1):
                owners[slot] += 1
    missing = normalise_ranges((slot, slot) for slot in range(SLOTS) if owners[slot] == 0)
    doubled = [slot for slot in range(SLOTS) if owners[slot] > 1][:10]
    return missing, doubled


def format_ranges(ranges: Iterable[SlotRange]) -> str:
    """``0-5460,10923`` for messages and manifests."""
    return ",".join(f"{a}-{b}" if a != b else str(a) for a, b in ranges)


def parse_ranges(text: str) -> list[SlotRange]:
    """The inverse of ``format_ranges``; ``ValueError`` naming the token that is not a range."""
    ranges: list[SlotRange] = []
    for token in filter(None, text.split(",")):
        first, _, last = token.partition("-")
        if not first.isdigit() or not (last or first).isdigit():
            raise ValueError(f"{token[:20]!r} is not a slot or a slot range such as 0-5460")
        ranges.append((int(first), int(last or first)))
    return normalise_ranges(ranges)
