"""Official MossFormer2 checkpoints (ClearerVoice-Studio / alibabasglab) -> :class:`MossFormer2` state dicts.

This is the only module of the project that knows the official parameter names. It

- reads a ``torch.save``d official state dict, bare or under ``model`` / ``state_dict``, with any
  wrapper prefix (``module.``, ``model.``, ``ss_network.``; found from the encoder's key);
- takes the architecture from the file's ``config`` entry (``num_spks``, ``encoder_kernel_size``,
  ``encoder_embedding_dim``, ``mossformer_sequence_dim``, ``num_mossformer_layer``) when present, or
  infers it from the tensor shapes;
- renames every tensor, reshapes 1x1 convolutions to linear weights and the FSMN's ``(K, 1)`` 2-D
  kernels to 1-D ones, and checks every key and shape against a model built on the meta device,
  raising :class:`MossFormer2CheckpointError` with the full lists of unknown, missing and mismatched
  keys.

Example (an official file: ``ckpt = torch.load("official.pt", map_location="cpu")``, then
``arch = architecture_from_checkpoint(ckpt)``, ``MossFormer2(**arch).load_state_dict(official_to_ours(
load_official_state_dict(ckpt), arch))``; ``tools/convert_mossformer2_checkpoint.py`` does this)::

    >>> official_to_ours_name("enc.conv1d.weight"), official_to_ours_name("dec.weight")
    ('encoder.conv.weight', 'decoder.deconv.weight')
    >>> official_to_ours_name("mask_net.mdl.intra_mdl.mossformerM.layers.3.to_qk.mdl.1.weight")
    'masker.layers.3.attention.to_qk.linear.weight'
    >>> official_to_ours_name("not.an.official.key") is None
    True
"""
import re
from typing import Callable, Dict, List, Mapping, Optional, Tuple

import torch

from nest_ext.modules.mossformer2.mossformer2 import MossFormer2

__all__ = [
    "ARCHITECTURE_KEYS",
    "MossFormer2CheckpointError",
    "architecture_from_checkpoint",
    "load_official_state_dict",
    "official_to_ours",
    "official_to_ours_name",
]

ARCHITECTURE_KEYS = (
    "num_spks",
    "encoder_kernel_size",
    "encoder_embedding_dim",
    "mossformer_sequence_dim",
    "num_mossformer_layer",
)
_ENCODER_KEY = "enc.conv1d.weight"
_STACK = r"mask_net\.mdl\.intra_mdl\.mossformerM"


class MossFormer2CheckpointError(ValueError):
    """An official checkpoint does not fit the expected architecture; the message lists every problem."""

    def __init__(self, message: str, unknown=(), missing=(), mismatched=()):
        super().__init__(message)
        self.unknown = list(unknown)
        self.missing = list(missing)
        self.mismatched = list(mismatched)


def key_report(header: str, unknown=(), missing=(), mismatched=(), missing_note: str = "") -> str:
    """``header`` and one line per non-empty list: unknown keys, missing keys (``missing_note`` after the
    word), shape mismatches."""
    parts = [header]
    if unknown:
        parts.append(f"{len(unknown)} unknown key(s): " + ", ".join(unknown))
    if missing:
        parts.append(f"{len(missing)} missing key(s){missing_note}: " + ", ".join(missing))
    if mismatched:
        parts.append(f"{len(mismatched)} shape mismatch(es): " + "; ".join(mismatched))
    return "\n".join(parts)


def _sub(template: str) -> Callable[[re.Match], str]:
    return lambda m: m.expand(template)


def _fsmn_memory(kind: str) -> Callable[[re.Match], str]:
    # official conv1/norm1/prelu1 (1-based) -> our memory.layers.0.{weight,norm,act} (0-based)
    def name(m: re.Match) -> str:
        prefix = f"masker.layers.{m.group(1)}.fsmn_block.gated_fsmn.fsmn.memory.layers.{int(m.group(2)) - 1}"
        suffix = {"conv": "weight", "prelu": "act.weight"}.get(kind) or f"norm.{m.group(3)}"
        return f"{prefix}.{suffix}"

    return name


