"""Pack a Kaldi data dir or a NeMo manifest into tar shards (NeMo tarred layout or lhotse Shar).

A thin command line over :func:`nest_ext.data.packing.pack_shards`; options mirror its
arguments. Examples::

    # Kaldi data dir -> NeMo tarred shards (1000 utterances each, shuffled with seed 0), 8 decoding processes
    nest-pack-shards --wav-scp data/train/wav.scp --text data/train/text --text-norm \\
        --out-dir shards/train --num-workers 8
    # the same job split over 4 machines (run each with its --shard-idx), resumable after a crash
    nest-pack-shards ... --shard-idx 2 --shard-count 4 --skip-existing
    # NeMo manifest -> lhotse Shar at 16 kHz
    nest-pack-shards --manifest train.json --out-dir shar/train --format lhotse-shar --sample-rate 16000
    python tools/pack_shards.py ...          # the same command from a checkout

Progress: a bar on a terminal; otherwise (batch jobs, SLURM logs) a line with count, rate and ETA every
``--progress-every`` seconds and one at the end.

Exit status: 0 on success (bad audio is reported and left out), 1 when ``--strict`` met a problem or
packing failed, 2 on bad arguments/input (e.g. Kaldi pipe entries without ``--allow-pipes``).
"""
import logging

from nest_ext.cli.conventions import (
    EXIT_FAILED, EXIT_USAGE, add_out_dir, add_progress, error, make_parser, progress_every, setup_logging,
)
from nest_ext.data.packing import DEFAULT_SHARD_SIZE, FORMATS, TASKS, PackingError, pack_shards

logger = logging.getLogger(__name__)


def build_parser():
    p = make_parser(__doc__)
    src = p.add_argument_group("input (exactly one of --wav-scp or --manifest)")
    one = src.add_mutually_exclusive_group(required=True)
    one.add_argument("--wav-scp", metavar="FILE", help="Kaldi wav.scp: 'UTTID path' or 'UTTID command |' per line")
    one.add_argument("--manifest", metavar="JSON",
                     help="NeMo JSON-lines manifest (audio_filepath, duration, text, [offset]); with --task "
                          "separation, a separation manifest (input_filepath, target_filepath, [noise_filepath])")
    src.add_argument("--text", metavar="FILE",
                     help="with --wav-scp: Kaldi text, 'UTTID transcript' per line (utterances without one are left out)")
    src.add_argument("--segments", metavar="FILE",
                     help="with --wav-scp: Kaldi segments ('UTTID RECID START END') cutting the recordings (read by "
                          "lhotse's Kaldi import; utt2spk beside it gives speakers)")
    src.add_argument("--utt2spk", metavar="FILE", help="with --wav-scp: Kaldi utt2spk, adds a 'speaker' key")
    p.add_argument("--task", choices=TASKS, default="asr",
                   help="asr: one audio per example; separation: mixture + sources (+ noise) per example")
    add_out_dir(p, help="output folder (shards, manifests, index files)")
    p.add_argument("--format", choices=FORMATS, default="nemo", help="shard format (default nemo)")
    p.add_argument("--shard-size", type=int, default=DEFAULT_SHARD_SIZE, metavar="N",
                   help=f"examples per shard (default {DEFAULT_SHARD_SIZE}: hundreds to thousands suit tarred loading)")
    p.add_argument("--no-shuffle", action="store_true", help="keep input order (default: a seeded shuffle, so a "
                   "sorted wav.scp does not give single-speaker shards)")
    p.add_argument("--seed", type=int, default=0, help="seed of the shuffle (the output depends on it alone)")
    p.add_argument("--min-duration", type=float, default=None, metavar="S",
                   help="leave out examples shorter than S seconds")
    p.add_argument("--max-duration", type=float, default=None, metavar="S",
                   help="leave out examples longer than S seconds")
    p.add_argument("--num-workers", type=int, default=1, metavar="N",
                   help="decoding processes (output is identical for any value)")
    p.add_argument("--shard-idx", type=int, default=0, metavar="I",
                   help="this process writes shards i with i %% shard-count == shard-idx (default 0)")
    p.add_argument("--shard-count", type=int, default=1, metavar="N",
                   help="number of processes the job is split over (default 1)")
    p.add_argument("--skip-existing", action="store_true", help="keep shards completed by an earlier run of the same job")
    p.add_argument("--text-norm", action="store_true", help="collapse whitespace and lower-case transcripts")
    p.add_argument("--sample-rate", type=int, default=None, metavar="HZ", help="resample to this rate (soxr, HQ)")
    p.add_argument("--strict", action="store_true", help="stop at the first bad entry instead of leaving it out")
    p.add_argument("--allow-pipes", action="store_true", help="run Kaldi pipe entries ('cmd |') through the shell")
    p.add_argument("--pipe-timeout", type=float, default=300.0, metavar="S",
                   help="seconds one pipe command may take (default 300)")
    p.add_argument("--shar-audio-format", choices=("flac", "wav"), default="flac",
                   help="audio codec for lhotse-shar (default flac)")
    add_progress(p, unit="utterances")
    return p


