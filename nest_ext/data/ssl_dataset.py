"""NEST datasets: NeMo's ``ssl_dataset`` classes with our noise sampling and bad-audio handling.

(Long file: it mirrors NeMo's ``nemo/collections/asr/data/ssl_dataset.py`` one to one -- its three datasets and
its ``get_*`` factories, which the model calls by those names -- so the two read side by side.)

Our classes subclass NeMo's (``nemo.collections.asr.data.ssl_dataset``), so items are NeMo's
``AudioNoiseItem`` and batches NeMo's ``AudioNoiseBatch``; collation and the config's ``batch_augmentor``
(``MultiSpeakerNoiseAugmentation``) are NeMo's own code. What changes:

- noise comes from :mod:`nest_ext.data.noise_sampling` (NeMo's emptiness defect fixed, one read per item);
- bad training audio (missing, corrupt, empty, too short) is found at start by a header check
  (``soundfile.info``, threaded) and at load time; each is reported by path and ``manifest:line``,
  counted in ``dataset.bad_audio`` and skipped -- or raises with ``on_bad_audio: error``;
- skip strategy, chosen so batches stay well-formed: bad entries found at start are removed from the
  collection (the dataset's length is the usable count); an item that fails at load time is replaced by
  the next usable entry (map-style) or dropped from the stream (tarred; lhotse drops it from the batch);
- a noise manifest is checked at start: unreadable entries are reported and left out; a manifest with
  no usable entry (or a noise manifest with no readable entry) fails at start, naming the file.

Config keys beyond NeMo's (read with ``config.get`` so the YAML stays equal to NeMo's):
``on_bad_audio`` (``skip``|``error``, default ``skip``), ``check_audio_at_start`` (default true),
``min_audio_len_secs`` and ``pad_audio_mode`` (NeMo's dataset arguments, NeMo's defaults).

Example (tensor shapes: ``audio``/``noise``/``noisy_audio`` [B, T], lengths [B])::

    >>> import numpy as np, soundfile as sf, tempfile, os, json
    >>> d = tempfile.mkdtemp()
    >>> sf.write(f'{d}/a.wav', 0.1 * np.random.randn(24000), 16000)
    >>> sf.write(f'{d}/n.wav', 0.1 * np.random.randn(48000), 16000)
    >>> _ = open(f'{d}/train.json', 'w').write(json.dumps({'audio_filepath': 'a.wav', 'duration': 1.5}) + '\\n')
    >>> _ = open(f'{d}/noise.json', 'w').write(json.dumps({'audio_filepath': 'n.wav', 'duration': 3.0}) + '\\n')
    >>> cfg = {'manifest_filepath': f'{d}/train.json', 'noise_manifest': f'{d}/noise.json',
    ...        'sample_rate': 16000, 'batch_size': 2, 'shuffle': False}
    >>> ds = get_audio_noise_dataset_from_config(cfg, global_rank=0, world_size=1)
    >>> batch = ds.collate_fn([ds[0], ds[0]])
    >>> tuple(batch.noisy_audio.shape), batch.audio_len.tolist()
    ((2, 24000), [24000, 24000])
"""
from __future__ import annotations

import copy
import logging
from contextlib import nullcontext
import io
import json
import os
from math import isclose
from typing import Any, Dict, List, Optional, Sequence, Union

import torch
from omegaconf import DictConfig, open_dict

from nemo.collections.asr.data import audio_to_text_dataset
from nemo.collections.asr.data import ssl_dataset as nemo_ssl
from nemo.collections.asr.data.ssl_dataset import AudioNoiseBatch, AudioNoiseItem, pad_audio
from nemo.collections.asr.parts.preprocessing.perturb import process_augmentations
from nemo.collections.asr.parts.preprocessing.segment import AudioSegment
from nemo.collections.common.data.dataset import ConcatDataset
from nemo.collections.common.parts.preprocessing.manifest import get_full_path
from nemo.core.classes import Serialization

