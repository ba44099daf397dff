"""nest_ext targets in NeMo configs: NeMo's allow-list, and the map to the NeMo classes ours stand for.

NeMo 3.0 builds ``_target_``s only under an allow-list of prefixes (``nemo.collections.``, ``torch.nn.``, ...),
so a config naming ``nest_ext.modules.ConformerEncoder`` is refused until :func:`allow_nest_ext_targets` has
put ``nest_ext.`` on that list (our models call it at import). NeMo's own check that the class is a
module/model/dataset subclass still applies; classes that are none of those (Lightning callbacks in
``trainer.callbacks``) must be allowed one by one, by exact name.

Portable ``.nemo`` files: our encoder, MLM losses and NEST/CTC model classes have NeMo's constructor and
state dict, so a model saves NeMo's class names (:func:`portable_config`) and stock NeMo restores the file
with no nest_ext installed; our models put nest_ext's parts back when they build from such a config
(:func:`with_our_parts`). A config whose classes have no NeMo equivalent (MossFormer2) keeps its nest_ext
targets and gets a ``requires`` key saying which package it needs (NeMo itself refuses it with
"Instantiation of unsafe target 'nest_ext....' is blocked").

Example::

    >>> from omegaconf import OmegaConf
    >>> cfg = OmegaConf.create({"target": "nest_ext.models.EncDecCTCModelBPE",
    ...                         "encoder": {"_target_": "nest_ext.modules.ConformerEncoder", "d_model": 8}})
    >>> saved = portable_config(cfg)
    >>> saved.target, saved.encoder._target_, "requires" in saved
    ('nemo.collections.asr.models.EncDecCTCModelBPE', 'nemo.collections.asr.modules.ConformerEncoder', False)
    >>> with_our_parts(saved).encoder._target_
    'nest_ext.modules.ConformerEncoder'
"""
from __future__ import annotations

import copy
from typing import Dict, List, Tuple

from omegaconf import DictConfig, ListConfig, open_dict

NEMO_CONFORMER = "nemo.collections.asr.modules.ConformerEncoder"
OUR_CONFORMER = "nest_ext.modules.ConformerEncoder"

# NeMo class -> (our class built in its place, every other spelling of ours); same constructor and state dict,
# proven in tests/test_conformer.py, test_mlm_loss.py and test_ssl_model.py. Model classes subclass NeMo's.
_EQUIVALENTS = {
    NEMO_CONFORMER: (OUR_CONFORMER, ("nest_ext.modules.conformer.ConformerEncoder",
                                     "nest_ext.modules.conformer.encoder.ConformerEncoder")),
    "nemo.collections.asr.losses.MultiMLMLoss": ("nest_ext.losses.MultiMLMLoss", ("nest_ext.losses.mlm.MultiMLMLoss",)),
    "nemo.collections.asr.losses.MLMLoss": ("nest_ext.losses.MLMLoss", ("nest_ext.losses.mlm.MLMLoss",)),
    "nemo.collections.asr.modules.RandomProjectionVectorQuantizer": (
        "nest_ext.modules.RandomProjectionVectorQuantizer",
        ("nest_ext.modules.random_projection_quantizer.RandomProjectionVectorQuantizer",)),
    "nemo.collections.asr.models.ssl_models.EncDecDenoiseMaskedTokenPredModel": (
        "nest_ext.models.EncDecDenoiseMaskedTokenPredModel", ("nest_ext.models.ssl_models.EncDecDenoiseMaskedTokenPredModel",)),
    "nemo.collections.asr.models.EncDecCTCModelBPE": (
        "nest_ext.models.EncDecCTCModelBPE", ("nest_ext.models.ctc_models.EncDecCTCModelBPE",)),
}
# every spelling of a nest_ext class -> the NeMo class it stands for (what a saved config names)
NEMO_EQUIVALENT: Dict[str, str] = {
    ours: nemo for nemo, (main, others) in _EQUIVALENTS.items() for ours in (main, *others)
}
# NeMo's parts (every spelling NeMo writes) -> ours, swapped in when our models build. Model classes are not
# here: the class that restores or trains is the caller's choice.
OUR_PARTS: Dict[str, str] = {
    NEMO_CONFORMER: OUR_CONFORMER,
    "nemo.collections.asr.modules.conformer_encoder.ConformerEncoder": OUR_CONFORMER,
    "nemo.collections.asr.losses.MultiMLMLoss": "nest_ext.losses.MultiMLMLoss",
    "nemo.collections.asr.losses.ssl_losses.mlm.MultiMLMLoss": "nest_ext.losses.MultiMLMLoss",
    "nemo.collections.asr.losses.MLMLoss": "nest_ext.losses.MLMLoss",
    "nemo.collections.asr.losses.ssl_losses.mlm.MLMLoss": "nest_ext.losses.MLMLoss",
    # same tokens bit for bit (tests/test_quantizer.py), without NeMo's [frames x classes x dim] float64 tensor
    "nemo.collections.asr.modules.RandomProjectionVectorQuantizer": "nest_ext.modules.RandomProjectionVectorQuantizer",
    "nemo.collections.asr.modules.ssl_modules.quantizers.RandomProjectionVectorQuantizer":
        "nest_ext.modules.RandomProjectionVectorQuantizer",
}
REQUIRES_KEY = "requires"
PIP_NAME = "nest_ext"


