"""Run an iterator ahead in a background thread, so reading the next items overlaps the work on this one.

Decoding and resampling audio (soundfile, soxr) release the GIL, so a reader thread keeps the next batch ready
while the model computes on the current one. The items come out in order; an exception raised by the
iterator is raised in the consumer at the point where it happened. Stopping early (``break``, an exception in
the consumer) stops the thread after at most the item it is producing.

Example::

    >>> list(prefetch(x * x for x in range(5)))
    [0, 1, 4, 9, 16]
    >>> def broken():
    ...     yield 1
    ...     raise OSError("disk gone")
    >>> it = prefetch(broken())
    >>> next(it)
    1
    >>> next(it)
    Traceback (most recent call last):
    ...
    OSError: disk gone
"""
import queue
import threading
from typing import Iterable, Iterator, TypeVar

__all__ = ["prefetch"]

T = TypeVar("T")
_DONE = object()


class _Raised:
    def __init__(self, error: BaseException):
        self.error = error


def prefetch(iterable: Iterable[T], depth: int = 2) -> Iterator[T]:
    """The items of ``iterable``, produced by a daemon thread up to ``depth`` items ahead of the consumer."""
    items: "queue.Queue" = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():  # poll, so a consumer that stopped early never leaves this thread blocked
            try:
                items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce():
        try:
            for item in iterable:
                if not put(item):
                    return
        except BaseException as err:  # handed to the consumer, raised there
            put(_Raised(err))
            return
        put(_DONE)

    thread = threading.Thread(target=produce, name="prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = items.get()
            if item is _DONE:
                return
            if isinstance(item, _Raised):
                raise item.error
            yield item
    finally:
        stop.set()
