"""Process pools for packing: :func:`ordered_map` (results in input order, bounded memory) and
:func:`completed_map` (whole jobs, results as they finish).

A worker that dies (killed, or crashed inside a native decoder) surfaces as
``concurrent.futures.process.BrokenProcessPool`` from the iterator; callers say what that means for them.

Example::

    >>> list(ordered_map(abs, [-3, 1, -2], num_workers=1))
    [3, 1, 2]
"""
from __future__ import annotations

import concurrent.futures
import multiprocessing
from collections import deque
from typing import Callable, Iterable, Iterator, List


def _executor(num_workers: int) -> concurrent.futures.ProcessPoolExecutor:
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    return concurrent.futures.ProcessPoolExecutor(num_workers, mp_context=multiprocessing.get_context(method))


def _map_chunk(fn: Callable, chunk: List) -> List:
    return [fn(x) for x in chunk]


def _chunks(items: Iterable, size: int) -> Iterator[List]:
    buf = []
    for x in items:
        buf.append(x)
        if len(buf) == size:
            yield buf
            buf = []
    if buf:
        yield buf


def ordered_map(fn: Callable, items: Iterable, num_workers: int, chunk: int = 8) -> Iterator:
    """``map(fn, items)`` in input order over a process pool: ``chunk`` items per task (fewer round trips),
    a bounded number of tasks in flight (bounded memory). With ``num_workers <= 1``, in this process."""
    if num_workers <= 1:
        for it in items:
            yield fn(it)
        return
    window = 4 * num_workers
    with _executor(num_workers) as ex:
        pending = deque()
        it = _chunks(items, chunk)
        for c in it:
            pending.append(ex.submit(_map_chunk, fn, c))
            if len(pending) >= window:
                break
        while pending:
            res = pending.popleft().result()
            for c in it:
                pending.append(ex.submit(_map_chunk, fn, c))
                break
            yield from res


def completed_map(fn: Callable, items: Iterable, num_workers: int) -> Iterator:
    """``fn(item)`` for every item over a process pool, yielded as they finish. Jobs not yet started are
    cancelled when the caller stops early or a job raises."""
    with _executor(num_workers) as ex:
        futures = [ex.submit(fn, x) for x in items]
        try:
            for fut in concurrent.futures.as_completed(futures):
                yield fut.result()
        finally:
            for fut in futures:
                fut.cancel()
