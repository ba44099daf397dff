"""Prepare (degraded, clean) training pairs for speech restoration: plan, degrade, write -- crash-safely, through
the packing driver (:func:`nest_ext.data.packing.write_shards`: worker pool, plan-ordered writes, temporary names,
per-shard markers, ``skip_existing``, ``shard_idx/shard_count``).

Input: clean speech as a NeMo manifest (``audio_filepath``; ``offset``/``duration`` cut a segment), a Kaldi
``wav.scp``, or a folder (every ``.wav``/``.flac``/``.ogg``/``.mp3``/``.opus`` below it, sorted; the ID is the
path relative to the folder without extension). Any rate or channel count: mixed down and resampled to
``sample_rate``.

Plan: each clean utterance gives ``pairs_per_file`` pairs; pair ``k`` of utterance ``U`` is degraded by the chain
(:mod:`nest_ext.data.degradations`) with the generator of ``(seed, "U#k")``, after an optional random crop of
``segment_seconds`` drawn from the same generator. A pair therefore depends only on the seed, the utterance ID,
``k``, the chain and the clean audio -- not on the workers, the shards or the other utterances; and pair ``k``
is the same whatever ``pairs_per_file`` is. The validation split takes the ``ceil(val_fraction x N)`` clean
utterances whose ``(seed, ID)`` hash is smallest (all their pairs: no clean utterance is in both splits).
Train pairs fill the first shards, validation pairs the next, ``shard_size`` pairs a shard, in input order.

Output (``format``): ``manifest`` -- WAV files and NeMo audio-to-audio manifests ``train_manifest.json`` /
``val_manifest.json`` (``input_filepath`` degraded, ``target_filepath`` clean); ``tar`` -- the same pairs in tar
shards (:mod:`nest_ext.data.packing.writers.restoration`). Audio is 16-bit PCM by default; a pair whose degraded
or clean peak would clip is scaled down, both files by the same gain (``gain`` in its manifest line).

Bad input (missing, unreadable, empty, shorter than ``min_seconds``) is left out, logged with the utterance
ID, path and where it was listed, and counted in ``pack_summary.json``; ``strict`` stops at the first instead.

Example::

    >>> import os, json, tempfile, soundfile as sf
    >>> from nest_ext.cli.synth import speech_like
    >>> d = tempfile.mkdtemp()
    >>> for name in ("a", "b"):
    ...     sf.write(os.path.join(d, name + ".wav"), speech_like(1.0, 22050, seed=len(name)), 22050)
    >>> s = prepare_restoration_pairs(os.path.join(d, "out"), clean=d, pairs_per_file=2, val_fraction=0.5,
    ...                               degradations=[{"type": "clipping"}], progress=False)
    >>> s.complete, s.num_written
    (True, 4)
    >>> line = json.loads(open(os.path.join(d, "out", "train_manifest.json")).readline())
    >>> line["input_filepath"], line["target_filepath"], line["pair"], line["degradations"][0]["type"]
    ('pairs/shard_000000/a_0.degraded.wav', 'pairs/shard_000000/a_0.clean.wav', 0, 'clipping')
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import math
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import soundfile as sf

from nest_ext.data.audio_io import BadAudioError, load_audio, read_audio_info
from nest_ext.data.degradations import DegradationChain, load_spec, utterance_rng
from nest_ext.data.packing.audio import read_source, zero_write_time
from nest_ext.data.packing.inputs import BadItem, PackingError, Utterance, read_nemo_manifest, read_wav_scp
from nest_ext.data.packing.item import EncodedAudio, ShardItem
from nest_ext.data.packing.pack import PackSummary, _log_bad, _strict_error, write_shards
from nest_ext.data.packing.plan import assign_member_names, plan_hash, plan_shards
from nest_ext.data.packing.writers import get_writer

__all__ = ["AUDIO_EXTENSIONS", "FORMATS", "plan_pairs", "prepare_restoration_pairs", "read_clean_inputs"]

logger = logging.getLogger("nest_ext.prepare_restoration_data")

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".opus")
FORMATS = {"manifest": "restoration-wav", "tar": "restoration-tar"}  # --format -> packing writer
SUBTYPES = ("PCM_16", "PCM_24", "FLOAT")


# ----------------------------------------------------------------------------------------------------- input
def read_folder(folder: str) -> List[Utterance]:
    """Every audio file below ``folder`` (sorted), ID = relative path without extension."""
    utts = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            if name.lower().endswith(AUDIO_EXTENSIONS) and not name.startswith("."):
                path = os.path.join(root, name)
                rel = os.path.splitext(os.path.relpath(path, folder))[0].replace(os.sep, "/")
                utts.append(Utterance(utt_id=rel, source=path, origin=folder))
    return utts


def read_clean_inputs(clean: Optional[str] = None, wav_scp: Optional[str] = None,
                      allow_pipes: bool = False) -> Tuple[List[Utterance], List[BadItem]]:
    """The clean utterances of ``clean`` (a NeMo manifest or a folder) or of ``wav_scp``, and the entries left out."""
    if (clean is None) == (wav_scp is None):
        raise PackingError("give exactly one clean-speech input: a manifest or folder, or a wav.scp")
    if wav_scp is not None:
        if not os.path.isfile(wav_scp):
            raise PackingError(f"input file not found: {wav_scp}")
        return read_wav_scp(wav_scp, allow_pipes=allow_pipes)
    if os.path.isdir(clean):
        return read_folder(clean), []
    if not os.path.isfile(clean):
        raise PackingError(f"clean input not found: {clean} (a NeMo manifest or a folder of audio files)")
    return read_nemo_manifest(clean)


# ------------------------------------------------------------------------------------------------------ plan
def _split_key(seed: int, utt_id: str) -> str:
    return hashlib.sha256(f"{int(seed)}/{utt_id}".encode("utf-8")).hexdigest()


def plan_pairs(utts: Sequence[Utterance], pairs_per_file: int, val_fraction: float, seed: int) -> List[Utterance]:
    """One planned entry per pair (members ``<utterance member>_<k>``), train pairs first, then validation pairs,
    each in input order; ``extra`` carries ``utt_id``, ``pair`` and ``split``. ``utts`` need member names."""
    if pairs_per_file < 1:
        raise PackingError(f"pairs_per_file must be >= 1 (got {pairs_per_file})")
    if not 0.0 <= val_fraction < 1.0:
        raise PackingError(f"val_fraction must be in [0, 1) (got {val_fraction})")
    n_val = math.ceil(val_fraction * len(utts)) if len(utts) > 1 else 0
    val = set(sorted(range(len(utts)), key=lambda i: _split_key(seed, utts[i].utt_id))[:n_val])
    pairs = {"train": [], "val": []}
    for i, u in enumerate(utts):
        split = "val" if i in val else "train"
        for k in range(pairs_per_file):
            pairs[split].append(dataclasses.replace(
                u, member=f"{u.member}_{k}", extra={"utt_id": u.utt_id, "pair": k, "split": split}))
    return pairs["train"] + pairs["val"]


# ------------------------------------------------------------------------------------------------------ load
_CHAINS: Dict[str, DegradationChain] = {}  # per process: the chain of a spec, built once (it reads manifests)
_LAST_CLEAN: Dict[str, Any] = {}  # per process: the last clean file read (pairs of one file come in a row)


def _chain(spec: Dict) -> DegradationChain:
    key = json.dumps(spec, sort_keys=True)
    if key not in _CHAINS:
        _CHAINS.clear()
        _CHAINS[key] = DegradationChain.from_spec(spec)
    return _CHAINS[key]


def _read_clean(entry: Utterance, sample_rate: int, pipe_timeout: Optional[float]) -> np.ndarray:
    """The clean audio of ``entry`` (its segment when it has an offset or duration), mono at ``sample_rate``."""
    key = (entry.source, entry.is_pipe, entry.offset, entry.duration, sample_rate)
    if _LAST_CLEAN.get("key") == key:
        return _LAST_CLEAN["audio"]
    if entry.is_pipe:
        audio = load_audio(io.BytesIO(read_source(entry, pipe_timeout)), sample_rate, mixdown=True)
    elif entry.offset or entry.duration is not None:
        rate = read_audio_info(entry.source).samplerate
        frames = -1 if entry.duration is None else int(round(entry.duration * rate))
        audio = load_audio(entry.source, sample_rate, start=int(round(entry.offset * rate)), frames=frames,
                           mixdown=True)
    else:
        audio = load_audio(entry.source, sample_rate, mixdown=True)
    _LAST_CLEAN.update(key=key, audio=audio)
    return audio


def encode_wav(audio: np.ndarray, sample_rate: int, subtype: str) -> EncodedAudio:
    """A mono WAV file in memory (no write time in it: the same audio gives the same bytes)."""
    buf = io.BytesIO()
    sf.write(buf, audio, sample_rate, format="WAV", subtype=subtype)
    return EncodedAudio(zero_write_time(buf.getvalue()), "wav", int(audio.shape[0]), sample_rate, 1)


def make_pair(entry: Utterance, clean: np.ndarray, spec: Dict, sample_rate: int, seed: int,
              segment_seconds: Optional[float], subtype: str) -> ShardItem:
    """Degrade (a crop of) ``clean`` into the pair ``entry`` plans."""
    pair_id = f"{entry.extra['utt_id']}#{entry.extra['pair']}"
    rng = utterance_rng(seed, pair_id)
    if segment_seconds:
        n = int(round(segment_seconds * sample_rate))
        if clean.shape[0] > n:
            start = int(rng.integers(0, clean.shape[0] - n + 1))
            clean = clean[start:start + n]
    degraded, applied = _chain(spec).apply(clean, sample_rate, rng)
    meta = dict(entry.extra, degradations=applied)
    peak = max(float(np.max(np.abs(degraded))), float(np.max(np.abs(clean))))
    if subtype.startswith("PCM") and peak > 0.999:  # PCM would clip: scale the pair, not one side
        gain = 0.999 / peak
        degraded, clean, meta["gain"] = degraded * gain, clean * gain, gain
    if not np.all(np.isfinite(degraded)):
        raise ValueError("degradation gave NaN/Inf samples")
    return ShardItem(key=entry.member, audio={"degraded": encode_wav(degraded, sample_rate, subtype),
                                              "clean": encode_wav(clean, sample_rate, subtype)},
                     meta=meta, input_id=pair_id)


def load_pair(args) -> Union[ShardItem, BadItem]:
    """``(entry, spec, sample_rate, seed, segment_seconds, subtype, min_seconds, pipe_timeout)`` -> the pair, or
    the :class:`BadItem` saying why it is left out. Runs in worker processes."""
    entry, spec, sample_rate, seed, segment_seconds, subtype, min_seconds, pipe_timeout = args
    path = entry.source + (" |" if entry.is_pipe else "")
    try:
        clean = _read_clean(entry, sample_rate, pipe_timeout)
        if clean.shape[0] < min_seconds * sample_rate:
            return BadItem(entry.utt_id, path, entry.origin,
                           f"too short: {clean.shape[0] / sample_rate:.3f} s < {min_seconds} s")
        return make_pair(entry, clean, spec, sample_rate, seed, segment_seconds, subtype)
    except BadAudioError as e:
        reason = "missing: no such file" if e.reason == "missing file" else f"unreadable: {e.reason}"
        return BadItem(entry.utt_id, path, entry.origin, reason)
    except (OSError, ValueError) as e:  # a pipe that failed, a multi-channel oddity, a degradation that failed
        return BadItem(entry.utt_id, path, entry.origin, str(e) if ":" in str(e) else f"unreadable: {e}")


# ------------------------------------------------------------------------------------------------------- run
def _resolve_spec(degradations, noise_manifest: Optional[str], rir_manifest: Optional[str]) -> Dict:
    """The chain spec with the noise / RIR manifests filled in where its steps name none; validated."""
    try:
        spec = load_spec(degradations)
    except (OSError, ValueError) as e:  # a missing or malformed YAML file
        raise PackingError(f"degradations: {e}") from None
    for kind, key, value in (("noise", "noise_manifest", noise_manifest), ("reverb", "rir_manifest", rir_manifest)):
        if value is None:
            continue
        steps = [s for s in spec["steps"] if s.get("type") == kind]
        if not steps:
            raise PackingError(f"--{key.replace('_', '-')} given, but the degradation chain has no {kind} step")
        if not os.path.isfile(value):
            raise PackingError(f"{key} not found: {value}")
        for step in steps:
            step.setdefault(key, os.path.abspath(value))
    try:
        DegradationChain.from_spec(spec)  # unknown types/keys: now, not in a worker
    except ValueError as e:
        raise PackingError(f"degradations: {e}") from None
    return spec


def prepare_restoration_pairs(
    out_dir: str,
    clean: Optional[str] = None,
    wav_scp: Optional[str] = None,
    degradations: Any = None,
    noise_manifest: Optional[str] = None,
    rir_manifest: Optional[str] = None,
    pairs_per_file: int = 1,
    val_fraction: float = 0.05,
    sample_rate: int = 16000,
    segment_seconds: Optional[float] = None,
    min_seconds: float = 0.1,
    seed: int = 0,
    format: str = "manifest",
    subtype: str = "PCM_16",
    shard_size: int = 1000,
    num_workers: int = 1,
    shard_idx: int = 0,
    shard_count: int = 1,
    skip_existing: bool = False,
    strict: bool = False,
    allow_pipes: bool = False,
    pipe_timeout: Optional[float] = 300.0,
    progress: bool = True,
    progress_every_s: float = 30.0,
) -> PackSummary:
    """Write the pairs of ``clean`` (manifest or folder) or ``wav_scp`` into ``out_dir``; see the module docstring.

    ``degradations``: a chain spec (list of steps, YAML path, or None for the default chain);
    ``noise_manifest`` / ``rir_manifest`` feed its noise / reverb steps. The other arguments are those of
    :func:`~nest_ext.data.packing.pack_shards`. Returns its :class:`PackSummary` (``complete`` once the split
    manifests are written).
    """
    if format not in FORMATS:
        raise PackingError(f"format must be one of {tuple(FORMATS)} (got {format!r})")
    if subtype not in SUBTYPES:
        raise PackingError(f"subtype must be one of {SUBTYPES} (got {subtype!r})")
    if not (shard_count >= 1 and 0 <= shard_idx < shard_count):
        raise PackingError(f"need 0 <= shard_idx < shard_count (got {shard_idx}, {shard_count})")
    if sample_rate <= 0 or (segment_seconds is not None and segment_seconds <= 0):
        raise PackingError(f"sample_rate and segment_seconds must be positive (got {sample_rate}, {segment_seconds})")
    spec = _resolve_spec(degradations, noise_manifest, rir_manifest)
    utts, bad = read_clean_inputs(clean, wav_scp, allow_pipes=allow_pipes)
    num_input = len(utts) + len(bad)
    for b in bad:
        _log_bad(b)
    if bad and strict:
        raise _strict_error(bad[0])
    if not utts:
        raise PackingError(f"no usable entry in {clean or wav_scp}")
    assign_member_names(utts)
    pairs = plan_pairs(utts, pairs_per_file, val_fraction, seed)
    n_train = sum(p.extra["split"] == "train" for p in pairs)
    shards = plan_shards(pairs[:n_train], shard_size) + plan_shards(pairs[n_train:], shard_size)
    writer_name = FORMATS[format]
    options = {"degradations": spec, "sample_rate": sample_rate, "seed": seed, "segment_seconds": segment_seconds,
               "subtype": subtype, "min_seconds": min_seconds}
    plans = [plan_hash(writer_name, i, s, options) for i, s in enumerate(shards)]
    summary = PackSummary(out_dir=os.path.abspath(out_dir), format=format, num_input=num_input,
                          num_planned=len(pairs), num_shards=len(shards), bad=list(bad))
    load_args = (spec, sample_rate, seed, segment_seconds, subtype, min_seconds, pipe_timeout)
    return write_shards(summary, get_writer(writer_name), {}, shards, plans, load_pair, load_args,
                        num_workers=num_workers, shard_idx=shard_idx, shard_count=shard_count,
                        skip_existing=skip_existing, strict=strict, progress=progress,
                        progress_every_s=progress_every_s, unit="pair")
