"""Spectral distances between a restored (or degraded) signal and the clean reference: lower is better.

* :func:`log_spectral_distance` (LSD): ``mean_t sqrt(mean_f (log10 P_ref(t, f) - log10 P_est(t, f))^2)`` on power
  spectrograms (Hann window, ``n_fft`` 2048, hop 512, power floored at 1e-10), the definition of the speech
  super-resolution literature (Kuleshov et al. 2017; NU-Wave, Lee & Han 2021; VoiceFixer, Liu et al. 2022). It
  counts every frequency bin alike, so missing high bands (band-limited, coded input) weigh as much as noise.
* :func:`multi_resolution_stft_distance`: the training loss's spectral term -- spectral convergence plus
  log-magnitude L1, averaged over resolutions (Parallel WaveGAN, Yamamoto et al. 2020), computed by NeMo's
  ``MultiResolutionSTFTLoss`` exactly as ``RestorationGANModel`` computes ``train/multi_stft``. For evaluation the
  resolutions are fixed (Parallel WaveGAN's: FFT 512/1024/2048, hop 50/120/240, window 240/600/1200) whatever the
  model was trained with, so numbers of different models compare.

Both take ``[T]`` or ``[B, T]`` tensors or arrays, estimate first, reference second, and return floats (``[T]``)
or ``[B]`` tensors.

Example:
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> clean = torch.randn(16000, generator=g)
    >>> noisy = clean + 0.3 * torch.randn(16000, generator=g)
    >>> log_spectral_distance(clean, clean), log_spectral_distance(noisy, clean) > 0.05
    (0.0, True)
    >>> multi_resolution_stft_distance(noisy, clean) > multi_resolution_stft_distance(clean + 0.01 * noisy, clean)
    True
"""
from __future__ import annotations

import functools
from typing import Optional, Sequence, Tuple, Union

import torch

__all__ = ["EVAL_STFT_RESOLUTIONS", "log_spectral_distance", "multi_resolution_stft_distance", "stft_distance"]

# Parallel WaveGAN's resolutions (fft_sizes, hop_sizes, win_lengths), also config/restoration_gan.yaml's
EVAL_STFT_RESOLUTIONS = ((512, 1024, 2048), (50, 120, 240), (240, 600, 1200))

Signal = Union[torch.Tensor, "numpy.ndarray"]  # noqa: F821


def _batch(x: Signal) -> Tuple[torch.Tensor, bool]:
    x = torch.as_tensor(x).detach().float().cpu()
    return (x.unsqueeze(0), True) if x.dim() == 1 else (x, False)


def _out(values: torch.Tensor, single: bool):
    return float(values[0]) if single else values


def log_spectral_distance(estimate: Signal, reference: Signal, n_fft: int = 2048, hop_length: int = 512,
                          eps: float = 1e-10):
    """LSD of ``estimate`` against ``reference`` (``[T]`` -> float, ``[B, T]`` -> ``[B]``); 0 for identical signals."""
    est, single = _batch(estimate)
    ref, _ = _batch(reference)
    window = torch.hann_window(n_fft)

    def log_power(x):
        spec = torch.stft(x, n_fft, hop_length, window=window, return_complex=True)
        return torch.log10(spec.abs().pow(2).clamp(min=eps))  # [B, F, frames]

    diff = log_power(ref) - log_power(est)
    return _out(diff.pow(2).mean(dim=1).sqrt().mean(dim=-1), single)


@functools.lru_cache(maxsize=8)
def _stft_loss(fft_sizes: Tuple[int, ...], hop_sizes: Tuple[int, ...], win_lengths: Tuple[int, ...]):
    from nemo.collections.tts.losses.stftlosses import MultiResolutionSTFTLoss

    return MultiResolutionSTFTLoss(list(fft_sizes), list(hop_sizes), list(win_lengths))


def stft_distance(loss_module, estimate: torch.Tensor, reference: torch.Tensor,
                  length: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean over ``loss_module``'s resolutions (a NeMo ``MultiResolutionSTFTLoss``) of spectral convergence +
    log-magnitude L1 of ``estimate [B, T]`` against ``reference [B, T]``, over the valid ``length`` samples:
    one scalar for the batch (differentiable: the restoration model's ``multi_stft`` loss)."""
    sc, mag = loss_module(x=estimate.float(), y=reference.float(), input_lengths=length)
    return (torch.stack(sc) + torch.stack(mag)).mean()


@torch.no_grad()
def multi_resolution_stft_distance(estimate: Signal, reference: Signal,
                                   resolutions: Sequence[Sequence[int]] = EVAL_STFT_RESOLUTIONS):
    """Multi-resolution STFT distance per utterance (``[T]`` -> float, ``[B, T]`` -> ``[B]``); ``resolutions`` is
    ``(fft_sizes, hop_sizes, win_lengths)``."""
    est, single = _batch(estimate)
    ref, _ = _batch(reference)
    loss = _stft_loss(*(tuple(int(v) for v in r) for r in resolutions))
    values = torch.stack([stft_distance(loss, e[None], r[None]) for e, r in zip(est, ref)])
    return _out(values, single)
