"""Where dynamic mixing's sources come from, for every separation data path (manifest, tarred, lhotse).

:class:`MixingOptions` holds the dynamic-mixing config keys; :func:`build_mixer` returns the mixer they ask for:

* ``source_pool`` is a manifest -> a :class:`~nest_ext.data.dynamic_mixing.DynamicMixer` over its files
  (random access, SpeechBrain's recipe);
* ``source_pool`` is a folder of shards -> a :class:`~nest_ext.data.streaming_mixer.StreamingMixer` that reads
  the pool's shards itself (``mixer.draw(rng)``);
* no ``source_pool``, the training data are files -> a ``DynamicMixer`` over the sources of the training
  manifest (``own_sources``);
* no ``source_pool``, the training data are shards -> a ``StreamingMixer`` the dataset pushes the examples'
  sources into (:func:`example_speakers` names their speakers).

Every mixer answers :func:`draw_mixture`.

Example::

    >>> opts = MixingOptions(num_spks=2, sample_rate=8000)
    >>> type(build_mixer(opts)).__name__
    'StreamingMixer'
"""
from __future__ import annotations

import dataclasses
import logging
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

from nest_ext.data.audio_io import BadAudioError
from nest_ext.data.bad_audio import BadAudioReport
from nest_ext.data.dynamic_mixing import DynamicMixer, SourceUtterance, SpeakerPool
from nest_ext.data.source_pool import ShardedSourcePool, read_source_pool_manifest, source_pool_kind
from nest_ext.data.speaker_ids import SpeakerIdTally, compile_speaker_regex, resolve_speakers, speaker_ids_from_name
from nest_ext.data.streaming_mixer import DEFAULT_BUFFER_SIZE, StreamingMixer

__all__ = ["MixingOptions", "build_mixer", "draw_mixture", "draw_pool_mixture", "example_speakers",
           "mixing_options_from_config"]

logger = logging.getLogger(__name__)

Mixer = Union[DynamicMixer, StreamingMixer]


@dataclasses.dataclass
class MixingOptions:
    """The dynamic-mixing settings of a dataset config (keys of the same names, see the README)."""

    num_spks: int
    sample_rate: int
    segment_frames: Optional[int] = None
    speed_factors: Optional[Sequence[float]] = None
    level_params: Optional[dict] = None
    source_pool: Optional[str] = None
    source_pool_speaker_key: Optional[str] = None
    speaker_id_regex: Optional[str] = None
    dynamic_mixing_speakers: str = "auto"
    dynamic_mixing_buffer: int = DEFAULT_BUFFER_SIZE
    shard_strategy: str = "scatter"
    global_rank: int = 0
    world_size: int = 1


def mixing_options_from_config(cfg, num_spks: int, sample_rate: int, segment_frames: Optional[int],
                               speed_factors: Optional[Sequence[float]], global_rank: int = 0,
                               world_size: int = 1) -> MixingOptions:
    """:class:`MixingOptions` from a dataset config (a dict)."""
    return MixingOptions(
        num_spks=num_spks, sample_rate=sample_rate, segment_frames=segment_frames, speed_factors=speed_factors,
        level_params=cfg.get("dynamic_mixing_levels"), source_pool=cfg.get("source_pool"),
        source_pool_speaker_key=cfg.get("source_pool_speaker_key"), speaker_id_regex=cfg.get("speaker_id_regex"),
        dynamic_mixing_speakers=cfg.get("dynamic_mixing_speakers") or "auto",
        dynamic_mixing_buffer=int(cfg.get("dynamic_mixing_buffer") or DEFAULT_BUFFER_SIZE),
        shard_strategy=cfg.get("tarred_shard_strategy") or "scatter", global_rank=global_rank, world_size=world_size,
    )


def example_speakers(speaker_ids: Optional[Sequence[str]], mixture_name: str, num_spks: int, regex=None
                     ) -> Tuple[Optional[List[str]], Optional[str]]:
    """An example's speakers: its ``speaker_ids``, else read from the mixture's name; ``(None, reason)`` if neither."""
    if speaker_ids:
        return [str(s) for s in speaker_ids], None
    return speaker_ids_from_name(mixture_name, num_spks, regex)


