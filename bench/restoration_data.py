"""Benchmark: restoration pair preparation throughput (pairs per minute of 4 s clips), the whole tool path.

Goal: >= 1,000 pairs/min of 4 s clips on 2 CPU cores with the default degradation chain. Reference: the users'
preparation script was quoted at 150-250 pairs/min single-process and 600-1,000 pairs/min with 4 GPU shards; that
script is not available, so the figure is **quoted, not run** here.

Clean 4 s clips (speech-like synthesis, 16-bit WAV at 16 kHz, so reading costs what it costs on real data) go
through :func:`nest_ext.data.restoration_pairs.prepare_restoration_pairs` -- read, mix down, degrade, encode,
write WAV pairs and manifests crash-safely -- with ``--num-workers`` processes. Printed: wall-clock pairs/min,
and pairs/min from the CPU time all processes used (this process and its workers), scaled to 2 cores: what
2 idle cores would do, since on a shared machine the wall clock also counts other people's work. ``uptime``'s
load is printed before and after.

Usage::

    python bench/restoration_data.py                            # 600 pairs, 2 workers, ~1 min on 2 idle cores
    python bench/restoration_data.py --pairs 2000 --num-workers 2 --format tar
"""
import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

REFERENCE_QUOTED = "150-250 pairs/min single-process, 600-1,000 pairs/min with 4 GPU shards (quoted, not run)"


def load() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "uptime unavailable"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=600, help="clean clips (one pair each)")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--format", choices=("manifest", "tar"), default="manifest")
    parser.add_argument("--degradations", default=None, help="YAML file of steps (default: the default chain)")
    parser.add_argument("--keep", default=None, help="work in this folder and keep it")
    args = parser.parse_args(argv)

    import numpy as np
    import soundfile as sf

    from nest_ext.data.restoration_pairs import prepare_restoration_pairs
    from nest_ext.cli.synth import speech_like

    work = Path(args.keep or tempfile.mkdtemp(prefix="restoration_data_bench_"))
    clean = work / "clean"
    clean.mkdir(parents=True, exist_ok=True)
    base = [speech_like(args.seconds, 16000, seed=i) for i in range(16)]
    for i in range(args.pairs):  # 16 distinct clips, each file its own (the chain draws by utterance ID)
        sf.write(str(clean / f"utt{i:06d}.wav"), np.roll(base[i % 16], 997 * i), 16000, subtype="PCM_16")
    print(f"load before: {load()}")
    print(f"{args.pairs} clean clips of {args.seconds} s, {'the default chain' if args.degradations is None else args.degradations}, "
          f"--num-workers {args.num_workers}, --format {args.format}", flush=True)
    out = work / "pairs"
    t_cpu0, t0 = os.times(), time.perf_counter()
    summary = prepare_restoration_pairs(str(out), clean=str(clean), degradations=args.degradations,
                                        val_fraction=0.05, num_workers=args.num_workers, format=args.format,
                                        progress=False)
    wall = time.perf_counter() - t0
    t_cpu = os.times()
    cpu = sum(getattr(t_cpu, k) - getattr(t_cpu0, k) for k in ("user", "system", "children_user", "children_system"))
    assert summary.complete and summary.num_written == args.pairs, summary.describe()
    print(f"load after:  {load()}")
    print(f"wall {wall:.1f} s -> {60 * args.pairs / wall:,.0f} pairs/min on this machine as loaded now")
    print(f"CPU {cpu:.1f} s ({1000 * cpu / args.pairs:.0f} ms a pair) -> {2 * 60 * args.pairs / cpu:,.0f} pairs/min "
          f"on 2 idle cores (goal >= 1,000)")
    print(f"reference: {REFERENCE_QUOTED}")
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
