"""Forensics for a full-restore drill: the truth, per key prefix, behind each failed Redis check.

    .venv/bin/python tools/drill_truth.py --keys 1000000 [--json out.json]

Runs the full-restore drill and, at the moment it checks Redis, also works out what the
drill's earlier checker (fixed PTTL comparisons, liveness from the TTLs before the disaster)
would have reported from the same reads, then explains every key it would have flagged, from
three independent sources: the key's wall-clock expiry as read before the disaster, the expiry
recorded for it in the backup set the restore used (decrypted from the moto bucket), and when
the restore execution ran. A restore at fault shows up as keys "not restored though alive",
"in the backup but not restored", or restored expiries far from the backed-up ones.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import redis

from servalsheets_backup.format.dump_payload import same_value
from servalsheets_backup.format.redis_keys import key_prefix
from servalsheets_backup.format.redis_stream import RecordStream
from servalsheets_backup_local import drill
from servalsheets_backup_local.testing.keyspace import Keyspace, wall_ms

LEGACY_TOLERANCE_MS = 5000  # the earlier checker's TTL_TOLERANCE_MS
LEGACY_TTL_SLACK_MS = 60_000  # and the extra minute it allowed on TTL differences


def backed_up_expiries(environment: Any) -> dict[bytes, int]:
    """Absolute expiry (epoch ms, -1 for none) of each key in the newest full set's Redis dump."""
    store = environment.services().store
    ref = store.resolve("latest", "full")
    manifest = store.load_manifest(ref)
    expiries: dict[bytes, int] = {}
    for entry in manifest.objects_of("redis"):
        stream = RecordStream(store.read_object(ref, entry), entry.name)
        for key, _payload, ttl in stream:
            expiries[key] = -1 if ttl < 0 else stream.header.backup_time_ms + ttl
    return expiries


def legacy_verdicts(
    before: Keyspace, after: Keyspace, url: str
) -> tuple[dict[str, set[bytes]], dict[bytes, int]]:
    """What the earlier ``_compare_redis`` would have flagged from the same two captures, and
    when each key it then found gone at its second DUMP was seen gone."""
    alive = {k for k, s in before.keys.items() if s.pttl == -1 or s.pttl > LEGACY_TOLERANCE_MS}
    missing = {k for k in alive if k not in after.keys}
    ttl_off = {
        k
        for k in alive
        if k in after.keys
        and before.keys[k].pttl != -1
        and abs(after.keys[k].pttl - before.keys[k].pttl) > LEGACY_TOLERANCE_MS + LEGACY_TTL_SLACK_MS
    }
    # It then DUMPed every alive key again, after its own capture: keys gone by then counted
    # as "different values".
    client = redis.Redis.from_url(url)
    redumped: dict[bytes, tuple[bytes | None, int]] = {}
    try:
        present = [k for k in alive if k in after.keys]
        for start in range(0, len(present), 1000):
            batch = present[start : start + 1000]
            pipe = client.pipeline(transaction=False)
            for key in batch:
                pipe.dump(key)
            replies = pipe.execute()
            at = wall_ms()
            redumped.update((k, (v, at)) for k, v in zip(batch, replies, strict=True))
    finally:
        client.close()
    different = set(missing)
    gone_at_redump: dict[bytes, int] = {}
    for key, (payload, at) in redumped.items():
        if payload is None:
            different.add(key)
            gone_at_redump[key] = at
        elif not same_value(before.keys[key].payload, bytes(payload)):
            different.add(key)
    return {"missing": missing, "ttl_off": ttl_off, "different": different}, gone_at_redump


