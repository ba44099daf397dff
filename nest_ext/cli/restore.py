"""Restore speech with a RestorationGANModel `.nemo`: one restored WAV per input.

    nest-restore --model MODEL.nemo --out-dir out/ in1.wav [in2.flac ...]
    python tools/restore.py --model MODEL.nemo --out-dir out/ in1.wav ...     # the same from a checkout

writes `out/in1_restored.wav ...`: 32-bit float WAV **at the model's sample rate** (16 kHz for
config/restoration_gan.yaml), whatever the input's rate -- inputs are resampled to the model's rate first (soxr HQ,
`nest_ext.data.audio_io.resample`). Multi-channel input is refused unless `--channel N` picks a channel.
Long recordings are restored in windows of `--chunk-seconds` (default 30) overlapping by `--overlap-seconds`
(default a quarter window, at most 1 s) and cross-faded, so memory does not grow with the length; a file no
longer than one window is restored in one pass (`--chunk-seconds 0`: always one pass).

Exit status: 0 when every file was restored, 1 when any input was refused or failed (each named), 2 on bad
arguments.
"""
import logging

from nest_ext.cli.conventions import (
    EXIT_FAILED, CliError, add_device, add_out_dir, add_progress, error, make_parser, progress, progress_every,
    require_files, resolve_device, setup_logging,
)

logger = logging.getLogger("nest_ext.restore")


def build_parser():
    p = make_parser(__doc__)
    p.add_argument("--model", required=True, metavar="NEMO", help="RestorationGANModel .nemo file")
    add_out_dir(p, "--output-dir", help="folder for <stem>_restored.wav")
    p.add_argument("inputs", nargs="+", metavar="AUDIO", help="degraded audio files (any rate)")
    p.add_argument("--channel", type=int, default=None, metavar="N", help="channel of multi-channel inputs (0-based)")
    p.add_argument("--chunk-seconds", type=float, default=30.0, metavar="S",
                   help="restore in overlapping windows of S seconds (default 30; 0: one pass)")
    p.add_argument("--overlap-seconds", type=float, default=None, metavar="S",
                   help="overlap of consecutive windows (default min(1, S / 4))")
    add_device(p)
    add_progress(p, unit="files")
    return p


def load_restoration_model(path: str, device: str):
    """A RestorationGANModel from its ``.nemo`` file, in eval mode on ``device``."""
    import torch

    from nest_ext.models.restoration_gan import RestorationGANModel

    model = RestorationGANModel.restore_from(path, map_location=torch.device(device))
    return model.eval()


def main(argv=None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    if args.chunk_seconds < 0 or (args.overlap_seconds is not None and not 0 <= args.overlap_seconds < args.chunk_seconds):
        p.error("need --chunk-seconds >= 0 and 0 <= --overlap-seconds < --chunk-seconds")
    setup_logging()
    try:
        require_files(args.model, *args.inputs, code=EXIT_FAILED)
        device = resolve_device(args.device)
    except CliError as e:
        return error(e.message, e.code)
    model = load_restoration_model(args.model, device)
    logger.info("model %s: %d Hz; outputs at %d Hz", args.model, model.sample_rate, model.sample_rate)
    failures = 0
    bar = progress(progress_every(args), len(args.inputs), "restoring", unit="file", logger=logger)
    for path in args.inputs:
        try:
            (written,) = model.process([path], args.out_dir, input_channel_selector=args.channel,
                                       chunk_seconds=args.chunk_seconds or None)
        except ValueError as err:  # BadAudioError (missing, unreadable, empty), multi-channel without --channel
            error(err)
            failures += 1
        else:
            print(f"{path} -> {written}", flush=True)
        bar.update(1)
    bar.close()
    return EXIT_FAILED if failures else 0


if __name__ == "__main__":  # python -m nest_ext.cli.restore
    raise SystemExit(main())
