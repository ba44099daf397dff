"""Chunked separation with overlap-add, for recordings too long to separate in one pass.

The mixture is cut into windows of ``chunk_seconds`` that overlap by ``overlap_seconds`` (the last window
is aligned to the end of the recording, so every window is full length). Each window is separated on
its own, so memory depends on the window length only (the output buffer ``[B, S, T]`` aside).

Speaker order: a separation model may list the speakers of two windows in different orders. Each window
is therefore put in the speaker order that best matches what is already written on the overlap: of all
permutations, the one with the largest sum of correlations between the window's estimates and the
previous estimates there (per batch item; for 2-3 speakers that is 2 or 6 permutations). The overlap is
then cross-faded with linear ramps, so the result is continuous at window boundaries.

Windows see less context than the whole recording (MossFormer2 has global attention and instance norms),
so the result is close to, not equal to, one-pass separation; when ``T <= chunk`` it is exactly
``model(mixture)``.

Example:
    >>> import torch
    >>> model = lambda x: torch.stack([0.5 * x, -x], dim=1)  # any [B, T] -> [B, S, T] callable
    >>> separate_chunked(model, torch.randn(1, 80000), chunk_seconds=2.0, overlap_seconds=0.5,
    ...                  sample_rate=8000).shape
    torch.Size([1, 2, 80000])
"""
import itertools
from typing import Callable, List

import torch

__all__ = ["separate_chunked", "chunk_starts"]


def chunk_starts(num_samples: int, chunk: int, hop: int) -> List[int]:
    """Start sample of each window: ``0, hop, 2 hop, ...`` and a last one ending at ``num_samples``."""
    if num_samples <= chunk:
        return [0]
    starts = list(range(0, num_samples - chunk, hop))
    starts.append(num_samples - chunk)
    return starts


def _best_permutation(new: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
    """``[B, S]`` speaker indices of ``new [B, S, O]`` that best correlate with ``previous [B, S, O]``."""
    speakers = new.shape[1]
    new = new - new.mean(-1, keepdim=True)
    previous = previous - previous.mean(-1, keepdim=True)
    new = new / new.norm(dim=-1, keepdim=True).clamp(min=1e-8)
    previous = previous / previous.norm(dim=-1, keepdim=True).clamp(min=1e-8)
    corr = previous @ new.transpose(1, 2)  # [B, S_prev, S_new]
    perms = torch.tensor(list(itertools.permutations(range(speakers))), device=new.device)  # [P, S]
    score = corr[:, torch.arange(speakers, device=new.device), perms].sum(-1)  # [B, P]
    return perms[score.argmax(dim=-1)]


@torch.no_grad()
def separate_chunked(
    model: Callable[[torch.Tensor], torch.Tensor],
    mixture: torch.Tensor,
    chunk_seconds: float = 4.0,
    overlap_seconds: float = 1.0,
    sample_rate: int = 8000,
) -> torch.Tensor:
    """Separate ``mixture [B, T]`` (or ``[T]``) window by window; returns ``[B, S, T]`` (or ``[S, T]``).

    Args:
        model: maps ``[B, t]`` to ``[B, S, t]`` (e.g. :class:`MossFormer2` in eval mode).
        chunk_seconds: window length.
        overlap_seconds: overlap of consecutive windows, ``0 <= overlap < chunk``; a longer overlap gives
            the speaker alignment more evidence and smoother joins.
        sample_rate: of ``mixture``.
    """
    squeeze = mixture.dim() == 1
    if squeeze:
        mixture = mixture.unsqueeze(0)
    if mixture.dim() != 2:
        raise ValueError(f"separate_chunked expects a mixture [B, T] or [T], got shape {tuple(mixture.shape)}")
    chunk = int(round(chunk_seconds * sample_rate))
    overlap = int(round(overlap_seconds * sample_rate))
    if chunk <= 0 or not 0 <= overlap < chunk:
        raise ValueError(f"need 0 <= overlap < chunk, got chunk {chunk} and overlap {overlap} samples")
    batch, length = mixture.shape
    if length <= chunk:
        out = model(mixture)
        return out.squeeze(0) if squeeze else out

    starts = chunk_starts(length, chunk, chunk - overlap)
    out = None
    written_end = 0
    for start in starts:
        est = model(mixture[:, start:start + chunk])  # [B, S, chunk]
        if out is None:
            out = est.new_zeros(batch, est.shape[1], length)
        shared = written_end - start  # samples already written that this window covers
        if shared > 0:
            perm = _best_permutation(est[..., :shared], out[..., start:written_end])
            est = torch.gather(est, 1, perm.unsqueeze(-1).expand(-1, -1, est.shape[-1]))
            fade_in = torch.linspace(0.0, 1.0, shared + 2, device=est.device, dtype=est.dtype)[1:-1]
            out[..., start:written_end] = out[..., start:written_end] * (1 - fade_in) + est[..., :shared] * fade_in
            out[..., written_end:start + chunk] = est[..., shared:]
        else:
            out[..., start:start + chunk] = est
        written_end = start + chunk
    return out.squeeze(0) if squeeze else out
