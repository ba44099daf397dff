"""Training health checks as a Lightning callback: stop on NaN/Inf or exploding loss, on a collapsed
discriminator, and warn when the step time is dominated by waiting for data.

(Long file: one callback whose rules share one per-step DDP reduction and one state; the
per-series NaN/spike rule is the small ``_SeriesWatch`` below.)

Long pretraining runs used to be watched by hand ("stop if the loss is NaN", "GPU utilisation < 50%").
:class:`TrainingHealthMonitor` does it in the run:

* **non-finite loss**: the loss is NaN/Inf for ``nan_patience`` consecutive training batches -> stop.
  Isolated non-finite steps are tolerated because fp16 AMP skips such steps and recovers.
* **loss spike**: after ``spike_warmup`` finite steps, the loss exceeds ``spike_factor`` x the median of the
  last ``spike_window`` healthy losses for ``spike_patience`` consecutive batches -> stop. For a median
  ``m`` the threshold is ``m + (spike_factor - 1) * max(|m|, 1e-8)``, which is ``spike_factor * m`` for the
  usual positive loss and still means "far above the usual level" for negative losses such as -SI-SDR.
  Spiking losses are kept out of the median so a divergence cannot raise its own threshold.
* **more losses**: every logged metric in ``loss_keys`` (e.g. each term of a GAN's loss) gets the same NaN/Inf
  and spike checks as the loss, with its own running median; one that is not logged yet (a term that starts
  later) is not judged until it is.
* **discriminator collapse** (GAN-style models): the logged metrics ``gan_real_key``/``gan_fake_key``
  (e.g. mean D output on real and fake inputs) stay within ``collapse_eps`` of each other, or both stay
  constant to within ``collapse_eps``, or one stays within ``gan_zero_eps`` of 0, for ``collapse_patience``
  consecutive batches -> stop; one is non-finite or above ``gan_explode`` in magnitude for ``spike_patience``
  consecutive batches -> stop. Inactive while those metrics are not logged.
* **epoch-level warnings** (logged, kept in ``warnings``; training goes on): the epoch mean of ``flat_key``
  changed by less than ``flat_tolerance`` (relative) over the last ``flat_epochs`` epochs; the epoch means of
  ``gan_real_key`` and ``gan_fake_key`` are more than ``gan_drift`` apart.
* **data wait**: over every ``data_wait_interval`` batches, the time between one batch's end and the next
  batch's start (fetching data) is compared with the time from batch start to end (compute); when the wait
  is more than ``data_wait_threshold`` of the step time a warning names the numbers and the usual fixes.
  Gaps spanning validation, a checkpoint save or an epoch boundary are not counted. Reading the loss
  value synchronises with the GPU once per step (as a progress bar showing the loss does), so compute time
  includes the device's work.

Stopping raises :class:`TrainingHealthError` from ``on_train_batch_end``, after logging the reason.
Lightning runs ``ModelCheckpoint`` callbacks after all others, so the batch that triggers the stop saves
nothing; raising (rather than ``trainer.should_stop = True``) also skips the end-of-training saves
(NeMo's ``on_train_end`` writes ``*-last.ckpt`` and possibly the ``.nemo``) which would otherwise replace
the last good checkpoint with the diverged weights. In addition, any checkpoint save (periodic ones
during the ``nan_patience`` grace steps included) is refused with the same error when a model parameter
is NaN/Inf (``check_params_on_save``). Under DDP the loss and GAN metrics are averaged over ranks before
the checks and the parameter check is reduced with ``any``, so every rank takes the same decision at the
same step and no rank is left waiting in a collective.

Configuration: under ``model.health`` (optional; read with ``cfg.model.get('health', {})`` so NeMo's
configs need no new key), or as ``trainer.callbacks: [{_target_: nest_ext.parts.health.TrainingHealthMonitor,
...}]`` -- NeMo 3.0's ``resolve_trainer_cfg`` builds only allow-listed targets, so call
``nest_ext.parts.nemo_targets.allow_nest_ext_targets(TrainingHealthMonitor)`` before it (train.py does). :func:`add_health_monitor` adds the ``model.health`` one unless the
callbacks already hold a monitor.

Example::

    >>> import torch, lightning.pytorch as pl
    >>> class Tiny(pl.LightningModule):
    ...     def __init__(self):
    ...         super().__init__(); self.w = torch.nn.Parameter(torch.ones(1))
    ...     def training_step(self, batch, batch_idx):
    ...         return self.w.sum() * (float('nan') if batch_idx >= 2 else 1.0)
    ...     def configure_optimizers(self):
    ...         return torch.optim.SGD(self.parameters(), lr=0.0)
    ...     def train_dataloader(self):
    ...         return torch.utils.data.DataLoader(torch.zeros(20, 1), batch_size=1)
    >>> trainer = pl.Trainer(max_steps=20, callbacks=[TrainingHealthMonitor(nan_patience=3)], logger=False,
    ...                      enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    >>> try:
    ...     trainer.fit(Tiny())
    ... except TrainingHealthError as e:
    ...     print(e.reason.split(':')[0])
    loss is NaN/Inf for 3 consecutive training batches (global steps 3-5)
"""
from __future__ import annotations

