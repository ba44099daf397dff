#!/usr/bin/env python
"""Convert an official MossFormer2 checkpoint (ClearerVoice-Studio / alibabasglab) into a `.nemo` model.

    python tools/convert_mossformer2_checkpoint.py --official last_best_checkpoint.pt --out mossformer2.nemo \
        [--num-spks 2 --encoder-kernel-size 16 --encoder-embedding-dim 512 \
         --mossformer-sequence-dim 512 --num-mossformer-layer 24 --sample-rate 8000]

The checkpoint is a `torch.save`d official state dict, bare or under `model` / `state_dict`. The
architecture comes from the file's `config` entry when it has one, else from the tensor shapes; flags
given on the command line win. Every official key must map to one of the model's keys with the right
shape and every model key must be covered: otherwise the tool lists all unknown, missing and mismatched
keys and exits with status 2, writing nothing. The `.nemo` is written under a temporary name in the
output folder and renamed into place, so no reader sees a half-written file.

The result is a `nest_ext.models.MossFormer2SeparationModel`; separate with tools/separate.py.
"""
import argparse
import os
import sys

FLAGS = (
    "num_spks",
    "encoder_kernel_size",
    "encoder_embedding_dim",
    "mossformer_sequence_dim",
    "num_mossformer_layer",
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official", required=True, help="official checkpoint (torch.save)")
    parser.add_argument("--out", required=True, help="output .nemo path")
    for name in FLAGS:
        parser.add_argument("--" + name.replace("_", "-"), type=int, default=None, help="override the checkpoint's value")
    parser.add_argument("--sample-rate", type=int, default=None, help="model sample rate (default: the "
                        "checkpoint's config, else 8000)")
    parser.add_argument("--allow-pickle", action="store_true", help="load checkpoints that hold Python objects "
                        "besides tensors (runs their pickled code: only for files you trust)")
    return parser.parse_args(argv)


def _load(path: str, allow_pickle: bool):
    import pickle

    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if not allow_pickle:
            raise SystemExit(
                f"error: {path} holds Python objects besides tensors and plain containers ({err}).\n"
                "If you trust the file, rerun with --allow-pickle."
            )
        return torch.load(path, map_location="cpu", weights_only=False)


def _check_against_model(model, state_dict):
    """Every key and shape of the converted state dict against the model's own: (missing, unexpected, mismatched)."""
    expected = model.state_dict()
    missing = sorted(k for k in expected if k not in state_dict)
    unexpected = sorted(k for k in state_dict if k not in expected)
    mismatched = sorted(
        f"{k} {tuple(state_dict[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in state_dict and tuple(state_dict[k].shape) != tuple(expected[k].shape)
    )
    return missing, unexpected, mismatched


def _save_atomically(model, out: str):
    from nest_ext.parts.atomic_io import atomic_path

    with atomic_path(out, suffix=".tmp.nemo") as tmp:
        model.save_to(tmp)


def main(argv=None) -> int:
    args = parse_args(argv)
    if not os.path.isfile(args.official):
        print(f"error: checkpoint not found: {args.official}", file=sys.stderr)
        return 1

    from nest_ext.models.mossformer2_separation import MossFormer2SeparationModel
    from nest_ext.modules.mossformer2.converter import (
        MossFormer2CheckpointError,
        architecture_from_checkpoint,
        load_official_state_dict,
        official_to_ours,
    )

    ckpt = _load(args.official, args.allow_pickle)
    overrides = {name: getattr(args, name) for name in FLAGS}
    try:
        arch = architecture_from_checkpoint(ckpt, **overrides)
        ours = official_to_ours(load_official_state_dict(ckpt), arch)
    except MossFormer2CheckpointError as err:
        print(f"error: {args.official}: {err}", file=sys.stderr)
        return 2

    sample_rate = args.sample_rate
    if sample_rate is None:
        config = ckpt.get("config") if isinstance(ckpt, dict) else None
        sample_rate = int(config["sample_rate"]) if isinstance(config, dict) and "sample_rate" in config else 8000
    model = MossFormer2SeparationModel(MossFormer2SeparationModel.default_config(sample_rate=sample_rate, **arch))

    # The converter checked against the bare network; check again against the NeMo model that is saved
    missing, unexpected, mismatched = _check_against_model(model, ours)
    if missing or unexpected or mismatched:
        lines = [f"error: {args.official}: converted weights do not fit MossFormer2SeparationModel {arch}:"]
        if missing:
            lines.append(f"{len(missing)} missing key(s): " + ", ".join(missing))
        if unexpected:
            lines.append(f"{len(unexpected)} unknown key(s): " + ", ".join(unexpected))
        if mismatched:
            lines.append(f"{len(mismatched)} shape mismatch(es): " + "; ".join(mismatched))
        print("\n".join(lines), file=sys.stderr)
        return 2
    model.load_state_dict(ours, strict=True)
    model.eval()
    _save_atomically(model, args.out)
    count = sum(p.numel() for p in model.parameters())
    print(f"wrote {args.out}: MossFormer2 {arch}, {sample_rate} Hz, {count:,} parameters, {len(ours)} tensors")
    return 0


if __name__ == "__main__":
    sys.exit(main())