# (official-name pattern, our name); a full match is required
_RULES: List[Tuple[re.Pattern, Callable[[re.Match], str]]] = [
    (r"enc\.conv1d\.weight", _sub("encoder.conv.weight")),
    (r"dec\.weight", _sub("decoder.deconv.weight")),
    (r"mask_net\.norm\.(weight|bias)", _sub(r"masker.input_norm.\1")),
    (r"mask_net\.conv1d_encoder\.weight", _sub("masker.input_proj.weight")),
    (r"mask_net\.pos_enc\.(scale|inv_freq)", _sub(r"masker.pos_encoding.\1")),
    (_STACK + r"\.layers\.(\d+)\.rotary_pos_emb\.freqs", _sub(r"masker.layers.\1.attention.rotary.freqs")),
    (_STACK + r"\.layers\.(\d+)\.(to_hidden|to_qk|to_out)\.mdl\.0\.g", _sub(r"masker.layers.\1.attention.\2.norm.g")),
    (_STACK + r"\.layers\.(\d+)\.(to_hidden|to_qk|to_out)\.mdl\.1\.(weight|bias)",
     _sub(r"masker.layers.\1.attention.\2.linear.\3")),
    (_STACK + r"\.layers\.(\d+)\.(to_hidden|to_qk|to_out)\.mdl\.3\.sequential\.1\.conv\.weight",
     _sub(r"masker.layers.\1.attention.\2.conv.weight")),
    (_STACK + r"\.layers\.(\d+)\.qk_offset_scale\.(gamma|beta)", _sub(r"masker.layers.\1.attention.offset_scale.\2")),
    (_STACK + r"\.fsmn\.(\d+)\.conv1\.0\.(weight|bias)", _sub(r"masker.layers.\1.fsmn_block.in_proj.\2")),
    (_STACK + r"\.fsmn\.(\d+)\.conv1\.1\.weight", _sub(r"masker.layers.\1.fsmn_block.in_act.weight")),
    (_STACK + r"\.fsmn\.(\d+)\.norm1\.(weight|bias)", _sub(r"masker.layers.\1.fsmn_block.in_norm.\2")),
    (_STACK + r"\.fsmn\.(\d+)\.norm2\.(weight|bias)", _sub(r"masker.layers.\1.fsmn_block.out_norm.\2")),
    (_STACK + r"\.fsmn\.(\d+)\.conv2\.(weight|bias)", _sub(r"masker.layers.\1.fsmn_block.out_proj.\2")),
    (_STACK + r"\.fsmn\.(\d+)\.gated_fsmn\.(to_u|to_v)\.mdl\.0\.(weight|bias)",
     _sub(r"masker.layers.\1.fsmn_block.gated_fsmn.\2.norm.\3")),
    (_STACK + r"\.fsmn\.(\d+)\.gated_fsmn\.(to_u|to_v)\.mdl\.1\.(weight|bias)",
     _sub(r"masker.layers.\1.fsmn_block.gated_fsmn.\2.linear.\3")),
    (_STACK + r"\.fsmn\.(\d+)\.gated_fsmn\.(to_u|to_v)\.mdl\.3\.sequential\.1\.conv\.weight",
     _sub(r"masker.layers.\1.fsmn_block.gated_fsmn.\2.conv.weight")),
    (_STACK + r"\.fsmn\.(\d+)\.gated_fsmn\.fsmn\.(linear\.weight|linear\.bias|project\.weight)",
     _sub(r"masker.layers.\1.fsmn_block.gated_fsmn.fsmn.\2")),
    (_STACK + r"\.fsmn\.(\d+)\.gated_fsmn\.fsmn\.conv\.conv([1-9]\d*)\.weight", _fsmn_memory("conv")),
    (_STACK + r"\.fsmn\.(\d+)\.gated_fsmn\.fsmn\.conv\.norm([1-9]\d*)\.(weight|bias)", _fsmn_memory("norm")),
    (_STACK + r"\.fsmn\.(\d+)\.gated_fsmn\.fsmn\.conv\.prelu([1-9]\d*)\.weight", _fsmn_memory("prelu")),
    (r"mask_net\.mdl\.intra_mdl\.norm\.(weight|bias)", _sub(r"masker.layers_norm.\1")),
    (r"mask_net\.mdl\.intra_norm\.(weight|bias)", _sub(r"masker.output_norm.\1")),
    (r"mask_net\.conv1d_out\.(weight|bias)", _sub(r"masker.speaker_proj.\1")),
    (r"mask_net\.conv1_decoder\.weight", _sub("masker.mask_proj.weight")),
    (r"mask_net\.prelu\.weight", _sub("masker.output_act.weight")),
    (r"mask_net\.output\.0\.(weight|bias)", _sub(r"masker.mask_value.\1")),
    (r"mask_net\.output_gate\.0\.(weight|bias)", _sub(r"masker.mask_gate.\1")),
]
_RULES = [(re.compile(p), f) for p, f in _RULES]


def official_to_ours_name(name: str) -> Optional[str]:
    """Our parameter name for an official one (without wrapper prefix), or ``None`` if unknown."""
    for pattern, rename in _RULES:
        m = pattern.fullmatch(name)
        if m:
            return rename(m)
    return None


def _find_prefix(keys) -> str:
    for key in keys:
        if key.endswith(_ENCODER_KEY):
            return key[: -len(_ENCODER_KEY)]
    raise MossFormer2CheckpointError(
        f"no encoder weight ('...{_ENCODER_KEY}') among the {len(keys)} keys: not an official MossFormer2 state dict"
    )


