"""Benchmark: the cost of one (degraded, clean) pair through the degradation chain, per step and for the chain.

The preparation goal is >= 1,000 pairs per minute of 4 s clips on 2 CPU cores, i.e. <= 120 ms of one core per
pair for everything (read, degrade, write). This prints, for 4 s speech-like clips at 16 kHz, the CPU time
(``time.process_time``: what the pair costs a core, whatever else runs on the machine) and the wall time of
each step type forced on (each codec on its own) and of the default chain (``--degradations`` for another), and
the pairs per minute that leaves for 2 cores when the chain is the only work.

Usage::

    python bench/degradation_chain.py                  # ~1 min
    python bench/degradation_chain.py --pairs 400 --seconds 4 --degradations my_chain.yaml
"""
import argparse
import statistics
import time

import numpy as np


def cost(chain, clean, sample_rate, count):
    """(mean CPU s, median wall s) per pair over ``count`` utterance IDs, after one untimed pair (imports)."""
    chain.degrade(clean[0], sample_rate, seed=1, utt_id="warm-up")
    walls, cpu0 = [], time.process_time()
    for i in range(count):
        t0 = time.perf_counter()
        chain.degrade(clean[i % len(clean)], sample_rate, seed=0, utt_id=f"utt{i}")
        walls.append(time.perf_counter() - t0)
    return (time.process_time() - cpu0) / count, statistics.median(walls)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=200, help="pairs for the chain (steps: a tenth)")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--sample-rate", type=int, default=16000)
    parser.add_argument("--degradations", default=None, help="YAML file of steps (default: the default chain)")
    args = parser.parse_args(argv)

    from nest_ext.data.degradations import STEP_TYPES, DegradationChain
    from nest_ext.cli.synth import speech_like

    sr = args.sample_rate
    clean = [speech_like(args.seconds, sr, seed=i) for i in range(8)]
    rows = [(kind, [{"type": kind, "prob": 1.0}]) for kind in STEP_TYPES if kind != "codec"]
    rows += [(f"codec {c}", [{"type": "codec", "prob": 1.0, "codecs": [c]}]) for c in STEP_TYPES["codec"][1]["codecs"]]
    print(f"{args.seconds} s clips at {sr} Hz; CPU ms = one core's time per pair")
    print(f"{'step':<20} {'CPU ms':>8} {'wall ms':>8}")
    for name, spec in rows:
        cpu, wall = cost(DegradationChain.from_spec(spec), clean, sr, max(5, args.pairs // 10))
        print(f"{name:<20} {1000 * cpu:>8.1f} {1000 * wall:>8.1f}")
    cpu, wall = cost(DegradationChain.from_spec(args.degradations), clean, sr, args.pairs)
    name = "default chain" if args.degradations is None else args.degradations
    print(f"{name:<20} {1000 * cpu:>8.1f} {1000 * wall:>8.1f}   -> {2 * 60 / cpu:,.0f} pairs/min on 2 cores "
          "(chain only)")


if __name__ == "__main__":
    main()
