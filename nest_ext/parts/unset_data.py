"""Recipe configs mark the manifests a run needs as ``???`` (so ``train.py`` names them before it starts); a model
built from such a config for inference, conversion or counting has no data, as with ``null``.

NeMo's ``ModelPT`` cannot hold a ``???`` value (its ``cfg`` setter converts the whole config to objects), so
models pass their config through :func:`without_unset_data` first.

Example::

    >>> from omegaconf import OmegaConf
    >>> cfg = OmegaConf.create({"train_ds": {"manifest_filepath": "???", "batch_size": 2}, "num_spks": 2})
    >>> without_unset_data(cfg).train_ds
    {'manifest_filepath': None, 'batch_size': 2}
    >>> OmegaConf.is_missing(cfg.train_ds, "manifest_filepath")  # the given config is unchanged
    True
"""
from __future__ import annotations

import copy

from omegaconf import DictConfig, OmegaConf, open_dict

DATASETS = ("train_ds", "validation_ds", "test_ds")


def without_unset_data(cfg: DictConfig) -> DictConfig:
    """``cfg`` with each dataset's ``manifest_filepath`` that is ``???`` set to None (a copy; ``cfg`` itself when
    there is none)."""
    unset = [name for name in DATASETS if isinstance(cfg.get(name, None), DictConfig)
             and OmegaConf.is_missing(cfg[name], "manifest_filepath")]
    if not unset:
        return cfg
    new = copy.deepcopy(cfg)
    with open_dict(new):
        for name in unset:
            new[name].manifest_filepath = None
    return new
