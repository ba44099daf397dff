"""MossFormer2 speech separation as a NeMo audio-to-audio model.

`MossFormer2SeparationModel` subclasses NeMo's `AudioToAudioModel`, so data loading, `.nemo` save/restore,
optimiser/scheduler set-up and `train.py` work as for NeMo's enhancement models. Its children `encoder`,
`masker` and `decoder` are built from config `_target_`s; with the MossFormer2 blocks
(`nest_ext.modules.mossformer2`) its state dict has exactly the layout of our `MossFormer2` module, which
the converter maps from the official checkpoints.

Shapes: mixture `input_signal` [B, 1, T] or [B, T], `input_length` [B] -> estimates [B, S, T], length [B].
Training minimises permutation-invariant negative SI-SDR (`nest_ext.losses.pit_sisdr`); validation and test
log SI-SDR and SI-SDRi (improvement over the mixture), reduced across ranks, by the project's one zero-mean
SI-SDR definition (`nest_ext.metrics.si_sdr`, also what `evaluate_separation` reports; with the default
zero-mean loss, `val_loss == -val_sisdr`).

Example (tiny network, random weights):
    >>> from omegaconf import OmegaConf
    >>> cfg = MossFormer2SeparationModel.default_config(
    ...     encoder_embedding_dim=32, mossformer_sequence_dim=32, num_mossformer_layer=1)
    >>> model = MossFormer2SeparationModel(cfg).eval()
    >>> est, length = model(input_signal=torch.randn(2, 1, 1600), input_length=torch.tensor([1600, 1200]))
    >>> tuple(est.shape), length.tolist()
    ((2, 2, 1600), [1600, 1200])
"""
from typing import Dict, List, Optional, Union

import numpy as np
import torch
from lightning.pytorch import Trainer
from omegaconf import DictConfig, OmegaConf, open_dict

from nemo.collections.audio.models.audio_to_audio import AudioToAudioModel
from nemo.core.classes.common import PretrainedModelInfo

from nest_ext.losses.pit_sisdr import PermutationInvariantSISDRLoss
from nest_ext.metrics.si_sdr import pit_si_sdr_scores
from nest_ext.modules.encoder_masker_decoder import EncoderMaskerDecoder
from nest_ext.parts.mono_audio import MonoAudioTypes, as_mono_batch, eval_on_batch
from nest_ext.parts.nemo_targets import allow_nest_ext_targets, portable_config
from nest_ext.parts.unset_data import without_unset_data

__all__ = ["MossFormer2SeparationModel"]

# Where the MossFormer2 blocks live; only `default_config` names them, configs may point elsewhere.
_BLOCKS = "nest_ext.modules.mossformer2"


allow_nest_ext_targets()  # NeMo 3.0 refuses nest_ext.* _target_s until they are allowed


