"""Separate mixtures with a MossFormer2 `.nemo` model: one 32-bit float WAV per speaker.

    nest-separate --model MODEL.nemo --out-dir out/ mix1.wav [mix2.wav ...]
    nest-separate --model MODEL.nemo --out-dir out/ --batch-size 8 recordings/ test_manifest.json
    python tools/separate.py --model MODEL.nemo --out-dir out/ mix1.wav ...   # the same from a checkout

writes `out/mix1_s1.wav ... out/mix1_sN.wav` at the model's sample rate (`--output-dir` is the older spelling of
`--out-dir`). Inputs are files, folders (every audio file under them; outputs keep the sub-folders) and
manifests (`input_filepath` or `audio_filepath` of each line), mixed (nest_ext.cli.audio_inputs).
`--batch-size N`: up to N files of equal length share one forward pass (files of different lengths are never
padded together: the network has no padding mask); files are read and outputs written in background threads. Input at another rate is resampled (soxr HQ, `nest_ext.data.audio_io.resample`, as
evaluate_separation does). Multi-channel input is refused unless `--channel N` picks a channel.
`--chunk-seconds S` separates long recordings in overlapping chunks (bounded memory).
`--precision {fp32,bf16,int8}`: inference precision (speed and SI-SDRi cost in docs/benchmarks.md).
Exit status: 0 when every file was separated, 1 when any input was refused or failed (each named and skipped;
the others are separated).
"""
import logging

from nest_ext.cli.audio_inputs import collect_inputs
from nest_ext.cli.conventions import (
    EXIT_FAILED, EXIT_USAGE, CliError, add_device, add_out_dir, error, make_parser, require_files, resolve_device, setup_logging,
)
from nest_ext.parts.allocator import keep_freed_memory

logger = logging.getLogger(__name__)


def build_parser():
    parser = make_parser(__doc__)
    parser.add_argument("--model", required=True, metavar="NEMO", help="MossFormer2SeparationModel .nemo file")
    add_out_dir(parser, "--output-dir", help="folder for <stem>_s1.wav ... <stem>_sN.wav")
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="mixture audio files, folders of them, manifests")
    parser.add_argument("--batch-size", type=int, default=1, metavar="N",
                        help="files of equal length separated together, up to N per forward pass (default 1)")
    parser.add_argument("--channel", type=int, default=None, metavar="N",
                        help="channel of multi-channel inputs to separate (0-based)")
    parser.add_argument("--chunk-seconds", type=float, default=None, metavar="S",
                        help="separate in overlapping chunks of S seconds (long inputs, bounded memory)")
    add_device(parser)
    parser.add_argument("--precision", choices=("fp32", "bf16", "int8"), default="fp32",
                        help="inference precision (nest_ext.modules.mossformer2.inference; int8: CPU only)")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    try:
        if args.batch_size < 1:
            raise CliError(f"--batch-size must be >= 1, got {args.batch_size}", EXIT_USAGE)
        inputs = collect_inputs(args.inputs)
        require_files(args.model, code=EXIT_FAILED)
        device = resolve_device(args.device)
    except CliError as e:
        return error(e.message, e.code)

    keep_freed_memory()  # large activations reused, not faulted in again each call (bench/allocator.py)
    import torch

    from nest_ext.models.mossformer2_separation import MossFormer2SeparationModel
    from nest_ext.models.separation_files import separate_files
    from nest_ext.modules.mossformer2.inference import inference_precision, prepare_for_inference

    model = MossFormer2SeparationModel.restore_from(args.model, map_location=torch.device(device))
    try:
        model = prepare_for_inference(model, args.precision, inplace=True)
    except ValueError as err:  # int8 on a GPU
        return error(err)
    failures = 0
    results = separate_files(
        model, inputs, args.out_dir, batch_size=args.batch_size, channel=args.channel,
        chunk_seconds=args.chunk_seconds, context=lambda: inference_precision(args.precision, torch.device(device).type),
    )
    for result in results:
        if result.error is not None:  # BadAudioError (missing, unreadable, empty), multi-channel, too short: named
            error(f"skipped: {result.error}")
            failures += 1
        else:
            print(f"{result.input.path} -> {', '.join(result.outputs)}")
    if failures:
        logger.warning("%d of %d input(s) skipped (named above)", failures, len(inputs))
    return EXIT_FAILED if failures else 0

if __name__ == "__main__":  # python -m nest_ext.cli.separate
    raise SystemExit(main())
