"""NEST (denoising masked-token prediction) pretraining model on nest_ext's data path.

:class:`EncDecDenoiseMaskedTokenPredModel` is NeMo's class of the same name
(``nemo.collections.asr.models.ssl_models``) with two changes:

* training/validation data come from :mod:`nest_ext.data.ssl_dataset` (NeMo's datasets with the noise
  sampling defect fixed and bad audio reported and skipped), for manifests, tarred data and lhotse
  (``use_lhotse: true``); the data loader also takes ``persistent_workers`` and ``prefetch_factor``
  from the dataset config when set;
* it builds nest_ext's ConformerEncoder and MLM loss also where the config names NeMo's, unless
  ``USE_NEMO_CONFORMER`` is set (then NeMo's ``ConformerEncoder``; :mod:`nest_ext.parts.encoder_choice`);
* its saved config (``.nemo``, checkpoints) names NeMo's classes -- model, encoder, loss -- so stock NeMo
  restores the ``.nemo`` without nest_ext (:func:`nest_ext.parts.nemo_targets.portable_config`).

Everything else -- preprocessor, quantizer, masking, decoder -- is built from the config's ``_target_``s
exactly as NeMo does; forward, training and validation steps are NeMo's. It restores NeMo's own NEST
``.nemo`` files (``init_from_nemo_model`` / ``init_from_pretrained_model``, e.g. NVIDIA's
``nvidia/ssl_en_nest_large_v1.0``) with our parts in place of NeMo's.
Batches are NeMo's ``AudioNoiseBatch``: ``audio``, ``noise``, ``noisy_audio`` [B, T] with lengths [B];
``forward`` returns log-probs [B, T', C, H] (or [B, T', C] with ``squeeze_single``), lengths [B],
masks [B, D, T] and target tokens [B, T', H] (or [B, T']).

Example (``train.py`` does this from the Hydra config)::

    from omegaconf import OmegaConf
    from nest_ext.models import EncDecDenoiseMaskedTokenPredModel
    cfg = OmegaConf.load("config/nest_fast-conformer.yaml")      # any NEST config
    cfg.model.train_ds = cfg.model.validation_ds = None           # no data: inference only
    model = EncDecDenoiseMaskedTokenPredModel(cfg=cfg.model)      # audio, noisy: [B, T]; audio_len: [B]
    log_probs, lengths, masks, tokens = model(input_signal=audio, input_signal_length=audio_len,
                                               noisy_input_signal=noisy, noisy_input_signal_length=audio_len,
                                               apply_mask=True)
"""
from __future__ import annotations

from typing import Dict, Optional

import torch
from lightning.pytorch import Trainer
from omegaconf import DictConfig, OmegaConf

from nemo.collections.asr.data import audio_to_text_dataset
from nemo.collections.asr.models.ssl_models import EncDecDenoiseMaskedTokenPredModel as _NeMoNEST
from nemo.collections.common.data.lhotse import get_lhotse_dataloader_from_config

from nest_ext.data.bad_audio import get_on_bad_audio
from nest_ext.data.ssl_dataset import LhotseAudioNoiseDataset, get_audio_noise_dataset_from_config, get_collate_fn
from nest_ext.parts.dataloader_options import dataloader_kwargs
from nest_ext.parts.encoder_choice import apply_encoder_choice
from nest_ext.parts.nemo_targets import allow_nest_ext_targets, portable_config

__all__ = ["EncDecDenoiseMaskedTokenPredModel"]


allow_nest_ext_targets()  # NeMo 3.0 refuses nest_ext.* _target_s until they are allowed