def allow_nest_ext_targets(*exact_classes) -> None:
    """Allow ``nest_ext.*`` modules/models/datasets, and each class in ``exact_classes`` by its exact path."""
    from nemo.core.classes import common

    if "nest_ext." not in common.ALLOWED_TARGET_PREFIXES:
        common.ALLOWED_TARGET_PREFIXES.append("nest_ext.")
    for cls in exact_classes:
        common.ALLOWED_EXACT_CLASS_TARGETS.add(f"{cls.__module__}.{cls.__qualname__}")


def _target_nodes(node, path=""):
    """(config node, key, dotted path) of every ``_target_`` and of the model's top-level ``target``."""
    if isinstance(node, (DictConfig, ListConfig)) and (node._is_none() or node._is_missing()):
        return
    if isinstance(node, DictConfig):
        for key in node.keys():
            here = f"{path}.{key}" if path else str(key)
            if key == "_target_" or (key == "target" and not path):
                if isinstance(node._get_node(key)._value(), str):
                    yield node, key, here
            else:
                yield from _target_nodes(node._get_node(key), here)
    elif isinstance(node, ListConfig):
        for i, item in enumerate(node):
            yield from _target_nodes(item, f"{path}[{i}]")


def _mapped(cfg: DictConfig, mapping: Dict[str, str]) -> DictConfig:
    new = copy.deepcopy(cfg)
    with open_dict(new):
        for node, key, _ in list(_target_nodes(new)):
            node[key] = mapping.get(node[key], node[key])
    return new


def nest_ext_targets(cfg: DictConfig) -> List[Tuple[str, str]]:
    """``(key, target)`` of every target in ``cfg`` that names a nest_ext class."""
    return [(path, node[key]) for node, key, path in _target_nodes(cfg) if node[key].startswith("nest_ext.")]


def to_nemo_targets(cfg: DictConfig) -> DictConfig:
    """A copy of ``cfg`` in which every nest_ext class that stands for one of NeMo's is NeMo's."""
    return _mapped(cfg, NEMO_EQUIVALENT)


def with_our_parts(cfg: DictConfig) -> DictConfig:
    """A copy of a model config with nest_ext's encoder and losses in place of NeMo's; ``cfg`` is unchanged."""
    return _mapped(cfg, OUR_PARTS)


def portable_config(cfg: DictConfig) -> DictConfig:
    """A copy of a model config to save: NeMo's class names wherever ours stand for one of NeMo's.

    When nest_ext classes remain, the copy's ``requires`` key says that the package is needed and how to
    restore; otherwise there is no such key. ``cfg`` is unchanged.
    """
    new = to_nemo_targets(cfg)
    remaining = nest_ext_targets(new)
    with open_dict(new):
        new.pop(REQUIRES_KEY, None)
        if remaining:
            model = new.get("target", None)
            how = f"{model}.restore_from(path), or " if str(model).startswith(f"{PIP_NAME}.") else ""
            new[REQUIRES_KEY] = (
                f"the {PIP_NAME} package (pip install {PIP_NAME}): this model is built from "
                f"{', '.join(sorted({t for _, t in remaining}))}. Restore it with {how}"
                f"import {PIP_NAME}.models before NeMo's restore_from."
            )
    return new