def explain(
    before: Keyspace,
    after: Keyspace,
    flagged: dict[str, set[bytes]],
    backup: dict[bytes, int],
    restore_window: tuple[int, int],
    gone_at_redump: dict[bytes, int],
) -> dict[str, Any]:
    """Classify each flagged key by its wall-clock expiry, per prefix."""
    restore_start, restore_end = restore_window
    missing: dict[str, Counter[str]] = defaultdict(Counter)
    for key in flagged["missing"]:
        state = before.keys[key]
        checked = after.absent_at_ms.get(key, after.finished_ms)
        backed = backup.get(key)
        if backed is None:
            cause = "not in the backup set"
        elif backed == -1:
            cause = "no expiry, in the backup, not restored (RESTORE FAULT)"
        elif backed < restore_start:
            cause = "expired before the restore started (correctly skipped by the restore)"
        elif backed <= restore_end:
            cause = "expired while the restore ran"
        elif state.read_from_ms + state.pttl <= checked:
            cause = "restored, then expired (wall clock) before the drill checked it"
        else:
            cause = "alive when checked, in the backup, not restored (RESTORE FAULT)"
        missing[key_prefix(key)][cause] += 1
    different: dict[str, Counter[str]] = defaultdict(Counter)
    for key in flagged["different"] - flagged["missing"]:
        state = before.keys[key]
        gone = gone_at_redump.get(key)
        if gone is not None and state.read_from_ms + state.pttl <= gone:
            cause = "present in the capture, expired (wall clock) before the checker's second DUMP"
        elif gone is not None:
            cause = "vanished before its expiry (RESTORE FAULT)"
        else:
            cause = "value really differs (RESTORE FAULT)"
        different[key_prefix(key)][cause] += 1
    return {
        "missing": _plain(missing),
        "different_but_not_missing": _plain(different),
        "ttl_off": _ttl_truth(before, after, flagged["ttl_off"]),
        "restored_expiry_vs_backup_ms": _restored_drift(after, backup),
        "backup_expiry_vs_before_ms": _backup_drift(before, backup),
        "pttl_gap_explained": _pttl_gaps(before, after),
    }


def _plain(table: dict[str, Counter[str]]) -> dict[str, dict[str, int]]:
    return {prefix: dict(counts.most_common()) for prefix, counts in sorted(table.items())}


def _ttl_truth(before: Keyspace, after: Keyspace, keys: set[bytes]) -> dict[str, Any]:
    """For keys whose PTTLs differed: how far apart their absolute expiries really are."""
    per_prefix: dict[str, dict[str, int]] = {}
    for key in keys:
        b, a = before.keys[key], after.keys[key]
        pttl_gap = abs(a.pttl - b.pttl)
        expiry_gap = max(abs((a.read_from_ms + a.pttl) - (b.read_from_ms + b.pttl)),
                         abs((a.read_to_ms + a.pttl) - (b.read_to_ms + b.pttl)))  # fmt: skip
        empty = {"keys": 0, "max_pttl_gap_ms": 0, "max_expiry_gap_ms": 0}
        row = per_prefix.setdefault(key_prefix(key), empty)
        row["keys"] += 1
        row["max_pttl_gap_ms"] = max(row["max_pttl_gap_ms"], pttl_gap)
        row["max_expiry_gap_ms"] = max(row["max_expiry_gap_ms"], expiry_gap)
    return dict(sorted(per_prefix.items()))


def _outside(value: int, window: tuple[int, int]) -> int:
    """0 when ``value`` lies in ``window``, else its signed distance from the nearer edge."""
    low, high = window
    return value - low if value < low else value - high if value > high else 0


def _distribution(values: list[int]) -> dict[str, int]:
    if not values:
        return {"keys": 0}
    ordered = sorted(values)
    beyond = sum(1 for v in ordered if abs(v) > 100)
    return {"keys": len(ordered), "min": ordered[0], "max": ordered[-1], "beyond_100ms": beyond}


def _restored_drift(after: Keyspace, backup: dict[bytes, int]) -> dict[str, dict[str, int]]:
    """How far each restored key's read expiry window lies from its backed-up expiry, per prefix."""
    gaps: dict[str, list[int]] = defaultdict(list)
    for key, state in after.keys.items():
        backed = backup.get(key, -1)
        if backed != -1 and not state.persistent:
            gaps[key_prefix(key)].append(_outside(backed, state.expires_between()))
    return {prefix: _distribution(values) for prefix, values in sorted(gaps.items())}


