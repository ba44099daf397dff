"""One entry point for separation data loaders: manifests, NeMo-style tar shards, or NeMo's lhotse path.

:func:`get_separation_dataloader` reads a ``train_ds``/``validation_ds``/``test_ds`` config and picks, as NeMo's
models do:

* ``use_lhotse: true`` -> NeMo's ``get_lhotse_dataloader_from_config`` with
  :class:`~nest_ext.data.lhotse_separation_dataset.LhotseSeparationDataset` (``shar_path`` or ``cuts_path``);
* ``is_tarred: true`` -> :class:`~nest_ext.data.tarred_separation_dataset.TarredSeparationDataset`
  (``manifest_filepath`` = the tarred manifest, ``tarred_audio_filepaths``);
* otherwise -> :class:`~nest_ext.data.separation_dataset.SeparationDataset` on ``manifest_filepath``, split over
  DDP ranks by Lightning's DistributedSampler.

Config keys shared by all three: ``sample_rate``, ``num_spks``, ``segment_seconds``, ``dynamic_mixing``,
``speed_perturb``, ``speed_factors``, ``seed``, ``on_bad_audio`` and the dynamic-mixing keys (``source_pool``,
``source_pool_speaker_key``, ``speaker_id_regex``, ``dynamic_mixing_speakers``, ``dynamic_mixing_buffer``,
``dynamic_mixing_levels``). Returns None (with a warning) when the config names no data.

Example::

    >>> get_separation_dataloader({"manifest_filepath": None, "sample_rate": 8000, "batch_size": 1}) is None
    True
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any, Dict, Optional

import torch

from nest_ext.data.bad_audio import get_on_bad_audio
from nest_ext.data.separation_dataset import DEFAULT_SPEED_FACTORS, config_dict, get_separation_dataset_from_config
from nest_ext.parts.dataloader_options import dataloader_kwargs

__all__ = ["MIXING_KEYS", "get_separation_dataloader"]

logger = logging.getLogger(__name__)

MIXING_KEYS = ("source_pool", "source_pool_speaker_key", "speaker_id_regex", "dynamic_mixing_speakers",
               "dynamic_mixing_buffer", "dynamic_mixing_levels")


def _common(cfg: Dict[str, Any], global_rank: int, world_size: int) -> Dict[str, Any]:
    """Constructor arguments the tarred and lhotse datasets share."""
    return dict(
        sample_rate=cfg["sample_rate"], num_spks=cfg.get("num_spks", 2), segment_seconds=cfg.get("segment_seconds"),
        dynamic_mixing=bool(cfg.get("dynamic_mixing", False)), speed_perturb=bool(cfg.get("speed_perturb", False)),
        speed_factors=cfg.get("speed_factors") or DEFAULT_SPEED_FACTORS, seed=cfg.get("seed", 0) or 0,
        on_bad_audio=get_on_bad_audio(cfg), global_rank=global_rank, world_size=world_size,
        **{k: cfg.get(k) for k in MIXING_KEYS},
    )


def _lhotse_loader(cfg: Dict[str, Any], global_rank: int, world_size: int):
    from omegaconf import OmegaConf

    from nemo.collections.common.data.lhotse import get_lhotse_dataloader_from_config
    from nemo.collections.common.data.lhotse.dataloader import LhotseDataLoadingConfig

    from nest_ext.data.lhotse_separation_dataset import LhotseSeparationDataset, resolve_shar_path

    dataset = LhotseSeparationDataset(**_common(cfg, global_rank, world_size))
    nemo_cfg = {k: v for k, v in cfg.items() if k in {f.name for f in dataclasses.fields(LhotseDataLoadingConfig)}}
    nemo_cfg["shar_path"] = resolve_shar_path(cfg.get("shar_path"), cfg.get("tarred_shard_strategy") or "scatter",
                                              global_rank, world_size)
    if nemo_cfg.get("min_duration") is None:
        nemo_cfg.pop("min_duration", None)  # NeMo's default (no limit)
    if nemo_cfg.get("max_duration") is None:
        nemo_cfg.pop("max_duration", None)
    return get_lhotse_dataloader_from_config(OmegaConf.create(nemo_cfg), global_rank=global_rank,
                                             world_size=world_size, dataset=dataset)


def get_separation_dataloader(config: Any, global_rank: int = 0, world_size: int = 1
                              ) -> Optional[torch.utils.data.DataLoader]:
    """The DataLoader a separation dataset config asks for (see the module docstring), or None without data."""
    cfg = config_dict(config)
    if cfg.get("use_lhotse"):
        if cfg.get("shar_path") is None and cfg.get("cuts_path") is None:
            raise ValueError("use_lhotse needs shar_path (lhotse Shar, e.g. pack_shards --format lhotse-shar) or "
                             "cuts_path (a lhotse CutSet manifest)")
        return _lhotse_loader(cfg, global_rank, world_size)
    if cfg.get("is_tarred"):
        if cfg.get("manifest_filepath") is None or cfg.get("tarred_audio_filepaths") is None:
            raise ValueError("is_tarred needs manifest_filepath (DIR/tarred_audio_manifest.json) and "
                             "tarred_audio_filepaths (DIR/audio__OP_0..N-1_CL_.tar)")
        from nest_ext.data.tarred_separation_dataset import DEFAULT_SHUFFLE_N, TarredSeparationDataset

        dataset = TarredSeparationDataset(
            manifest_filepath=cfg["manifest_filepath"], tarred_audio_filepaths=cfg["tarred_audio_filepaths"],
            min_duration=cfg.get("min_duration"), max_duration=cfg.get("max_duration"),
            shuffle=bool(cfg.get("shuffle", True)), shuffle_n=cfg.get("shuffle_n") or DEFAULT_SHUFFLE_N,
            shard_strategy=cfg.get("tarred_shard_strategy") or "scatter", **_common(cfg, global_rank, world_size))
        shuffle = False  # the dataset shuffles shards and examples itself
    else:
        if cfg.get("manifest_filepath") is None:
            logger.warning("No manifest_filepath in %s; dataloader not set up", cfg)
            return None
        dataset = get_separation_dataset_from_config(cfg, global_rank=global_rank, world_size=world_size)
        shuffle = bool(cfg.get("shuffle", False))
    return torch.utils.data.DataLoader(dataset=dataset, batch_size=cfg["batch_size"], collate_fn=dataset.collate_fn,
                                       drop_last=cfg.get("drop_last", False), shuffle=shuffle, **dataloader_kwargs(cfg))
