"""Frame-stacking MLP connector between a speech encoder and an LLM (the MooER / SLAM-LLM adapter shape).

``k`` consecutive encoder frames are concatenated (``k x d_enc``), projected to ``hidden_dim``, passed
through a ReLU and projected to the LLM width: frame rate / k, width ``d_enc -> d_llm``. The stacking
and first projection are NeMo's ``StackingSubsampling``; NeMo's own SALM connectors (identity, a
Conformer, Q-Former, multi-layer projection) have no ReLU MLP after stacking, hence this module.

It plugs into NeMo's ``AudioPerceptionModule`` as ``perception.modality_adapter``: it takes and returns
channels-first ``(B, C, T)`` with lengths, and declares ``output_dim`` so the perception module adds no
extra projection (SALM sets ``output_dim`` to the LLM's hidden size when it builds the perception module).

Example::

    >>> import torch
    >>> c = FrameStackingConnector(input_dim=4, output_dim=6, hidden_dim=8, stack=2)
    >>> y, n = c(audio_signal=torch.randn(3, 4, 7), length=torch.tensor([7, 4, 1]))
    >>> tuple(y.shape), n.tolist()
    ((3, 6, 4), [4, 2, 1])
"""
import torch
from torch import nn


class FrameStackingConnector(nn.Module):
    """Stack ``stack`` frames -> Linear(stack*input_dim, hidden_dim) -> ReLU -> Linear(hidden_dim, output_dim).

    A final partial group of frames is zero-padded (NeMo's ``StackingSubsampling``), so ``ceil(length/stack)``
    frames come out.
    """

    def __init__(self, input_dim: int, output_dim: int, hidden_dim: int = 2048, stack: int = 2):
        super().__init__()
        from nemo.collections.asr.parts.submodules.subsampling import StackingSubsampling

        if stack < 1:
            raise ValueError(f"stack must be >= 1, got {stack}")
        self.input_dim, self.output_dim, self.hidden_dim, self.stack = input_dim, output_dim, hidden_dim, stack
        self.stacking = StackingSubsampling(subsampling_factor=stack, feat_in=input_dim, feat_out=hidden_dim)
        self.activation = nn.ReLU()
        self.output = nn.Linear(hidden_dim, output_dim)

    @property
    def subsampling_factor(self) -> int:
        """Read by NeMo's ``AudioPerceptionModule.token_equivalent_duration``."""
        return self.stack

    def forward(self, audio_signal: torch.Tensor, length: torch.Tensor):
        """``audio_signal`` (B, input_dim, T), ``length`` (B,) -> ((B, output_dim, ceil(T/stack)), lengths)."""
        if audio_signal.shape[1] != self.input_dim:
            raise ValueError(f"connector expects {self.input_dim} channels (encoder output), got "
                             f"{tuple(audio_signal.shape)}")
        x, _ = self.stacking(audio_signal.transpose(1, 2), length)
        # StackingSubsampling's lengths depend on the batch's padding; a row's own count is ceil(length/stack)
        length = torch.div(length + self.stack - 1, self.stack, rounding_mode="floor")
        x = self.output(self.activation(x))
        return x.transpose(1, 2), length
