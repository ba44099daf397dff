"""Where nest_ext stands against the installed NeMo: configs, parameter counts and numbers.

Three checks, each returning plain dicts (JSON-ready) with an ``ok`` flag:

* :func:`compare_configs` — our ``config/*.yaml`` against NeMo's originals, key by key. A ``_target_`` that
  points to ``nest_ext.*`` with the same class name as NeMo's is a *mapped* target, not a difference.
* :func:`compare_param_counts` — for each NEST size, our model (our configs, our classes) against NeMo's
  model (NeMo's original config and classes), total and per child module. Models are built with large
  tensors on the ``meta`` device, so the 1B-parameter size needs no memory.
* :func:`compare_numbers` — NeMo's weights copied into ours; encoder output, decoder log-probs, masks,
  tokens and the loss on one random batch.

NeMo's original NEST configs are not part of the ``nemo_toolkit`` package (they live in NeMo's repository under
``examples/asr/conf/ssl/nest``), so every check takes their folder: ``nemo_config_dir``, else the
``NEST_EXT_NEMO_CONFIG_DIR`` environment variable (:func:`resolve_nemo_config_dir`). Helper of
``nest_ext/cli/compare_with_nemo.py``.

Example::

    from nest_ext.cli.nemo_comparison import compare_configs
    report = compare_configs("config", "NeMo/examples/asr/conf/ssl/nest")
    assert report["ok"], report
"""
from __future__ import annotations

import contextlib
import copy
import os
from pathlib import Path
from typing import Dict, Iterable, List, Optional

import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from torch.overrides import TorchFunctionMode

from nest_ext.parts.nemo_targets import to_nemo_targets
from nest_ext.parts.nest_sizes import NEST_SIZES, encoder_overrides

REPO_ROOT = Path(__file__).resolve().parents[2]
BASE_CONFIG = "nest_fast-conformer.yaml"
NEMO_CONFIG_ENV = "NEST_EXT_NEMO_CONFIG_DIR"


class NemoConfigNotFound(FileNotFoundError):
    """No folder of NeMo's original NEST configs was given, or the one given holds none."""


def resolve_nemo_config_dir(nemo_config_dir=None) -> Path:
    """``nemo_config_dir``, else ``$NEST_EXT_NEMO_CONFIG_DIR``; :class:`NemoConfigNotFound` naming both when
    neither is set or the folder has no ``nest_fast-conformer.yaml``."""
    given = nemo_config_dir or os.environ.get(NEMO_CONFIG_ENV)
    how = (f"pass --nemo-config DIR (or set {NEMO_CONFIG_ENV}) with NeMo's original NEST configs: the folder "
           "examples/asr/conf/ssl/nest of a NeMo checkout")
    if not given:
        raise NemoConfigNotFound(f"no folder of NeMo's NEST configs given: {how}")
    path = Path(given)
    if not (path / BASE_CONFIG).is_file():
        raise NemoConfigNotFound(f"{path} has no {BASE_CONFIG}: {how}")
    return path


# ----------------------------------------------------------------------------------------------- configs
def _flatten(node, prefix="") -> Dict[str, object]:
    out = {}
    if isinstance(node, dict):
        if not node and prefix:
            out[prefix] = {}
        for k, v in node.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(node, list):
        if not node:
            out[prefix] = []
        for i, v in enumerate(node):
            out.update(_flatten(v, f"{prefix}[{i}]"))
    else:
        out[prefix] = node
    return out


def is_mapped_target(key: str, ours, theirs) -> bool:
    """A ``_target_`` of ours that points at nest_ext's class of the same name as NeMo's."""
    return (
        key.endswith("_target_")
        and isinstance(ours, str)
        and isinstance(theirs, str)
        and ours.startswith("nest_ext.")
        and ours.rsplit(".", 1)[-1] == theirs.rsplit(".", 1)[-1]
    )


def diff_configs(ours: DictConfig, theirs: DictConfig) -> Dict[str, List]:
    """Key-by-key difference of two configs, interpolations compared unresolved (as written)."""
    a = _flatten(OmegaConf.to_container(ours, resolve=False))
    b = _flatten(OmegaConf.to_container(theirs, resolve=False))
    differences, mapped = [], []
    for key in sorted(set(a) | set(b)):
        if key not in a:
            differences.append({"key": key, "kind": "missing in ours", "nemo": b[key]})
        elif key not in b:
            differences.append({"key": key, "kind": "only in ours", "ours": a[key]})
        elif a[key] != b[key] or type(a[key]) is not type(b[key]):
            if is_mapped_target(key, a[key], b[key]):
                mapped.append({"key": key, "ours": a[key], "nemo": b[key]})
            else:
                differences.append({"key": key, "kind": "value", "ours": a[key], "nemo": b[key]})
    return {"differences": differences, "mapped_targets": mapped}


