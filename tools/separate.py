#!/usr/bin/env python
"""Separate mixtures with a MossFormer2 `.nemo` model: one 32-bit float WAV per speaker.

    python tools/separate.py --model MODEL.nemo --output-dir out/ mix1.wav [mix2.wav ...]

writes `out/mix1_s1.wav ... out/mix1_sN.wav` at the model's sample rate. Input at another rate is
resampled (librosa/soxr). Multi-channel input is refused unless `--channel N` picks a channel.
`--chunk-seconds S` separates long recordings in overlapping chunks (bounded memory).
`--precision {fp32,bf16,int8}`: inference precision (speed and SI-SDRi cost in docs/benchmarks.md).
Exit status: 0 when every file was separated, 1 when any input was refused or failed (each named).
"""
import argparse
import logging
import os
import sys


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="MossFormer2SeparationModel .nemo file")
    parser.add_argument("--output-dir", required=True, help="folder for <stem>_s1.wav ... <stem>_sN.wav")
    parser.add_argument("inputs", nargs="+", help="mixture audio files")
    parser.add_argument("--channel", type=int, default=None, help="channel of multi-channel inputs to separate")
    parser.add_argument("--chunk-seconds", type=float, default=None, help="chunked inference for long inputs")
    parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1, ...)")
    parser.add_argument("--precision", choices=("fp32", "bf16", "int8"), default="fp32",
                        help="inference precision (nest_ext.modules.mossformer2.inference; int8: CPU only)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    missing = [p for p in args.inputs if not os.path.isfile(p)]
    if missing:
        print(f"error: input file(s) not found: {', '.join(missing)}", file=sys.stderr)
        return 1
    if not os.path.isfile(args.model):
        print(f"error: model file not found: {args.model}", file=sys.stderr)
        return 1

    import torch

    from nest_ext.models.mossformer2_separation import MossFormer2SeparationModel
    from nest_ext.modules.mossformer2.inference import inference_precision, prepare_for_inference

    model = MossFormer2SeparationModel.restore_from(args.model, map_location=torch.device(args.device))
    try:
        model = prepare_for_inference(model, args.precision, inplace=True)
    except ValueError as err:  # int8 on a GPU
        print(f"error: {err}", file=sys.stderr)
        return 1
    failures = 0
    for path in args.inputs:
        try:
            with inference_precision(args.precision, torch.device(args.device).type):
                (written,) = model.process(
                    [path], args.output_dir, input_channel_selector=args.channel, chunk_seconds=args.chunk_seconds
                )
        except ValueError as err:  # unreadable, multi-channel without --channel, empty: named in the message
            print(f"error: {err}", file=sys.stderr)
            failures += 1
            continue
        print(f"{path} -> {', '.join(written)}")
    return 1 if failures else 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    sys.exit(main())
