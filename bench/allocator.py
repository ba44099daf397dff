"""Benchmark: MossFormer2 on CPU with glibc's default allocator thresholds against ``keep_freed_memory``.

:func:`nest_ext.parts.allocator.keep_freed_memory` changes the whole process and cannot be undone, so each
side runs in its own child process; the children alternate (default, kept, default, kept, ...) so machine
load hits both alike. Each child builds the model (same seed), warms up, then times ``--calls`` calls and
reports its best and median time and the minor page faults per call (``getrusage``). Printed: both sides'
medians over the rounds and the ratio kept / default (below 1.0: keeping freed memory is faster).

Usage::

    python bench/allocator.py                          # MossFormer2-S inference, 2 s of 8 kHz audio
    python bench/allocator.py --mode train --model s-2layer
    python bench/allocator.py --quick                  # S widths, 2 layers, 1 s (under a minute)
"""
import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

SIZES = {
    "s": dict(encoder_embedding_dim=384, mossformer_sequence_dim=384, num_mossformer_layer=25),
    "s-2layer": dict(encoder_embedding_dim=384, mossformer_sequence_dim=384, num_mossformer_layer=2),
}


def child(args):
    if args.side == "kept":
        from nest_ext.parts.allocator import keep_freed_memory

        if not keep_freed_memory():
            raise SystemExit("no glibc mallopt here: nothing to compare")
    import torch

    from nest_ext.modules.mossformer2 import MossFormer2
    from nest_ext.modules.mossformer2.inference import prepare_for_inference

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = MossFormer2(num_spks=2, encoder_kernel_size=16, **SIZES[args.model])
    mixture = torch.randn(1, int(args.seconds * 8000))
    if args.mode == "inference":
        # what nest-separate runs; --keep-original holds the unfused model too (bench/mossformer2.py does):
        # the allocation history differs, and with it how often glibc's default hands memory back
        prepared = prepare_for_inference(model, "fp32", inplace=not args.keep_original)

        def call():
            with torch.inference_mode():
                prepared(mixture)
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-5)

        def call():
            optimizer.zero_grad(set_to_none=True)
            model(mixture).pow(2).mean().backward()
            optimizer.step()
    call()
    times, faults = [], []
    for _ in range(args.calls):
        f0, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
    print(json.dumps({"min": min(times), "median": statistics.median(times), "faults": statistics.median(faults)}))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=sorted(SIZES), default="s")
    parser.add_argument("--mode", choices=("inference", "train"), default="inference")
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calls", type=int, default=3, help="timed calls per child")
    parser.add_argument("--rounds", type=int, default=3, help="children per side, alternating")
    parser.add_argument("--keep-original", action="store_true", help="prepare a copy, keeping the unfused model")
    parser.add_argument("--quick", action="store_true", help="S widths with 2 layers, 1 s, 2 rounds")
    parser.add_argument("--side", choices=("default", "kept"), help=argparse.SUPPRESS)  # internal: a child
    args = parser.parse_args(argv)
    if args.quick:
        args.model, args.seconds, args.rounds = "s-2layer", 1.0, 2
    if args.side:
        return child(args)
    print(f"MossFormer2 {args.model}, {args.mode}, 1 x {args.seconds} s at 8 kHz, {args.threads} thread(s); "
          f"{args.rounds} alternating rounds of one child per side, {args.calls} timed calls each")
    results = {"default": [], "kept": []}
    base = [sys.executable, __file__, "--model", args.model, "--mode", args.mode, "--seconds", str(args.seconds),
            "--threads", str(args.threads), "--calls", str(args.calls)] + (["--keep-original"] if args.keep_original else [])
    for _ in range(args.rounds):
        for side in results:
            out = subprocess.run(base + ["--side", side], check=True, capture_output=True, text=True).stdout
            results[side].append(json.loads(out.strip().splitlines()[-1]))
    print(f"{'allocator':28s} {'min (s)':>8s} {'median (s)':>11s} {'page faults / call':>19s}")
    summary = {}
    for side, runs in results.items():
        summary[side] = (min(r["min"] for r in runs), statistics.median(r["median"] for r in runs),
                         statistics.median(r["faults"] for r in runs))
        label = "glibc defaults" if side == "default" else "keep_freed_memory()"
        print(f"{label:28s} {summary[side][0]:8.3f} {summary[side][1]:11.3f} {summary[side][2]:19.0f}")
    print(f"ratio kept / default: min {summary['kept'][0] / summary['default'][0]:.2f}, "
          f"median {summary['kept'][1] / summary['default'][1]:.2f}")
    return summary


if __name__ == "__main__":
    main()