class MossFormer2SeparationModel(MonoAudioTypes, EncoderMaskerDecoder, AudioToAudioModel):
    """MossFormer2 mask-based time-domain separation (encoder -> mask network -> masked decoder, the
    composition of `EncoderMaskerDecoder`, shared with the bare `MossFormer2` module).

    Config keys (under `model`): `sample_rate`, `num_spks`, `encoder`, `masker`, `decoder` (`_target_`
    configs), `loss` (default: `PermutationInvariantSISDRLoss`), `train_ds`/`validation_ds`/`test_ds`,
    `optim`; optional `inference_chunk_seconds` for chunked separation of long inputs.
    """

    def __init__(self, cfg: DictConfig, trainer: Trainer = None):
        if not isinstance(cfg, DictConfig):
            cfg = OmegaConf.create(cfg)
        # a recipe config's required manifests (???) mean no data here: train.py insists on them
        super().__init__(cfg=without_unset_data(cfg), trainer=trainer)
        self.num_spks = int(self._cfg.num_spks)
        self.encoder = self.from_config_dict(self._cfg.encoder)
        self.masker = self.from_config_dict(self._cfg.masker)
        self.decoder = self.from_config_dict(self._cfg.decoder)
        if self.loss is None:
            self.loss = PermutationInvariantSISDRLoss()
        # NeMo has no MossFormer2: the saved config keeps our classes and says (`requires`) that it needs nest_ext
        self.cfg = portable_config(self._cfg)

    # ------------------------------------------------------------------ config
    @staticmethod
    def default_config(
        num_spks: int = 2,
        encoder_kernel_size: int = 16,
        encoder_embedding_dim: int = 512,
        mossformer_sequence_dim: int = 512,
        num_mossformer_layer: int = 24,
        sample_rate: int = 8000,
        **masker_kwargs,
    ) -> DictConfig:
        """Model config (no data, no optimiser) for an architecture given in the official argument names.

        Extra keyword arguments (`group_size`, `query_key_dim`, ...) go to the mask network's config.
        """
        return OmegaConf.create(
            {
                "sample_rate": sample_rate,
                "num_spks": num_spks,
                "encoder": {
                    "_target_": f"{_BLOCKS}.MossFormer2Encoder",
                    "kernel_size": encoder_kernel_size,
                    "embedding_dim": encoder_embedding_dim,
                },
                "masker": {
                    "_target_": f"{_BLOCKS}.MossFormer2MaskNet",
                    "embedding_dim": encoder_embedding_dim,
                    "sequence_dim": mossformer_sequence_dim,
                    "num_layers": num_mossformer_layer,
                    "num_spks": num_spks,
                    **masker_kwargs,
                },
                "decoder": {
                    "_target_": f"{_BLOCKS}.MossFormer2Decoder",
                    "kernel_size": encoder_kernel_size,
                    "embedding_dim": encoder_embedding_dim,
                },
                "loss": {"_target_": "nest_ext.losses.pit_sisdr.PermutationInvariantSISDRLoss", "zero_mean": True},
            }
        )

    # ------------------------------------------------------------------ network
    def forward(self, input_signal: torch.Tensor, input_length: Optional[torch.Tensor] = None):
        """Separate a batch of mixtures.

        Args:
            input_signal: [B, 1, T] or [B, T] mixtures.
            input_length: [B] valid samples (the network itself sees the whole padded batch, as the
                official model does; the loss and the written files use only the valid part).

        Returns:
            (estimates [B, num_spks, T], length [B]).
        """
        input_signal = as_mono_batch(input_signal)
        batch, time = input_signal.shape
        if input_length is None:
            input_length = torch.full((batch,), time, dtype=torch.long, device=input_signal.device)
        return self.encode_mask_decode(input_signal), input_length

    # ------------------------------------------------------------------ training / evaluation
    def _check_targets(self, target_signal: torch.Tensor):
        if target_signal.size(1) != self.num_spks:
            raise ValueError(
                f"the batch has {target_signal.size(1)} target source(s) but the model separates "
                f"{self.num_spks}; check the manifest's target list and model.num_spks"
            )

    def _compute_train_loss(self, input_signal, target_signal, input_length):
        self._check_targets(target_signal)
        estimates, _ = self.forward(input_signal=input_signal, input_length=input_length)
        return self.loss(estimate=estimates, target=target_signal, input_length=input_length)

    def evaluation_step(self, batch, batch_idx, dataloader_idx: int = 0, tag: str = "val"):
        input_signal, target_signal, input_length = self._parse_batch(batch)
        self._check_targets(target_signal)
        estimates, _ = self.forward(input_signal=input_signal, input_length=input_length)
        loss = self.loss(estimate=estimates, target=target_signal, input_length=input_length)

        # The project's one SI-SDR (zero-mean, nest_ext.metrics.si_sdr), as evaluate_separation reports it
        scores = pit_si_sdr_scores(estimates, target_signal, mixture=input_signal[:, :1], input_length=input_length)
        batch_size = input_signal.size(0)
        # Epoch means weighted by utterances and averaged across ranks; the loss is logged here too (not by
        # NeMo's epoch-end hook, which does not sync test metrics) so loss and metrics are reduced alike.
        log_args = dict(on_step=False, on_epoch=True, sync_dist=True, batch_size=batch_size)
        self.log(f"{tag}_loss", loss, **log_args)
        self.log(f"{tag}_sisdr", scores.si_sdr.mean(), **log_args)
        self.log(f"{tag}_sisdri", scores.improvement.mean(), **log_args)
        if self._trainer is not None:
            self.log("global_step", torch.tensor(self.trainer.global_step, dtype=torch.float32))
        return {f"{tag}_loss": loss}

    def multi_evaluation_epoch_end(self, outputs, dataloader_idx: int = 0, tag: str = "val"):
        # Nothing left to log: evaluation_step logged loss and metrics with sync_dist
        return {f"{tag}_loss": torch.stack([x[f"{tag}_loss"] for x in outputs]).mean()}

    # ------------------------------------------------------------------ data
    def _setup_dataloader_from_config(self, config: Optional[Dict]):
        """Separation data through `nest_ext.data.separation_data`: manifests (input = mixture, target = list of
        sources), NeMo-style tar shards (`is_tarred`) or NeMo's lhotse path (`use_lhotse`: Shar or CutSet
        manifests); random `segment_seconds` crops, optional speed perturbation and dynamic mixing (from a
        `source_pool` or the data's own sources). `sample_rate` and `num_spks` come from the model unless the
        config sets them.
        """
        from nest_ext.data.separation_data import get_separation_dataloader

        if config is None:
            return None
        # ModelPT sets up data before our __init__ body runs: read the model's values from the config
        model_values = {"sample_rate": int(self._cfg.sample_rate), "num_spks": int(self._cfg.num_spks)}
        with open_dict(config):
            for key, value in model_values.items():
                if config.get(key) is None:
                    config[key] = value
                elif int(config[key]) != value:
                    raise ValueError(f"dataset {key}={config[key]} differs from the model's {key}={value}")
        return get_separation_dataloader(config, global_rank=self.global_rank, world_size=self.world_size)

    def setup_training_data(self, train_data_config: Optional[Union[DictConfig, Dict]]):
        # NeMo's AudioToAudioModel refuses is_tarred here after building the loader; ours reads tar shards.
        if "shuffle" not in train_data_config:
            train_data_config["shuffle"] = True
        self._update_dataset_config(dataset_name="train", config=train_data_config)
        self._train_dl = self._setup_dataloader_from_config(config=train_data_config)

    def on_train_epoch_start(self):
        # New crops / dynamic mixtures each epoch; the dataset keeps the epoch in shared memory for workers
        from nest_ext.data.separation_dataset import set_separation_epoch

        if self._train_dl is not None:
            set_separation_epoch(self._train_dl, self.current_epoch)
        return super().on_train_epoch_start()

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def separate(self, mixture: Union[torch.Tensor, np.ndarray], chunk_seconds: Optional[float] = None) -> torch.Tensor:
        """Separate one mixture [T] (or a batch [B, T]) at the model's sample rate -> [S, T] (or [B, S, T]).

        `chunk_seconds` (or `model.inference_chunk_seconds`) bounds memory on long inputs: overlapping
        windows (`model.inference_overlap_seconds`, default min(1 s, chunk / 4)) separated one by one, speaker
        order aligned across windows, cross-faded (`nest_ext.modules.mossformer2.chunked.separate_chunked`).
        """
        chunk_seconds = chunk_seconds or self._cfg.get("inference_chunk_seconds", None)
        if chunk_seconds:
            return eval_on_batch(self, mixture, lambda batch: self._separate_chunked(batch, float(chunk_seconds)))
        return eval_on_batch(self, mixture, lambda batch: self.forward(input_signal=batch)[0])

    def _separate_chunked(self, batch: torch.Tensor, chunk_seconds: float) -> torch.Tensor:
        from nest_ext.modules.mossformer2.chunked import separate_chunked

        # Overlap: from the config, else a quarter window up to 1 s (enough to align speakers between windows)
        overlap = self._cfg.get("inference_overlap_seconds", None)
        if overlap is None:
            overlap = min(1.0, chunk_seconds / 4)
        return separate_chunked(
            self.encode_mask_decode,
            batch,
            chunk_seconds=chunk_seconds,
            overlap_seconds=float(overlap),
            sample_rate=self.sample_rate,
        )

    @torch.no_grad()
    def process(
        self,
        paths2audio_files: List[str],
        output_dir: str,
        batch_size: int = 1,
        num_workers: Optional[int] = None,
        input_channel_selector: Optional[int] = None,
        input_dir: Optional[str] = None,
        chunk_seconds: Optional[float] = None,
    ) -> List[List[str]]:
        """Separate files: writes `<output_dir>/<stem>_s1.wav ... _sN.wav` (float32 WAV, model rate).

        Unlike NeMo's `process`, which writes one multi-channel file per input, a separation writes one
        file per speaker. Up to `batch_size` files of equal length share a forward pass (the network has no
        padding mask, so files of different lengths are never padded together); reading and writing run in
        background threads (`nest_ext.models.separation_files.separate_files`; `num_workers` is accepted
        for interface compatibility). Inputs are read with `nest_ext.data.audio_io.load_audio`: other rates
        are resampled to the model's, a multi-channel file needs `input_channel_selector`.

        Returns:
            One list of written paths per input file, in input order.

        Raises:
            ValueError (a `BadAudioError` for files): the first input that is missing, unreadable, empty,
                multi-channel without a channel, or too short to separate, named.
        """
        from nest_ext.models.separation_files import SeparationInput, separate_files

        inputs = [SeparationInput.of(p, input_dir) for p in paths2audio_files]
        written = {}
        for result in separate_files(self, inputs, output_dir, batch_size=batch_size,
                                     channel=input_channel_selector, chunk_seconds=chunk_seconds):
            if result.error is not None:
                raise ValueError(result.error)
            written[result.input] = result.outputs
        return [written[item] for item in inputs]

    @classmethod
    def list_available_models(cls) -> List[PretrainedModelInfo]:
        """No hosted checkpoints: convert official ones with tools/convert_mossformer2_checkpoint.py."""
        return []
