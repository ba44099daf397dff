"""Speech restoration GAN (degraded -> clean speech) as a NeMo audio-to-audio model.

``RestorationGANModel`` subclasses NeMo's ``AudioToAudioModel`` (data, ``.nemo``, ``process``, ``train.py``) and
trains with Lightning manual optimisation in the pattern of NeMo's ``AudioCodecModel``: a generator and a
discriminator optimiser and scheduler, non-finite gradients skipped, gradient norms clipped per network.

* Generator: ``model.generator`` (``_target_``), by default
  :class:`~nest_ext.modules.restoration.MossFormer2RestorationGenerator` (identity at initialisation).
* Discriminator: ``model.discriminator``, NeMo's (see :mod:`nest_ext.modules.restoration.discriminators`).
* Phases: epochs count from 0. Epochs ``0 .. gan_start_epoch - 1`` train the generator alone on the
  reconstruction losses -- the discriminator is neither run nor stepped; from ``gan_start_epoch`` each batch
  makes one discriminator step, then one generator step with the adversarial and feature-matching terms added.
* Losses (NeMo's, ``nemo.collections.tts.losses``), weighted by ``loss_weights``::

    g_loss = l1 * TimeDomainLoss + multi_stft * MultiResolutionSTFTLoss(sc + log-mag, mean over resolutions)
             + adversarial * GeneratorSquaredLoss + feature_matching * FeatureMatchingLoss     (GAN phase)
    d_loss = DiscriminatorSquaredLoss

  docs/parity.md ("Speech restoration") says how each term is normalised.
* Logged every step: ``train/l1``, ``train/multi_stft``, ``train/g_loss``; in the GAN phase also ``train/adv``,
  ``train/fm``, ``train/d_loss``, ``train/d_real``, ``train/d_fake`` (the mean discriminator score on real and on
  generated audio, over all sub-discriminators) and ``train/d_real_<name>``, ``train/d_fake_<name>`` per
  discriminator (``mpd``, ``mrsd``, ...). Validation: ``val_loss`` (weighted reconstruction loss), ``val_l1``,
  ``val_multi_stft``, ``val_sisdr``, and the degraded input's ``val_multi_stft_input``, ``val_sisdr_input``.
* Inference: :meth:`restore` (an array or tensor, long inputs in overlapping chunks) and :meth:`process` (files ->
  ``<stem>_restored.wav`` at the model's rate), behind ``nest-restore`` / ``tools/restore.py``.
* ``global_step`` counts optimiser steps, as in Lightning's manual optimisation: 1 per batch before
  ``gan_start_epoch``, 2 after. Set the run's length with ``trainer.max_epochs``.

Example (tiny network, random weights):
    >>> from omegaconf import OmegaConf
    >>> cfg = OmegaConf.load("config/restoration_gan_tiny.yaml").model
    >>> model = RestorationGANModel(cfg).eval()
    >>> out, length = model(input_signal=torch.randn(2, 1, 1600), input_length=torch.tensor([1600, 1200]))
    >>> tuple(out.shape), length.tolist(), float(out[1, 0, 1200:].abs().max())
    ((2, 1, 1600), [1600, 1200], 0.0)
"""
import logging
import math
import os
from typing import Dict, List, Optional

import torch
from lightning.pytorch import Trainer
from omegaconf import DictConfig, OmegaConf, open_dict

from nemo.collections.audio.models.audio_to_audio import AudioToAudioModel
from nemo.collections.tts.losses.audio_codec_loss import TimeDomainLoss
from nemo.collections.tts.losses.stftlosses import MultiResolutionSTFTLoss

from nest_ext.losses.pit_sisdr import si_sdr_valid
from nest_ext.metrics.spectral_distance import stft_distance
from nest_ext.modules.restoration.discriminators import discriminate, named_discriminators
from nest_ext.parts.dataloader_options import dataloader_kwargs
from nest_ext.parts.mono_audio import MonoAudioTypes, as_mono_batch, eval_on_batch
from nest_ext.parts.nemo_targets import allow_nest_ext_targets

logger = logging.getLogger(__name__)

__all__ = ["RestorationGANModel"]

allow_nest_ext_targets()  # NeMo 3.0 refuses nest_ext.* _target_s until they are allowed

_LOSSES = "nemo.collections.tts.losses.audio_codec_loss"
DEFAULT_LOSS_WEIGHTS = {"l1": 3.0, "multi_stft": 3.0, "adversarial": 1.0, "feature_matching": 2.0}
DEFAULT_STFT = {"fft_sizes": [512, 1024, 2048], "hop_sizes": [50, 120, 240], "win_lengths": [240, 600, 1200]}


