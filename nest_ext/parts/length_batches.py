"""Group items of equal length into batches, for networks that have no padding mask.

A network that normalises or attends over the whole time axis (MossFormer2: global layer norm, full attention)
gives a padded input different outputs than the unpadded one, so only inputs of exactly equal length can share a
forward pass and still give what one-by-one processing gives. Items are grouped by a length key (samples, or
``(frames, sample_rate)`` read from file headers); batches come in order of their first item, and each holds
at most ``batch_size`` items, in input order.

Example::

    >>> equal_length_batches([16000, 8000, 16000, 16000, 8000], batch_size=2)
    [[0, 2], [1, 4], [3]]
    >>> equal_length_batches([5, 6, 7], batch_size=4)
    [[0], [1], [2]]
"""
from typing import Hashable, List, Sequence

__all__ = ["equal_length_batches"]


def equal_length_batches(keys: Sequence[Hashable], batch_size: int) -> List[List[int]]:
    """Indices of ``keys`` in batches of at most ``batch_size`` whose keys are equal."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    open_batch = {}  # key -> the batch still filling
    batches: List[List[int]] = []
    for i, key in enumerate(keys):
        batch = open_batch.get(key)
        if batch is None or len(batch) >= batch_size:
            batch = open_batch[key] = []
            batches.append(batch)
        batch.append(i)
    return batches
