"""Convert an official MossFormer2 checkpoint (ClearerVoice-Studio / alibabasglab) into a `.nemo` model.

    nest-convert-mossformer2 --official last_best_checkpoint.pt --out-dir models   # models/last_best_checkpoint.nemo
    nest-convert-mossformer2 --official last_best_checkpoint.pt --out mossformer2.nemo \\
        [--num-spks 2 --encoder-kernel-size 16 --encoder-embedding-dim 512 \\
         --mossformer-sequence-dim 512 --num-mossformer-layer 24 --sample-rate 8000]
    python tools/convert_mossformer2_checkpoint.py ...      # the same command from a checkout

The checkpoint is a `torch.save`d official state dict, bare or under `model` / `state_dict`. The
architecture comes from the file's `config` entry when it has one, else from the tensor shapes; flags
given on the command line win. Every official key must map to one of the model's keys with the right
shape and every model key must be covered: otherwise the tool lists all unknown, missing and mismatched
keys and exits with status 2, writing nothing. The `.nemo` is written under a temporary name in the
output folder and renamed into place, so no reader sees a half-written file.

The result is a `nest_ext.models.MossFormer2SeparationModel`; separate with nest-separate (tools/separate.py).
Conversion runs on the CPU (it only copies tensors), so there is no --device.

Exit status: 0 on success, 1 when the checkpoint file is missing, 2 when it does not fit (nothing written).
"""
import os
from pathlib import Path

from nest_ext.cli.conventions import EXIT_FAILED, EXIT_USAGE, CliError, error, make_parser, setup_logging

USAGE = ("%(prog)s --official CKPT.pt (--out-dir DIR | --out FILE.nemo) [--sample-rate HZ] [--allow-pickle]\n"
         "       [architecture overrides: --num-spks N --encoder-kernel-size N --encoder-embedding-dim N\n"
         "        --mossformer-sequence-dim N --num-mossformer-layer N]")

FLAGS = (
    "num_spks",
    "encoder_kernel_size",
    "encoder_embedding_dim",
    "mossformer_sequence_dim",
    "num_mossformer_layer",
)


def build_parser():
    parser = make_parser(__doc__, usage=USAGE)
    parser.add_argument("--official", required=True, metavar="CKPT.pt", help="official checkpoint (torch.save)")
    out = parser.add_mutually_exclusive_group(required=True)
    out.add_argument("--out-dir", metavar="DIR", help="write DIR/<checkpoint name>.nemo")
    out.add_argument("--out", metavar="FILE.nemo", help="write exactly this .nemo file")
    arch = parser.add_argument_group("architecture overrides (default: the checkpoint's config, else its shapes)")
    for name in FLAGS:
        arch.add_argument("--" + name.replace("_", "-"), type=int, default=None, metavar="N",
                          help="override the checkpoint's " + name)
    parser.add_argument("--sample-rate", type=int, default=None, metavar="HZ", help="model sample rate (default: the "
                        "checkpoint's config, else 8000)")
    parser.add_argument("--allow-pickle", action="store_true", help="load checkpoints that hold Python objects "
                        "besides tensors (runs their pickled code: only for files you trust)")
    return parser


def output_path(args) -> str:
    """The .nemo to write: ``--out``, or ``--out-dir``/<checkpoint stem>.nemo."""
    return args.out or os.path.join(args.out_dir, Path(args.official).stem + ".nemo")


def _load(path: str, allow_pickle: bool):
    import pickle

    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if not allow_pickle:
            raise CliError(
                f"{path} holds Python objects besides tensors and plain containers ({err}).\n"
                "If you trust the file, rerun with --allow-pickle.", EXIT_USAGE
            ) from None
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
    args = build_parser().parse_args(argv)
    setup_logging()
    if not os.path.isfile(args.official):
        return error(f"checkpoint not found: {args.official}", EXIT_FAILED)
    try:
        return convert(args)
    except CliError as e:
        return error(e.message, e.code)


def convert(args) -> int:
    """Convert ``args.official`` into :func:`output_path` (``args`` from :func:`build_parser`)."""

    from nest_ext.models.mossformer2_separation import MossFormer2SeparationModel
    from nest_ext.modules.mossformer2.converter import (
        MossFormer2CheckpointError,
        architecture_from_checkpoint,
        key_report,
        load_official_state_dict,
        official_to_ours,
    )

    ckpt = _load(args.official, args.allow_pickle)
    overrides = {name: getattr(args, name) for name in FLAGS}
    try:
        arch = architecture_from_checkpoint(ckpt, **overrides)
        ours = official_to_ours(load_official_state_dict(ckpt), arch)
    except MossFormer2CheckpointError as err:
        return error(f"{args.official}: {err}", EXIT_USAGE)

    sample_rate = args.sample_rate
    if sample_rate is None:
        config = ckpt.get("config") if isinstance(ckpt, dict) else None
        sample_rate = int(config["sample_rate"]) if isinstance(config, dict) and "sample_rate" in config else 8000
    model = MossFormer2SeparationModel(MossFormer2SeparationModel.default_config(sample_rate=sample_rate, **arch))

    # The converter checked against the bare network; check again against the NeMo model that is saved
    missing, unexpected, mismatched = _check_against_model(model, ours)
    if missing or unexpected or mismatched:
        header = f"{args.official}: converted weights do not fit MossFormer2SeparationModel {arch}:"
        return error(key_report(header, unexpected, missing, mismatched), EXIT_USAGE)
    model.load_state_dict(ours, strict=True)
    model.eval()
    out = output_path(args)
    _save_atomically(model, out)
    count = sum(p.numel() for p in model.parameters())
    print(f"wrote {out}: MossFormer2 {arch}, {sample_rate} Hz, {count:,} parameters, {len(ours)} tensors")
    return 0


if __name__ == "__main__":  # python -m nest_ext.cli.convert_mossformer2_checkpoint
    raise SystemExit(main())