from nest_ext.data.audio_io import BadAudioError
from nest_ext.data.bad_audio import BadAudioReport, ManifestLines, check_audio_files, check_audio_info, get_on_bad_audio
from nest_ext.data.noise_sampling import prime_audio_info, sample_noise

logger = logging.getLogger(__name__)

__all__ = [
    "AudioNoiseBatch",
    "AudioNoiseDataset",
    "AudioNoiseItem",
    "LhotseAudioNoiseDataset",
    "TarredAudioNoiseDataset",
    "get_audio_noise_dataset",
    "get_audio_noise_dataset_from_config",
    "get_collate_fn",
    "get_concat_audio_noise_dataset",
    "get_concat_tarred_audio_noise_dataset",
    "get_tarred_audio_noise_dataset",
    "load_noise_manifest",
]

# Load-time failures: how many following entries an item may try before giving up.
MAX_REPLACEMENTS = 100


def _split_paths(value) -> List[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [v for v in value.split(",") if v.strip()]
    return [str(v) for v in value]


def load_noise_manifest(
    noise_manifest: Union[str, Sequence[str], None], on_bad_audio: str = "skip", check_audio: bool = True
) -> List[Dict[str, Any]]:
    """Read one or several noise manifests (NeMo's ``load_noise_manifest``) and check their audio.

    Entries keep NeMo's order and fields, with ``audio_filepath`` resolved against the manifest's folder.
    Unreadable or empty noise files are reported by path and ``manifest:line`` and left out (or raise
    with ``on_bad_audio='error'``); their headers go to the noise-sampling cache.

    Raises:
        FileNotFoundError: a noise manifest does not exist.
        ValueError: the noise manifests hold no readable entry (the message names them).
    """
    manifests = _split_paths(noise_manifest)
    if not manifests:
        return []
    report = BadAudioReport(on_bad_audio, name=f"noise manifest {', '.join(manifests)}")
    entries, wheres = [], []
    for manifest in manifests:
        if not os.path.isfile(manifest):
            raise FileNotFoundError(f"noise manifest {manifest} does not exist")
        with open(manifest, "r", encoding="utf-8") as f:
            for lineno, line in enumerate(f, start=1):
                line = line.strip()
                if not line:
                    continue
                where = f"{manifest}:{lineno}"
                try:
                    entry = json.loads(line)
                    entry["audio_filepath"] = get_full_path(entry["audio_filepath"], manifest)
                except (json.JSONDecodeError, KeyError, TypeError) as e:
                    report.add(manifest, f"invalid noise manifest line ({type(e).__name__}: {e})", where, "start")
                    continue
                entries.append(entry)
                wheres.append(where)
    if check_audio and entries:
        infos = check_audio_files(e["audio_filepath"] for e in entries)
        kept = []
        for entry, where in zip(entries, wheres):
            info = infos[entry["audio_filepath"]]
            reason = info if isinstance(info, str) else check_audio_info(info, entry.get("offset"), None)
            if reason is not None:
                report.add(entry["audio_filepath"], reason, where, "start check")
                continue
            prime_audio_info(entry["audio_filepath"], info)
            kept.append(entry)
        entries = kept
    if not entries:
        raise ValueError(
            f"noise manifest {', '.join(manifests)} has no readable entry ({report.summary()}); "
            f"fix it or set noise_manifest to null"
        )
    if report.count:
        logger.warning(report.summary())
    return entries


def _paths_of(audio_file) -> List[str]:
    return [audio_file] if isinstance(audio_file, str) else list(audio_file)


class _BadAudioMixin:
    """Construction, start-up check and load-time reporting shared by the manifest and tarred datasets."""

    checks_entries_at_start = False  # header-check every manifest entry when built (manifest datasets)

    def __init__(
        self,
        noise_manifest: str | None = None,
        batch_augmentor: Any | None = None,
        min_audio_len_secs: float = 1.0,
        pad_audio_mode: str = "repeat",
        on_bad_audio: str = "skip",
        check_audio_at_start: bool = True,
        **kwargs,
    ):
        """NeMo's constructor (``kwargs``: its dataset arguments) without its noise manifest, which it reads
        unchecked; then our bad-audio report and the noise manifest, loaded and checked."""
        super().__init__(
            noise_manifest=None,
            batch_augmentor=batch_augmentor,
            min_audio_len_secs=min_audio_len_secs,
            pad_audio_mode=pad_audio_mode,
            **kwargs,
        )
        manifest = kwargs.get("manifest_filepath")
        # Sharded manifests (_OP_/_CL_) are expanded per rank inside NeMo; without that list the line map
        # falls back to the entry number.
        self._lines = ManifestLines(None if kwargs.get("shard_manifests") else _split_paths(manifest))
        self._manifest_files = self._lines.files or _split_paths(manifest)
        self.on_bad_audio = on_bad_audio
        self.bad_audio = BadAudioReport(on_bad_audio, name=", ".join(self._lines.files))
        self.noise_manifest = noise_manifest
        self.noise_data = load_noise_manifest(noise_manifest, on_bad_audio, check_audio=check_audio_at_start)
        if check_audio_at_start and self.checks_entries_at_start:
            self._check_collection_at_start(kwargs.get("min_duration"))
        self._fail_if_empty()

    def _where(self, entry) -> str:
        return self._lines.where(getattr(entry, "id", None))

    def _check_collection_at_start(self, min_duration: Optional[float]):
        """Header-check every entry; drop (and report) the missing, corrupt, empty and too-short ones."""
        coll = self.manifest_processor.collection
        infos = check_audio_files(p for e in coll for p in _paths_of(e.audio_file))
        keep = []
        for entry in coll:
            reason = None
            for p in _paths_of(entry.audio_file):
                info = infos[p]
                reason = info if isinstance(info, str) else check_audio_info(info, entry.offset, min_duration)
                if reason is not None:
                    break
            if reason is None:
                keep.append(entry)
            else:
                self.bad_audio.add(entry.audio_file, reason, self._where(entry), "start check")
        if len(keep) != len(coll):
            coll[:] = keep
            logger.warning(self.bad_audio.summary())

    def _fail_if_empty(self):
        if len(self.manifest_processor.collection) == 0:
            raise ValueError(
                f"manifest {', '.join(self._manifest_files)} has no usable entry "
                f"({self.bad_audio.summary()}; entries outside min_duration/max_duration are filtered too)"
            )

    def _load_audio(self, source, entry, name=None) -> torch.Tensor:
        """NeMo's ``featurizer.process`` split in two, so that only a failing *read* counts as bad audio
        (an augmentor error is not the audio file's fault and propagates)."""
        offset = entry.offset if entry.offset is not None else 0
        try:
            segment = AudioSegment.from_file(
                source,
                target_sr=self.featurizer.sample_rate,
                int_values=self.featurizer.int_values,
                offset=offset,
                duration=entry.duration,
                trim=self.trim,
                orig_sr=entry.orig_sr,
                channel_selector=getattr(self, "channel_selector", None),
            )
        except Exception as e:
            raise BadAudioError(name or entry.audio_file, f"cannot read ({type(e).__name__}: {e})", self._where(entry))
        if segment.num_samples == 0:
            raise BadAudioError(name or entry.audio_file, "loaded audio has zero length", self._where(entry))
        return self.featurizer.process_segment(segment)

    def _make_item(self, audio: torch.Tensor, sample_id) -> AudioNoiseItem:
        # NeMo's item: pad short audio to min_audio_len_secs, then one noise segment of the audio's length.
        min_len = int(self.min_audio_len_secs * self.featurizer.sample_rate)
        audio = pad_audio(audio, min_len, self.pad_audio_mode)
        audio_len = torch.tensor(audio.shape[0]).long()
        noise, noise_len = sample_noise(self.noise_data, self.featurizer.sample_rate, audio_len.item())
        return AudioNoiseItem(
            sample_id=str(sample_id), audio=audio, audio_len=audio_len, noise=noise, noise_len=noise_len
        )


class AudioNoiseDataset(_BadAudioMixin, nemo_ssl.AudioNoiseDataset):
    """NeMo's ``AudioNoiseDataset`` (manifest-based NEST data) with our noise sampling and bad-audio handling.

    Args:
        noise_manifest: noise manifest path(s) (comma-separated string or list), or None for no noise.
        batch_augmentor: applied in ``collate_fn`` (e.g. NeMo's ``MultiSpeakerNoiseAugmentation``).
        min_audio_len_secs, pad_audio_mode: as NeMo (short audio repeated/zero-padded to this length).
        on_bad_audio: ``'skip'`` or ``'error'``.
        check_audio_at_start: header-check all training and noise files when built.
        **kwargs: NeMo's ``AudioToCharDataset`` arguments (``manifest_filepath``, ``sample_rate``, ...).

    Items: ``AudioNoiseItem`` with ``audio`` [T], ``noise`` [T], scalar lengths; ``collate_fn`` gives an
    ``AudioNoiseBatch`` with ``audio``/``noise``/``noisy_audio`` [B, T_max] and lengths [B].
    """

    checks_entries_at_start = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._bad_indices = set()

    def __getitem__(self, index) -> AudioNoiseItem:
        n = len(self.manifest_processor.collection)
        candidate = index
        for _ in range(min(n, MAX_REPLACEMENTS + 1)):
            if candidate not in self._bad_indices:
                entry = self.manifest_processor.collection[candidate]
                try:
                    audio = self._load_audio(entry.audio_file, entry)
                except BadAudioError as e:
                    self._bad_indices.add(candidate)
                    self.bad_audio.add(e.path, e.reason, e.where, "load")  # raises under on_bad_audio=error
                else:
                    return self._make_item(audio, candidate)
            candidate = (candidate + 1) % n  # replacement: the next usable entry keeps the batch full
        raise RuntimeError(
            f"item {index} and the {MAX_REPLACEMENTS} entries after it in {', '.join(self._manifest_files)} "
            f"all failed to load ({self.bad_audio.summary()})"
        )


class TarredAudioNoiseDataset(_BadAudioMixin, nemo_ssl.TarredAudioNoiseDataset):
    """NeMo's ``TarredAudioNoiseDataset`` (webdataset tar shards; NeMo's brace and ``_OP_``/``_CL_`` shard
    patterns) with our noise sampling. A tar member that cannot be decoded is reported by member name and
    manifest line and dropped from the stream (``on_bad_audio='error'`` raises). Items as
    :class:`AudioNoiseDataset`.
    """

    def _build_sample(self, tup):
        """NeMo's member-to-item step, with our noise; None for a member whose audio cannot be read."""
        audio_bytes, audio_filename, offset_id = tup
        file_id, _ = os.path.splitext(os.path.basename(audio_filename))
        manifest_idx = self.manifest_processor.collection.mapping[file_id][offset_id]
        entry = self.manifest_processor.collection[manifest_idx]
        try:
            with io.BytesIO(audio_bytes) as stream:
                audio = self._load_audio(stream, entry, name=f"tar member {entry.audio_file}")
        except BadAudioError as e:
            self.bad_audio.add(e.path, e.reason, e.where, "load")  # raises under on_bad_audio=error
            return None
        return self._make_item(audio, manifest_idx)

    def __iter__(self):
        return (item for item in self._dataset if item is not None)


class LhotseAudioNoiseDataset(nemo_ssl.LhotseAudioNoiseDataset):
    """NeMo's lhotse NEST dataset (``use_lhotse: true``): cuts -> ``AudioNoiseBatch`` with our noise.

    Cuts whose audio fails to load are dropped from the batch by lhotse's fault-tolerant loader and
    reported here by cut id and source (``on_bad_audio='error'`` raises instead).

    Args:
        noise_manifest: noise manifest path(s) or None.
        batch_augmentor_cfg: config of the batch augmentor (``_target_`` ...), or None.
        on_bad_audio: ``'skip'`` or ``'error'``.
    """

    def __init__(self, noise_manifest: str | None = None, batch_augmentor_cfg=None, on_bad_audio: str = "skip",
                 check_audio_at_start: bool = True):
        from lhotse.dataset import AudioSamples

        super().__init__(noise_manifest=None, batch_augmentor_cfg=batch_augmentor_cfg)
        self.noise_manifest = noise_manifest
        self.noise_data = load_noise_manifest(noise_manifest, on_bad_audio, check_audio=check_audio_at_start)
        self.on_bad_audio = on_bad_audio
        self.bad_audio = BadAudioReport(on_bad_audio, name="lhotse cuts")
        self.load_audio = AudioSamples(fault_tolerant=True)

    def __getitem__(self, cuts) -> AudioNoiseBatch:
        audios, audio_lens, loaded = self.load_audio(cuts)
        if len(loaded) != len(cuts):
            ok = {c.id for c in loaded}
            for c in cuts:
                if c.id not in ok:
                    src = getattr(getattr(c, "recording", None), "sources", None)
                    path = src[0].source if src else c.id
                    self.bad_audio.add(path, f"cut {c.id}: audio failed to load", None, "load")
        if len(loaded) == 0:
            raise RuntimeError(f"every cut of a batch failed to load ({self.bad_audio.summary()})")
        if len(self.noise_data) > 0:
            noises = [sample_noise(self.noise_data, c.sampling_rate, c.num_samples) for c in loaded]
            noise = torch.stack([n for n, _ in noises]).float()
            noise_len = torch.stack([l for _, l in noises]).long()
        else:
            noise, noise_len = torch.zeros_like(audios), audio_lens
        batch = AudioNoiseBatch(audio=audios, audio_len=audio_lens, noise=noise, noise_len=noise_len)
        if self.batch_augmentor is not None:
            return self.batch_augmentor(batch)
        batch.noisy_audio = batch.audio + batch.noise
        batch.noisy_audio_len = batch.audio_len
        return batch


def get_collate_fn(dataset):
    """The collate function of ``dataset``, looked up as NeMo's NEST model does (plain, concat of datasets,
    or concat of chained datasets)."""
    if hasattr(dataset, "collate_fn"):
        return dataset.collate_fn
    if hasattr(dataset.datasets[0], "collate_fn"):
        return dataset.datasets[0].collate_fn
    return dataset.datasets[0].datasets[0].collate_fn


def _common_kwargs(config, augmentor, batch_augmentor) -> Dict[str, Any]:
    """Constructor arguments shared by the manifest and tarred datasets, from a ``train_ds``-style config."""
    return dict(
        noise_manifest=config.get("noise_manifest", None),
        batch_augmentor=batch_augmentor,
        min_audio_len_secs=config.get("min_audio_len_secs", 1.0),
        pad_audio_mode=config.get("pad_audio_mode", "repeat"),
        on_bad_audio=get_on_bad_audio(config),
        check_audio_at_start=bool(config.get("check_audio_at_start", True)),
        labels=config.get("labels", None),
        sample_rate=config["sample_rate"],
        int_values=config.get("int_values", False),
        augmentor=augmentor,
        max_duration=config.get("max_duration", None),
        min_duration=config.get("min_duration", None),
        trim=config.get("trim_silence", False),
    )


def get_audio_noise_dataset(config, augmentor: Any = None, batch_augmentor: Any = None) -> AudioNoiseDataset:
    """One manifest-based :class:`AudioNoiseDataset` from a dataset config."""
    return AudioNoiseDataset(
        manifest_filepath=config["manifest_filepath"],
        channel_selector=config.get("channel_selector", None),
        **_common_kwargs(config, augmentor, batch_augmentor),
    )


def _concat(datasets, config, global_rank, world_size) -> ConcatDataset:
    return ConcatDataset(
        datasets,
        sampling_technique=config.get("concat_sampling_technique", "temperature"),
        sampling_temperature=config.get("concat_sampling_temperature", 5),
        sampling_scale=config.get("concat_sampling_scale", 1),
        sampling_probabilities=config.get("concat_sampling_probabilities", None),
        shuffle=config.get("concat_shuffle", True),
        seed=config.get("concat_sampling_seed", None),
        global_rank=global_rank,
        world_size=world_size,
    )


def get_concat_audio_noise_dataset(
    config, global_rank: int, world_size: int, augmentor: Any = None, batch_augmentor: Any = None
) -> ConcatDataset:
    """One :class:`AudioNoiseDataset` per manifest, sampled by NeMo's ``ConcatDataset``.

    Unlike NeMo 3.0.0, the batch augmentor reaches the datasets (NeMo drops it here, so concat datasets
    train without augmentation)."""
    manifests = config["manifest_filepath"]
    if len(manifests) == 1 and not isinstance(manifests[0], str):
        manifests = manifests[0]  # validation concat datasets arrive wrapped once more
    datasets = []
    for manifest in manifests:
        conf = copy.deepcopy(config)
        conf["manifest_filepath"] = manifest
        datasets.append(get_audio_noise_dataset(conf, augmentor=augmentor, batch_augmentor=batch_augmentor))
    return _concat(datasets, config, global_rank, world_size)


def get_tarred_audio_noise_dataset(config, shuffle_n, global_rank, world_size, augmentor, batch_augmentor=None):
    """Tarred datasets, one per bucket, chained as NeMo does (``bucketing_weights``, bucketing strategy)."""
    tar_lists = audio_to_text_dataset.convert_to_config_list(config["tarred_audio_filepaths"])
    manifest_lists = audio_to_text_dataset.convert_to_config_list(config["manifest_filepath"])
    weights = config.get("bucketing_weights", None)
    if weights and any(not isinstance(w, int) or w <= 0 for w in weights):
        raise ValueError("bucket weights must be positive integers")
    if len(manifest_lists) != len(tar_lists):
        raise ValueError(
            f"manifest_filepaths (length={len(manifest_lists)}) and tarred_audio_filepaths "
            f"(length={len(tar_lists)}) need to have the same number of buckets."
        )
    datasets = []
    for bucket, (tars, manifest) in enumerate(zip(tar_lists, manifest_lists)):
        tars = tars[0] if len(tars) == 1 else tars
        manifest = manifest[0] if len(manifest) == 1 else manifest
        sharded = "_OP_" in manifest and "_CL_" in manifest
        logger.info(f"Loading TarredAudioNoiseDataset from {tars} and {manifest}, shard={sharded}")
        dataset = TarredAudioNoiseDataset(
            audio_tar_filepaths=tars,
            manifest_filepath=manifest,
            shuffle_n=shuffle_n,
            shard_strategy=config.get("tarred_shard_strategy", "scatter"),
            shard_manifests=sharded,
            global_rank=global_rank,
            world_size=world_size,
            **_common_kwargs(config, augmentor, batch_augmentor),
        )
        datasets.extend([dataset] * (weights[bucket] if weights else 1))
    return audio_to_text_dataset.get_chain_dataset(datasets=datasets, ds_config=config, rank=global_rank)


def get_concat_tarred_audio_noise_dataset(config, shuffle_n, global_rank, world_size, augmentor,
                                          batch_augmentor=None):
    """One tarred dataset per (tars, manifest) pair, sampled by NeMo's ``ConcatDataset``."""
    datasets = []
    for tars, manifest in zip(config["tarred_audio_filepaths"], config["manifest_filepath"]):
        conf = copy.deepcopy(config)
        conf["manifest_filepath"] = manifest
        conf["tarred_audio_filepaths"] = tars
        datasets.append(
            get_tarred_audio_noise_dataset(conf, shuffle_n, global_rank, world_size, augmentor, batch_augmentor)
        )
    return _concat(datasets, config, global_rank, world_size)


def _prepare_concat_config(config):
    """NeMo's defaults for concat sampling (round-robin; uniform probabilities for 'random')."""
    if config.get("concat_sampling_technique", None) is None:
        logger.warning("Concat dataset requires `concat_sampling_technique`; using round-robin.")
        with _editable(config):
            config["concat_sampling_technique"] = "round-robin"
    if config["concat_sampling_technique"] == "random":
        if "concat_sampling_probabilities" not in config:
            logger.warning("Concat dataset requires `concat_sampling_probabilities`; using uniform weights.")
            n = len(config["manifest_filepath"])
            with _editable(config):
                config["concat_sampling_probabilities"] = [1 / n] * n
        elif not isclose(sum(config["concat_sampling_probabilities"]), 1, abs_tol=1e-6):
            raise ValueError(f"`concat_sampling_probabilities` need to sum to 1 with 1e-6 tolerance. Config: {config}")


def _editable(config):
    # a struct-mode DictConfig refuses new keys unless opened; a plain dict needs nothing
    return open_dict(config) if isinstance(config, DictConfig) else nullcontext()


def get_audio_noise_dataset_from_config(config, global_rank: int, world_size: int):
    """Build the NEST dataset a ``train_ds``/``validation_ds`` config describes (NeMo's signature).

    Same dispatch as NeMo: ``augmentor`` -> ``process_augmentations``; ``batch_augmentor`` -> instantiated
    from its ``_target_``; ``is_tarred`` -> :class:`TarredAudioNoiseDataset` (chained per bucket);
    ``is_concat`` -> NeMo's ``ConcatDataset``; otherwise :class:`AudioNoiseDataset`. Returns None (with
    NeMo's warning) when ``manifest_filepath`` (or ``tarred_audio_filepaths``) is None. ``use_lhotse`` is
    handled by the model with :class:`LhotseAudioNoiseDataset`.
    """
    augmentor = None
    if "augmentor" in config:
        augmentor = process_augmentations(config["augmentor"], global_rank=global_rank, world_size=world_size)
    batch_augmentor = None
    if "batch_augmentor" in config and config["batch_augmentor"] is not None:
        batch_augmentor = Serialization.from_config_dict(config["batch_augmentor"])

    is_concat = config.get("is_concat", False)
    if is_concat:
        _prepare_concat_config(config)

    if config.get("is_tarred", False):
        if config.get("tarred_audio_filepaths", None) is None or config.get("manifest_filepath", None) is None:
            logger.warning(
                "Could not load dataset as `manifest_filepath` was None or `tarred_audio_filepaths` is None. "
                f"Provided config : {config}"
            )
            return None
        shuffle_n = config.get("shuffle_n", 4 * config["batch_size"]) if config["shuffle"] else 0
        build = get_concat_tarred_audio_noise_dataset if is_concat else get_tarred_audio_noise_dataset
        return build(config, shuffle_n, global_rank, world_size, augmentor, batch_augmentor)

    if config.get("manifest_filepath", None) is None:
        logger.warning(f"Could not load dataset as `manifest_filepath` was None. Provided config : {config}")
        return None
    if is_concat:
        return get_concat_audio_noise_dataset(config, global_rank, world_size, augmentor, batch_augmentor)
    return get_audio_noise_dataset(config, augmentor=augmentor, batch_augmentor=batch_augmentor)
