"""Checks ``train.py`` runs before it creates anything: required values set, training data named, an epoch that
has batches and fits ``trainer.val_check_interval``. Each failure is a ``SystemExit`` whose message names the key
to set and an example, instead of a traceback from deep inside NeMo or Lightning hours later.
"""
from __future__ import annotations

import math
from typing import List, Optional

from omegaconf import DictConfig, OmegaConf, open_dict

__all__ = ["missing_values", "DATA_KEYS", "settle_data_alternatives", "check_required_values",
           "training_batches_per_device", "check_training_batches"]


def missing_values(cfg: DictConfig) -> List[str]:
    """Dotted keys whose value is ``???``. Interpolations are not followed (``OmegaConf.missing_keys`` raises on
    one that points at a missing value, e.g. ``init_from_nemo_model.nest.path: ${nest_checkpoint}``)."""
    found = []

    def walk(node, key):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{key}.{k}" if key else str(k))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{key}[{i}]")
        elif node == "???":
            found.append(key)

    walk(OmegaConf.to_container(cfg, resolve=False), "")
    return found


# any one of these names the training data of a NeMo dataset config (manifests, tarred, lhotse)
DATA_KEYS = ("manifest_filepath", "input_cfg", "shar_path", "cuts_path")


def settle_data_alternatives(cfg: DictConfig) -> None:
    """A dataset's required manifest (``???``) is not needed when the data come another way (``shar_path``,
    ``input_cfg``, ``cuts_path``, e.g. lhotse Shar shards): set it to null in ``cfg``."""
    model = cfg.get("model", None)
    for name in ("train_ds", "validation_ds", "test_ds"):
        section = model.get(name, None) if model is not None else None
        if (isinstance(section, DictConfig) and OmegaConf.is_missing(section, "manifest_filepath")
                and any(section.get(key, None) for key in DATA_KEYS[1:])):
            with open_dict(section):
                section.manifest_filepath = None


def check_required_values(cfg: DictConfig) -> None:
    """Stop with the keys to set when a required value is missing or no training data is named; runs before
    anything is created (no ``nemo_experiments/``)."""
    example = ("\n  e.g. python train.py model.train_ds.manifest_filepath=train.json "
               "model.validation_ds.manifest_filepath=val.json\n  (python train.py with no arguments runs the demo)")
    settle_data_alternatives(cfg)
    missing = missing_values(cfg)
    if missing:  # a clear message instead of a traceback from deep inside NeMo or Lightning
        raise SystemExit("These config values must be set: " + ", ".join(missing) + example)
    if "train_ds" not in cfg.model:
        return  # a model that takes its data elsewhere
    train_ds = cfg.model.train_ds
    if train_ds is not None and "manifest_filepath" not in train_ds:
        return  # not a NeMo audio dataset section (e.g. SALM's data_path): the model checks its own data
    if train_ds is None or not any(train_ds.get(key, None) for key in DATA_KEYS):
        raise SystemExit("No training data: set model.train_ds.manifest_filepath (or model.train_ds.input_cfg for "
                         "lhotse)" + example)


def training_batches_per_device(trainer, loader) -> Optional[int]:
    """Training batches of one epoch on one device, as Lightning will count them; None when it cannot be known
    before training (a loader without a length)."""
    import torch.utils.data

    try:
        batches = len(loader)
    except TypeError:
        return None
    dataset, batch_size = getattr(loader, "dataset", None), getattr(loader, "batch_size", None)
    world = int(getattr(trainer, "world_size", 1) or 1)
    if world > 1 and not isinstance(dataset, torch.utils.data.IterableDataset):  # iterable ones split themselves
        if batch_size is None or not hasattr(dataset, "__len__"):
            return None
        per_device = math.ceil(len(dataset) / world)  # Lightning's DistributedSampler pads to equal shares
        batches = per_device // batch_size if loader.drop_last else math.ceil(per_device / batch_size)
    limit = trainer.limit_train_batches
    if isinstance(limit, int):
        return min(batches, limit)
    return int(batches * limit) if isinstance(limit, float) else batches


def check_training_batches(trainer, loader) -> None:
    """Stop before training, saying what to do, when an epoch has no training batch, or when
    ``trainer.val_check_interval`` is a number of steps larger than an epoch (NeMo's NEST config has 2500;
    Lightning would stop with "must be less than or equal to the number of the training batches")."""
    batches = training_batches_per_device(trainer, loader)
    if batches == 0:
        raise SystemExit(
            f"The training data gives no batch per epoch per device ({len(loader.dataset)} items, batch_size "
            f"{loader.batch_size}, drop_last={loader.drop_last}): lower model.train_ds.batch_size or set "
            "model.train_ds.drop_last=false"
        )
    interval = trainer.val_check_interval
    if not isinstance(interval, int) or isinstance(interval, bool) or trainer.check_val_every_n_epoch is None:
        return
    if batches is not None and interval > batches:
        raise SystemExit(
            f"trainer.val_check_interval={interval} (steps) is more than the {batches} training batches of an epoch "
            f"per device: add trainer.val_check_interval=1.0 (validate once per epoch) or a number <= {batches}"
        )
