"""LLM-based ASR on a NEST encoder: NeMo's SALM (speech encoder -> connector -> Hugging Face LLM with LoRA).

:class:`NestSALM` is NeMo 3.0's ``nemo.collections.speechlm2.models.SALM`` -- audio perception module,
prompt formatting, LoRA through PEFT, training step, ``generate`` -- with what this package adds:

* ``pretrained_nest``: a NEST ``.nemo`` pretrained by this package (or any NeMo ASR ``.nemo``) is the speech
  encoder (SALM's ``pretrained_asr`` mechanism: its preprocessor and encoder weights are copied into the
  perception module); the connector's ``input_dim`` is read from that file's encoder config when left null;
* the parameters named in ``freeze_params`` (LLM, embeddings, preprocessor, encoder) are frozen at
  construction, not only when the optimiser is built, so what trains is visible at once: the connector
  and the LoRA adapters;
* the train.py interface of this package's models: ``NestSALM(cfg=cfg.model, trainer=trainer)``, dataloaders
  from ``model.train_ds`` / ``model.validation_ds`` (``data_path``: a NeMo manifest, ``pack_shards.py`` output
  or WeNet shards, see :mod:`nest_ext.data.salm_data`), ``save_to``;
* checkpoints hold only the trainable weights (Lightning checkpoints too), and :meth:`restore_from` rebuilds
  the model from the NEST ``.nemo`` and LLM the config names plus those weights;
* :meth:`merge_lora` folds the adapters into the LLM and :meth:`save_llm` writes it as a Hugging Face
  directory; :meth:`transcribe` decodes batches of audio (greedy or beam search through HF ``generate``).

Needs the ``llm`` extra (``pip install -e '.[llm]'``).
"""
from nest_ext.parts.extras import require_extra

require_extra("llm")

import os  # noqa: E402
import re  # noqa: E402
from typing import Any, Dict, List, Optional, Sequence  # noqa: E402

import torch  # noqa: E402
from omegaconf import DictConfig, OmegaConf, open_dict  # noqa: E402
from peft import PeftModel  # noqa: E402
from transformers import GenerationConfig  # noqa: E402

from nemo.collections.speechlm2.models import SALM  # noqa: E402
from nemo.collections.speechlm2.parts.optim_setup import configure_optimizers  # noqa: E402
from nemo.collections.speechlm2.parts.pretrained import move_embedding  # noqa: E402

import nest_ext.models.ssl_models  # noqa: E402,F401  (NEST .nemo files name nest_ext classes)
from nest_ext.data.salm_data import DEFAULT_INSTRUCTION, register_data_type, salm_loader_config  # noqa: E402
from nest_ext.parts.atomic_checkpoint import atomic_torch_save  # noqa: E402
from nest_ext.parts.atomic_io import discard, fsync_dir, temp_path  # noqa: E402
from nest_ext.data.bad_audio import get_on_bad_audio  # noqa: E402
from nest_ext.parts.nemo_file import encoder_output_dim, read_nemo_config  # noqa: E402
from nest_ext.parts.nemo_targets import allow_nest_ext_targets  # noqa: E402

# single-token end-of-turn markers of common chat formats; decoding stops at any that the tokenizer has
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>")
CHECKPOINT_FORMAT = "nest_ext.salm_trainable/1"


def prepare_salm_config(cfg) -> Dict[str, Any]:
    """SALM's config as a plain dict, with ``pretrained_nest`` as the speech encoder and the connector sized.

    ``pretrained_nest`` (ours) wins over ``pretrained_asr`` (SALM's name for the same thing). A null
    ``perception.modality_adapter.input_dim`` becomes the encoder output width stored in that ``.nemo``.
    """
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    cfg = dict(cfg)
    encoder_path = cfg.get("pretrained_nest") or cfg.get("pretrained_asr")
    if not encoder_path:
        raise ValueError("set model.pretrained_nest=PATH (a NEST .nemo pretrained with this package, "
                         "or a NeMo ASR .nemo)")
    if not os.path.exists(encoder_path) and str(encoder_path).endswith(".nemo"):
        raise FileNotFoundError(f"model.pretrained_nest: {encoder_path} does not exist")
    cfg["pretrained_asr"] = str(encoder_path)
    adapter = (cfg.get("perception") or {}).get("modality_adapter") or {}
    if "input_dim" in adapter and adapter["input_dim"] is None:
        adapter["input_dim"] = encoder_output_dim(read_nemo_config(encoder_path))
    return cfg


