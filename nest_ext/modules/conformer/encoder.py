"""Conformer / FastConformer encoder, a drop-in for ``nemo.collections.asr.modules.ConformerEncoder``.

Same constructor arguments, same ``forward(audio_signal=[B, feat_in, T], length=[B])`` ->
``(encoded [B, feat_out, T'], encoded_lengths [B])`` with NeMo's neural types, and exactly NeMo's
state-dict keys and shapes: ``enc.load_state_dict(nemo_encoder.state_dict(), strict=True)`` works and the
outputs agree (see tests/test_conformer.py and docs/parity.md). The attributes NeMo's models reach for are
there too: ``pre_encode`` (which NEST's ``post_conv`` masking wraps and replaces), ``layers``, ``pos_enc``,
``d_model``, ``subsampling_factor``, ``_feat_in``/``_feat_out``, ``update_max_seq_length``.

Supported: ``subsampling`` striding / dw_striding (factor 2, 4, 8) or none (factor 1, a Linear),
``self_attention_model`` rel_pos / abs_pos, ``att_context_size`` [-1, -1] with ``att_context_style``
regular, ``conv_norm_type`` batch_norm / layer_norm, symmetric ``conv_context_size``, stochastic depth.
Everything else (streaming caches, causal or chunked attention, local attention, reduction, ...) is
rejected at construction with the reason.

Example::

    >>> import torch
    >>> enc = ConformerEncoder(feat_in=16, n_layers=2, d_model=32, n_heads=4, subsampling='dw_striding',
    ...                        subsampling_factor=4, conv_kernel_size=3)
    >>> out, n = enc(audio_signal=torch.randn(2, 16, 40), length=torch.tensor([40, 23]))
    >>> tuple(out.shape), n.tolist()
    ((2, 32, 10), [10, 6])
"""
import math
from collections import OrderedDict

import torch
from torch import nn

from nemo.collections.asr.parts.utils.regularization_utils import compute_stochastic_depth_drop_probs
from nemo.core.classes.common import typecheck
from nemo.core.classes.exportable import Exportable
from nemo.core.classes.mixins import AccessMixin
from nemo.core.classes.module import NeuralModule
from nemo.core.neural_types import (
    AcousticEncodedRepresentation,
    BoolType,
    ChannelType,
    LengthsType,
    NeuralType,
    SpectrogramType,
)

from nest_ext.modules.conformer.attention import padding_bias
from nest_ext.modules.conformer.layer import ConformerLayer
from nest_ext.modules.conformer.positional_encoding import PositionalEncoding, RelPositionalEncoding
from nest_ext.modules.conformer.subsampling import ConvSubsampling

__all__ = ["ConformerEncoder"]


def _unsupported(name, value, allowed):
    raise ValueError(
        f"nest_ext ConformerEncoder does not support {name}={value!r} (supported: {allowed}); "
        "set USE_NEMO_CONFORMER=true to build NeMo's ConformerEncoder for this configuration"
    )


def _as_list(value):
    """Lists, tuples and OmegaConf ListConfigs -> nested plain lists."""
    if value is None or isinstance(value, (str, int, float)):
        return value
    return [_as_list(v) for v in value]


