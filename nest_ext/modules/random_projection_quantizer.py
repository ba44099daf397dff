"""NEST's random-projection quantizer (BEST-RQ, arXiv:2202.01855) with a faster, bounded-memory nearest-code
search and NeMo's exact targets.

:class:`RandomProjectionVectorQuantizer` subclasses NeMo's class of the same name
(``nemo.collections.asr.modules.RandomProjectionVectorQuantizer``): same constructor, parameters, state
dict, input/output types and outputs. Only the ``l2`` nearest-code search differs. NeMo materialises
``x - codebook`` for every frame and code in float64 -- ``frames x code_dim x num_classes`` values, 640 MB
for 8 utterances of 6 s with NEST's 8192 x 16 codebook -- and takes the norm. Ours ranks codes by
``|c|^2 - 2 x.c`` (one matrix product per chunk of frames, float64, autocast off), and recomputes NeMo's
exact distance for the frames whose two best codes are within ``tie_tolerance`` of each other: ties and
near-ties, where rounding decides, which are rare except for padding frames (all the zero vector, solved
once per chunk). Everywhere else the best code wins by far more than float64
rounding can move either distance, so the tokens are NeMo's bit for bit (``tests/test_quantizer.py``
checks random and tied codebooks; ``bench/quantizer.py`` times both).

The ``cosine`` distance and the quantized vectors ``xq`` are NeMo's computation.

Example::

    >>> import torch
    >>> q = RandomProjectionVectorQuantizer(feat_in=80, code_dim=16, num_classes=256, num_books=2,
    ...                                     dist_fn="l2", combine_time_steps=8)
    >>> xq, tokens = q(input_signal=torch.randn(2, 80, 64))      # [B, D, T] log-mel features
    >>> tokens.shape, xq.shape
    (torch.Size([2, 8, 2]), torch.Size([2, 16, 8, 2]))
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from nemo.collections.asr.modules import RandomProjectionVectorQuantizer as _NeMoQuantizer
from nemo.core.classes import typecheck

__all__ = ["RandomProjectionVectorQuantizer"]


class RandomProjectionVectorQuantizer(_NeMoQuantizer):
    """NeMo's random-projection quantizer; ``l2`` tokens found without the [frames, code_dim, classes] tensor.

    Args: NeMo's (``feat_in``, ``code_dim``, ``num_classes``, ``num_books``, ``dist_fn``, ``time_ahead``,
    ``freeze``, ``squeeze_single``, ``combine_time_steps``).
    """

    # Float64 rounding moves these squared distances (at most 4 for unit vectors) by ~1e-15; a lead below
    # this is settled by NeMo's own formula instead.
    tie_tolerance = 1e-9
    # frames per chunk: bounds the [books, frames, classes] score tensor to ~2**22 values (32 MB in float64)
    score_budget = 2**22

    @typecheck()
    def forward(self, input_signal):
        if self.dist_fn != "l2":
            return super().forward(input_signal=input_signal)
        x = input_signal if self.time_ahead else input_signal.transpose(1, 2)  # [B, T, D]
        b, t, _ = x.size()
        if self.combine_time_steps > 1:
            t = t // self.combine_time_steps
            x = x.contiguous().reshape(b, t, -1)  # stack consecutive frames, as NeMo does
        x = F.normalize(self.proj(x).view(b, t, self.num_books, self.code_dim), dim=-1)
        xid = self.nearest_codes(x.reshape(b * t, self.num_books, self.code_dim)).view(b, t, self.num_books)

        # quantized vectors exactly as NeMo lays them out (book-major ids, then a [B, T, code_dim, books] view)
        offsets = self.num_classes * torch.arange(self.num_books, device=xid.device)
        flat_ids = (xid + offsets).transpose(1, 2).reshape(-1)
        xq = F.embedding(flat_ids, self.codebooks.view(-1, self.code_dim)).view(b, t, self.code_dim, self.num_books)
        if not self.time_ahead:
            xq = xq.transpose(1, 2)
        if self.num_books == 1 and self.squeeze_single:
            return xq.squeeze(-1), xid.squeeze(-1)
        return xq, xid

    def nearest_codes(self, x: torch.Tensor) -> torch.Tensor:
        """[N, books, code_dim] -> [N, books] index of the nearest code (L2), equal to NeMo's argmin."""
        codebooks = self.codebooks.detach()
        out = torch.empty(x.shape[:2], dtype=torch.long, device=x.device)
        chunk = max(1, self.score_budget // max(1, self.num_books * self.num_classes))
        with torch.no_grad(), torch.autocast(device_type=x.device.type, enabled=False):
            squares = (codebooks * codebooks).sum(-1).unsqueeze(1)  # [books, 1, classes]
            for start in range(0, x.shape[0], chunk):
                xc = x[start:start + chunk].detach().to(codebooks.dtype).transpose(0, 1)  # [books, n, code_dim]
                # |x - c|^2 = |x|^2 + |c|^2 - 2 x.c; |x|^2 is the same for every code of a frame
                scores = torch.baddbmm(squares, xc, codebooks.transpose(1, 2), alpha=-2.0)  # [books, n, classes]
                best = scores.topk(2, dim=-1, largest=False) if self.num_classes > 1 else None
                if best is None:
                    out[start:start + chunk] = 0
                    continue
                ids = best.indices[..., 0]
                close = (best.values[..., 1] - best.values[..., 0]) <= self.tie_tolerance  # [books, n]
                frames = close.any(0).nonzero().squeeze(1)
                if frames.numel():
                    # padding frames are all the zero vector (equidistant to every code): solve each distinct row once
                    close_x = xc[:, frames].transpose(0, 1)  # [m, books, code_dim]
                    rows, inverse = torch.unique(close_x.reshape(len(frames), -1), dim=0, return_inverse=True)
                    exact = self._exact_nearest(rows.view(-1, *close_x.shape[1:]), codebooks)[inverse]
                    ids[:, frames] = exact.transpose(0, 1)
                out[start:start + chunk] = ids.transpose(0, 1)
        return out

    @staticmethod
    def _exact_nearest(x: torch.Tensor, codebooks: torch.Tensor) -> torch.Tensor:
        """NeMo's own formula (norm of the difference over code_dim, first index on ties): [n, books, code_dim]."""
        diff = x.unsqueeze(-1) - codebooks.transpose(1, 2).unsqueeze(0)  # [n, books, code_dim, classes]
        return diff.norm(dim=-2).argmin(dim=-1)
