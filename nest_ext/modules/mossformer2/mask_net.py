"""MossFormer2 mask network: encoder features ``[B, N, L]`` -> one mask per speaker ``[B, S, N, L]``.

Steps: global layer norm; 1x1 projection ``N -> D``; plus the scaled sinusoidal positional encoding;
``num_layers`` :class:`MossFormer2Layer` (attention + gated FSMN, sharing one rotary embedding); a
LayerNorm (eps 1e-6); a global layer norm; a skip connection from before the layers; PReLU; a 1x1
projection ``D -> S * D``; a gated output ``tanh(W1 x) * sigmoid(W2 x)`` per speaker; a 1x1
projection ``D -> N``; ReLU. All per-frame projections run channels-last as ``nn.Linear``.

Example:
    >>> import torch
    >>> net = MossFormer2MaskNet(embedding_dim=32, sequence_dim=32, num_layers=1, num_spks=2,
    ...                          group_size=16, query_key_dim=32, fsmn_inner_dim=16)
    >>> net(torch.randn(2, 32, 50)).shape
    torch.Size([2, 2, 32, 50])
"""
import torch
import torch.nn.functional as F
from torch import nn

from nest_ext.modules.mossformer2.mossformer_block import MossFormer2Layer
from nest_ext.modules.mossformer2.norms import GlobalLayerNorm
from nest_ext.modules.mossformer2.positional_encoding import ScaledSinusoidalEncoding
from nest_ext.modules.mossformer2.rotary import RotaryEmbedding

__all__ = ["MossFormer2MaskNet"]


class MossFormer2MaskNet(nn.Module):
    """``forward(features [B, N, L]) -> masks [B, num_spks, N, L]`` (non-negative; any sign with
    ``output_activation="none"``).

    Args:
        embedding_dim: ``N``, encoder filters.
        sequence_dim: ``D``, width of the MossFormer2 layers.
        num_layers: number of :class:`MossFormer2Layer`.
        num_spks: number of speakers ``S``.
        group_size, query_key_dim, expansion_factor: of the attention (MossFormer2: 256, 128, 4).
        fsmn_inner_dim, fsmn_lorder: of the gated FSMN block (256, 20).
        kernel_size: depthwise convolution kernel in the feed-forward projections (17).
        dropout: dropout probability everywhere (0.1).
        output_activation: ``"relu"`` (MossFormer2's masks) or ``"none"``: the last projection's output as it is,
            for networks that map to features instead of masking them (the restoration generator).
    """

    def __init__(
        self,
        embedding_dim: int = 512,
        sequence_dim: int = 512,
        num_layers: int = 24,
        num_spks: int = 2,
        group_size: int = 256,
        query_key_dim: int = 128,
        expansion_factor: float = 4.0,
        fsmn_inner_dim: int = 256,
        fsmn_lorder: int = 20,
        kernel_size: int = 17,
        dropout: float = 0.1,
        output_activation: str = "relu",
    ):
        super().__init__()
        if output_activation not in ("relu", "none"):
            raise ValueError(f"output_activation must be 'relu' or 'none', got {output_activation!r}")
        self.output_relu = output_activation == "relu"
        if num_layers < 1:
            raise ValueError(f"MossFormer2MaskNet needs at least one layer, got num_layers={num_layers}")
        self.num_spks = num_spks
        self.input_norm = GlobalLayerNorm(embedding_dim)
        self.input_proj = nn.Linear(embedding_dim, sequence_dim, bias=False)
        self.pos_encoding = ScaledSinusoidalEncoding(sequence_dim)
        # one rotary module shared by every layer (partial rotary: at most 32 features); it is registered
        # only inside the layers, so the state dict lists it once per layer, as official checkpoints do
        rotary = RotaryEmbedding(min(32, query_key_dim))
        self.layers = nn.ModuleList(
            MossFormer2Layer(
                sequence_dim, rotary, group_size, query_key_dim, expansion_factor,
                fsmn_inner_dim, fsmn_lorder, kernel_size, dropout,
            )
            for _ in range(num_layers)
        )
        self.layers_norm = nn.LayerNorm(sequence_dim, eps=1e-6)
        self.output_norm = GlobalLayerNorm(sequence_dim)
        self.output_act = nn.PReLU()
        self.speaker_proj = nn.Linear(sequence_dim, sequence_dim * num_spks)
        self.mask_value = nn.Linear(sequence_dim, sequence_dim)
        self.mask_gate = nn.Linear(sequence_dim, sequence_dim)
        self.mask_proj = nn.Linear(sequence_dim, embedding_dim, bias=False)

    @property
    def rotary(self) -> RotaryEmbedding:
        return self.layers[0].attention.rotary

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.dim() != 3:
            raise ValueError(f"MossFormer2MaskNet expects [B, N, L], got shape {tuple(features.shape)}")
        batch, _, frames = features.shape
        if frames < 2:  # the FSMN's instance norms need at least two frames
            raise ValueError(f"MossFormer2MaskNet needs at least 2 frames, got {frames}")
        x = self.input_proj(self.input_norm(features).transpose(1, 2))  # [B, L, D]
        x = x + self.pos_encoding(frames)
        skip = x
        rope = self.rotary.cos_sin(frames)  # computed once for all layers
        for layer in self.layers:
            x = layer(x, rope)
        x = self.layers_norm(x)
        x = self.output_norm(x.transpose(1, 2)).transpose(1, 2) + skip
        x = self.speaker_proj(self.output_act(x)).unflatten(-1, (self.num_spks, -1))  # [B, L, S, D]
        x = torch.tanh(self.mask_value(x)) * torch.sigmoid(self.mask_gate(x))
        masks = self.mask_proj(x)  # [B, L, S, N]
        if self.output_relu:
            masks = F.relu(masks)
        return masks.permute(0, 2, 3, 1)
