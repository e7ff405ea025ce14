"""read_ahead: order kept, errors carried across the thread, bounded, and stopped when closed."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import closing

import pytest

from servalsheets_backup.errors import IntegrityError
from servalsheets_backup.read_ahead import read_ahead

pytestmark = pytest.mark.unit


class Source:
    """An iterator that records how far it was pulled, on which thread, and whether it was closed."""

    def __init__(self, count: int, fail_at: int | None = None) -> None:
        self.count, self.fail_at = count, fail_at
        self.produced = 0
        self.closed = threading.Event()
        self.threads: set[int] = set()

    def __iter__(self) -> Iterator[bytes]:
        return self._items()

    def _items(self) -> Iterator[bytes]:
        try:
            for index in range(self.count):
                self.threads.add(threading.get_ident())
                if index == self.fail_at:
                    raise IntegrityError("obj", "segment authentication", f"segment {index}")
                self.produced += 1
                yield b"%d" % index
        finally:
            self.closed.set()


def wait_until(condition, seconds: float = 5.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def test_yields_every_item_in_order_from_another_thread() -> None:
    source = Source(500)
    assert list(read_ahead(source)) == [b"%d" % i for i in range(500)]
    assert source.closed.is_set()
    assert threading.get_ident() not in source.threads


def test_an_error_reaches_the_consumer_after_the_items_before_it() -> None:
    seen: list[bytes] = []
    with pytest.raises(IntegrityError, match="segment 7"):
        for item in read_ahead(Source(20, fail_at=7)):
            seen.append(item)
    assert seen == [b"%d" % i for i in range(7)]


def test_the_producer_runs_at_most_depth_plus_one_ahead() -> None:
    source = Source(1000)
    with closing(read_ahead(source, depth=3)) as items:
        assert next(items) == b"0"
        # one handed over, three queued, one more waiting for room in the queue
        assert wait_until(lambda: source.produced >= 5)
        time.sleep(0.2)
        assert source.produced <= 5


def test_closing_early_stops_and_closes_the_source() -> None:
    source = Source(10_000)
    threads_before = threading.active_count()
    with closing(read_ahead(source)) as items:
        for item in items:
            if item == b"3":
                break
    assert source.closed.wait(5)
    assert source.produced < 10
    assert threading.active_count() == threads_before  # closing joined the producer


def test_depth_must_be_positive() -> None:
    with pytest.raises(ValueError, match="depth"):
        next(read_ahead(Source(1), depth=0))