def _backup_drift(before: Keyspace, backup: dict[bytes, int]) -> dict[str, Any]:
    """How far each backed-up expiry lies from the key's expiry window read before the disaster."""
    gaps = [
        _outside(backed, state.expires_between())
        for key, state in before.keys.items()
        if (backed := backup.get(key, -1)) != -1 and not state.persistent
    ]
    return {**_distribution(gaps), "keys_in_backup": len(backup), "keys_before": len(before)}


def _pttl_gaps(before: Keyspace, after: Keyspace) -> dict[str, int]:
    """The earlier checker compared PTTLs: their gap is the wall-clock time between the reads."""
    pttl_gap = elapsed_max = 0
    elapsed_min = None
    residual = 0
    for key, b in before.keys.items():
        a = after.keys.get(key)
        if a is None or a.persistent or b.persistent:
            continue
        pttl_gap = max(pttl_gap, b.pttl - a.pttl)
        elapsed = a.read_from_ms - b.read_to_ms
        elapsed_min = elapsed if elapsed_min is None else min(elapsed_min, elapsed)
        elapsed_max = max(elapsed_max, a.read_to_ms - b.read_from_ms)
        residual = max(residual, abs(_outside(a.read_from_ms + a.pttl, b.expires_between())))
    return {
        "max_pttl_gap_ms": pttl_gap,
        "elapsed_between_reads_ms_min": elapsed_min or 0,
        "elapsed_between_reads_ms_max": elapsed_max,
        "max_expiry_gap_outside_read_windows_ms": residual,
    }


def main(argv: list[str]) -> int:
    """Run the drill with the forensic hooks and print (or write) the per-prefix truth."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--json", type=Path, help="write the whole finding here too")
    args = parser.parse_args(argv)
    from servalsheets_backup.handler_support import logger

    logger.setLevel(logging.WARNING)  # the handlers' INFO lines would bury the finding
    found: dict[str, Any] = {}
    original_compare, original_restore = drill._compare_redis, drill._restore
    original_capture = drill.capture_after

    def kept_capture(url: str, reference: Keyspace) -> Keyspace:
        found["after"] = original_capture(url, reference)
        return found["after"]

    def timed_restore(environment: Any, request: dict[str, Any], report: Any) -> dict[str, Any]:
        found["restore_window"] = (wall_ms(), 0)
        description = original_restore(environment, request, report)
        found["restore_window"] = (found["restore_window"][0], wall_ms())
        return description

    def forensic_compare(environment: Any, before: Keyspace, report: Any, *rest: Any, **kw: Any) -> None:
        original_compare(environment, before, report, *rest, **kw)
        after = found.pop("after")  # the very reads the drill's own checker judged
        flagged, gone_at_redump = legacy_verdicts(before, after, environment.production.url)
        backup = backed_up_expiries(environment)
        found["legacy_counts"] = {name: len(keys) for name, keys in flagged.items()}
        found["truth"] = explain(before, after, flagged, backup, found["restore_window"], gone_at_redump)

    drill._compare_redis, drill._restore = forensic_compare, timed_restore
    drill.capture_after = kept_capture  # type: ignore[assignment]
    started = time.monotonic()
    try:
        report = drill.run_drill(keys=args.keys, progress=lambda m: print(f"drill: {m}", file=sys.stderr))
    finally:
        drill._compare_redis, drill._restore = original_compare, original_restore
        drill.capture_after = original_capture
    found["drill_seconds"] = round(time.monotonic() - started, 1)
    found["drill_ok"] = report.ok
    found["drill_checks"] = report.checks
    found["redis_comparison"] = report.redis_comparison
    found["failure"] = report.failure
    text = json.dumps(found, indent=2, default=list)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)
    return 0 if report.ok else 7


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