def _check(p, args) -> None:
    """Argument combinations argparse cannot express, named by their flags (exits like argparse)."""
    for flag, value in (("--text", args.text), ("--segments", args.segments), ("--utt2spk", args.utt2spk)):
        if value is not None and args.wav_scp is None:
            p.error(f"{flag} goes with --wav-scp; a --manifest carries its own keys")
    if args.task == "separation" and args.format == "wenet":
        p.error("--format wenet holds one audio and a transcript per utterance (ASR data); --task separation "
                "writes --format nemo or lhotse-shar")
    if args.task == "separation" and args.manifest is None:
        p.error("--task separation reads a separation --manifest (prepare_separation_data's TR.json)")
    if args.min_duration is not None and args.max_duration is not None and args.min_duration > args.max_duration:
        p.error(f"--min-duration {args.min_duration} is above --max-duration {args.max_duration}")
    if not (args.shard_count >= 1 and 0 <= args.shard_idx < args.shard_count):
        p.error(f"need 0 <= --shard-idx < --shard-count (got --shard-idx {args.shard_idx}, "
                f"--shard-count {args.shard_count})")
    for flag, value in (("--shard-size", args.shard_size), ("--num-workers", args.num_workers),
                        ("--sample-rate", args.sample_rate)):
        if value is not None and value < 1:
            p.error(f"{flag} must be at least 1 (got {value})")


def main(argv=None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    _check(p, args)
    setup_logging()
    every = progress_every(args)
    try:
        pack_shards(
            out_dir=args.out_dir, wav_scp=args.wav_scp, text=args.text, manifest=args.manifest,
            shard_size=args.shard_size, num_workers=args.num_workers, shard_idx=args.shard_idx,
            shard_count=args.shard_count, skip_existing=args.skip_existing, text_norm=args.text_norm,
            sample_rate=args.sample_rate, format=args.format, strict=args.strict, allow_pipes=args.allow_pipes,
            pipe_timeout=args.pipe_timeout, shar_audio_format=args.shar_audio_format, progress=every is not None,
            progress_every_s=every or 0.0, task=args.task, shuffle=not args.no_shuffle, seed=args.seed,
            min_duration=args.min_duration, max_duration=args.max_duration, segments=args.segments,
            utt2spk=args.utt2spk,
        )
    except PackingError as e:
        failed = str(e).startswith("--strict") or "worker process died" in str(e)
        return error(e, EXIT_FAILED if failed else EXIT_USAGE)
    # pack_shards has logged the summary; the exit status says whether the job is whole.
    return 0


if __name__ == "__main__":  # python -m nest_ext.cli.pack_shards
    raise SystemExit(main())