class ConformerEncoder(NeuralModule, Exportable, AccessMixin):
    """Conformer encoder (Gulati et al. 2020) with FastConformer subsampling (Rekesh et al. 2023).

    Arguments are NeMo's (see ``nemo.collections.asr.modules.ConformerEncoder``); the ones that matter:
    feat_in, n_layers, d_model, feat_out (-1: d_model), subsampling, subsampling_factor,
    subsampling_conv_channels (-1: d_model), ff_expansion_factor, self_attention_model, n_heads,
    xscaling (scale inputs by sqrt(d_model)), untie_biases (per-layer Transformer-XL biases),
    pos_emb_max_len, conv_kernel_size, conv_norm_type, use_bias, dropout, dropout_pre_encoder,
    dropout_emb, dropout_att, stochastic_depth_*.

    forward(audio_signal [B, feat_in, T], length [B]) -> (outputs [B, feat_out, T'], encoded_lengths [B]).
    """

    @property
    def input_types(self):
        return OrderedDict(
            {
                "audio_signal": NeuralType(("B", "D", "T"), SpectrogramType()),
                "length": NeuralType(tuple("B"), LengthsType()),
                "cache_last_channel": NeuralType(("D", "B", "T", "D"), ChannelType(), optional=True),
                "cache_last_time": NeuralType(("D", "B", "D", "T"), ChannelType(), optional=True),
                "cache_last_channel_len": NeuralType(tuple("B"), LengthsType(), optional=True),
                "bypass_pre_encode": NeuralType(tuple(), BoolType(), optional=True),
            }
        )

    @property
    def output_types(self):
        return OrderedDict(
            {
                "outputs": NeuralType(("B", "D", "T"), AcousticEncodedRepresentation()),
                "encoded_lengths": NeuralType(tuple("B"), LengthsType()),
                "cache_last_channel_next": NeuralType(("D", "B", "T", "D"), ChannelType(), optional=True),
                "cache_last_time_next": NeuralType(("D", "B", "D", "T"), ChannelType(), optional=True),
                "cache_last_channel_next_len": NeuralType(tuple("B"), LengthsType(), optional=True),
            }
        )

    @property
    def disabled_deployment_input_names(self):
        return {"cache_last_channel", "cache_last_time", "cache_last_channel_len"}

    @property
    def disabled_deployment_output_names(self):
        return {"cache_last_channel_next", "cache_last_time_next", "cache_last_channel_next_len"}

    def __init__(
        self,
        feat_in,
        n_layers,
        d_model,
        feat_out=-1,
        causal_downsampling=False,
        subsampling="striding",
        subsampling_factor=4,
        subsampling_conv_chunking_factor=1,
        subsampling_conv_channels=-1,
        reduction=None,
        reduction_position=None,
        reduction_factor=1,
        ff_expansion_factor=4,
        self_attention_model="rel_pos",
        n_heads=4,
        att_context_size=None,
        att_context_probs=None,
        att_chunk_context_size=None,
        att_context_style="regular",
        xscaling=True,
        untie_biases=True,
        pos_emb_max_len=5000,
        conv_kernel_size=31,
        conv_norm_type="batch_norm",
        conv_context_size=None,
        conv_context_style="regular",
        use_bias=True,
        dropout=0.1,
        dropout_pre_encoder=0.1,
        dropout_emb=0.1,
        dropout_att=0.0,
        stochastic_depth_drop_prob: float = 0.0,
        stochastic_depth_mode: str = "linear",
        stochastic_depth_start_layer: int = 1,
        global_tokens: int = 0,
        global_tokens_spacing: int = 1,
        global_attn_separate: bool = False,
        use_pytorch_sdpa: bool = False,
        use_pytorch_sdpa_backends=None,
        sync_max_audio_length: bool = True,
    ):
        super().__init__()
        # --- reject what this implementation does not do, before building anything
        if causal_downsampling:
            _unsupported("causal_downsampling", causal_downsampling, "false")
        if subsampling and subsampling_factor > 1 and subsampling not in ("striding", "dw_striding"):
            _unsupported("subsampling", subsampling, "striding, dw_striding")
        if reduction is not None and reduction_factor > 1:
            _unsupported("reduction", reduction, "null")
        if self_attention_model not in ("rel_pos", "abs_pos"):
            _unsupported("self_attention_model", self_attention_model, "rel_pos, abs_pos")
        att_context_size = _as_list(att_context_size) or [-1, -1]
        if isinstance(att_context_size[0], list):
            if len(att_context_size) != 1:
                _unsupported("att_context_size", att_context_size, "[-1, -1]")
            att_context_size = att_context_size[0]
        if list(att_context_size) != [-1, -1]:
            _unsupported("att_context_size", att_context_size, "[-1, -1] (full context)")
        if att_context_style != "regular":
            _unsupported("att_context_style", att_context_style, "regular")
        if att_chunk_context_size is not None:
            _unsupported("att_chunk_context_size", att_chunk_context_size, "null")
        half = (conv_kernel_size - 1) // 2
        if conv_context_size is not None and _as_list(conv_context_size) != [half, half]:
            _unsupported("conv_context_size", conv_context_size, f"null or [{half}, {half}]")
        if conv_context_style != "regular":
            _unsupported("conv_context_style", conv_context_style, "regular")
        if conv_norm_type not in ("batch_norm", "layer_norm"):
            _unsupported("conv_norm_type", conv_norm_type, "batch_norm, layer_norm")
        if global_tokens:
            _unsupported("global_tokens", global_tokens, "0")
        if conv_kernel_size % 2 != 1:
            _unsupported("conv_kernel_size", conv_kernel_size, "odd sizes")
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} must be divisible by n_heads={n_heads}")

        self.d_model = d_model
        self.n_layers = n_layers
        self._feat_in = feat_in
        self.subsampling_factor = subsampling_factor
        self.subsampling_conv_chunking_factor = subsampling_conv_chunking_factor
        self.self_attention_model = self_attention_model
        self.att_context_style = att_context_style
        self.att_context_size = list(att_context_size)
        self.att_context_size_all = [list(att_context_size)]
        self.att_context_probs = [1.0]
        self.conv_context_size = [half, half]
        self.conv_kernel_size = conv_kernel_size
        self.sync_max_audio_length = sync_max_audio_length
        # accepted for signature compatibility: attention here always runs through fused kernels
        self.use_pytorch_sdpa = use_pytorch_sdpa
        self.use_pytorch_sdpa_backends = use_pytorch_sdpa_backends or []
        self.xscale = math.sqrt(d_model) if xscaling else None

        if subsampling_conv_channels == -1:
            subsampling_conv_channels = d_model
        if subsampling and subsampling_factor > 1:
            self.pre_encode = ConvSubsampling(
                subsampling,
                subsampling_factor,
                feat_in=feat_in,
                feat_out=d_model,
                conv_channels=subsampling_conv_channels,
                subsampling_conv_chunking_factor=subsampling_conv_chunking_factor,
            )
        else:
            self.pre_encode = nn.Linear(feat_in, d_model)
        self.reduction_subsampling = None
        self.reduction_position = None

        # tied Transformer-XL biases: one pair of parameters shared by every layer (NeMo keeps no
        # encoder-level copy, so each layer's state-dict entry names the same tensor)
        pos_bias_u = pos_bias_v = None
        if not untie_biases and self_attention_model == "rel_pos":
            d_head = d_model // n_heads
            pos_bias_u = nn.Parameter(torch.zeros(n_heads, d_head))
            pos_bias_v = nn.Parameter(torch.zeros(n_heads, d_head))

        self.pos_emb_max_len = pos_emb_max_len
        if self_attention_model == "rel_pos":
            self.pos_enc = RelPositionalEncoding(
                d_model, dropout_pre_encoder, max_len=pos_emb_max_len, xscale=self.xscale, dropout_rate_emb=dropout_emb
            )
        else:
            self.pos_enc = PositionalEncoding(d_model, dropout_pre_encoder, max_len=pos_emb_max_len, xscale=self.xscale)

        self.layers = nn.ModuleList(
            ConformerLayer(
                d_model=d_model,
                d_ff=d_model * ff_expansion_factor,
                self_attention_model=self_attention_model,
                n_heads=n_heads,
                conv_kernel_size=conv_kernel_size,
                conv_norm_type=conv_norm_type,
                dropout=dropout,
                dropout_att=dropout_att,
                pos_bias_u=pos_bias_u,
                pos_bias_v=pos_bias_v,
                use_bias=use_bias,
            )
            for _ in range(n_layers)
        )

        if feat_out > 0 and feat_out != d_model:
            self.out_proj = nn.Linear(d_model, feat_out)
            self._feat_out = feat_out
        else:
            self.out_proj = None
            self._feat_out = d_model
        self.set_max_audio_length(pos_emb_max_len)
        self.use_pad_mask = True
        self.export_cache_support = False
        self.streaming_cfg = None
        self.layer_drop_probs = compute_stochastic_depth_drop_probs(
            n_layers, stochastic_depth_drop_prob, stochastic_depth_mode, stochastic_depth_start_layer
        )
        self.interctc_capture_at_layers = None

    # ------------------------------------------------------------------ NeMo-compatible helpers
    def input_example(self, max_batch=1, max_dim=256):
        """A random (features, lengths) pair for tracing/export."""
        dev = next(self.parameters()).device
        signal = torch.randn(max_batch, self._feat_in, max_dim, device=dev)
        lengths = torch.randint(max_dim // 4, max_dim, (max_batch,), device=dev, dtype=torch.int64)
        return signal, lengths

    def update_max_seq_length(self, seq_length: int, device):
        """Grow the position table for ``seq_length`` input frames (the max over ranks under DDP)."""
        if self.sync_max_audio_length and torch.distributed.is_available() and torch.distributed.is_initialized():
            global_max = torch.tensor([seq_length], dtype=torch.float32, device=device)
            torch.distributed.all_reduce(global_max, op=torch.distributed.ReduceOp.MAX)
            seq_length = int(global_max.item())
        if seq_length > self.max_audio_length:
            self.set_max_audio_length(seq_length)

    def set_max_audio_length(self, max_audio_length):
        self.max_audio_length = max_audio_length
        param = next(self.parameters())
        self.pos_enc.extend_pe(max_audio_length, param.device, param.dtype)

    def enable_pad_mask(self, on=True):
        mask = self.use_pad_mask
        self.use_pad_mask = on
        return mask

    def change_subsampling_conv_chunking_factor(self, subsampling_conv_chunking_factor: int):
        if not isinstance(self.pre_encode, ConvSubsampling):
            raise ValueError("the encoder has no convolutional subsampling to chunk")
        self.pre_encode.subsampling_conv_chunking_factor = subsampling_conv_chunking_factor
        self.subsampling_conv_chunking_factor = subsampling_conv_chunking_factor

    def set_default_att_context_size(self, att_context_size):
        if list(att_context_size) != [-1, -1]:
            _unsupported("att_context_size", att_context_size, "[-1, -1]")

    def change_attention_model(self, *args, **kwargs):
        raise NotImplementedError(
            "nest_ext ConformerEncoder cannot change its attention model; use NeMo's (USE_NEMO_CONFORMER=true)"
        )

    # ------------------------------------------------------------------ forward
    @typecheck()
    def forward(
        self,
        audio_signal,
        length,
        cache_last_channel=None,
        cache_last_time=None,
        cache_last_channel_len=None,
        bypass_pre_encode=False,
    ):
        if cache_last_channel is not None or cache_last_time is not None:
            raise NotImplementedError("nest_ext ConformerEncoder has no cache-aware streaming; use NeMo's encoder")
        if not bypass_pre_encode and audio_signal.shape[-2] != self._feat_in:
            raise ValueError(
                f"audio_signal should be (batch, {self._feat_in}, frames), got {tuple(audio_signal.shape)}"
            )
        if bypass_pre_encode and audio_signal.shape[-1] != self.d_model:
            raise ValueError(
                f"with bypass_pre_encode audio_signal should be (batch, frames, {self.d_model}), "
                f"got {tuple(audio_signal.shape)}"
            )
        self.update_max_seq_length(audio_signal.size(1 if bypass_pre_encode else 2), audio_signal.device)
        return self.forward_internal(audio_signal, length, bypass_pre_encode=bypass_pre_encode)

    def forward_internal(self, audio_signal, length, bypass_pre_encode=False, **unused_cache):
        """Untyped forward: [B, feat_in, T] (or [B, T, d_model] pre-encoded) -> ([B, feat_out, T'], [B])."""
        if length is None:
            time_dim = 1 if bypass_pre_encode else -1
            length = torch.full((audio_signal.size(0),), audio_signal.size(time_dim), dtype=torch.int64,
                                device=audio_signal.device)
        x = audio_signal
        if not bypass_pre_encode:
            x = x.transpose(1, 2)
            if isinstance(self.pre_encode, nn.Linear):
                x = self.pre_encode(x)
            else:
                # keyword call: NEST's post_conv masking swaps in a wrapper with this signature
                x, length = self.pre_encode(x=x, lengths=length)
        length = length.to(torch.int64)

        x, pos_emb = self.pos_enc(x=x)
        t = x.size(1)
        valid = torch.arange(t, device=x.device)[None, :] < length[:, None]  # [B, T']
        pad_mask = ~valid
        key_bias = padding_bias(valid, dtype=x.dtype)
        query_pad = pad_mask.unsqueeze(-1)
        if self.self_attention_model != "rel_pos":
            pos_emb = None

        capture = self.is_access_enabled(getattr(self, "model_guid", None))
        for lth, (drop_prob, layer) in enumerate(zip(self.layer_drop_probs, self.layers)):
            residual = x
            x = layer(x, pos_emb=pos_emb, key_bias=key_bias, query_pad=query_pad, pad_mask=pad_mask)
            if self.training and drop_prob > 0.0:
                # stochastic depth (Huang et al. 2016): keep the graph so every weight gets a gradient
                if torch.rand(1).item() < drop_prob:
                    x = x * 0.0 + residual
                else:
                    x = (x - residual) / (1.0 - drop_prob) + residual
            if capture:
                self._capture_interctc(lth, x, length)

        if self.out_proj is not None:
            x = self.out_proj(x)
        return x.transpose(1, 2), length

    def _capture_interctc(self, lth, x, length):
        if self.interctc_capture_at_layers is None:
            self.interctc_capture_at_layers = self.access_cfg.get("interctc", {}).get("capture_layers", [])
        if lth in self.interctc_capture_at_layers:
            out = self.out_proj(x) if self.out_proj is not None else x
            self.register_accessible_tensor(name=f"interctc/layer_output_{lth}", tensor=out.transpose(1, 2))
            self.register_accessible_tensor(name=f"interctc/layer_length_{lth}", tensor=length)