class EncDecDenoiseMaskedTokenPredModel(_NeMoNEST):
    """NeMo's NEST model with nest_ext's datasets, encoder (``USE_NEMO_CONFORMER`` toggle) and loss; saves NeMo's names.

    Args:
        cfg: the ``model`` section of a NEST config (``config/nest_fast-conformer.yaml``).
        trainer: a Lightning trainer, or None (e.g. for inference or counting parameters).
    """

    def __init__(self, cfg: DictConfig, trainer: Optional[Trainer] = None):
        if not isinstance(cfg, DictConfig):
            cfg = OmegaConf.create(cfg)
        super().__init__(cfg=apply_encoder_choice(cfg), trainer=trainer)
        self.cfg = portable_config(self._cfg)  # what .nemo files and checkpoints save
        self.ssl_targets = None  # the last training batch's CodebookTargets (see forward)

    def forward(self, **kwargs):
        """NeMo's forward; in training it also keeps the batch's targets in ``ssl_targets`` for codebook health."""
        outputs = super().forward(**kwargs)
        if self.training:
            log_probs, encoded_len, masks, tokens = outputs
            self.ssl_targets = self._codebook_targets(tokens, encoded_len, masks)
        return outputs

    def _codebook_targets(self, tokens, encoded_len, masks):
        """The tokens the quantizer gave and, per token frame, whether the loss trains on it (its masked frames)."""
        from nest_ext.parts.codebook_health import CodebookTargets

        with torch.no_grad():
            frame_mask = getattr(getattr(self.loss, "mlm_loss", None), "frame_mask", None)
            if frame_mask is not None:  # our loss: exactly the frames it selects
                masked = frame_mask(masks)
            else:  # NeMo's loss: the same rule (mean of the grouped mask values above the threshold)
                steps = int(getattr(self.loss, "combine_time_steps", 1))
                b, d, t = masks.shape
                grouped = masks[:, :, : t - t % steps].transpose(1, 2).reshape(b, t // steps, steps * d)
                masked = grouped.mean(-1) > float(getattr(self.loss, "mask_threshold", 0.8))
            return CodebookTargets(tokens=tokens.detach(), lengths=encoded_len.detach(), masked=masked,
                                   num_classes=int(self.quantizer.num_classes))

    def configure_callbacks(self):
        """Codebook health (on by default; settings under ``model.codebook_health``, read with ``.get`` so NEST
        configs stay NeMo's), unless the trainer already has a ``CodebookHealthMonitor``."""
        from nest_ext.parts.codebook_health import CodebookHealthMonitor, codebook_monitor_from_config

        trainer = getattr(self, "_trainer", None)
        if trainer is not None and any(isinstance(cb, CodebookHealthMonitor) for cb in trainer.callbacks):
            return []
        monitor = codebook_monitor_from_config(self.cfg.get("codebook_health", None))
        return [monitor] if monitor is not None else []

    def on_validation_epoch_end(self):
        # NeMo logs val_loss per rank unless asked to sync; under DDP each rank (and the checkpoint name)
        # would otherwise see only its shard of the validation set.
        return super().on_validation_epoch_end(sync_metrics=True)

    def _setup_dataloader_from_config(self, config: Optional[Dict]):
        audio_to_text_dataset.inject_dataloader_value_from_model_config(self.cfg, config, key="sample_rate")

        if config.get("use_lhotse"):
            dataset = LhotseAudioNoiseDataset(
                noise_manifest=config.get("noise_manifest", None),
                batch_augmentor_cfg=config.get("batch_augmentor", None),
                on_bad_audio=get_on_bad_audio(config),
                check_audio_at_start=bool(config.get("check_audio_at_start", True)),
            )
            return get_lhotse_dataloader_from_config(
                config, global_rank=self.global_rank, world_size=self.world_size, dataset=dataset
            )

        dataset = get_audio_noise_dataset_from_config(config, global_rank=self.global_rank, world_size=self.world_size)
        if dataset is None:  # no manifest given: nothing to load (NeMo's warning was logged)
            return None
        # iterable (tarred) datasets shuffle themselves
        shuffle = bool(config["shuffle"]) and not isinstance(dataset, torch.utils.data.IterableDataset)
        return torch.utils.data.DataLoader(
            dataset=dataset,
            batch_size=config["batch_size"],
            collate_fn=get_collate_fn(dataset),
            drop_last=config.get("drop_last", False),
            shuffle=shuffle,
            **dataloader_kwargs(config),
        )