def _mixer_kwargs(opts: MixingOptions) -> dict:
    return dict(num_spks=opts.num_spks, sample_rate=opts.sample_rate, segment_frames=opts.segment_frames,
                speed_factors=opts.speed_factors, level_params=opts.level_params)


def build_mixer(opts: MixingOptions, own_sources: Optional[Sequence[Tuple[Sequence[str], Optional[Sequence[str]], str]]] = None,
                report: Optional[BadAudioReport] = None) -> Mixer:
    """The mixer ``opts`` asks for (see the module docstring). ``own_sources``: the training manifest's examples
    as ``(source paths, speaker_ids or None, mixture name)`` when the training data are files."""
    if opts.source_pool:
        if source_pool_kind(opts.source_pool) == "manifest":
            utts = read_source_pool_manifest(opts.source_pool, opts.source_pool_speaker_key, opts.speaker_id_regex,
                                             opts.dynamic_mixing_speakers, report)
            return _file_mixer(utts, opts, f"source pool {opts.source_pool}")
        pool = ShardedSourcePool(opts.source_pool, opts.sample_rate, opts.source_pool_speaker_key,
                                 opts.speaker_id_regex, opts.dynamic_mixing_speakers, opts.shard_strategy,
                                 opts.global_rank, opts.world_size, report)
        return StreamingMixer(buffer_size=opts.dynamic_mixing_buffer, source_stream=pool.sources, **_mixer_kwargs(opts))
    if own_sources is None:
        return StreamingMixer(buffer_size=opts.dynamic_mixing_buffer, **_mixer_kwargs(opts))
    regex = compile_speaker_regex(opts.speaker_id_regex)
    tally, utts = SpeakerIdTally(), []
    for paths, ids, name in own_sources:
        speakers, reason = example_speakers(ids, name, len(paths), regex)
        tally.add(name, speakers, reason)
        resolved, _ = resolve_speakers(list(paths), speakers, opts.dynamic_mixing_speakers)
        utts.extend(SourceUtterance(p, s) for p, s in resolved)
    if tally.num_with < tally.num_total:
        what = "each of their sources counts as its own speaker (dynamic_mixing_speakers: auto)" if \
            opts.dynamic_mixing_speakers == "auto" else "their sources are not used (dynamic_mixing_speakers: ids)"
        logger.warning("dynamic mixing: %s; %s. Add 'speaker_ids' (prepare_separation_data --speaker-id-regex) or "
                       "set speaker_id_regex", tally.describe(), what)
    if not utts:
        raise ValueError("dynamic mixing needs speaker IDs: add 'speaker_ids' to the manifest entries "
                         "(tools/prepare_separation_data.py writes them; --speaker-id-regex for other names), set "
                         "speaker_id_regex, or set dynamic_mixing_speakers: auto")
    return _file_mixer(utts, opts, "the training manifest")


def _file_mixer(utts: List[SourceUtterance], opts: MixingOptions, what: str) -> DynamicMixer:
    if not utts:
        raise ValueError(f"dynamic mixing: {what} has no usable source")
    return DynamicMixer(SpeakerPool(utts), **_mixer_kwargs(opts))


def draw_mixture(mixer: Mixer, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray, dict]:
    """A fresh mixture from any mixer: a file pool's random draw, or a stream pool's window (topped up first)."""
    if isinstance(mixer, StreamingMixer) and mixer.source_stream is not None:
        return mixer.draw(rng)
    return mixer.mix(rng)


def draw_pool_mixture(mixer: Mixer, rng: np.random.Generator, report: BadAudioReport, retries: int = 20
                      ) -> Tuple[np.ndarray, np.ndarray, dict]:
    """:func:`draw_mixture` from a source pool that may hold bad files: each is reported once (``report`` raises
    under ``on_bad_audio: error``), dropped from the pool, and another mixture drawn."""
    for _ in range(retries):
        try:
            return draw_mixture(mixer, rng)
        except BadAudioError as e:
            report.add(e.path, e.reason, e.where, "load (dynamic mixing source)")
            mixer.exclude(e.path)
    raise RuntimeError(f"dynamic mixing: {retries} bad pool sources in a row ({report.summary()})")