class NestSALM(SALM):
    """NeMo's SALM with a NEST encoder, frozen-at-init parameters and trainable-only checkpoints (module doc)."""

    SAVE_SUFFIX = ".ckpt"  # what train.py names the final model; not a .nemo (the weights are partial)

    def __init__(self, cfg, trainer=None):
        allow_nest_ext_targets()
        cfg = prepare_salm_config(cfg)
        # Lightning's save_hyperparameters (called by SALM) records this frame's arguments: keep the Trainer out
        trainer = None  # noqa: F841
        super().__init__(cfg)
        # Frozen now, not when the optimiser is built: Lightning wraps the model in DDP first, and DDP must not
        # expect gradients for weights that will never get one
        freeze = [re.compile(p) for p in self.cfg.get("freeze_params", [])]
        keep = [re.compile(p) for p in self.cfg.get("prevent_freeze_params", [])]
        for name, param in self.named_parameters():
            if any(r.match(name) for r in freeze) and not any(r.match(name) for r in keep):
                param.requires_grad_(False)
        self.strict_loading = False  # checkpoints hold the trainable weights only
        self._data = None

    def configure_optimizers(self):
        """NeMo SALM's optimiser and schedule over the trainable parameters. ``freeze_params`` took effect at
        construction; NeMo's helper would find nothing left to freeze and warn that the patterns match nothing."""
        patterns = self.cfg.get("freeze_params")
        with open_dict(self.cfg):
            self.cfg.freeze_params = []
        try:
            return configure_optimizers(self)
        finally:
            with open_dict(self.cfg):
                self.cfg.freeze_params = patterns

    # --- train.py interface -------------------------------------------------------------------------------
    def maybe_init_from_pretrained_checkpoint(self, cfg, map_location: str = "cpu") -> None:
        """train.py calls this on every model; SALM initialises from ``model.init_from_checkpoint`` instead."""
        for key in ("init_from_nemo_model", "init_from_pretrained_model", "init_from_ptl_ckpt"):
            if cfg.get(key):
                raise ValueError(f"{key} is not used by NestSALM; set model.init_from_checkpoint=PATH (SALM's key)")

    @property
    def instruction(self) -> str:
        return self.cfg.get("instruction", DEFAULT_INSTRUCTION)

    def _data_module(self):
        if self._data is None:
            from nemo.collections.speechlm2.data import DataModule

            from nest_ext.data.reporting_salm_dataset import ReportingSALMDataset

            register_data_type()
            common = dict(instruction=self.instruction, audio_locator_tag=self.audio_locator_tag,
                          prompt_format=self.cfg.prompt_format, sample_rate=self.sampling_rate,
                          token_equivalent_duration=self.token_equivalent_duration)
            data = {}
            for key, validation in (("train_ds", False), ("validation_ds", True)):
                ds = self.cfg.get(key)
                if ds is not None and (ds.get("data_path") is not None or ds.get("input_cfg") is not None):
                    data[key] = salm_loader_config(OmegaConf.to_container(ds, resolve=True), validation=validation,
                                                   **common)
            dataset = ReportingSALMDataset(self.tokenizer, on_bad_audio=get_on_bad_audio(self.cfg.get("train_ds")),
                                           name="SALM data")
            self._data = DataModule(OmegaConf.create(data), tokenizer=self.tokenizer, dataset=dataset)
        self._data.trainer = self.trainer
        return self._data

    def train_dataloader(self):
        return self._data_module().train_dataloader()

    def val_dataloader(self):
        loader = self._data_module().val_dataloader()
        return [] if loader is None else loader  # Lightning: no validation sets -> no validation

    # --- checkpoints: trainable weights only ----------------------------------------------------------------
    def trainable_names(self) -> List[str]:
        return [n for n, p in self.named_parameters() if p.requires_grad]

    def trainable_state_dict(self) -> Dict[str, torch.Tensor]:
        names = set(self.trainable_names())
        state = {k: v for k, v in self.state_dict().items() if k in names}
        if any(hasattr(v, "full_tensor") for v in state.values()):  # DTensor: FSDP2 / tensor-parallel shards
            raise RuntimeError("the weights are sharded (model-parallel strategy): use the distributed "
                               "checkpoints exp_manager wrote; the small checkpoint needs unsharded weights")
        return {k: v.detach().cpu() for k, v in state.items()}

    def on_save_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        names = set(self.trainable_names())
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in names}
        checkpoint["nest_ext_format"] = CHECKPOINT_FORMAT

    def on_load_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        self._check_trainable_keys(checkpoint["state_dict"], "checkpoint")

    def _check_trainable_keys(self, state_dict: Dict[str, Any], what: str) -> None:
        names = set(self.trainable_names())
        missing = sorted(names - set(state_dict))
        unexpected = sorted(set(state_dict) - set(self.state_dict()))
        if missing or unexpected:
            raise ValueError(f"{what} does not fit this model: {len(missing)} trainable weights missing "
                             f"(e.g. {missing[:3]}), {len(unexpected)} unknown (e.g. {unexpected[:3]}); "
                             "was it written with another LoRA/connector config?")

    def save_to(self, path: str) -> None:
        """Write the small checkpoint: the trainable weights and the config (atomically)."""
        atomic_torch_save({"state_dict": self.trainable_state_dict(),
                           "hyper_parameters": {"cfg": dict(self.hparams["cfg"])},
                           "nest_ext_format": CHECKPOINT_FORMAT}, path)

    @classmethod
    def restore_from(cls, path: str, map_location: str = "cpu",
                     overrides: Optional[Dict[str, Any]] = None) -> "NestSALM":
        """Rebuild from a small checkpoint (:meth:`save_to`) or a Lightning ``.ckpt`` of a NestSALM run.

        The NEST ``.nemo`` and the LLM are loaded from the paths in the stored config (``overrides``, e.g.
        ``{"pretrained_llm": "/models/Qwen2-7B-Instruct"}``, replaces top-level keys when they moved).
        """
        ckpt = torch.load(path, map_location="cpu", weights_only=False)  # our own files; Lightning's hold objects
        if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "cfg" not in ckpt.get("hyper_parameters", {}):
            raise ValueError(f"{path}: not a NestSALM checkpoint (no state_dict / hyper_parameters.cfg)")
        cfg = dict(ckpt["hyper_parameters"]["cfg"])
        cfg.update(overrides or {})
        model = cls(cfg)
        model._check_trainable_keys(ckpt["state_dict"], path)
        model.load_state_dict(ckpt["state_dict"], strict=False)
        return model.to(map_location)

    # --- LoRA merge -----------------------------------------------------------------------------------------
    def merge_lora(self):
        """Fold the LoRA adapters into the LLM's weights, in place; return the plain Hugging Face model."""
        if isinstance(self.llm, PeftModel):
            self.llm = self.llm.merge_and_unload()
        return self.llm

    def save_llm(self, out_dir: str, dtype: Optional[torch.dtype] = None) -> str:
        """Write the LLM (merged, after :meth:`merge_lora`) with its original tokenizer as a Hugging Face
        directory; it appears under ``out_dir`` only when complete (written beside it, then renamed)."""
        from transformers import AutoTokenizer

        if isinstance(self.llm, PeftModel):
            raise ValueError("call merge_lora() first: the LLM still has LoRA adapters")
        out_dir = os.path.abspath(out_dir)
        if os.path.exists(out_dir) and os.listdir(out_dir):
            raise FileExistsError(f"{out_dir} exists and is not empty")
        parent = os.path.dirname(out_dir)
        os.makedirs(parent, exist_ok=True)
        tmp = temp_path(out_dir, directory=True)  # owner-tagged: a rerun can remove what a killed save left
        try:
            with move_embedding(self):
                llm = self.llm if dtype is None else self.llm.to(dtype)
                llm.save_pretrained(tmp)
            tokenizer = AutoTokenizer.from_pretrained(self.cfg.pretrained_llm,
                                                      trust_remote_code=self.cfg.get("trust_remote_code", False))
            tokenizer.save_pretrained(tmp)
            if os.path.isdir(out_dir):
                os.rmdir(out_dir)  # empty (checked above)
            os.replace(tmp, out_dir)
        except BaseException:
            discard(tmp)
            raise
        fsync_dir(parent)
        return out_dir

    # --- decoding -------------------------------------------------------------------------------------------
    def stop_token_ids(self) -> List[int]:
        ids = [self.text_eos_id]
        for token in END_OF_TURN_TOKENS:
            tid = self.tokenizer.token_to_id(token)
            if isinstance(tid, int) and tid not in ids and tid != self.tokenizer.unk_id:
                ids.append(tid)
        return ids

    @torch.no_grad()
    def transcribe(self, audios: torch.Tensor, audio_lens: torch.Tensor, instruction: Optional[str] = None,
                   max_new_tokens: int = 128, num_beams: int = 1) -> List[str]:
        """Transcripts of a padded batch ``audios`` (B, T) at ``self.sampling_rate``; the prompt is the training
        one (``instruction`` followed by the audio). ``num_beams`` 1: greedy."""
        instruction = self.instruction if instruction is None else instruction
        content = f"{instruction} {self.audio_locator_tag}" if instruction else self.audio_locator_tag
        stop = self.stop_token_ids()
        answers = self.generate(
            prompts=[[{"role": "user", "content": content}]] * audios.shape[0],
            audios=audios.to(self.device), audio_lens=audio_lens.to(self.device),
            generation_config=GenerationConfig(max_new_tokens=max_new_tokens, num_beams=num_beams, do_sample=False,
                                               bos_token_id=self.text_bos_id, eos_token_id=stop,
                                               pad_token_id=self.text_pad_id),
        )
        return [self.tokenizer.ids_to_text(_until_stop(a.tolist(), stop)).strip() for a in answers.cpu()]


def _until_stop(ids: Sequence[int], stop: Sequence[int]) -> List[int]:
    for i, t in enumerate(ids):
        if t in stop:
            return list(ids[:i])
    return list(ids)
