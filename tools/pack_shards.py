#!/usr/bin/env python
"""Pack a Kaldi data dir or a NeMo manifest into tar shards (NeMo tarred layout or lhotse Shar).

A thin command line over :func:`nest_ext.data.packing.pack_shards`; options mirror its
arguments. Examples::

    # Kaldi data dir -> NeMo tarred shards (1000 utterances each, shuffled with seed 0), 8 decoding processes
    python tools/pack_shards.py --wav-scp data/train/wav.scp --text data/train/text --text-norm \\
        --out-dir shards/train --num-workers 8
    # the same job split over 4 machines (run each with its --shard-idx), resumable after a crash
    python tools/pack_shards.py ... --shard-idx 2 --shard-count 4 --skip-existing
    # NeMo manifest -> lhotse Shar at 16 kHz
    python tools/pack_shards.py --manifest train.json --out-dir shar/train --format lhotse-shar --sample-rate 16000

Exit status: 0 on success (bad audio is reported and left out), 1 when ``--strict`` met a problem or
packing failed, 2 on bad arguments/input (e.g. Kaldi pipe entries without ``--allow-pipes``).
"""
import argparse
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from nest_ext.data.packing import DEFAULT_SHARD_SIZE, FORMATS, TASKS, PackingError, pack_shards  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_argument_group("input (one of --wav-scp or --manifest)")
    src.add_argument("--wav-scp", help="Kaldi wav.scp: 'UTTID path' or 'UTTID command |' per line")
    src.add_argument("--text", help="Kaldi text: 'UTTID transcript' per line (utterances without one are left out)")
    src.add_argument("--manifest", help="NeMo JSON-lines manifest (audio_filepath, duration, text, [offset]); with "
                     "--task separation, a separation manifest (input_filepath, target_filepath, [noise_filepath])")
    src.add_argument("--segments", help="Kaldi segments ('UTTID RECID START END') cutting the --wav-scp recordings "
                     "(read by lhotse's Kaldi import; utt2spk beside it gives speakers)")
    src.add_argument("--utt2spk", help="Kaldi utt2spk: adds a 'speaker' key to each utterance")
    p.add_argument("--task", choices=TASKS, default="asr",
                   help="asr: one audio per example; separation: mixture + sources (+ noise) per example")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--format", choices=FORMATS, default="nemo")
    p.add_argument("--shard-size", type=int, default=DEFAULT_SHARD_SIZE,
                   help=f"examples per shard (default {DEFAULT_SHARD_SIZE}: hundreds to thousands suit tarred loading)")
    p.add_argument("--no-shuffle", action="store_true", help="keep input order (default: a seeded shuffle, so a "
                   "sorted wav.scp does not give single-speaker shards)")
    p.add_argument("--seed", type=int, default=0, help="seed of the shuffle (the output depends on it alone)")
    p.add_argument("--min-duration", type=float, default=None, help="leave out examples shorter than this (s)")
    p.add_argument("--max-duration", type=float, default=None, help="leave out examples longer than this (s)")
    p.add_argument("--num-workers", type=int, default=1, help="decoding processes (output is identical for any value)")
    p.add_argument("--shard-idx", type=int, default=0, help="this process writes shards i with i %% shard-count == shard-idx")
    p.add_argument("--shard-count", type=int, default=1)
    p.add_argument("--skip-existing", action="store_true", help="keep shards completed by an earlier run of the same job")
    p.add_argument("--text-norm", action="store_true", help="collapse whitespace and lower-case transcripts")
    p.add_argument("--sample-rate", type=int, default=None, help="resample to this rate (soxr, HQ)")
    p.add_argument("--strict", action="store_true", help="stop at the first bad entry instead of leaving it out")
    p.add_argument("--allow-pipes", action="store_true", help="run Kaldi pipe entries ('cmd |') through the shell")
    p.add_argument("--pipe-timeout", type=float, default=300.0, help="seconds one pipe command may take")
    p.add_argument("--shar-audio-format", choices=("flac", "wav"), default="flac", help="audio codec for lhotse-shar")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (it is also off when stderr is not a TTY)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        summary = pack_shards(
            out_dir=args.out_dir, wav_scp=args.wav_scp, text=args.text, manifest=args.manifest,
            shard_size=args.shard_size, num_workers=args.num_workers, shard_idx=args.shard_idx,
            shard_count=args.shard_count, skip_existing=args.skip_existing, text_norm=args.text_norm,
            sample_rate=args.sample_rate, format=args.format, strict=args.strict, allow_pipes=args.allow_pipes,
            pipe_timeout=args.pipe_timeout, shar_audio_format=args.shar_audio_format, progress=not args.no_progress,
            task=args.task, shuffle=not args.no_shuffle, seed=args.seed, min_duration=args.min_duration,
            max_duration=args.max_duration, segments=args.segments, utt2spk=args.utt2spk,
        )
    except PackingError as e:
        print(f"pack_shards: error: {e}", file=sys.stderr)
        return 1 if str(e).startswith("--strict") or "worker process died" in str(e) else 2
    # pack_shards has logged the summary; the exit status says whether the job is whole.
    return 0


if __name__ == "__main__":
    sys.exit(main())
