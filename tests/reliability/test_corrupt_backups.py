"""Hostile backups: every class of corruption is caught by ``verify`` and refused by restore.

Each case changes the stored bytes the way an attacker or a failing disk could: one byte of the
header, the wrapped key, each segment, the last tag; bytes appended; a cut at every segment
boundary; objects swapped between sets or replayed from an older set of the same kind; manifest
fields edited; the manifest deleted. ``servalsheets-backup verify`` must exit 4 (3 when the
manifest is gone) naming the object and the check, and a restore must refuse before writing a
single key to its target. Every case is undone afterwards and the set verifies again.
"""

from __future__ import annotations

import io
import json
import struct
import time
from collections.abc import Callable, Iterator
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from servalsheets_backup.cli.main import main
from servalsheets_backup.errors import BackupNotFoundError, IntegrityError
from servalsheets_backup.format.envelope_v2 import DEFAULT_SEGMENT_SIZE_V2, FRAME_HEADER, TAG_BYTES
from servalsheets_backup.store.sets import set_prefix
from servalsheets_backup.workflows.backup import run_backup
from servalsheets_backup.workflows.restore import run_restore
from servalsheets_backup_local.testing.redis_server import RedisServer, start_redis

from .helpers import MiniStack, redis_differences, redis_state, seed_random_values

pytestmark = pytest.mark.reliability
# The dump holds random values, so every segment is stored uncompressed: frames of one size.
SEALED = FRAME_HEADER.size + DEFAULT_SEGMENT_SIZE_V2 + TAG_BYTES
DUMP = "redis/dump-0001"


