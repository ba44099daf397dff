"""Transcribed speech fed to NeMo's SALM as conversations: ``user: <instruction> <audio>`` -> ``assistant: text``.

* Data type ``nest_asr_as_conversation`` for NeMo's lhotse ``input_cfg`` (registered with NeMo's
  ``data_type_parser`` when this module is imported): reads any layout of :func:`~nest_ext.data.asr_cuts.read_asr_cuts`
  (NeMo manifest, ``pack_shards.py`` NeMo tarred / lhotse Shar output, WeNet shards) and turns each cut into
  NeMo's two-turn ``NeMoMultimodalConversation`` with NeMo's ``cut_to_conversation``; the instruction is the
  ``context`` user turn that function puts before the audio. Options: ``path``, ``instruction``,
  ``audio_locator_tag``, ``token_equivalent_duration`` (the last two are filled from the model), ``on_bad_audio``.
* :class:`~nest_ext.data.reporting_salm_dataset.ReportingSALMDataset` (its own module, as it needs the ``llm``
  extra) reports by path what NeMo's ``SALMDataset`` drops for bad audio.
* :func:`salm_loader_config`: NeMo lhotse dataloader config for one of ``model.train_ds`` / ``validation_ds``:
  ``data_path`` (a path, or a list of paths) becomes the ``input_cfg`` above, unless ``input_cfg`` is given.

Example::

    >>> cfg = salm_loader_config({"data_path": "shards/train", "batch_size": 8}, instruction="Transcribe the audio.",
    ...                          audio_locator_tag="<|audio|>", prompt_format="qwen", token_equivalent_duration=0.16,
    ...                          sample_rate=16000)
    >>> cfg["input_cfg"][0]["type"], cfg["input_cfg"][0]["path"], cfg["batch_size"], "data_path" in cfg
    ('nest_asr_as_conversation', 'shards/train', 8, False)
    >>> sorted(salm_loader_config({"data_path": ["a/dev.json", "b/test"]}, instruction="x", audio_locator_tag="t",
    ...        prompt_format="qwen", token_equivalent_duration=0.16, sample_rate=16000, validation=True)["datasets"])
    ['dev', 'test']
"""
from __future__ import annotations

import copy
import os
from functools import partial
from typing import Any, Dict, Mapping

from nest_ext.data.asr_cuts import detect_layout, read_asr_cuts
from nest_ext.data.bad_audio import get_on_bad_audio

DATA_TYPE = "nest_asr_as_conversation"
DEFAULT_INSTRUCTION = "Transcribe the audio."
# our keys in model.train_ds / validation_ds; NeMo's lhotse config schema does not know them
OUR_KEYS = ("data_path", "on_bad_audio", "instruction")


def set_name(path: str) -> str:
    """A data set's name from its path: ``test_clean.json`` -> ``test_clean``, ``shards/dev/`` -> ``dev``,
    ``dev/data.list`` -> ``dev``."""
    path = os.path.normpath(str(path))
    stem = os.path.splitext(os.path.basename(path))[0]
    return os.path.basename(os.path.dirname(path)) if stem == "data" else stem


def salm_loader_config(ds_cfg: Mapping[str, Any], *, instruction: str, audio_locator_tag: str, prompt_format: str,
                       token_equivalent_duration: float, sample_rate: int, validation: bool = False) -> Dict[str, Any]:
    """NeMo lhotse dataloader config (a plain dict) from one of our dataset configs; see the module doc.

    ``validation``: NeMo's ``DataModule`` and SALM's validation step expect named sets under ``datasets``,
    so each path becomes one set named by :func:`set_name`.
    """
    cfg = copy.deepcopy(dict(ds_cfg))
    paths = cfg.get("data_path")
    item = {"type": DATA_TYPE, "instruction": cfg.get("instruction") or instruction,
            "audio_locator_tag": audio_locator_tag, "token_equivalent_duration": token_equivalent_duration,
            "on_bad_audio": get_on_bad_audio(cfg)}
    for key in OUR_KEYS:
        cfg.pop(key, None)
    cfg.setdefault("prompt_format", prompt_format)
    cfg.setdefault("token_equivalent_duration", token_equivalent_duration)
    cfg.setdefault("sample_rate", sample_rate)
    if cfg.get("input_cfg") is not None or paths is None:
        return cfg
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not validation:
        cfg["input_cfg"] = [dict(item, path=str(p)) for p in paths]
        return cfg
    names = [set_name(p) for p in paths]
    if len(set(names)) != len(names):
        raise ValueError(f"validation sets need distinct names, got {names} from {paths}")
    cfg["datasets"] = {n: {"input_cfg": [dict(item, path=str(p))]} for n, p in zip(names, paths)}
    return cfg


def _to_conversation(cut, instruction: str, audio_locator_tag: str, token_equivalent_duration: float):
    from nemo.collections.common.data.lhotse.cutset import cut_to_conversation

    if instruction:
        cut = cut.with_custom("context", instruction)
    return cut_to_conversation(cut, audio_locator_tag=audio_locator_tag,
                               token_equivalent_duration=token_equivalent_duration)


def read_asr_as_conversation(config) -> tuple:
    """NeMo data-type parser: ``(CutSet of conversations, is_tarred)``. See the module doc for the options."""
    train = not config.get("force_finite", False)
    cuts = read_asr_cuts(config.path, train=train, shard_seed=config.get("shard_seed", "trng"),
                         on_bad_audio=config.get("on_bad_audio", "skip"))
    cuts = cuts.map(partial(_to_conversation, instruction=config.get("instruction", DEFAULT_INSTRUCTION),
                            audio_locator_tag=config.audio_locator_tag,
                            token_equivalent_duration=config.token_equivalent_duration))
    # tarred layouts stream (NeMo's iterable-dataset path); a manifest is a map-style dataset
    return cuts, detect_layout(str(config.path)) != "nemo-manifest"


def register_data_type() -> None:
    """Make ``type: nest_asr_as_conversation`` known to NeMo's lhotse dataloader (idempotent)."""
    from nemo.collections.common.data.lhotse.cutset import KNOWN_DATA_CONFIG_TYPES, data_type_parser

    if DATA_TYPE not in KNOWN_DATA_CONFIG_TYPES:
        data_type_parser(DATA_TYPE)(read_asr_as_conversation)
