"""Separate many audio files with a separation model: equal-length files share a forward pass, reading runs
ahead and writing runs behind in background threads, and a bad file is reported and skipped.

:func:`separate_files` is the pipeline behind ``MossFormer2SeparationModel.process`` and ``nest-separate``:

1. every input's header is read (frames, rate, channels); files whose headers are equal have equal lengths
   after resampling, so they are grouped into batches of up to ``batch_size``
   (:func:`nest_ext.parts.length_batches.equal_length_batches`: no padding, because the network has no
   padding mask and a padded batch would change the outputs);
2. a reader thread decodes and resamples the next batches (:func:`nest_ext.parts.background.prefetch`) while
   the model separates the current one (in the caller's thread, so autocast contexts apply);
3. a writer thread writes ``<output_dir>/<stem>_s1.wav ... _sN.wav`` (float32, atomic) while the next batch
   is separated.

One :class:`SeparationResult` per input comes back, in batch order: the written paths, or the error that made
the file be skipped (unreadable, empty, multi-channel without a channel, too short). Batches give the outputs
of one-by-one processing to float rounding (tests/test_separate_cli.py).
"""
import contextlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterator, List, Optional, Sequence

import numpy as np
import soundfile as sf

from nest_ext.data.audio_io import load_audio, read_audio_info
from nest_ext.parts.atomic_io import atomic_path
from nest_ext.parts.background import prefetch
from nest_ext.parts.length_batches import equal_length_batches

__all__ = ["SeparationInput", "SeparationResult", "separate_files", "write_float_wav"]


@dataclass(frozen=True)
class SeparationInput:
    """A file to separate; ``name`` is its output stem's path relative to the output folder (without ``_sN.wav``)."""

    path: str
    name: str

    @classmethod
    def of(cls, path: str, root: Optional[str] = None) -> "SeparationInput":
        """``path`` named by its path relative to ``root`` (a folder given as input), else by its file name."""
        rel = os.path.relpath(path, root) if root is not None else os.path.basename(path)
        return cls(path, os.path.splitext(rel)[0])


@dataclass
class SeparationResult:
    input: SeparationInput
    outputs: Optional[List[str]] = None  # written files, one per speaker
    error: Optional[str] = None  # why the file was skipped (names the file)


def write_float_wav(path: str, signal: np.ndarray, sample_rate: int) -> None:
    """32-bit float WAV, written to a temporary name first so a reader never sees half a file."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with atomic_path(path, suffix=".wav") as tmp:
        sf.write(tmp, np.asarray(signal, dtype=np.float32), sample_rate, subtype="FLOAT")


def _header_key(path: str):
    info = read_audio_info(path)
    return info.frames, info.samplerate, info.channels


def separate_files(
    model,
    inputs: Sequence[SeparationInput],
    output_dir: str,
    batch_size: int = 1,
    channel: Optional[int] = None,
    chunk_seconds: Optional[float] = None,
    context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    prefetch_batches: int = 2,
) -> Iterator[SeparationResult]:
    """Separate ``inputs`` with ``model`` (a ``MossFormer2SeparationModel``: ``separate``, ``sample_rate``)
    into ``output_dir``; yields one result per input as its files are written (or it is skipped).

    ``context()`` is entered around each forward pass (e.g. ``inference_precision("bf16")``).
    """
    import torch  # here, so that command lines import this module (SeparationInput) before parsing quickly

    rate = int(model.sample_rate)
    keys, unreadable = [], set()
    for i, item in enumerate(inputs):
        try:
            keys.append(_header_key(item.path))
        except (ValueError, TypeError) as err:  # BadAudioError: missing, empty, unreadable header
            yield SeparationResult(item, error=str(err))
            unreadable.add(i)
            keys.append(("unreadable", i))  # a batch of its own, dropped below
    batches = [[inputs[i] for i in idx] for idx in equal_length_batches(keys, batch_size) if idx[0] not in unreadable]

    def read(batch):
        loaded = []
        for item in batch:
            try:
                loaded.append((item, load_audio(item.path, rate, channel=channel)))
            except ValueError as err:  # BadAudioError, a multi-channel file without a channel
                loaded.append((item, err))
        return loaded

    def write(item: SeparationInput, estimates: np.ndarray) -> SeparationResult:
        outputs = [os.path.join(output_dir, f"{item.name}_s{s}.wav") for s in range(1, len(estimates) + 1)]
        for out, signal in zip(outputs, estimates):
            write_float_wav(out, signal, rate)
        return SeparationResult(item, outputs=outputs)

    os.makedirs(output_dir, exist_ok=True)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="separation-writer") as writer:
        pending = []  # the previous batch's writes: collected after the next forward pass is done
        for loaded in prefetch(map(read, batches), depth=prefetch_batches):
            done = [SeparationResult(item, error=str(audio)) for item, audio in loaded if isinstance(audio, Exception)]
            good = [(item, audio) for item, audio in loaded if not isinstance(audio, Exception)]
            futures = []
            for group in _equal_lengths(good):
                try:
                    with context():  # a lone file goes in as [T] (the one-file call), a group as [B, T]
                        if len(group) == 1:
                            estimates = model.separate(group[0][1], chunk_seconds=chunk_seconds)[None]
                        else:
                            estimates = model.separate(torch.from_numpy(np.stack([a for _, a in group])),
                                                       chunk_seconds=chunk_seconds)
                except ValueError as err:  # e.g. shorter than the encoder kernel: name every file of the group
                    done += [SeparationResult(item, error=f"{item.path}: {err}") for item, _ in group]
                    continue
                estimates = estimates.float().numpy()
                futures += [writer.submit(write, item, est) for (item, _), est in zip(group, estimates)]
            for future in pending:
                yield future.result()
            yield from done
            pending = futures
        for future in pending:
            yield future.result()


def _equal_lengths(loaded):
    """``loaded`` split into groups of equal length (equal headers give equal lengths; this only guards it)."""
    groups = {}
    for item, audio in loaded:
        groups.setdefault(len(audio), []).append((item, audio))
    return list(groups.values())
