"""Codebook health while pretraining NEST: are the quantizer's targets still informative?

NEST (like BEST-RQ) predicts the codes a frozen random-projection quantizer gives each masked frame. When few
codes are used -- badly scaled features, silence-heavy data, a wrong ``num_classes`` -- the loss looks fine
while the model learns little. :class:`CodebookHealthMonitor` counts the target codes of every training batch
and, every ``every_n_steps`` steps, reports per codebook over that window of steps:

* ``coverage``: fraction of the ``num_classes`` codes used at least once;
* ``entropy`` (bits) and ``perplexity`` (``2 ** entropy``, the number of equally used codes with that
  entropy) of the code distribution. In nats (``entropy * ln 2``, printed too) it is the masked-token loss
  of a model that predicts only how often each code occurs: a training loss that stays there means the
  model has not learnt to use the context yet;
* ``top_share``: share of frames taken by the most frequent code;
* ``masked_share``: share of frames masked, i.e. frames the loss trains on (same for every codebook).

Only frames inside each utterance's length count. Under DDP the counts of all ranks are summed (one
``all_reduce`` per window) before any ratio is taken, so every rank logs and checks the global value and
takes the same decision. The figures go to the experiment loggers as ``codebook/<name>`` (with ``_book<i>``
per codebook when there are several) at the window's last step, and to the log on rank 0. When coverage or perplexity falls
below its threshold a warning names the codebook and the values; with ``action="stop"`` the run ends with
:class:`~nest_ext.parts.health.TrainingHealthError` instead. Coverage is judged only when the window holds at
least ``num_classes`` frames (fewer frames cannot use every code).

The model provides the targets it already computed: after each training forward, ``pl_module.ssl_targets``
is a :class:`CodebookTargets` (nest_ext's NEST model sets it; nothing is recomputed). Per step the cost is
one ``bincount`` on the device; the ratios are computed once per window.

Example::

    >>> import torch
    >>> counts = torch.tensor([[6, 2, 0, 0]])          # one codebook of 4 codes
    >>> s = codebook_stats(counts, masked_frames=2, frames=8)[0]
    >>> s["coverage"], s["entropy"], round(s["perplexity"], 3), s["top_share"], s["masked_share"]
    (0.5, 0.8112781244591328, 1.755, 0.75, 0.25)
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional

import torch
from lightning.pytorch.callbacks import Callback

from nest_ext.parts.health import TrainingHealthError

__all__ = ["CodebookTargets", "CodebookHealthMonitor", "codebook_stats", "codebook_monitor_from_config"]

logger = logging.getLogger(__name__)


@dataclass
class CodebookTargets:
    """What one training batch asked the model to predict.

    tokens: [B, T', H] code ids (H codebooks); lengths: [B] valid frames per utterance; masked: [B, T'] bool,
    True where the loss trains on the frame; num_classes: codes per codebook.
    """

    tokens: torch.Tensor
    lengths: torch.Tensor
    masked: torch.Tensor
    num_classes: int


def codebook_stats(counts: torch.Tensor, masked_frames: float, frames: float) -> List[Dict[str, float]]:
    """Per-codebook figures from code counts [H, C] (one row per codebook) of ``frames`` frames."""
    counts = counts.double()
    out = []
    for row in counts:
        total = float(row.sum())
        p = row[row > 0] / max(total, 1.0)
        entropy = float(-(p * p.log2()).sum()) if total else 0.0
        out.append({
            "coverage": float((row > 0).sum()) / row.numel(),
            "entropy": entropy,
            "perplexity": 2.0 ** entropy,
            "top_share": float(row.max()) / total if total else 0.0,
            "masked_share": float(masked_frames) / frames if frames else 0.0,
            "frames": total,
        })
    return out


class CodebookHealthMonitor(Callback):
    """Counts NEST's target codes per codebook; logs coverage/entropy/perplexity and warns (or stops) on collapse.

    Args:
        every_n_steps: window length in training steps; figures are logged and checked at its end.
        min_coverage: warn when a codebook uses less than this fraction of its codes (judged only when the window
            has at least ``num_classes`` frames). ``None`` or 0 disables.
        min_perplexity: warn when a codebook's perplexity is below this. ``None`` or 0 disables.
        action: ``"warn"`` (default) or ``"stop"`` (raise ``TrainingHealthError`` on every rank).
        log: log the figures to the experiment logger.

    Attributes: ``history`` (one dict per window: step and per-book figures), ``warnings`` (messages).
    """

    def __init__(self, every_n_steps: int = 100, min_coverage: Optional[float] = 0.05,
                 min_perplexity: Optional[float] = 8.0, action: str = "warn", log: bool = True):
        super().__init__()
        if every_n_steps < 1:
            raise ValueError("every_n_steps must be >= 1")
        if action not in ("warn", "stop"):
            raise ValueError(f"action must be 'warn' or 'stop', got {action!r}")
        self.every_n_steps = int(every_n_steps)
        self.min_coverage = float(min_coverage or 0.0)
        self.min_perplexity = float(min_perplexity or 0.0)
        self.action = action
        self.log = bool(log)
        self.history: List[Dict[str, Any]] = []
        self.warnings: List[str] = []
        self._last_window_step = 0
        self._reset_window()

    def _reset_window(self):
        self._counts: Optional[torch.Tensor] = None  # [H, C] float64 (exact up to 2**53 frames)
        self._masked = self._frames = None
        self._batches = 0

    def on_fit_start(self, trainer, pl_module):
        self.history, self.warnings = [], []
        self._last_window_step = trainer.global_step  # a resumed run starts its first window here
        self._reset_window()

    def update(self, targets: CodebookTargets) -> None:
        """Add one batch's codes to the window."""
        tokens = targets.tokens if targets.tokens.dim() == 3 else targets.tokens.unsqueeze(-1)  # [B, T', H]
        b, t, books = tokens.shape
        valid = torch.arange(t, device=tokens.device)[None, :] < targets.lengths.to(tokens.device)[:, None]
        c = int(targets.num_classes)
        ids = (tokens + c * torch.arange(books, device=tokens.device))[valid]  # [N, H], book-offset ids
        counts = torch.bincount(ids.reshape(-1), minlength=books * c).view(books, c).double()
        masked = targets.masked[:, :t]
        masked_frames = (masked & valid[:, : masked.shape[1]]).sum().double()
        if self._counts is None:
            self._counts, self._masked, self._frames = counts, masked_frames, valid.sum().double()
        else:
            self._counts += counts
            self._masked += masked_frames
            self._frames += valid.sum().double()
        self._batches += 1

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        targets = getattr(pl_module, "ssl_targets", None)
        if targets is not None:
            self.update(targets)
            pl_module.ssl_targets = None  # counted once, and its tensors freed
        step = trainer.global_step  # already counts this batch's optimizer step
        if step % self.every_n_steps == 0 and step != self._last_window_step and self._counts is not None:
            self._last_window_step = step  # with gradient accumulation several batches share a step
            self.end_window(trainer, pl_module)

    def end_window(self, trainer, pl_module=None) -> List[Dict[str, float]]:
        """Reduce the window over ranks, log, check and start a new window; returns the per-book figures."""
        vec = torch.cat([self._counts.reshape(-1), self._masked.view(1), self._frames.view(1)])
        if trainer is not None and trainer.world_size > 1:
            vec = trainer.strategy.reduce(vec, reduce_op="sum")
        books = self._counts.shape[0]
        counts, masked, frames = vec[:-2].view(books, -1), float(vec[-2]), float(vec[-1])
        stats = codebook_stats(counts.cpu(), masked, frames)
        step = trainer.global_step if trainer is not None else None
        self.history.append({"step": step, "books": stats})
        self._reset_window()
        if self.log and trainer is not None and trainer.is_global_zero and trainer.loggers:
            # straight to the loggers, once per window (LightningModule.log from a callback would repeat the last
            # value at every logging step); the values are global already, so rank 0 speaks for all
            metrics = {f"codebook/{key}{f'_book{i}' if books > 1 else ''}": s[key]
                       for i, s in enumerate(stats) for key in ("coverage", "entropy", "perplexity", "top_share",
                                                                 "masked_share")}
            for experiment_logger in trainer.loggers:
                experiment_logger.log_metrics(metrics, step=step)
        if trainer is None or trainer.is_global_zero:
            logger.info("codebook health at step %s: %s", step, "; ".join(
                f"book {i}: coverage {s['coverage']:.3f}, perplexity {s['perplexity']:.1f}, entropy "
                f"{s['entropy']:.2f} bits ({s['entropy'] * math.log(2):.2f} nats), top code "
                f"{100 * s['top_share']:.1f}%, masked {100 * s['masked_share']:.1f}%"
                for i, s in enumerate(stats)))
        self._check(trainer, stats, step, num_classes=counts.shape[1])
        return stats

    def _check(self, trainer, stats, step, num_classes):
        problems = []
        for i, s in enumerate(stats):
            if self.min_coverage and s["frames"] >= num_classes and s["coverage"] < self.min_coverage:
                problems.append(f"codebook {i}: coverage {s['coverage']:.4f} < {self.min_coverage:g}")
            if self.min_perplexity and s["frames"] > 0 and s["perplexity"] < self.min_perplexity:
                problems.append(f"codebook {i}: perplexity {s['perplexity']:.2f} < {self.min_perplexity:g}")
        if not problems:
            return
        s0 = stats[0]
        message = (
            f"codebook collapse at global step {step}: {'; '.join(problems)} (top code {100 * s0['top_share']:.1f}% "
            f"of {int(s0['frames'])} frames, masked {100 * s0['masked_share']:.1f}%). The targets carry little "
            "information: check feature scaling/normalisation, silence in the data, num_classes and code_dim."
        )
        self.warnings.append(message)
        if self.action == "stop":
            if trainer is None or trainer.is_global_zero:
                logger.error(f"CodebookHealthMonitor: {message}")
            raise TrainingHealthError(message)
        if trainer is None or trainer.is_global_zero:
            logger.warning(message)


_CONFIG_KEYS = ("every_n_steps", "min_coverage", "min_perplexity", "action", "log")


def codebook_monitor_from_config(cfg: Optional[Mapping[str, Any]]) -> Optional[CodebookHealthMonitor]:
    """Build the monitor from a ``model.codebook_health`` mapping (``None``/empty: defaults); ``None`` when
    ``enabled: false``. Unknown keys raise ``ValueError`` naming them.

    >>> codebook_monitor_from_config({"every_n_steps": 10}).every_n_steps
    10
    >>> codebook_monitor_from_config({"enabled": False}) is None
    True
    """
    cfg = dict(cfg or {})
    if not cfg.pop("enabled", True):
        return None
    unknown = sorted(set(cfg) - set(_CONFIG_KEYS))
    if unknown:
        raise ValueError(f"unknown model.codebook_health keys {unknown}; known: enabled, {', '.join(_CONFIG_KEYS)}")
    return CodebookHealthMonitor(**cfg)