def load_our_config(path_or_name, config_dir: Path = REPO_ROOT / "config") -> DictConfig:
    """Compose one of our configs with Hydra, so ``defaults`` lists (size variants) are applied."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    path = Path(path_or_name)
    if path.suffix in (".yaml", ".yml") and path.parent != Path("."):
        config_dir = path.parent
    name = path.stem if path.suffix else str(path_or_name)
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(Path(config_dir).resolve()), version_base=None):
        return compose(config_name=name)


def compare_configs(our_config_dir=REPO_ROOT / "config", nemo_config_dir=None) -> Dict:
    """Compare every NeMo original in ``nemo_config_dir`` with our config of the same file name."""
    nemo_config_dir = resolve_nemo_config_dir(nemo_config_dir)
    originals = sorted(nemo_config_dir.glob("*.yaml"))
    if not originals:
        raise FileNotFoundError(f"no NeMo config (*.yaml) found in {nemo_config_dir}")
    results = []
    for original in originals:
        ours_path = Path(our_config_dir) / original.name
        if not ours_path.exists():
            results.append({"config": original.name, "ok": False, "error": f"{ours_path} does not exist"})
            continue
        d = diff_configs(load_our_config(ours_path), OmegaConf.load(original))
        results.append({"config": original.name, "ok": not d["differences"], **d})
    return {"ok": all(r["ok"] for r in results), "configs": results}


# ------------------------------------------------------------------------------------- parameter counts
_FACTORIES = {
    torch.empty, torch.zeros, torch.ones, torch.full, torch.rand, torch.randn, torch.randint, torch.arange,
    torch.tensor, torch.as_tensor, torch.eye, torch.linspace, torch.empty_strided, torch.randperm,
}


class LargeTensorsOnMeta(TorchFunctionMode):
    """Create tensors of more than one element on the ``meta`` device.

    Plain ``torch.device('meta')`` breaks NeMo's subsampling, which computes an output size from a scalar
    tensor with ``.item()``; scalars stay on the CPU here, everything with storage worth counting goes to meta.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _FACTORIES and kwargs.get("device") is None:
            out = func(*args, **{**kwargs, "device": "meta"})
            if out.numel() <= 1:
                out = func(*args, **kwargs)
            return out
        return func(*args, **kwargs)


def _model_config(cfg: DictConfig) -> DictConfig:
    model_cfg = copy.deepcopy(cfg.model)
    with open_dict(model_cfg):
        for key in ("train_ds", "validation_ds", "test_ds"):
            model_cfg[key] = None
    return model_cfg


def nemo_size_config(size: str, nemo_config_dir=None) -> DictConfig:
    """NeMo's original NEST config with the size table's values applied."""
    cfg = OmegaConf.load(resolve_nemo_config_dir(nemo_config_dir) / BASE_CONFIG)
    with open_dict(cfg):
        cfg.model.encoder.update(encoder_overrides(size))
        cfg.model.optim.weight_decay = NEST_SIZES[size]["weight_decay"]
    return cfg


def our_size_config(size: str, our_config_dir=REPO_ROOT / "config") -> DictConfig:
    name = "nest_fast-conformer" if size == "large" else f"nest_fast-conformer_{size}"
    return load_our_config(name, our_config_dir)


@contextlib.contextmanager
def _env(name: str, value: Optional[str]):
    old = os.environ.get(name)
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def build_model(cfg: DictConfig, ours: bool, on_meta: bool = True):
    """Build a NEST model from a full (trainer+model) config: our class or NeMo's."""
    if ours:
        from nest_ext.models import EncDecDenoiseMaskedTokenPredModel
    else:
        from nemo.collections.asr.models.ssl_models import EncDecDenoiseMaskedTokenPredModel
    mode = LargeTensorsOnMeta() if on_meta else contextlib.nullcontext()
    with mode:
        return EncDecDenoiseMaskedTokenPredModel(cfg=_model_config(cfg))


