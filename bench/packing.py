"""Packing throughput: tools/pack_shards.py's library vs a naive tar copy, 1 and 2 workers.

Generates a Kaldi data dir of synthetic 16 kHz PCM_16 WAVs, then runs, alternating in one process:

* ``naive``  -- the reference: what a hand-rolled packing script does, ``tarfile.add`` of each file
  into one tar per shard, no decoding, no atomic publish, no manifest checks (the lower bound);
* ``nemo, w=1`` / ``nemo, w=2`` -- ``pack_shards`` (full decode = integrity check, deterministic
  members, atomic shard + manifest publish) with 1 and 2 decoding workers;
* ``nemo+resample 8k, w=1/2`` -- the same with ``sample_rate=8000`` (soxr HQ, re-encoded WAV);
* ``lhotse-shar, w=1/2`` -- lhotse's SharWriter (FLAC encoding in the writing process, so with 2
  workers each worker writes whole shards).

Prints utterances/s, MB/s (of source audio) and the ratio of time ours / naive (>1: slower than
the naive copy). Use ``--quick`` for a < 60 s run.

    python bench/packing.py --quick
"""
import argparse
import os
import shutil
import statistics
import tarfile
import tempfile
import time

import numpy as np
import soundfile as sf

from nest_ext.data.packing import pack_shards


def make_data(root, n, seconds, sr=16000):
    rng = np.random.default_rng(0)
    os.makedirs(os.path.join(root, "wav"))
    lines = []
    for i in range(n):
        t = np.arange(int(seconds * sr * rng.uniform(0.7, 1.3))) / sr
        x = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 300) * t) + 0.02 * rng.standard_normal(t.shape)
        p = os.path.join(root, "wav", f"u{i:06d}.wav")
        sf.write(p, x.astype(np.float32), sr, subtype="PCM_16")
        lines.append(f"utt{i:06d} {p}\n")
    with open(os.path.join(root, "wav.scp"), "w") as f:
        f.writelines(lines)
    return os.path.join(root, "wav.scp")


def naive(wav_scp, out_dir, shard_size):
    os.makedirs(out_dir)
    with open(wav_scp) as f:
        items = [line.split(maxsplit=1) for line in f if line.strip()]
    for s in range(0, len(items), shard_size):
        with tarfile.open(os.path.join(out_dir, f"audio_{s // shard_size}.tar"), "w") as t:
            for utt, path in items[s : s + shard_size]:
                t.add(path.strip(), arcname=f"{utt}.wav")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    if args.quick:
        args.n, args.seconds, args.repeats = 300, 2.0, 2
    root = tempfile.mkdtemp(prefix="bench_packing_")
    try:
        wav_scp = make_data(root, args.n, args.seconds)
        mb = sum(os.path.getsize(os.path.join(root, "wav", f)) for f in os.listdir(os.path.join(root, "wav"))) / 2**20
        shard = max(1, args.n // 4)
        runs = {
            "naive tar copy (reference)": lambda o: naive(wav_scp, o, shard),
            "nemo, w=1": lambda o: pack_shards(o, wav_scp=wav_scp, shard_size=shard, num_workers=1, progress=False),
            "nemo, w=2": lambda o: pack_shards(o, wav_scp=wav_scp, shard_size=shard, num_workers=2, progress=False),
            "nemo+resample 8k, w=1": lambda o: pack_shards(o, wav_scp=wav_scp, shard_size=shard, num_workers=1,
                                                           sample_rate=8000, progress=False),
            "nemo+resample 8k, w=2": lambda o: pack_shards(o, wav_scp=wav_scp, shard_size=shard, num_workers=2,
                                                           sample_rate=8000, progress=False),
            "lhotse-shar flac, w=1": lambda o: pack_shards(o, wav_scp=wav_scp, shard_size=shard, num_workers=1,
                                                           format="lhotse-shar", progress=False),
            "lhotse-shar flac, w=2": lambda o: pack_shards(o, wav_scp=wav_scp, shard_size=shard, num_workers=2,
                                                           format="lhotse-shar", progress=False),
        }
        times = {k: [] for k in runs}
        for r in range(args.repeats):  # alternate, so load changes on the shared machine hit all alike
            for name, fn in runs.items():
                out = os.path.join(root, f"out_{r}_{abs(hash(name))}")
                t0 = time.perf_counter()
                fn(out)
                times[name].append(time.perf_counter() - t0)
                shutil.rmtree(out)
        ref = statistics.median(times["naive tar copy (reference)"])
        print(f"{args.n} utterances, {mb:.1f} MB of 16 kHz PCM_16 WAV, shard size {shard}, "
              f"median of {args.repeats}, cpu_count={os.cpu_count()}")
        print(f"{'run':28s} {'s':>7s} {'utt/s':>9s} {'MB/s':>8s} {'ours/ref':>9s}")
        for name, ts in times.items():
            t = statistics.median(ts)
            print(f"{name:28s} {t:7.2f} {args.n / t:9.0f} {mb / t:8.1f} {t / ref:9.2f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
