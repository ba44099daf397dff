"""Prepare (degraded, clean) pairs for speech restoration: WAV files + NeMo audio-to-audio manifests, or tar shards.

    nest-prepare-restoration-data --clean CLEAN --out-dir pairs/ [--noise-manifest noise.json]
        [--rir-manifest rirs.json] [--degradations chain.yaml] [--pairs-per-file K] [--num-workers W]
        [--shard-idx I --shard-count C] [--skip-existing] [--seed S] [--format manifest|tar]
    python tools/prepare_restoration_data.py ...     # the same command from a checkout

``--clean`` is a NeMo manifest (``audio_filepath``) or a folder of audio files; ``--wav-scp`` a Kaldi wav.scp.
Any rate and channel count (mixed down, resampled to ``--sample-rate``). Each clean utterance gives
``--pairs-per-file`` pairs, degraded by the chain of ``--degradations`` (a YAML list of steps; the default chain
otherwise: reverb, noise, band limit, EQ tilt, clipping, codec, packet loss -- nest_ext/data/degradations.py);
``--noise-manifest`` / ``--rir-manifest`` give the noise and reverb steps real recordings. Every pair depends
only on ``--seed``, the utterance ID and the pair number: any ``--num-workers`` and any ``--shard-idx/-count``
split give the same bytes.

Output (``--out-dir``): ``train_manifest.json`` and ``val_manifest.json`` (``--val-fraction`` of the clean
utterances, all pairs of one utterance in one split), with ``input_filepath`` (degraded) and
``target_filepath`` (clean) relative to the folder; ``pairs/shard_*/KEY.{degraded,clean}.wav`` (``--format
manifest``) or ``pairs_*.tar`` + ``train.list``/``val.list`` (``--format tar``). Train with::

    python train.py --config-name restoration_gan model.train_ds.manifest_filepath=pairs/train_manifest.json \\
        model.validation_ds.manifest_filepath=pairs/val_manifest.json

Crash safety as pack_shards: files appear under their names only when complete, a shard counts once its marker
(``.pack_state/``) is written, and a rerun with ``--skip-existing`` after a kill finishes the job, byte for byte
what one uninterrupted run writes. The manifests appear last, once every shard of the job is there.

Progress: a bar on a terminal, otherwise a line with count, rate and ETA every ``--progress-every`` seconds.
Exit status: 0 on success (bad audio is reported by ID and path and left out), 1 when ``--strict`` met a problem
or a worker died, 2 on bad arguments or input.
"""
from nest_ext.cli.conventions import (
    EXIT_FAILED, EXIT_USAGE, add_out_dir, add_progress, error, make_parser, progress_every, setup_logging,
)