def count_parameters(model) -> Dict[str, int]:
    counts = {"total": sum(p.numel() for p in model.parameters())}
    counts["trainable"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    for name, child in model.named_children():
        counts[name] = sum(p.numel() for p in child.parameters())
    return counts


def compare_param_counts(
    sizes: Iterable[str] = tuple(NEST_SIZES),
    extra_configs: Iterable[str] = (),
    our_config_dir=REPO_ROOT / "config",
    nemo_config_dir=None,
) -> Dict:
    """Parameter counts of our model vs NeMo's per size (and per extra config of ours), per child module."""
    rows = []
    for size in sizes:
        ours = count_parameters(build_model(our_size_config(size, our_config_dir), ours=True))
        theirs = count_parameters(build_model(nemo_size_config(size, nemo_config_dir), ours=False))
        rows.append({"name": size, "ours": ours, "nemo": theirs, "ok": ours == theirs})
    for path in extra_configs:
        cfg = load_our_config(path)
        nemo_cfg = to_nemo_targets(cfg)  # NeMo's twin of our config
        ours = count_parameters(build_model(cfg, ours=True))
        theirs = count_parameters(build_model(nemo_cfg, ours=False))
        rows.append({"name": str(path), "ours": ours, "nemo": theirs, "ok": ours == theirs})
    return {"ok": all(r["ok"] for r in rows), "rows": rows}


# --------------------------------------------------------------------------------------------- numbers
def compare_numbers(
    size: str = "small",
    our_config_dir=REPO_ROOT / "config",
    nemo_config_dir=None,
    seed: int = 0,
    atol: float = 1e-4,
) -> Dict:
    """Copy NeMo's weights into ours and compare outputs on one random batch (eval mode, same mask seed)."""
    torch.manual_seed(seed)
    nemo_model = build_model(nemo_size_config(size, nemo_config_dir), ours=False, on_meta=False).eval()
    ours = build_model(our_size_config(size, our_config_dir), ours=True, on_meta=False).eval()
    ours.load_state_dict(nemo_model.state_dict(), strict=True)

    sr = int(nemo_model.cfg.sample_rate)
    g = torch.Generator().manual_seed(seed)
    # long enough that NeMo's mask_prob of 0.01 (blocks of 40 frames) masks something: with no masked frame
    # NeMo's loss is NaN and ours 0 by design (docs/parity.md), which would say nothing about the numbers
    lengths = torch.tensor([6 * sr, 9 * sr // 2])
    audio = 0.1 * torch.randn(2, int(lengths.max()), generator=g)
    audio[1, lengths[1]:] = 0.0
    noisy = audio + 0.05 * torch.randn(audio.shape, generator=g)
    noisy[1, lengths[1]:] = 0.0

    def run(model):
        captured = {}
        handle = model.encoder.register_forward_hook(lambda m, i, o: captured.__setitem__("encoded", o[0]))
        torch.manual_seed(seed + 1)  # the block masking draws from the global RNG
        with torch.no_grad():
            log_probs, enc_len, masks, tokens = model.forward(
                input_signal=audio, input_signal_length=lengths,
                noisy_input_signal=noisy, noisy_input_signal_length=lengths, apply_mask=True,
            )
            loss = model.loss(masks=masks, decoder_outputs=log_probs, targets=tokens, decoder_lengths=enc_len)
        handle.remove()
        return dict(encoded=captured["encoded"], log_probs=log_probs, enc_len=enc_len, masks=masks,
                    tokens=tokens, loss=loss)

    a, b = run(ours), run(nemo_model)
    valid = torch.arange(a["encoded"].shape[-1])[None, :] < b["enc_len"][:, None]  # [B, T']
    enc_diff = ((a["encoded"] - b["encoded"]).abs() * valid[:, None, :]).max().item()
    # log-probs are [B, T', C], or [B, T', books, C] when squeeze_single is false
    lp_valid = valid.reshape(valid.shape + (1,) * (a["log_probs"].dim() - 2))
    lp_diff = ((a["log_probs"] - b["log_probs"]).abs() * lp_valid).max().item()
    result = {
        "size": size,
        "encoder_class": f"{type(ours.encoder).__module__}.{type(ours.encoder).__name__}",
        "encoded_max_abs_diff": enc_diff,
        "log_probs_max_abs_diff": lp_diff,
        "loss_ours": a["loss"].item(),
        "loss_nemo": b["loss"].item(),
        "loss_abs_diff": abs(a["loss"].item() - b["loss"].item()),
        "masked_frames": int(b["masks"].sum().item()),
        "lengths_equal": bool(torch.equal(a["enc_len"], b["enc_len"])),
        "masks_equal": bool(torch.equal(a["masks"], b["masks"])),
        "tokens_equal": bool(torch.equal(a["tokens"], b["tokens"])),
        "atol": atol,
    }
    result["ok"] = (
        result["lengths_equal"] and result["masks_equal"] and result["tokens_equal"] and result["masked_frames"] > 0
        and enc_diff <= atol and lp_diff <= atol and result["loss_abs_diff"] <= atol
    )
    return result