class RestorationGANModel(MonoAudioTypes, AudioToAudioModel):
    """Generator + discriminator trained as a GAN after ``gan_start_epoch`` reconstruction-only epochs.

    Config keys (under ``model``): ``sample_rate``, ``generator``, ``discriminator``, ``loss_weights``,
    ``multi_stft`` (``fft_sizes``, ``hop_sizes``, ``win_lengths``), ``gan_start_epoch``, ``warmup_epochs``,
    ``generator_loss`` / ``discriminator_loss`` / ``feature_matching_loss`` (``_target_``s, NeMo's squared GAN
    losses by default), ``skip_nan_gradients``, ``clip_grad_norm`` (``{generator: ..., discriminator: ...}``),
    ``optim.generator`` and ``optim.discriminator`` (each ``name``, ``lr``, optimiser arguments and ``sched``),
    ``train_ds`` / ``validation_ds`` / ``test_ds`` (:mod:`nest_ext.data.restoration_dataset`), ``health``.
    """

    def __init__(self, cfg: DictConfig, trainer: Trainer = None):
        super().__init__(cfg=cfg, trainer=trainer)
        self.generator = self.from_config_dict(self._cfg.generator)
        self.discriminator = self.from_config_dict(self._cfg.discriminator)
        self.gan_start_epoch = int(self._cfg.get("gan_start_epoch", 0))
        self.warmup_epochs = float(self._cfg.get("warmup_epochs", 0) or 0)
        weights = dict(DEFAULT_LOSS_WEIGHTS, **(self._cfg.get("loss_weights", None) or {}))
        unknown = sorted(set(weights) - set(DEFAULT_LOSS_WEIGHTS))
        if unknown:
            raise ValueError(f"unknown model.loss_weights {unknown}; known: {sorted(DEFAULT_LOSS_WEIGHTS)}")
        self.loss_weights = {k: float(v) for k, v in weights.items()}
        self.skip_nan_gradients = bool(self._cfg.get("skip_nan_gradients", True))
        self.clip_grad_norm = dict(self._cfg.get("clip_grad_norm", None) or {})
        self.automatic_optimization = False

    def _setup_loss(self):
        """Called by ``AudioToAudioModel.__init__``: the reconstruction and GAN losses (all NeMo's)."""
        self.loss = None
        self.l1_loss = TimeDomainLoss()
        stft = dict(DEFAULT_STFT, **(self._cfg.get("multi_stft", None) or {}))
        self.multi_stft_loss = MultiResolutionSTFTLoss(stft["fft_sizes"], stft["hop_sizes"], stft["win_lengths"])
        defaults = {"generator_loss": "GeneratorSquaredLoss", "discriminator_loss": "DiscriminatorSquaredLoss",
                    "feature_matching_loss": "FeatureMatchingLoss"}
        for name, cls in defaults.items():
            loss_cfg = self._cfg.get(name, None) or {"_target_": f"{_LOSSES}.{cls}"}
            setattr(self, name, self.from_config_dict(loss_cfg))

    # ------------------------------------------------------------------ network
    def forward(self, input_signal: torch.Tensor, input_length: Optional[torch.Tensor] = None):
        """Restore a batch: ``input_signal [B, 1, T]`` or ``[B, T]``, ``input_length [B]`` ->
        ``(output [B, 1, T], length [B])``; samples past each length are zero."""
        input_signal = as_mono_batch(input_signal)
        batch, time = input_signal.shape
        if input_length is None:
            input_length = torch.full((batch,), time, dtype=torch.long, device=input_signal.device)
        output = self.generator(input_signal)  # [B, 1, T]
        valid = torch.arange(time, device=output.device)[None, :] < input_length[:, None]
        return output * valid[:, None, :], input_length

    # ------------------------------------------------------------------ losses
    def _multi_stft(self, real: torch.Tensor, fake: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
        """Mean over resolutions of spectral convergence + log-magnitude L1 (Parallel WaveGAN's definition)."""
        return stft_distance(self.multi_stft_loss, fake, real, length)

    def _reconstruction(self, real, fake, length):
        l1 = self.l1_loss(audio_real=real, audio_gen=fake, audio_len=length)
        stft = self._multi_stft(real, fake, length)
        return l1, stft, self.loss_weights["l1"] * l1 + self.loss_weights["multi_stft"] * stft

    def _run_discriminators(self, real: torch.Tensor, fake: torch.Tensor, metrics: Optional[dict] = None):
        """All discriminators on ``real, fake [B, T]``; the score means go to ``metrics`` when given."""
        scores_real, scores_fake, fmaps_real, fmaps_fake = [], [], [], []
        for name, part in named_discriminators(self.discriminator):
            s_real, s_fake, f_real, f_fake = discriminate(part, real, fake)
            if metrics is not None:
                metrics[f"train/d_real_{name}"] = torch.stack([s.mean() for s in s_real]).mean().detach()
                metrics[f"train/d_fake_{name}"] = torch.stack([s.mean() for s in s_fake]).mean().detach()
            scores_real += s_real
            scores_fake += s_fake
            fmaps_real += f_real
            fmaps_fake += f_fake
        if metrics is not None:
            metrics["train/d_real"] = torch.stack([s.mean() for s in scores_real]).mean().detach()
            metrics["train/d_fake"] = torch.stack([s.mean() for s in scores_fake]).mean().detach()
        return scores_real, scores_fake, fmaps_real, fmaps_fake

    @property
    def gan_active(self) -> bool:
        """Whether this epoch trains the discriminator and adds the GAN terms (epochs count from 0)."""
        return self.current_epoch >= self.gan_start_epoch

    # ------------------------------------------------------------------ training
    def _compute_train_loss(self, input_signal, target_signal, input_length):
        """The generator's reconstruction loss (``AudioToAudioModel``'s abstract hook; training uses training_step)."""
        output, _ = self.forward(input_signal=input_signal, input_length=input_length)
        return self._reconstruction(target_signal[:, 0], output[:, 0], input_length)[2]

    def _update(self, optimizer, scheduler, module: torch.nn.Module, name: str, loss: torch.Tensor, metrics: dict):
        """Backward ``loss`` and step ``optimizer`` (toggled by the caller) unless ``module``'s gradient norm is
        non-finite, clipping it first when configured; then untoggle and step the schedule."""
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        norm = torch.nn.utils.get_total_norm(grads, error_if_nonfinite=False) if grads else torch.zeros(())
        metrics[f"train/grad_norm_{name}"] = norm.detach()
        if self.skip_nan_gradients and not torch.isfinite(norm):
            logger.warning(f"non-finite {name} gradient norm ({norm}) at global step {self.global_step}: step skipped")
            optimizer.zero_grad(set_to_none=True)
        else:
            if self.clip_grad_norm.get(name) is not None:
                self.clip_gradients(optimizer, gradient_clip_val=float(self.clip_grad_norm[name]),
                                    gradient_clip_algorithm="norm")
            optimizer.step()
        self.untoggle_optimizer(optimizer)
        if scheduler is not None:
            scheduler.step()

    def training_step(self, batch, batch_idx):
        opt_g, opt_d = self.optimizers()
        sched_g, sched_d = self.lr_schedulers() or (None, None)
        input_signal, target_signal, input_length = self._parse_batch(batch)
        output, _ = self.forward(input_signal=input_signal, input_length=input_length)
        real, fake = target_signal[:, 0], output[:, 0]
        metrics, gan = {}, self.gan_active

        if gan:  # discriminator step on the detached output
            self.toggle_optimizer(opt_d)
            scores_real, scores_fake, _, _ = self._run_discriminators(real, fake.detach(), metrics)
            d_loss = self.discriminator_loss(disc_scores_real=scores_real, disc_scores_gen=scores_fake)
            self._update(opt_d, sched_d, self.discriminator, "discriminator", d_loss, metrics)
            metrics["train/d_loss"] = d_loss.detach()

        self.toggle_optimizer(opt_g)  # the discriminator gets no gradient from the generator's loss
        l1, stft, g_loss = self._reconstruction(real, fake, input_length)
        metrics.update({"train/l1": l1.detach(), "train/multi_stft": stft.detach()})
        if gan:
            _, scores_fake, fmaps_real, fmaps_fake = self._run_discriminators(real, fake)
            adv = self.generator_loss(disc_scores_gen=scores_fake)
            fm = self.feature_matching_loss(fmaps_real=fmaps_real, fmaps_gen=fmaps_fake)
            g_loss = g_loss + self.loss_weights["adversarial"] * adv + self.loss_weights["feature_matching"] * fm
            metrics.update({"train/adv": adv.detach(), "train/fm": fm.detach()})
        self._update(opt_g, sched_g, self.generator, "generator", g_loss, metrics)

        metrics["train/g_loss"] = g_loss.detach()
        metrics["train/lr_generator"] = torch.tensor(opt_g.param_groups[0]["lr"])
        metrics["train/lr_discriminator"] = torch.tensor(opt_d.param_groups[0]["lr"])
        metrics["train/gan_phase"] = torch.tensor(float(gan))
        self.log_dict(metrics, on_step=True, on_epoch=False, batch_size=input_signal.size(0))

    # ------------------------------------------------------------------ optimisers
    def configure_optimizers(self):
        from nemo.core.optim.lr_scheduler import prepare_lr_scheduler
        from nemo.core.optim.optimizers import get_optimizer

        optim = self._cfg.get("optim", None)
        if optim is None or optim.get("generator") is None or optim.get("discriminator") is None:
            raise ValueError("model.optim needs 'generator' and 'discriminator' sections (name, lr, sched)")
        per_epoch, epochs = self._batches_per_epoch()
        optimizers, schedulers = [], []
        for name, module, first_epoch in (("generator", self.generator, 0),
                                          ("discriminator", self.discriminator, self.gan_start_epoch)):
            cfg = OmegaConf.to_container(optim[name], resolve=True)
            sched = cfg.pop("sched", None)
            opt_name = cfg.pop("name", "adamw")
            optimizer = get_optimizer(opt_name)(module.parameters(), **cfg)
            optimizers.append(optimizer)
            if sched is None:
                continue
            # this network's own steps: the discriminator steps only from gan_start_epoch on
            warmup_epochs = sched.pop("warmup_epochs", self.warmup_epochs if name == "generator" else 0)
            if sched.get("max_steps") is None:
                sched["max_steps"] = max(1, per_epoch * max(1, epochs - first_epoch))
            if sched.get("warmup_steps") is None and sched.get("warmup_ratio") is None:
                sched["warmup_steps"] = int(round(float(warmup_epochs) * per_epoch))
            scheduler = prepare_lr_scheduler(optimizer, sched)  # stepped by training_step (manual optimisation)
            schedulers.append({"scheduler": scheduler["scheduler"], "interval": scheduler["interval"]})
        if schedulers and len(schedulers) != 2:
            raise ValueError("set a sched for both optim.generator and optim.discriminator, or for neither")
        return (optimizers, schedulers) if schedulers else optimizers

    def _batches_per_epoch(self):
        """(training batches per epoch, epochs of the run) from the trainer; (1, 1) without one."""
        trainer = self._trainer
        if trainer is None:
            return 1, 1
        total = trainer.estimated_stepping_batches  # also loads the data, so num_training_batches is known
        per_epoch = trainer.num_training_batches
        if not math.isfinite(per_epoch) or per_epoch <= 0:
            raise ValueError("the restoration schedules need a sized training set (num_training_batches)")
        epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else math.ceil(total / per_epoch)
        return int(per_epoch), int(epochs)

    def setup(self, stage: str):
        # Before gan_start_epoch the discriminator gets no gradient: DDP must look for unused parameters
        from lightning.pytorch.strategies import DDPStrategy

        strategy = self._trainer.strategy if self._trainer is not None else None
        if isinstance(strategy, DDPStrategy) and not strategy._ddp_kwargs.get("find_unused_parameters", False):
            logger.info("RestorationGANModel: DDP with find_unused_parameters=True (the discriminator idles "
                         "before gan_start_epoch)")
            strategy._ddp_kwargs["find_unused_parameters"] = True
        return super().setup(stage)

    # ------------------------------------------------------------------ evaluation
    def evaluation_step(self, batch, batch_idx, dataloader_idx: int = 0, tag: str = "val"):
        input_signal, target_signal, input_length = self._parse_batch(batch)
        output, _ = self.forward(input_signal=input_signal, input_length=input_length)
        real, fake, degraded = target_signal[:, 0], output[:, 0], input_signal[:, 0]
        l1, stft, loss = self._reconstruction(real, fake, input_length)
        values = {
            f"{tag}_loss": loss, f"{tag}_l1": l1, f"{tag}_multi_stft": stft,
            f"{tag}_multi_stft_input": self._multi_stft(real, degraded, input_length),
            f"{tag}_sisdr": si_sdr_valid(output, target_signal, input_length).mean(),
            f"{tag}_sisdr_input": si_sdr_valid(input_signal[:, :1], target_signal, input_length).mean(),
        }
        self.log_dict(values, on_step=False, on_epoch=True, sync_dist=True, batch_size=input_signal.size(0))
        return {f"{tag}_loss": loss}

    def multi_evaluation_epoch_end(self, outputs, dataloader_idx: int = 0, tag: str = "val"):
        # Nothing left to log: evaluation_step logged every value with sync_dist
        return {f"{tag}_loss": torch.stack([x[f"{tag}_loss"] for x in outputs]).mean()}

    # ------------------------------------------------------------------ data
    def _setup_dataloader_from_config(self, config: Optional[Dict]):
        """(degraded, clean) pairs or clean speech degraded on the fly (:mod:`nest_ext.data.restoration_dataset`)."""
        if config is None or config.get("manifest_filepath") is None:
            logger.warning(f"No manifest_filepath in {config}; dataloader not set up")
            return None
        from nest_ext.data.restoration_dataset import get_restoration_dataset_from_config

        with open_dict(config):  # ModelPT sets up data before our __init__ body runs: read the config
            config["sample_rate"] = config.get("sample_rate", None) or int(self._cfg.sample_rate)
        if int(config["sample_rate"]) != int(self._cfg.sample_rate):
            raise ValueError(f"dataset sample_rate={config['sample_rate']} differs from the model's "
                             f"{self._cfg.sample_rate}")
        dataset = get_restoration_dataset_from_config(config)
        return torch.utils.data.DataLoader(
            dataset=dataset, batch_size=config["batch_size"], collate_fn=dataset.collate_fn,
            drop_last=config.get("drop_last", False), shuffle=config["shuffle"], **dataloader_kwargs(config),
        )

    def on_train_epoch_start(self):
        # new crops / degradations each epoch; the dataset keeps the epoch in shared memory for its workers
        dataset = getattr(self._train_dl, "dataset", None)
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(self.current_epoch)
        return super().on_train_epoch_start()

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def restore(self, audio, chunk_seconds: Optional[float] = None, overlap_seconds: Optional[float] = None):
        """Restore one utterance ``[T]`` (or a batch ``[B, T]``) at the model's rate -> ``[T]`` (``[B, T]``), on CPU.

        ``chunk_seconds`` (or ``model.inference_chunk_seconds``) bounds memory on long inputs: windows overlapping
        by ``overlap_seconds`` (default a quarter window, at most 1 s) restored one by one and cross-faded -- the
        chunking of the separation model (:func:`~nest_ext.modules.mossformer2.chunked.separate_chunked`, one
        output). Inputs no longer than one window are restored in one pass.
        """
        from nest_ext.modules.mossformer2.chunked import separate_chunked

        chunk_seconds = chunk_seconds or self._cfg.get("inference_chunk_seconds", None)

        def restore_batch(batch):
            if not chunk_seconds:
                return self.forward(input_signal=batch)[0][:, 0]
            overlap = min(1.0, chunk_seconds / 4) if overlap_seconds is None else overlap_seconds
            return separate_chunked(lambda x: self.forward(input_signal=x)[0], batch, chunk_seconds=chunk_seconds,
                                    overlap_seconds=overlap, sample_rate=self.sample_rate)[:, 0]

        return eval_on_batch(self, audio, restore_batch)

    @torch.no_grad()
    def process(self, paths2audio_files: List[str], output_dir: str, batch_size: int = 1,
                num_workers: Optional[int] = None, input_channel_selector: Optional[int] = None,
                input_dir: Optional[str] = None, chunk_seconds: Optional[float] = None) -> List[str]:
        """Restore files: ``<output_dir>/<stem>_restored.wav`` (32-bit float WAV at the model's rate, written
        atomically); returns the written paths. NeMo's ``process`` signature; files go one at a time
        (``batch_size``/``num_workers`` are accepted and unused). Inputs of any rate are resampled to the model's
        (:func:`~nest_ext.data.audio_io.load_audio`); a multi-channel file needs ``input_channel_selector``.

        Raises:
            BadAudioError: an input is missing, unreadable or empty (a ``ValueError`` too).
            ValueError: a multi-channel input without a channel.
        """
        from nest_ext.data.audio_io import load_audio, write_audio

        written = []
        for path in paths2audio_files:
            audio = load_audio(path, self.sample_rate, channel=input_channel_selector)
            restored = self.restore(audio, chunk_seconds=chunk_seconds).numpy()
            rel = os.path.relpath(path, input_dir) if input_dir is not None else os.path.basename(path)
            out = os.path.join(output_dir, f"{os.path.splitext(rel)[0]}_restored.wav")
            written.append(write_audio(out, restored, self.sample_rate))
        return written

    @classmethod
    def list_available_models(cls):
        """No hosted checkpoints."""
        return []