def load_official_state_dict(obj) -> Dict[str, torch.Tensor]:
    """The official state dict inside ``obj`` with its wrapper prefix removed.

    ``obj``: what ``torch.load`` returned -- a state dict, or a dict holding one under ``model`` or
    ``state_dict`` (training checkpoints). Keys outside the prefix (e.g. an optimiser) are kept and
    reported as unknown by :func:`official_to_ours`.
    """
    if not isinstance(obj, Mapping):
        raise MossFormer2CheckpointError(f"expected a state dict (a mapping), got {type(obj).__name__}")
    for field in ("state_dict", "model"):
        inner = obj.get(field)
        if isinstance(inner, Mapping) and any(isinstance(v, torch.Tensor) for v in inner.values()):
            obj = inner
            break
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise MossFormer2CheckpointError("no tensors found (looked at the top level, 'state_dict' and 'model')")
    prefix = _find_prefix(list(tensors))
    return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in tensors.items()}


def architecture_from_checkpoint(ckpt, **overrides) -> Dict[str, int]:
    """:class:`MossFormer2` keyword arguments for a checkpoint.

    Taken from ``ckpt['config']`` when present, otherwise inferred from the tensor shapes (speakers from
    the output projection, kernel and width from the encoder, layer count from the largest layer index);
    ``overrides`` (non-``None`` values, e.g. command-line flags) win. ``config`` may also carry
    ``sample_rate``, which is not an architecture argument and is ignored here.
    """
    arch: Dict[str, int] = {}
    config = ckpt.get("config") if isinstance(ckpt, Mapping) else None
    if isinstance(config, Mapping):
        arch.update({k: int(config[k]) for k in ARCHITECTURE_KEYS if k in config})
    missing = [k for k in ARCHITECTURE_KEYS if k not in arch and overrides.get(k) is None]
    if missing:
        arch.update({k: v for k, v in _infer_architecture(load_official_state_dict(ckpt)).items() if k in missing})
    arch.update({k: int(v) for k, v in overrides.items() if v is not None and k in ARCHITECTURE_KEYS})
    unknown = sorted(set(overrides) - set(ARCHITECTURE_KEYS))
    if unknown:
        raise TypeError(f"unknown architecture overrides: {unknown}")
    return arch


def _infer_architecture(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, int]:
    def shape(name):
        if name not in state_dict:
            raise MossFormer2CheckpointError(f"cannot infer the architecture: '{name}' is missing")
        return tuple(state_dict[name].shape)

    embedding_dim, _, kernel = shape("enc.conv1d.weight")
    sequence_dim = shape("mask_net.conv1d_encoder.weight")[0]
    speakers = shape("mask_net.conv1d_out.weight")[0] // sequence_dim
    layer_ids = [int(m.group(1)) for k in state_dict
                 for m in [re.match(_STACK + r"\.layers\.(\d+)\.", k)] if m]
    if not layer_ids:
        raise MossFormer2CheckpointError("cannot infer the architecture: no MossFormer2 layer found")
    return {
        "num_spks": speakers,
        "encoder_kernel_size": kernel,
        "encoder_embedding_dim": embedding_dim,
        "mossformer_sequence_dim": sequence_dim,
        "num_mossformer_layer": max(layer_ids) + 1,
    }


def _fit(tensor: torch.Tensor, expected: torch.Size) -> Optional[torch.Tensor]:
    """``tensor`` in the expected shape when it only differs by trailing singleton axes, else ``None``."""
    shape = tuple(tensor.shape)
    expected = tuple(expected)
    if shape == expected:
        return tensor
    if len(shape) > len(expected) and shape[: len(expected)] == expected and all(s == 1 for s in shape[len(expected):]):
        return tensor.reshape(expected)
    return None


def official_to_ours(state_dict: Mapping[str, torch.Tensor], arch: Mapping[str, int], **model_kwargs) -> Dict[str, torch.Tensor]:
    """Rename and reshape an official state dict for ``MossFormer2(**arch, **model_kwargs)``.

    Every official key must map to one of our keys and every one of our keys must be covered, with
    compatible shapes; otherwise :class:`MossFormer2CheckpointError` lists all unknown, missing and
    mismatched keys at once. Tensors are not copied unless a reshape needs it.
    """
    with torch.device("meta"):
        expected = MossFormer2(**arch, **model_kwargs).state_dict()
    ours: Dict[str, torch.Tensor] = {}
    unknown, mismatched, mismatched_targets = [], [], set()
    for name, tensor in state_dict.items():
        target = official_to_ours_name(name)
        if target is None or target not in expected:
            unknown.append(name)
            continue
        fitted = _fit(tensor, expected[target].shape)
        if fitted is None:
            mismatched.append(f"{name} {tuple(tensor.shape)} -> {target} expects {tuple(expected[target].shape)}")
            mismatched_targets.add(target)
            continue
        ours[target] = fitted
    missing = [k for k in expected if k not in ours and k not in mismatched_targets]
    if unknown or missing or mismatched:
        header = f"official MossFormer2 state dict does not fit the architecture {dict(arch)}:"
        raise MossFormer2CheckpointError(key_report(header, unknown, missing, mismatched, " (our names)"), unknown,
                                         missing, mismatched)
    return ours
