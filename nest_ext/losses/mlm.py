"""Masked-token prediction losses for NEST: NeMo's ``MLMLoss`` / ``MultiMLMLoss`` with two fixes.

Both classes subclass NeMo's (``nemo.collections.asr.losses``), keep its constructor arguments, input
types and forward signature, and give NeMo's value on every batch NeMo handles (proven in
``tests/test_mlm_loss.py``). They differ where NeMo fails:

* a batch with no masked frame gives ``0`` (finite, zero gradient, still attached to the graph so
  ``backward()`` and DDP work) instead of NeMo's ``NaN`` (mean over an empty selection);
* ``MultiMLMLoss`` has ``needs_labels`` (NeMo issue #15743: pretraining crashed without it);
* decoder outputs and frame masks of different lengths are cut to their common length (NeMo raises
  an indexing error); targets are padded/cut to that length as NeMo does; a mask length that is not a
  multiple of ``combine_time_steps`` gets a last, partial group (NeMo's reshape fails).

Shapes (``C`` classes, ``H`` codebooks, ``T`` feature frames, ``T' = T / combine_time_steps``):
``masks [B, D, T]`` (1 where the input was masked), ``decoder_outputs [B, T', C]`` or ``[B, T', C, H]``
log-probs, ``targets [B, T']`` or ``[B, T', H]`` token ids. A frame counts as masked when the mean of
its ``combine_time_steps * D`` mask values exceeds ``mask_threshold``.

Example::

    >>> import torch
    >>> from nest_ext.losses import MultiMLMLoss
    >>> loss_fn = MultiMLMLoss(combine_time_steps=8, num_decoders=2)
    >>> masks = torch.zeros(2, 80, 64); masks[:, :, :16] = 1.0
    >>> log_probs = torch.randn(2, 8, 32, 2).log_softmax(2)
    >>> targets = torch.randint(0, 32, (2, 8, 2))
    >>> loss = loss_fn(masks=masks, decoder_outputs=log_probs, targets=targets)
    >>> float(loss_fn(masks=torch.zeros_like(masks), decoder_outputs=log_probs, targets=targets))
    0.0
"""
import torch
import torch.nn.functional as F
from nemo.collections.asr.losses import MLMLoss as _NeMoMLMLoss
from nemo.collections.asr.losses import MultiMLMLoss as _NeMoMultiMLMLoss
from nemo.core import typecheck

__all__ = ["MLMLoss", "MultiMLMLoss"]


class MLMLoss(_NeMoMLMLoss):
    """NLL over masked frames only; NeMo's constructor (``combine_time_steps``, ``mask_threshold``).

    Inputs as NeMo's: ``decoder_outputs [B, T', C]`` log-probs, ``targets [B, T']``, ``masks`` (or
    ``spec_masks``) ``[B, D, T]``; ``decoder_lengths``/``target_lengths`` are accepted and, as in NeMo,
    unused (padding frames are never masked). Without masks every frame counts.
    Returns a scalar: mean NLL over masked frames, 0 when no frame is masked.
    """

    @property
    def needs_labels(self):
        return True

    def frame_mask(self, masks: torch.Tensor) -> torch.Tensor:
        """[B, D, T] feature masks -> [B, ceil(T / combine_time_steps)] bool: groups above ``mask_threshold``."""
        b, d, t = masks.shape
        steps = self.combine_time_steps
        if t % steps:
            # a partial last group (preprocessor pad_to not a multiple of the subsampling) counts its
            # missing frames as unmasked; NeMo's reshape fails or mis-groups here
            masks = F.pad(masks, (0, steps - t % steps))
            t = masks.shape[-1]
        # group `steps` consecutive frames with all their feature bins, as the encoder's subsampling does
        grouped = masks.transpose(1, 2).reshape(b, t // steps, steps * d)
        return grouped.mean(-1) > self.mask_threshold

    @typecheck()
    def forward(
        self, decoder_outputs, targets, decoder_lengths=None, target_lengths=None, spec_masks=None, masks=None
    ):
        if masks is None:
            masks = spec_masks
        if masks is None:
            frames = torch.ones(decoder_outputs.shape[:2], dtype=torch.bool, device=decoder_outputs.device)
        else:
            frames = self.frame_mask(masks)
        length = min(frames.shape[1], decoder_outputs.shape[1])
        frames, decoder_outputs = frames[:, :length], decoder_outputs[:, :length]
        # targets shorter than the masks are padded with class 0 (NeMo's choice), longer ones cut
        targets = F.pad(targets, (0, length - targets.shape[1]))

        selected = decoder_outputs[frames]  # [N, C]
        if selected.shape[0] == 0:
            # sum over an empty selection: exactly 0, zero gradient, still part of the graph
            return selected.sum()
        return F.nll_loss(selected, targets[frames])


class MultiMLMLoss(_NeMoMultiMLMLoss):
    """Mean of :class:`MLMLoss` over ``num_decoders`` codebooks; NeMo's constructor and forward.

    ``decoder_outputs [B, T', C, H]`` and ``targets [B, T', H]``, or ``[B, T', C]`` / ``[B, T']`` when
    ``squeeze_single`` and ``num_decoders == 1``; ``masks [B, D, T]``. Returns a scalar.
    """

    def __init__(
        self,
        combine_time_steps: int = 1,
        mask_threshold: float = 0.8,
        num_decoders: int = 1,
        squeeze_single: bool = False,
    ):
        super().__init__(
            combine_time_steps=combine_time_steps,
            mask_threshold=mask_threshold,
            num_decoders=num_decoders,
            squeeze_single=squeeze_single,
        )
        # NeMo's forward loops over codebooks through self.mlm_loss: ours gives it the no-mask fix
        self.mlm_loss = MLMLoss(combine_time_steps, mask_threshold)

    @property
    def needs_labels(self):
        return True
