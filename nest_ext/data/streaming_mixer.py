"""Dynamic mixing from a stream: sources read once, in order, from shards, mixed from a window of recent ones.

Shards (tarred or lhotse Shar) are read sequentially, so the random draw of
:class:`~nest_ext.data.dynamic_mixing.DynamicMixer` over a whole corpus is not possible there. Instead the
sources of the stream go into a window of the last ``buffer_size`` sources (:meth:`StreamingMixer.push`, each
cut at a random offset to what a mixture can use, so the window holds seconds, not files); each mixture draws
``num_spks`` distinct speakers from the window with the same recipe and numbers as the file-based mixer (levels,
speed perturbation, peak normalisation: it *is* a ``DynamicMixer`` over the window). A source enters once and is
drawn about once on average (each example adds ``num_spks`` sources and each mixture uses ``num_spks``), as in
WeSep's and lhotse's on-the-fly mixing of sharded data.

Example::

    >>> import numpy as np
    >>> m = StreamingMixer(num_spks=2, sample_rate=8000, segment_frames=400, buffer_size=4)
    >>> rng = np.random.default_rng(0)
    >>> for k in range(6):
    ...     m.push(np.full(1000, 0.1 * (k + 1), np.float32), speaker=f"spk{k % 3}", name=f"u{k}", rng=rng)
    >>> m.num_buffered, m.ready
    (4, True)
    >>> mixture, sources, info = m.mix(rng)
    >>> mixture.shape, sources.shape, len(set(info["speakers"]))
    ((400,), (2, 400), 2)
"""
from __future__ import annotations

import itertools
import math
from collections import deque
from typing import Callable, Iterator, Optional, Sequence, Tuple

import numpy as np

from nest_ext.data.dynamic_mixing import DynamicMixer, SourceUtterance, SpeakerPool

__all__ = ["DEFAULT_BUFFER_SIZE", "StreamingMixer"]

# Sources held for mixing. 200 x 2 s crops at 16 kHz float32 is 26 MB per DataLoader worker; a window of a few
# hundred sources from a shuffled stream holds some hundred speakers of a LibriSpeech-sized corpus.
DEFAULT_BUFFER_SIZE = 200


class StreamingMixer:
    """A window of streamed single-speaker sources and a :class:`DynamicMixer` over it.

    Args:
        num_spks, sample_rate, segment_frames, speed_factors, level_params: as :class:`DynamicMixer`.
        buffer_size: sources kept; pushing more drops the oldest.
        source_stream: optional ``rng -> iterator of (audio [T], speaker, name)`` that :meth:`draw` reads from
            (restarted when it ends) to keep the window full; without it the caller pushes.
    """

    def __init__(
        self,
        num_spks: int,
        sample_rate: int,
        segment_frames: Optional[int] = None,
        speed_factors: Optional[Sequence[float]] = None,
        level_params: Optional[dict] = None,
        buffer_size: int = DEFAULT_BUFFER_SIZE,
        source_stream: Optional[Callable[[np.random.Generator], Iterator[Tuple[np.ndarray, str, str]]]] = None,
    ):
        if buffer_size < num_spks:
            raise ValueError(f"dynamic_mixing_buffer ({buffer_size}) must hold at least num_spks={num_spks} sources")
        self.num_spks = num_spks
        self.segment_frames = segment_frames
        self.buffer_size = int(buffer_size)
        self.max_speed = max(speed_factors) if speed_factors else 1.0
        self.pool = SpeakerPool([])
        self.mixer = DynamicMixer(self.pool, num_spks, sample_rate, segment_frames, speed_factors, level_params,
                                  check_speakers=False)
        self._window: deque = deque()
        self._count = itertools.count()
        self.source_stream = source_stream
        self._stream: Optional[Iterator] = None

    @property
    def num_buffered(self) -> int:
        return len(self._window)

    @property
    def ready(self) -> bool:
        """Whether the window holds ``num_spks`` distinct speakers (a mixture can be drawn)."""
        return len(self.pool.speakers) >= self.num_spks

    def push(self, audio: np.ndarray, speaker: str, name: str, rng: np.random.Generator) -> None:
        """Add one source: a random crop of ``audio`` long enough for a mixture (all of it when shorter, or when
        mixtures are not cropped); the oldest source leaves when the window is full."""
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim != 1 or audio.shape[0] == 0:
            return
        if self.segment_frames is not None:
            keep = int(math.ceil(self.segment_frames * self.max_speed)) + 2  # room for a speed-up
            if audio.shape[0] > keep:
                start = int(rng.integers(0, audio.shape[0] - keep + 1))
                audio = audio[start : start + keep]
        utt = SourceUtterance(f"{name}#{next(self._count)}", str(speaker), audio=audio)
        self.pool.add(utt)
        self._window.append(utt)
        while len(self._window) > self.buffer_size:
            self.pool.remove(self._window.popleft())

    def _next_source(self, rng: np.random.Generator):
        for _ in range(2):
            if self._stream is None:
                self._stream = iter(self.source_stream(rng))
            try:
                return next(self._stream)
            except StopIteration:
                self._stream = None  # next pass over the source shards (a new order)
        raise RuntimeError("the dynamic mixing source pool yielded no usable source in a whole pass")

    def draw(self, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray, dict]:
        """A mixture, after topping the window up from ``source_stream`` (filled completely at the start)."""
        if self.source_stream is None:
            raise RuntimeError("StreamingMixer.draw needs a source_stream; push sources and call mix()")
        # at the start fill the window; then num_spks new sources per mixture, as many as it uses
        fresh = self.buffer_size - self.num_buffered if self.num_buffered < self.buffer_size else self.num_spks
        for _ in range(fresh):
            audio, speaker, name = self._next_source(rng)
            self.push(audio, speaker, name, rng)
        tries = 0
        while not self.ready:  # e.g. a pool of one speaker so far
            audio, speaker, name = self._next_source(rng)
            self.push(audio, speaker, name, rng)
            tries += 1
            if tries > 10 * self.buffer_size:
                raise RuntimeError(f"dynamic mixing: the source pool gave fewer than {self.num_spks} distinct speakers")
        return self.mix(rng)

    def mix(self, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray, dict]:
        """A mixture of ``num_spks`` distinct speakers from the window (see :class:`DynamicMixer`)."""
        if not self.ready:
            raise RuntimeError(f"dynamic mixing window holds {len(self.pool.speakers)} speaker(s), needs {self.num_spks}")
        return self.mixer.mix(rng)

    def exclude(self, path: str) -> None:
        """Sources in memory were checked when decoded; nothing to exclude (the file-based mixer's interface)."""
