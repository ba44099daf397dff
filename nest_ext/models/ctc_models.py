"""CTC (BPE) ASR fine-tuning from NEST: NeMo's ``EncDecCTCModelBPE`` with nest_ext's encoder and a portable save.

:class:`EncDecCTCModelBPE` is NeMo's class of the same name (``nemo.collections.asr.models``) with three changes:

* it builds nest_ext's ConformerEncoder also where the config names NeMo's, unless ``USE_NEMO_CONFORMER``
  is set (:mod:`nest_ext.parts.encoder_choice`); the state dict is NeMo's either way;
* its saved config (``.nemo``, checkpoints) names NeMo's classes, so stock NeMo -- ``transcribe_speech.py``,
  ``speech_to_text_eval.py``, export -- restores the ``.nemo`` without nest_ext
  (:func:`nest_ext.parts.nemo_targets.portable_config`);
* an ``init_from_nemo_model`` path that is no file but a Hugging Face model name (``org/name``, e.g.
  ``nest_checkpoint=nvidia/ssl_en_nest_large_v1.0`` in ``config/fastconformer_ctc_bpe_finetune.yaml``) is
  loaded as ``init_from_pretrained_model`` with the same ``include``/``exclude``; a checkpoint part that does
  not fit (an encoder of another depth) is an error, where NeMo would leave the extra layers out silently.

Shapes are NeMo's: ``input_signal`` [B, T] and ``input_signal_length`` [B] -> log-probs [B, T', V+1],
encoded lengths [B], greedy predictions [B, T'].

Example (``train.py --config-name fastconformer_ctc_bpe_finetune`` does this from the Hydra config)::

    from nest_ext.models import EncDecCTCModelBPE
    model = EncDecCTCModelBPE(cfg=cfg.model, trainer=trainer)   # cfg.model.tokenizer.dir: a BPE tokenizer
    model.maybe_init_from_pretrained_checkpoint(cfg)              # the encoder from the NEST checkpoint
    log_probs, lengths, greedy = model(input_signal=audio, input_signal_length=audio_len)
"""
from __future__ import annotations

import copy
import logging
import os
import re
from typing import Optional

from lightning.pytorch import Trainer
from omegaconf import DictConfig, OmegaConf, open_dict

from nemo.collections.asr.models import EncDecCTCModelBPE as _NeMoCTCBPE

from nest_ext.parts.encoder_choice import apply_encoder_choice
from nest_ext.parts.nemo_targets import allow_nest_ext_targets, portable_config

logger = logging.getLogger(__name__)

__all__ = ["EncDecCTCModelBPE", "pretrained_names_as_such"]

allow_nest_ext_targets()  # configs written before .nemo files were portable name nest_ext.* targets

# a Hugging Face model id as NeMo's from_pretrained takes it: one "org/name"
_HF_NAME = re.compile(r"^[\w.-]+/[\w.-]+$")


def pretrained_names_as_such(cfg: DictConfig) -> DictConfig:
    """``cfg`` with its ``init_from_nemo_model`` entries whose path is a Hugging Face model name (not a file, no
    ``.nemo`` suffix) moved to ``init_from_pretrained_model``; ``cfg`` itself when there is none.

    NeMo takes one source of initial weights, so names and files cannot be mixed (ValueError).
    """
    entries = cfg.get("init_from_nemo_model", None)
    if not isinstance(entries, DictConfig):
        return cfg

    def is_name(path) -> bool:
        return (isinstance(path, str) and bool(_HF_NAME.match(path)) and not path.endswith(".nemo")
                and not os.path.exists(path))

    names = [key for key, entry in entries.items() if isinstance(entry, DictConfig) and is_name(entry.get("path"))]
    if not names:
        return cfg
    new = copy.deepcopy(cfg)
    with open_dict(new):
        pretrained = new.get("init_from_pretrained_model", None) or {}
        for key in names:
            entry = new.init_from_nemo_model.pop(key)
            name = entry.pop("path")
            logger.info(f"init_from_nemo_model.{key}.path={name} is no file: loading it as a pretrained model name")
            pretrained[key] = {"name": name, **OmegaConf.to_container(entry, resolve=True)}
        new.init_from_pretrained_model = pretrained
        if new.init_from_nemo_model:
            raise ValueError(f"init_from_nemo_model mixes model names ({', '.join(names)}) and files "
                             f"({', '.join(new.init_from_nemo_model)}); NeMo loads from one kind of source")
        del new["init_from_nemo_model"]  # NeMo counts the key, even empty, as a second source
    return new


class EncDecCTCModelBPE(_NeMoCTCBPE):
    """NeMo's CTC-BPE model with nest_ext's encoder (``USE_NEMO_CONFORMER`` toggle), saving NeMo's class names.

    Args:
        cfg: the ``model`` section of ``config/fastconformer_ctc_bpe_finetune.yaml`` (NeMo's CTC-BPE config).
        trainer: a Lightning trainer, or None (e.g. for inference).
    """

    def __init__(self, cfg: DictConfig, trainer: Optional[Trainer] = None):
        if not isinstance(cfg, DictConfig):
            cfg = OmegaConf.create(cfg)
        super().__init__(cfg=apply_encoder_choice(cfg), trainer=trainer)
        self.cfg = portable_config(self._cfg)  # what .nemo files and checkpoints save

    def maybe_init_from_pretrained_checkpoint(self, cfg: DictConfig, map_location: str = "cpu"):
        return super().maybe_init_from_pretrained_checkpoint(pretrained_names_as_such(cfg), map_location)

    def load_part_of_state_dict(self, state_dict, include, exclude, load_from_string=None):
        """NeMo's, but the chosen part must have exactly this model's tensors (NeMo loads with ``strict=False``:
        a NEST encoder with more layers than the config would lose them without a word)."""

        def chosen(keys):
            return {k for k in keys if any(p in k for p in include) and not any(e in k for e in exclude)}

        theirs, ours = chosen(state_dict), chosen(self.state_dict())
        if theirs != ours:
            extra, missing = sorted(theirs - ours), sorted(ours - theirs)
            raise ValueError(
                f"{load_from_string or 'the checkpoint'} does not fit this model's {'/'.join(include)}: "
                f"{len(extra)} of its tensors have no place here (e.g. {extra[:2]}), {len(missing)} of the model's "
                f"are not in it (e.g. {missing[:2]}). Make the config's encoder describe the checkpoint's "
                "(n_layers, d_model, n_heads, ...)"
            )
        return super().load_part_of_state_dict(state_dict, include, exclude, load_from_string)
