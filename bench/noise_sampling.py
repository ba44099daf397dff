"""Noise sampling time per item: nest_ext's ``sample_noise`` vs NeMo 3.0.0's, alternating in one process.

Writes long noise files (default 60 s, 16 kHz PCM_16) of two kinds and draws ``--segment`` s segments:

* ``zero-mean``: white noise with mean 0 (NeMo re-reads about half of its segments: signed sum <= 0);
* ``dc-offset``: the same with a -0.01 DC offset (NeMo reads every segment ``max_trial`` = 100 times);
* ``silent``: all zeros (NeMo reads 100 times, then adds white noise; ours reads once).

Per kind, rounds alternate NeMo, ours, NeMo, ours ... with the same numpy seed; the median time per
item of each and the ratio ours / NeMo (below 1.0: ours is faster) are printed, with reads per item
(counted in a separate, untimed pass). Goal (issue 2): dc-offset ratio <= 0.2.

Usage::

    python bench/noise_sampling.py --quick
    python bench/noise_sampling.py --noise-seconds 60 --segment 4 --items 40 --rounds 5
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import soundfile as sf

SR = 16000


def make_noise(folder, kind, seconds, seed=0):
    rng = np.random.default_rng(seed)
    x = 0.05 * rng.standard_normal(int(seconds * SR))
    x -= x.mean()
    if kind == "dc-offset":
        x -= 0.01
    elif kind == "silent":
        x[:] = 0.0
    path = os.path.join(folder, f"{kind}.wav")
    sf.write(path, x.astype(np.float32), SR, subtype="PCM_16")
    return [{"audio_filepath": path, "duration": seconds}]


def time_per_item(fn, noise_data, n_samples, items, seed):
    np.random.seed(seed)
    t0 = time.perf_counter()
    for _ in range(items):
        fn(noise_data, SR, n_samples)
    return (time.perf_counter() - t0) / items


def count_reads(nemo_ssl, ours, noise_data, n_samples, items):
    """Segment reads per item: NeMo's AudioSegment.from_file calls and our soundfile opens."""
    counts = {"nemo": 0, "ours": 0}
    base = nemo_ssl.AudioSegment

    class Counting(base):
        @classmethod
        def from_file(cls, *a, **k):
            counts["nemo"] += 1
            return base.from_file(*a, **k)

    class CountingSF:
        def __getattr__(self, name):
            return getattr(sf, name)

        def SoundFile(self, *a, **k):  # noqa: N802
            counts["ours"] += 1
            return sf.SoundFile(*a, **k)

    nemo_ssl.AudioSegment, ours.sf = Counting, CountingSF()
    try:
        np.random.seed(1)
        for _ in range(items):
            nemo_ssl.sample_noise(noise_data, SR, n_samples)
        np.random.seed(1)
        for _ in range(items):
            ours.sample_noise(noise_data, SR, n_samples)
    finally:
        nemo_ssl.AudioSegment, ours.sf = base, sf
    return counts["nemo"] / items, counts["ours"] / items


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--noise-seconds", type=float, default=60.0)
    p.add_argument("--segment", type=float, default=4.0, help="segment length in seconds (the audio's length)")
    p.add_argument("--items", type=int, default=40, help="items per round for ours (NeMo: see --nemo-items)")
    p.add_argument("--nemo-items", type=int, default=5,
                   help="items per round for NeMo (its DC-offset items take ~0.5 s)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--kinds", default="zero-mean,dc-offset,silent")
    p.add_argument("--quick", action="store_true", help="a run under ~60 s")
    args = p.parse_args(argv)
    if args.quick:
        args.items, args.nemo_items, args.rounds = 20, 2, 3
    nemo_items = args.nemo_items

    from nemo.collections.asr.data import ssl_dataset as nemo_ssl
    from nemo.utils import logging as nemo_logging

    from nest_ext.data import noise_sampling as ours

    nemo_logging.setLevel("ERROR")  # silent-noise warnings on every item would dominate the output
    n_samples = int(args.segment * SR)
    print(f"noise files {args.noise_seconds:.0f} s, segments {args.segment:.1f} s ({n_samples} samples), "
          f"{args.rounds} alternating rounds; python {sys.version.split()[0]}")
    print(f"{'noise':<10} {'NeMo s/item':>12} {'ours s/item':>12} {'ratio':>7} {'NeMo reads':>11} {'ours reads':>11}")
    with tempfile.TemporaryDirectory() as d:
        for kind in args.kinds.split(","):
            data = make_noise(d, kind, args.noise_seconds)
            ours.clear_audio_info_cache()
            # warm-up: imports, file cache, metadata cache
            time_per_item(nemo_ssl.sample_noise, data, n_samples, 1, 0)
            time_per_item(ours.sample_noise, data, n_samples, 2, 0)
            t_nemo, t_ours = [], []
            for r in range(args.rounds):
                t_nemo.append(time_per_item(nemo_ssl.sample_noise, data, n_samples, nemo_items, seed=r))
                t_ours.append(time_per_item(ours.sample_noise, data, n_samples, args.items, seed=r))
            reads_nemo, reads_ours = count_reads(nemo_ssl, ours, data, n_samples, min(nemo_items, 10))
            m_nemo, m_ours = statistics.median(t_nemo), statistics.median(t_ours)
            print(f"{kind:<10} {m_nemo:>12.5f} {m_ours:>12.5f} {m_ours / m_nemo:>7.3f} "
                  f"{reads_nemo:>11.2f} {reads_ours:>11.2f}")


if __name__ == "__main__":
    main()