import logging
import math
import statistics
import time
from collections import deque
from typing import Any, Iterable, List, Mapping, Optional

import torch
from lightning.pytorch.callbacks import Callback

__all__ = [
    "TrainingHealthError",
    "TrainingHealthMonitor",
    "add_health_monitor",
    "health_monitor_from_config",
]

logger = logging.getLogger(__name__)


class TrainingHealthError(RuntimeError):
    """Raised by :class:`TrainingHealthMonitor` to end a run that is no longer healthy; ``reason`` says why."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class TrainingHealthMonitor(Callback):
    """Stops training on NaN/Inf or spiking loss or a collapsed discriminator; warns on data-bound steps.

    Args:
        nan_patience: consecutive batches with a NaN/Inf loss before stopping (>= 1).
        spike_factor: K; a loss above K x the running median counts as a spike. ``None`` or <= 0 disables.
        spike_window: number of recent healthy losses whose median is the reference.
        spike_warmup: healthy batches seen before spikes are checked (the loss falls fast early on).
        spike_patience: consecutive spiking batches before stopping.
        loss_key: logged metric used when ``training_step`` returns no loss (e.g. manual optimisation).
        gan_real_key, gan_fake_key: logged metrics with the discriminator's outputs on real and fake input.
        collapse_eps: tolerance for "equal" and "constant" discriminator outputs.
        collapse_patience: consecutive collapsed batches before stopping.
        loss_keys: more logged losses with their own NaN/Inf and spike checks.
        gan_zero_eps: a discriminator metric within this of 0 counts as collapsed (``None``: rule off).
        gan_explode: a discriminator metric above this in magnitude counts as exploding (``None``: rule off).
        flat_key, flat_epochs, flat_tolerance: warn when the epoch mean of ``flat_key`` moved by less than
            ``flat_tolerance`` x its value over ``flat_epochs`` epochs (``flat_key`` ``None``: rule off).
        gan_drift: warn when the epoch means of the two discriminator metrics are more than this apart.
        data_wait_threshold: warn when waiting for data takes more than this fraction of the step time.
        data_wait_interval: batches per measurement interval (at most one warning per interval).
        check_params_on_save: refuse to save a checkpoint whose parameters contain NaN/Inf.
        log_data_wait: also log ``health/data_wait_fraction`` to the experiment logger once per interval.

    Attributes after a run: ``stop_reason`` (``None`` if not stopped), ``data_wait_warnings`` and ``warnings``
    (messages of the data-wait and of the epoch-level rules).
    """

    def __init__(
        self,
        nan_patience: int = 3,
        spike_factor: Optional[float] = 10.0,
        spike_window: int = 100,
        spike_warmup: int = 100,
        spike_patience: int = 3,
        loss_key: str = "train_loss",
        gan_real_key: Optional[str] = "d_real",
        gan_fake_key: Optional[str] = "d_fake",
        collapse_eps: float = 1e-4,
        collapse_patience: int = 100,
        data_wait_threshold: float = 0.5,
        data_wait_interval: int = 100,
        check_params_on_save: bool = True,
        log_data_wait: bool = True,
        loss_keys: Optional[Iterable[str]] = None,
        gan_zero_eps: Optional[float] = None,
        gan_explode: Optional[float] = None,
        flat_key: Optional[str] = None,
        flat_epochs: int = 5,
        flat_tolerance: float = 0.01,
        gan_drift: Optional[float] = None,
    ):
        super().__init__()
        if nan_patience < 1 or spike_patience < 1 or collapse_patience < 1:
            raise ValueError("nan_patience, spike_patience and collapse_patience must be >= 1")
        if spike_window < 1 or data_wait_interval < 1 or flat_epochs < 1:
            raise ValueError("spike_window, data_wait_interval and flat_epochs must be >= 1")
        self.nan_patience = int(nan_patience)
        self.spike_factor = float(spike_factor) if spike_factor else None
        self.spike_window = int(spike_window)
        self.spike_warmup = int(spike_warmup)
        self.spike_patience = int(spike_patience)
        self.loss_key = loss_key
        self.gan_real_key = gan_real_key
        self.gan_fake_key = gan_fake_key
        self.collapse_eps = float(collapse_eps)
        self.collapse_patience = int(collapse_patience)
        self.data_wait_threshold = float(data_wait_threshold)
        self.data_wait_interval = int(data_wait_interval)
        self.check_params_on_save = bool(check_params_on_save)
        self.log_data_wait = bool(log_data_wait)
        self.loss_keys = [str(k) for k in (loss_keys or [])]
        self.gan_zero_eps = None if gan_zero_eps is None else float(gan_zero_eps)
        self.gan_explode = None if gan_explode is None else float(gan_explode)
        self.flat_key = flat_key
        self.flat_epochs = int(flat_epochs)
        self.flat_tolerance = float(flat_tolerance)
        self.gan_drift = None if gan_drift is None else float(gan_drift)
        self._reset_state()

    def _tracker(self, label: str) -> "_SeriesWatch":
        return _SeriesWatch(label, self.nan_patience, self.spike_factor, self.spike_window, self.spike_warmup,
                            self.spike_patience)

    def _reset_state(self):
        self.stop_reason: Optional[str] = None
        self.data_wait_warnings: List[str] = []
        self.warnings: List[str] = []
        self._loss_watch = self._tracker("loss")
        self._key_watch = {key: self._tracker(f"'{key}'") for key in self.loss_keys}
        self._collapse_run = 0
        self._zero_run = 0
        self._explode_run = 0
        self._prev_gan: Optional[tuple] = None
        self._epoch_sums: dict = {}  # name -> [sum, count] over this epoch's batches
        self._flat_means: deque = deque(maxlen=self.flat_epochs + 1)
        # data-wait timing (rank-local)
        self._t_start: Optional[float] = None
        self._t_end: Optional[float] = None
        self._wait_sum = 0.0
        self._compute_sum = 0.0
        self._timed_batches = 0

    # ------------------------------------------------------------------ hooks
    def on_fit_start(self, trainer, pl_module):
        self._reset_state()

    def on_train_epoch_start(self, trainer, pl_module):
        self._t_end = None  # the gap across an epoch boundary includes dataloader restart, not a batch wait

    def on_validation_start(self, trainer, pl_module):
        self._t_end = None

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        self._t_end = None  # saving time is not data wait
        if not self.check_params_on_save:
            return
        params = [p.detach() for p in pl_module.parameters()]
        local_bad = bool(params) and not bool(torch.stack([torch.isfinite(p).all() for p in params]).all())
        if trainer.strategy.reduce_boolean_decision(local_bad, all=False):
            self._fail(
                trainer,
                f"refusing to save a checkpoint at global step {trainer.global_step}: model parameters contain "
                "NaN/Inf; the checkpoints already on disk are kept",
            )

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        now = time.perf_counter()
        if self._t_end is not None:
            self._wait_sum += now - self._t_end
            self._timed_batches += 1
        self._t_start = now

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        values = self._read_values(trainer, pl_module, outputs)  # same values on every rank
        now = time.perf_counter()  # after reading the loss, which waited for the device
        if self._t_start is not None and self._t_end is not None:
            self._compute_sum += now - self._t_start
        step = trainer.global_step
        for name, value in values.items():  # epoch sums for the epoch-level warnings
            if value is not None and math.isfinite(value):
                acc = self._epoch_sums.setdefault(name, [0.0, 0])
                acc[0], acc[1] = acc[0] + value, acc[1] + 1
        if values["loss"] is not None:
            self._watch(trainer, self._loss_watch, values["loss"], step)
        for key, watch in self._key_watch.items():
            if values[key] is not None:
                self._watch(trainer, watch, values[key], step)
        if values["real"] is not None and values["fake"] is not None:
            self._check_gan(trainer, values["real"], values["fake"], step)
        self._check_data_wait(trainer, pl_module)
        self._t_end = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):
        sums, self._epoch_sums = self._epoch_sums, {}
        means = {name: total / count for name, (total, count) in sums.items()}
        epoch = trainer.current_epoch
        if self.flat_key and "flat" in means:
            self._flat_means.append(means["flat"])
            if len(self._flat_means) == self.flat_epochs + 1:
                old, new = self._flat_means[0], self._flat_means[-1]
                if abs(new - old) <= self.flat_tolerance * max(abs(old), 1e-12):
                    self._warn(
                        f"'{self.flat_key}' is flat: its epoch mean went from {old:.6g} to {new:.6g} over the last "
                        f"{self.flat_epochs} epochs (up to epoch {epoch}, counted from 0), less than "
                        f"{100 * self.flat_tolerance:g}% change; consider the learning rate or the loss weights"
                    )
        if self.gan_drift is not None and "real" in means and "fake" in means:
            real, fake = means["real"], means["fake"]
            if abs(real - fake) > self.gan_drift:
                self._warn(
                    f"'{self.gan_real_key}' ({real:.6g}) and '{self.gan_fake_key}' ({fake:.6g}) drifted apart: "
                    f"epoch {epoch} means differ by {abs(real - fake):.6g} > {self.gan_drift:g}; one network is "
                    "winning, consider its learning rate or the adversarial loss weight"
                )

    # ------------------------------------------------------------------ checks
    def _read_values(self, trainer, pl_module, outputs) -> dict:
        loss = None
        if isinstance(outputs, torch.Tensor):
            loss = outputs
        elif isinstance(outputs, Mapping) and isinstance(outputs.get("loss"), torch.Tensor):
            loss = outputs["loss"]
        metrics = trainer.callback_metrics
        if loss is None and self.loss_key and self.loss_key in metrics:
            loss = metrics[self.loss_key]

        def metric(key):
            value = metrics.get(key) if key else None
            return value if isinstance(value, torch.Tensor) else None

        named = {"loss": loss, "real": metric(self.gan_real_key), "fake": metric(self.gan_fake_key),
                 "flat": metric(self.flat_key)}
        named.update((key, metric(key)) for key in self.loss_keys)
        # one vector, one collective, with a presence mask; the mask is the same on all ranks
        values = [v.detach().float().mean() if v is not None else torch.zeros(()) for v in named.values()]
        vec = torch.stack([v.to(pl_module.device) for v in values])
        if trainer.world_size > 1:
            vec = trainer.strategy.reduce(vec, reduce_op="mean")
        return {name: (v if named[name] is not None else None) for name, v in zip(named, vec.tolist())}

    def _watch(self, trainer, watch: "_SeriesWatch", value: float, step: int):
        reason = watch.update(value, step)
        if reason is not None:
            self._fail(trainer, reason)

    def _check_gan(self, trainer, real: float, fake: float, step: int):
        names = f"'{self.gan_real_key}' ({real:.6g}) and '{self.gan_fake_key}' ({fake:.6g})"
        exploding = [v for v in (real, fake) if not math.isfinite(v)
                     or (self.gan_explode is not None and abs(v) > self.gan_explode)]
        self._explode_run = self._explode_run + 1 if exploding else 0
        if self._explode_run >= self.spike_patience:
            self._fail(
                trainer,
                f"discriminator exploded: {names}; one was non-finite or above {self.gan_explode} in magnitude "
                f"for {self._explode_run} consecutive training batches (up to global step {step})",
            )
        zero = self.gan_zero_eps is not None and min(abs(real), abs(fake)) <= self.gan_zero_eps
        self._zero_run = self._zero_run + 1 if zero else 0
        if self._zero_run >= self.collapse_patience:
            self._fail(
                trainer,
                f"discriminator collapsed to 0: {names}; one stayed within {self.gan_zero_eps:g} of 0 for "
                f"{self._zero_run} consecutive training batches (up to global step {step})",
            )
        close = abs(real - fake) <= self.collapse_eps
        constant = self._prev_gan is not None and (
            abs(real - self._prev_gan[0]) <= self.collapse_eps and abs(fake - self._prev_gan[1]) <= self.collapse_eps
        )
        self._prev_gan = (real, fake)
        self._collapse_run = self._collapse_run + 1 if (close or constant) else 0
        if self._collapse_run >= self.collapse_patience:
            what = "equal" if close else "constant"
            self._fail(
                trainer,
                f"discriminator collapsed: {names} "
                f"stayed {what} within {self.collapse_eps:g} for {self._collapse_run} consecutive training batches "
                f"(up to global step {step})",
            )

    def _warn(self, message: str):
        self.warnings.append(message)
        logger.warning(f"TrainingHealthMonitor: {message}")

    def _check_data_wait(self, trainer, pl_module):
        if self._timed_batches < self.data_wait_interval:
            return
        total = self._wait_sum + self._compute_sum
        fraction = self._wait_sum / total if total > 0 else 0.0
        if self.log_data_wait and trainer.loggers:
            pl_module.log("health/data_wait_fraction", fraction, on_step=True, on_epoch=False, rank_zero_only=True)
        if fraction > self.data_wait_threshold:
            message = (
                f"rank {trainer.global_rank}: waiting for data took {100 * fraction:.0f}% of the step time over the "
                f"last {self._timed_batches} batches (data {self._wait_sum / self._timed_batches * 1e3:.1f} ms, "
                f"compute {self._compute_sum / self._timed_batches * 1e3:.1f} ms per batch, up to global step "
                f"{trainer.global_step}); the accelerator is idle most of the time. Consider more "
                "train_ds.num_workers, pin_memory, persistent_workers, prefetch_factor, tarred/lhotse shards "
                "on local disk, or cheaper on-the-fly augmentation."
            )
            self.data_wait_warnings.append(message)
            logger.warning(message)
        self._wait_sum = self._compute_sum = 0.0
        self._timed_batches = 0

    def _fail(self, trainer, reason: str):
        self.stop_reason = reason
        if trainer.is_global_zero:
            logger.error(f"TrainingHealthMonitor: {reason}")
        raise TrainingHealthError(reason)


class _SeriesWatch:
    """NaN/Inf and spike checks of one loss series; ``update`` returns the reason to stop, or ``None``."""

    def __init__(self, label, nan_patience, spike_factor, spike_window, spike_warmup, spike_patience):
        self.label, self.nan_patience, self.spike_factor = label, nan_patience, spike_factor
        self.spike_warmup, self.spike_patience = spike_warmup, spike_patience
        self.history: deque = deque(maxlen=spike_window)
        self.healthy_steps = 0
        self.nan_run: List[int] = []
        self.spike_run: List[int] = []

    def update(self, value: float, step: int) -> Optional[str]:
        if not math.isfinite(value):
            self.nan_run.append(step)
            self.spike_run = []
            if len(self.nan_run) >= self.nan_patience:
                return (
                    f"{self.label} is NaN/Inf for {len(self.nan_run)} consecutive training batches "
                    f"(global steps {self.nan_run[0]}-{self.nan_run[-1]}): last value {value}; stopping before "
                    "any checkpoint of this state is written"
                )
            return None
        self.nan_run = []
        if self.spike_factor and self.healthy_steps >= self.spike_warmup and len(self.history) > 0:
            median = statistics.median(self.history)
            threshold = median + (self.spike_factor - 1.0) * max(abs(median), 1e-8)
            if value > threshold:
                self.spike_run.append(step)
                if len(self.spike_run) >= self.spike_patience:
                    return (
                        f"{self.label} spiked above {self.spike_factor:g} x its running median for "
                        f"{len(self.spike_run)} consecutive training batches (global steps {self.spike_run[0]}-"
                        f"{self.spike_run[-1]}): {self.label} {value:.6g}, median of the last {len(self.history)} "
                        f"healthy batches {median:.6g}, threshold {threshold:.6g}"
                    )
                return None
        self.spike_run = []
        self.history.append(value)
        self.healthy_steps += 1
        return None


_CONFIG_KEYS = (
    "nan_patience", "spike_factor", "spike_window", "spike_warmup", "spike_patience", "loss_key",
    "gan_real_key", "gan_fake_key", "collapse_eps", "collapse_patience", "data_wait_threshold",
    "data_wait_interval", "check_params_on_save", "log_data_wait", "loss_keys", "gan_zero_eps", "gan_explode",
    "flat_key", "flat_epochs", "flat_tolerance", "gan_drift",
)


def health_monitor_from_config(health_cfg: Optional[Mapping[str, Any]]) -> Optional[TrainingHealthMonitor]:
    """Build the monitor from a ``model.health`` mapping (may be ``None``/empty: defaults); ``None`` when
    ``enabled: false``. Unknown keys raise ``ValueError`` naming them, so a typo is not silently ignored.

    >>> health_monitor_from_config({'nan_patience': 5}).nan_patience
    5
    >>> health_monitor_from_config({'enabled': False}) is None
    True
    """
    cfg = dict(health_cfg or {})
    if not cfg.pop("enabled", True):
        return None
    unknown = sorted(set(cfg) - set(_CONFIG_KEYS))
    if unknown:
        raise ValueError(f"unknown model.health keys {unknown}; known: enabled, {', '.join(_CONFIG_KEYS)}")
    return TrainingHealthMonitor(**cfg)


def add_health_monitor(callbacks: Optional[Iterable[Callback]], model_cfg: Optional[Mapping[str, Any]]) -> list:
    """Return ``callbacks`` plus a monitor built from ``model_cfg.health`` (on by default), unless one is
    already there (e.g. from ``trainer.callbacks``) or ``model.health.enabled`` is false.

    >>> [type(c).__name__ for c in add_health_monitor([], {})]
    ['TrainingHealthMonitor']
    >>> len(add_health_monitor([TrainingHealthMonitor()], {}))
    1
    """
    callbacks = list(callbacks or [])
    if any(isinstance(cb, TrainingHealthMonitor) for cb in callbacks):
        return callbacks
    health_cfg = model_cfg.get("health", {}) if model_cfg is not None else {}
    monitor = health_monitor_from_config(health_cfg)
    if monitor is not None:
        callbacks.append(monitor)
    return callbacks
