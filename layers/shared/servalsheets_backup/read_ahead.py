"""Read ahead: run a chunk iterator on a background thread, a bounded number of chunks ahead.

Restoring from S3 costs network reads, AES-GCM and zstd per chunk before the Redis client can
send anything, and an RDB stream must be drained from its socket while the caller compresses
and uploads. Socket and S3 reads, OpenSSL's AES-GCM and zstd all release the GIL, so a second
thread that produces the next chunks while the caller works on the current one overlaps the
two instead of adding them up (``store.object_reader``, ``adapters.redis_replication``).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

DEFAULT_DEPTH = 2
# How long closing waits for the producer to notice; it may be inside one network read.
JOIN_SECONDS = 30.0
_POLL_SECONDS = 0.1
_END = object()


class _Failure:
    """An exception raised by the producer, carried to the consumer."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


def read_ahead(
    source: Iterable[T],
    depth: int = DEFAULT_DEPTH,
    *,
    name: str = "read-ahead",
    interrupt: Callable[[], object] | None = None,
) -> Generator[T, None, None]:
    """Yield ``source``'s items in order while a thread produces up to ``depth`` more.

    An exception raised by ``source`` is re-raised here, at the point in the sequence where it
    happened. Closing the returned generator early (``contextlib.closing``, or a ``for`` loop
    left by ``break`` or an exception, once the generator is released) stops the producer and
    closes ``source`` on the producer's thread. At most ``depth + 1`` items are held at once.
    ``interrupt`` is called when the consumer is done, before waiting for the producer: for a
    source that blocks on a socket, closing the socket ends the wait.
    """
    if depth < 1:
        raise ValueError("depth must be at least 1")
    handoff: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()
    producer = threading.Thread(target=_produce, args=(iter(source), handoff, stop), name=name, daemon=True)
    producer.start()
    try:
        while True:
            item = handoff.get()
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        if interrupt is not None:
            interrupt()
        _drain(handoff)
        producer.join(JOIN_SECONDS)


def _produce(items: Iterator[T], handoff: queue.Queue[object], stop: threading.Event) -> None:
    """Move items into ``handoff`` until they end, one fails, or the consumer stops."""
    try:
        for item in items:
            if not _offer(handoff, item, stop):
                return
        _offer(handoff, _END, stop)
    except BaseException as exc:  # handed to the consumer, which re-raises it
        _offer(handoff, _Failure(exc), stop)
    finally:
        close = getattr(items, "close", None)
        if close is not None:
            close()


def _offer(handoff: queue.Queue[object], item: object, stop: threading.Event) -> bool:
    """Put ``item`` when there is room; False when the consumer stopped first."""
    while not stop.is_set():
        try:
            handoff.put(item, timeout=_POLL_SECONDS)
            return True
        except queue.Full:
            continue
    return False


def _drain(handoff: queue.Queue[object]) -> None:
    """Drop what the producer queued, so a producer blocked on a full queue can see ``stop``."""
    while True:
        try:
            handoff.get_nowait()
        except queue.Empty:
            return