@dataclass
class Corpus:
    """Three complete sets: an older and a newer redis set, and a full set."""

    stack: MiniStack
    older: str
    newer: str
    full: str
    target: RedisServer
    undo: list[tuple[str, str]] = field(default_factory=list)

    def key(self, name: str, backup_id: str | None = None, kind: str = "redis") -> str:
        """Object key of ``name`` in a set (the newer redis set by default)."""
        return set_prefix(kind, backup_id or self.newer) + name

    def replace(self, key: str, body: bytes) -> None:
        """Overwrite an object; undone after the test."""
        self.undo.append((key, self.stack.put(key, body)))

    def delete(self, key: str) -> None:
        """Delete an object (a delete marker); undone after the test."""
        response = self.stack.client("s3").delete_object(Bucket=self.stack.bucket, Key=key)
        self.undo.append((key, response["VersionId"]))

    def layout(self) -> tuple[bytes, int, int]:
        """The newer dump object's bytes, where its segments start, and how many there are."""
        data = self.stack.object(self.key(DUMP))
        (header_length,) = struct.unpack(">I", data[8:12])
        start = 12 + header_length
        return data, start, -(-(len(data) - start) // SEALED)


@pytest.fixture(scope="module")
def corpus_sets(module_stack: MiniStack) -> Iterator[Corpus]:
    """Sets made once for the module: two redis sets a minute apart, and a full set."""
    stack = module_stack
    seed_random_values(stack.redis.url, 3, 1_100_000)  # ~3.4 MB of dump: four sealed segments
    older = run_backup(stack.services(clock=lambda: time.time() - 120), "redis", owner="older").backup_id
    newer = run_backup(stack.services(clock=lambda: time.time() - 60), "redis", owner="newer").backup_id
    full = run_backup(stack.services(), "full", owner="full").backup_id
    target = start_redis()
    client = redis.Redis.from_url(target.url)
    client.set("target:sentinel", "untouched", ex=3600)
    client.hset("target:hash", mapping={f"field{i}": i for i in range(200)})
    client.close()
    try:
        yield Corpus(stack, older, newer, full, target)
    finally:
        target.stop()


@pytest.fixture
def corpus(corpus_sets: Corpus, shared_stack: MiniStack) -> Iterator[Corpus]:
    """The module's sets; every change a test makes is undone, and the sets verify again after."""
    yield corpus_sets
    for key, version in reversed(corpus_sets.undo):
        shared_stack.drop_version(key, version)
    corpus_sets.undo.clear()
    store = shared_stack.services().store
    for ref in shared_stack.sets():
        assert store.verify_set(ref).ok, f"{ref.backup_id} was not put back"


def verify_cli(backup_id: str) -> tuple[int, dict[str, Any] | None, str]:
    """``servalsheets-backup verify <id> --json`` in this process: (exit, JSON output, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(["verify", backup_id, "--json"])
    return code, (json.loads(out.getvalue()) if out.getvalue() else None), err.getvalue()


def restore_is_refused(corpus: Corpus, expected: type[Exception]) -> str:
    """Run a replace-mode restore of the newer set into the target; it must refuse untouched."""
    before, started = redis_state(corpus.target.url), time.monotonic()
    request = {
        "backup": corpus.newer,
        "kinds": ["redis"],
        "mode": "replace",
        "target": {"redis_url": corpus.target.url},
    }
    with pytest.raises(expected) as refusal:
        run_restore(corpus.stack.services(), request, "restore-under-test")
    elapsed = int((time.monotonic() - started) * 1000)
    assert redis_differences(before, redis_state(corpus.target.url), elapsed) == []
    locks = corpus.stack.client("dynamodb").scan(TableName=corpus.stack.table)["Items"]
    assert [item for item in locks if item["pk"]["S"].startswith("lock#")] == []
    return str(refusal.value)


def flip(data: bytes, position: int, mask: int = 0x01) -> bytes:
    """``data`` with one byte XOR ``mask``."""
    changed = bytearray(data)
    changed[position] ^= mask
    return bytes(changed)


def swap_base64_char(data: bytes, position: int) -> bytes:
    """Replace one base64 character by another (the header stays valid, canonical JSON)."""
    changed = bytearray(data)
    changed[position] = ord("B") if changed[position] != ord("B") else ord("C")
    return bytes(changed)


def header_field_position(data: bytes, needle: bytes, offset: int = 4) -> int:
    """Position ``offset`` characters into the value that follows ``needle`` in the header."""
    return data.index(needle) + len(needle) + offset


# -- the corruption classes ---------------------------------------------------------------------
ObjectCase = Callable[[bytes, int, int], bytes]
OBJECT_CASES: dict[str, tuple[ObjectCase, str]] = {
    "magic": (lambda d, s, n: flip(d, 0), "header magic"),
    "format-version-byte": (lambda d, s, n: flip(d, 7), "format version"),
    "header-length": (lambda d, s, n: d[:8] + struct.pack(">I", s - 12 + 1) + d[12:], "header syntax"),
    "header-context": (
        lambda d, s, n: swap_base64_char(d, header_field_position(d, b'"servalsheets:backup-id":"', 20)),
        "context binding",
    ),
    "header-nonce-prefix": (
        lambda d, s, n: swap_base64_char(d, header_field_position(d, b'"nonce_prefix":"', 2)),
        "segment 0 authentication",
    ),
    "header-salt": (
        lambda d, s, n: swap_base64_char(d, header_field_position(d, b'"salt":"', 5)),
        "segment 0 authentication",
    ),
    "wrapped-key": (
        lambda d, s, n: swap_base64_char(d, header_field_position(d, b'"blob":"', 60)),
        "wrapped key",
    ),
    "segment-0": (lambda d, s, n: flip(d, s + 1000), "segment 0 authentication"),
    "segment-1": (lambda d, s, n: flip(d, s + SEALED + 7, 0x80), "segment 1 authentication"),
    "segment-2": (lambda d, s, n: flip(d, s + 2 * SEALED + SEALED // 2), "segment 2 authentication"),
    "last-segment": (lambda d, s, n: flip(d, s + (n - 1) * SEALED + 30), "segment 3 authentication"),
    "frame-flags": (lambda d, s, n: flip(d, s + SEALED, 0x01), "segment 1 authentication"),
    "frame-length": (lambda d, s, n: flip(d, s + 3, 0x80), "segment 0 framing"),
    "last-tag": (lambda d, s, n: flip(d, len(d) - 1), "segment 3 authentication"),
    "segments-reordered": (
        lambda d, s, n: d[:s] + d[s + SEALED : s + 2 * SEALED] + d[s : s + SEALED] + d[s + 2 * SEALED :],
        "segment 0 authentication",
    ),
    "trailing-byte": (lambda d, s, n: d + b"\x00", "trailing data"),
    "trailing-segment": (lambda d, s, n: d + d[s : s + SEALED], "trailing data"),
    "cut-inside-header": (lambda d, s, n: d[:40], "header length"),
    "cut-at-segment-0": (lambda d, s, n: d[:s], "truncation"),
    "cut-at-segment-1": (lambda d, s, n: d[: s + SEALED], "truncation"),
    "cut-at-segment-2": (lambda d, s, n: d[: s + 2 * SEALED], "truncation"),
    "cut-at-segment-3": (lambda d, s, n: d[: s + 3 * SEALED], "truncation"),
    "cut-inside-last-segment": (lambda d, s, n: d[:-100], "truncation"),
}


def test_the_corpus_has_the_shape_the_cases_assume(corpus: Corpus) -> None:
    data, start, segments = corpus.layout()
    assert segments == 4 and len(data) - start - 3 * SEALED < SEALED
    assert verify_cli(corpus.newer)[0] == 0


@pytest.mark.parametrize("case", sorted(OBJECT_CASES))
def test_object_corruption_is_detected_and_refused(corpus: Corpus, case: str) -> None:
    change, check = OBJECT_CASES[case]
    data, start, segments = corpus.layout()
    corpus.replace(corpus.key(DUMP), change(data, start, segments))

    code, report, err = verify_cli(corpus.newer)
    assert code == 4, err
    assert report is not None and report["ok"] is False
    failed = [c for c in report["checks"] if not c["ok"]]
    assert [(c["object"], c["check"]) for c in failed] == [(DUMP, check)]
    assert err.startswith(f"error: {DUMP}: {check} failed")
    assert "nothing was restored" in restore_is_refused(corpus, IntegrityError)


def test_truncation_names_the_last_whole_segment(corpus: Corpus) -> None:
    data, start, _ = corpus.layout()
    corpus.replace(corpus.key(DUMP), data[: start + 2 * SEALED])
    _, report, _ = verify_cli(corpus.newer)
    assert report is not None
    detail = next(c["detail"] for c in report["checks"] if not c["ok"])
    assert detail == "object ends after segment 1; its final segment is missing"


def test_object_replayed_from_an_older_set_of_the_same_kind(corpus: Corpus) -> None:
    older = corpus.stack.object(corpus.key(DUMP, corpus.older))
    corpus.replace(corpus.key(DUMP), older)
    code, report, _ = verify_cli(corpus.newer)
    assert code == 4 and report is not None
    assert [(c["object"], c["check"]) for c in report["checks"] if not c["ok"]] == [(DUMP, "context binding")]
    restore_is_refused(corpus, IntegrityError)


def test_objects_swapped_inside_a_set(corpus: Corpus) -> None:
    config = corpus.key("config.bundle", corpus.full, "full")
    tokens = corpus.key("tokens.encrypted", corpus.full, "full")
    config_bytes, token_bytes = corpus.stack.object(config), corpus.stack.object(tokens)
    corpus.replace(config, token_bytes)
    corpus.replace(tokens, config_bytes)
    code, report, _ = verify_cli(corpus.full)
    assert code == 4 and report is not None
    assert [(c["object"], c["check"]) for c in report["checks"] if not c["ok"]] == [
        ("config.bundle", "context binding"),
        ("tokens.encrypted", "context binding"),
    ]


def test_object_moved_between_kinds(corpus: Corpus) -> None:
    corpus.replace(corpus.key(DUMP, corpus.full, "full"), corpus.stack.object(corpus.key(DUMP)))
    code, report, _ = verify_cli(corpus.full)
    assert code == 4 and report is not None
    assert [(c["object"], c["check"]) for c in report["checks"] if not c["ok"]] == [(DUMP, "context binding")]


def test_object_deleted(corpus: Corpus) -> None:
    corpus.delete(corpus.key(DUMP))
    code, report, _ = verify_cli(corpus.newer)
    assert code == 4 and report is not None
    assert [(c["object"], c["check"]) for c in report["checks"] if not c["ok"]] == [(DUMP, "presence")]
    restore_is_refused(corpus, IntegrityError)


# -- the manifest ------------------------------------------------------------------------------
def _edit_manifest(edit: Callable[[dict[str, Any]], None]) -> Callable[[bytes], bytes]:
    def change(data: bytes) -> bytes:
        document = json.loads(data)
        edit(document["manifest"])
        return json.dumps(document, indent=2, sort_keys=True).encode() + b"\n"

    return change


def _set_first(field_name: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda body: body["objects"][0].__setitem__(field_name, value)


MANIFEST_CASES: dict[str, Callable[[bytes], bytes]] = {
    "stored-size": _edit_manifest(_set_first("stored_size", 1)),
    "plaintext-size": _edit_manifest(lambda b: b["objects"][0].__setitem__("plaintext_size", 10)),
    "segment-count": _edit_manifest(_set_first("segments", 3)),
    "tags-hash": _edit_manifest(_set_first("tags_sha256", "f" * 64)),
    "key-count": _edit_manifest(lambda b: b["objects"][0]["items"].__setitem__("keys", 1)),
    "component-count": _edit_manifest(lambda b: b["components"]["redis"].__setitem__("keys", 7)),
    "kind": _edit_manifest(lambda b: b.__setitem__("kind", "full")),
    "object-dropped": _edit_manifest(lambda b: b.__setitem__("objects", [])),
    "object-added": _edit_manifest(
        lambda b: b["objects"].append(dict(b["objects"][0], name="redis/dump-0002"))
    ),
    "environment": _edit_manifest(lambda b: b.__setitem__("environment", "prod")),
    "mac": lambda d: d.replace(b'"mac": "', b'"mac": "0'),
    "byte-flip": lambda d: flip(d, len(d) // 2, 0x20),
}


@pytest.mark.parametrize("case", sorted(MANIFEST_CASES))
def test_manifest_edit_is_detected_and_refused(corpus: Corpus, case: str) -> None:
    key = corpus.key("manifest.json")
    corpus.replace(key, MANIFEST_CASES[case](corpus.stack.object(key)))
    code, _, err = verify_cli(corpus.newer)
    assert code == 4
    assert err.startswith("error: manifest: manifest ")
    assert any(check in err for check in ("manifest authenticity", "manifest syntax")), err
    restore_is_refused(corpus, IntegrityError)


def test_manifest_replayed_from_an_older_set(corpus: Corpus) -> None:
    corpus.replace(
        corpus.key("manifest.json"), corpus.stack.object(corpus.key("manifest.json", corpus.older))
    )
    code, _, err = verify_cli(corpus.newer)
    assert code == 4
    assert err.startswith("error: manifest.json: wrapped key failed (KMS rejected the data key")
    restore_is_refused(corpus, IntegrityError)


def test_manifest_deleted_means_no_set(corpus: Corpus) -> None:
    corpus.delete(corpus.key("manifest.json"))
    code, _, err = verify_cli(corpus.newer)
    assert code == 3
    assert err.startswith(f"error: no complete backup set {corpus.newer}")
    assert corpus.newer not in [ref.backup_id for ref in corpus.stack.sets("redis")]
    restore_is_refused(corpus, BackupNotFoundError)


# -- property-based: any random damage to a stored object ----------------------------------------
damage = st.one_of(
    st.tuples(st.just("flip"), st.floats(0, 1, exclude_max=True), st.integers(1, 255)),
    st.tuples(st.just("cut"), st.floats(0, 1, exclude_max=True), st.just(0)),
    st.tuples(st.just("insert"), st.floats(0, 1), st.integers(0, 255)),
    st.tuples(st.just("append"), st.integers(1, 64), st.integers(0, 255)),
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(change=damage)
def test_any_random_damage_is_detected(corpus: Corpus, change: tuple[str, float, int]) -> None:
    kind, where, value = change
    key = corpus.key(DUMP)
    data = corpus.stack.object(key)
    if kind == "flip":
        damaged = flip(data, int(where * len(data)), value)
    elif kind == "cut":
        damaged = data[: int(where * len(data))]
    elif kind == "insert":
        position = int(where * len(data))
        damaged = data[:position] + bytes([value]) + data[position:]
    else:
        damaged = data + bytes([value]) * int(where)
    version = corpus.stack.put(key, damaged)
    try:
        report = corpus.stack.services().store.verify_set(corpus.stack.sets("redis")[0])
        failure = report.first_failure()
        assert failure is not None and failure.name == DUMP
    finally:
        corpus.stack.drop_version(key, version)