def build_parser():
    from nest_ext.data.restoration_pairs import FORMATS, SUBTYPES

    p = make_parser(__doc__)
    src = p.add_argument_group("clean speech (exactly one of --clean or --wav-scp)")
    one = src.add_mutually_exclusive_group(required=True)
    one.add_argument("--clean", metavar="MANIFEST_OR_DIR", help="NeMo manifest (audio_filepath) or folder of audio")
    one.add_argument("--wav-scp", metavar="FILE", help="Kaldi wav.scp: 'UTTID path' per line")
    add_out_dir(p, help="output folder (pairs, manifests)")
    chain = p.add_argument_group("degradations")
    chain.add_argument("--degradations", metavar="YAML", default=None,
                       help="YAML list of steps (type, prob, ranges); default: the default chain")
    chain.add_argument("--noise-manifest", metavar="JSON", help="noise recordings for the noise step (else generated)")
    chain.add_argument("--rir-manifest", metavar="JSON", help="room impulse responses for the reverb step "
                                                              "(else simulated)")
    p.add_argument("--pairs-per-file", type=int, default=1, metavar="K", help="pairs per clean utterance (default 1)")
    p.add_argument("--segment-seconds", type=float, default=None, metavar="S",
                   help="each pair a random S-second crop of the utterance (default: the whole utterance)")
    p.add_argument("--val-fraction", type=float, default=0.05, metavar="F",
                   help="fraction of clean utterances for val_manifest.json (default 0.05)")
    p.add_argument("--sample-rate", type=int, default=16000, metavar="HZ", help="output rate (default 16000)")
    p.add_argument("--seed", type=int, default=0, help="the degradations' seed (default 0)")
    p.add_argument("--format", choices=tuple(FORMATS), default="manifest",
                   help="manifest: WAV files + manifests (default); tar: tar shards + manifests")
    p.add_argument("--subtype", choices=SUBTYPES, default="PCM_16", help="WAV sample type (default PCM_16)")
    p.add_argument("--shard-size", type=int, default=1000, metavar="N", help="pairs per shard (default 1000)")
    p.add_argument("--num-workers", type=int, default=1, metavar="N",
                   help="degrading processes (output is identical for any value)")
    p.add_argument("--shard-idx", type=int, default=0, metavar="I",
                   help="this process writes shards i with i %% shard-count == shard-idx (default 0)")
    p.add_argument("--shard-count", type=int, default=1, metavar="N",
                   help="number of processes the job is split over (default 1)")
    p.add_argument("--skip-existing", action="store_true", help="keep shards completed by an earlier run of the same job")
    p.add_argument("--min-seconds", type=float, default=0.1, metavar="S",
                   help="leave out clean utterances shorter than S seconds (default 0.1)")
    p.add_argument("--strict", action="store_true", help="stop at the first bad entry instead of leaving it out")
    p.add_argument("--allow-pipes", action="store_true", help="run Kaldi pipe entries ('cmd |') through the shell")
    add_progress(p, unit="pairs")
    return p


def _check(p, args) -> None:
    if not (args.shard_count >= 1 and 0 <= args.shard_idx < args.shard_count):
        p.error(f"need 0 <= --shard-idx < --shard-count (got --shard-idx {args.shard_idx}, "
                f"--shard-count {args.shard_count})")
    for flag, value in (("--shard-size", args.shard_size), ("--num-workers", args.num_workers),
                        ("--sample-rate", args.sample_rate), ("--pairs-per-file", args.pairs_per_file)):
        if value < 1:
            p.error(f"{flag} must be at least 1 (got {value})")
    if not 0.0 <= args.val_fraction < 1.0:
        p.error(f"--val-fraction must be in [0, 1) (got {args.val_fraction})")


def main(argv=None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    _check(p, args)
    setup_logging()
    every = progress_every(args)
    from nest_ext.data.packing import PackingError
    from nest_ext.data.restoration_pairs import prepare_restoration_pairs

    try:
        summary = prepare_restoration_pairs(
            args.out_dir, clean=args.clean, wav_scp=args.wav_scp, degradations=args.degradations,
            noise_manifest=args.noise_manifest, rir_manifest=args.rir_manifest, pairs_per_file=args.pairs_per_file,
            val_fraction=args.val_fraction, sample_rate=args.sample_rate, segment_seconds=args.segment_seconds,
            min_seconds=args.min_seconds, seed=args.seed, format=args.format, subtype=args.subtype,
            shard_size=args.shard_size, num_workers=args.num_workers, shard_idx=args.shard_idx,
            shard_count=args.shard_count, skip_existing=args.skip_existing, strict=args.strict,
            allow_pipes=args.allow_pipes, progress=every is not None, progress_every_s=every or 0.0,
        )
    except PackingError as e:
        failed = str(e).startswith("--strict") or "worker process died" in str(e)
        return error(e, EXIT_FAILED if failed else EXIT_USAGE)
    if summary.complete:
        print(f"pairs: {summary.out_dir}/train_manifest.json, {summary.out_dir}/val_manifest.json", flush=True)
    return 0


if __name__ == "__main__":  # python -m nest_ext.cli.prepare_restoration_data
    raise SystemExit(main())
