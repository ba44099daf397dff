"""Benchmark: nest_ext MossFormer2 vs the official implementation (ClearerVoice-Studio), fp32 on CPU.

With ``--official``, the official model is imported as ``models.mossformer2.mossformer2`` from a ClearerVoice-Studio
checkout put on ``PYTHONPATH`` (its ``train/speech_separation`` folder, which holds ``models/``; it needs ``einops``,
``rotary-embedding-torch`` and ``torchinfo``). Without it the comparison is skipped with a message and only the
RTF table of our model runs.

1. Both models are built with the same architecture; the official weights are copied into ours through
   :mod:`nest_ext.modules.mossformer2.converter` and the eval-mode outputs are compared (must agree to 1e-4).
2. Timings alternate official, ours, official, ours ... in one process, so machine load hits both alike;
   the minimum and median of each and the ratio ours / official (below 1.0: ours is faster) are printed:
   - inference: eval mode, ``torch.inference_mode()``;
   - inference, prepared: the same after ``prepare_for_inference(model, "fp32")`` (what separate.py runs);
   - inference, baseline: with ``--baseline-path``, the model of another nest_ext checkout (before/after);
   - train step: train mode (dropout on), forward, a loss, backward, an Adam step (``--skip-train``: none).
3. Peak memory of one inference and one train step, from torch.profiler's allocation events (CPU has
   no allocator peak counter): the peak of live tensor bytes allocated during the call.
4. RTF (processing time / audio duration) of our model alone for a few input lengths.
5. ``--floor``: the fp32 compute floor of this machine for this architecture. FLOPs of one inference
   (``torch.utils.flop_counter``, both models when ``--official``), and the time the matrix products alone
   take: every matrix product of one inference of ours is recorded with its shapes, then each shape is timed
   on its own (fresh tensors, same thread count) and multiplied by its count. An fp32 implementation that
   keeps these products cannot run faster than that sum on this CPU (nor than all its FLOPs at the rate of a
   2048 x 2048 product, also printed), so ``floor / official`` bounds the ratio reachable here and
   ``floor / audio seconds`` the RTF.

Usage::

    export PYTHONPATH=/tmp/clearervoice/train/speech_separation    # the official checkout's model code
    python bench/mossformer2.py --official --quick                  # under a minute
    python bench/mossformer2.py --official --model s --seconds 2 --rounds 3 --threads 1
    python bench/mossformer2.py --model full --rtf-seconds 1 4 10   # RTF table only
    python bench/mossformer2.py --official --skip-train --skip-memory --profile   # where the time goes
    python bench/mossformer2.py --official --model s --skip-train --skip-memory --floor   # fp32 floor here
"""
import argparse
import importlib
import importlib.machinery
import importlib.util
import statistics
import sys
import time

import torch

MODELS = {
    "full": dict(encoder_embedding_dim=512, mossformer_sequence_dim=512, num_mossformer_layer=24),
    "s": dict(encoder_embedding_dim=384, mossformer_sequence_dim=384, num_mossformer_layer=25),
    "s-2layer": dict(encoder_embedding_dim=384, mossformer_sequence_dim=384, num_mossformer_layer=2),
    "tiny": dict(encoder_embedding_dim=64, mossformer_sequence_dim=64, num_mossformer_layer=2),
}


def architecture(name, num_spks):
    return dict(num_spks=num_spks, encoder_kernel_size=16, **MODELS[name])


def import_official():
    """The official ``MossFormer`` class (its checkout's ``train/speech_separation`` on PYTHONPATH), or ImportError."""
    return importlib.import_module("models.mossformer2.mossformer2").MossFormer


def build_official(official_cls, arch):
    return official_cls(
        in_channels=arch["encoder_embedding_dim"],
        out_channels=arch["mossformer_sequence_dim"],
        num_blocks=arch["num_mossformer_layer"],
        kernel_size=arch["encoder_kernel_size"],
        num_spks=arch["num_spks"],
    )


def build_ours(arch):
    from nest_ext.modules.mossformer2 import MossFormer2

    return MossFormer2(**arch)


def import_baseline(path):
    """``MossFormer2`` of another nest_ext checkout (e.g. an older commit: ``git archive COMMIT nest_ext``).

    Imported with its own module objects, then the current package is re-imported, so both run side by side
    in this process.
    """
    def forget():
        for name in [n for n in sys.modules if n == "nest_ext" or n.startswith("nest_ext.")]:
            del sys.modules[name]

    forget()
    # the package found in `path` only (sys.path untouched); its submodules resolve through its __path__
    spec = importlib.machinery.PathFinder.find_spec("nest_ext", [str(path)])
    if spec is None:
        raise SystemExit(f"--baseline-path {path}: no nest_ext package there")
    package = importlib.util.module_from_spec(spec)
    sys.modules["nest_ext"] = package
    try:
        spec.loader.exec_module(package)
        return importlib.import_module("nest_ext.modules.mossformer2").MossFormer2
    finally:
        forget()


def run_model(model, mixture, is_official):
    out = model(mixture)
    return torch.stack(out, dim=1) if is_official else out


def inference(model, mixture, is_official):
    model.eval()
    with torch.inference_mode():
        return run_model(model, mixture, is_official)


def train_step(model, optimizer, mixture, is_official):
    model.train()
    optimizer.zero_grad(set_to_none=True)
    loss = run_model(model, mixture, is_official).pow(2).mean()
    loss.backward()
    optimizer.step()
    return loss.detach()


def peak_live_bytes(fn):
    """Peak of live CPU tensor bytes allocated while ``fn`` runs, relative to its start.

    From torch.profiler's memory events: each op's own allocations (``self_cpu_memory_usage``, frees
    negative) in start-time order, summed; the maximum of that running sum is the peak.
    """
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e for e in prof.events() if e.self_cpu_memory_usage), key=lambda e: e.time_range.start)
    live = peak = 0
    for e in events:
        live += e.self_cpu_memory_usage
        peak = max(peak, live)
    return peak


def timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def timed_cpu(fn):
    """(wall seconds, CPU seconds of this process): CPU time is the steadier figure on a shared machine."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def compare(args, arch, official_cls):
    torch.manual_seed(0)
    official = build_official(official_cls, arch)
    ours = build_ours(arch)
    from nest_ext.modules.mossformer2.converter import official_to_ours

    ours.load_state_dict(official_to_ours(official.state_dict(), arch), strict=True)
    mixture = torch.randn(args.batch, int(args.seconds * args.sample_rate))
    diff = (inference(official, mixture, True) - inference(ours, mixture, False)).abs().max().item()
    print(f"outputs (eval, same weights): max |official - ours| = {diff:.2e}")
    if diff > 1e-4:
        raise SystemExit(f"outputs differ by {diff:.2e} > 1e-4: the comparison would be meaningless")

    try:
        from nest_ext.modules.mossformer2.inference import prepare_for_inference

        prepared = prepare_for_inference(ours, "fp32")  # what separate.py runs: projections fused once
    except ImportError:  # an older checkout of nest_ext (before/after comparisons): no prepared variant
        prepared = None
    baseline = None
    if args.baseline_path:
        baseline = import_baseline(args.baseline_path)(**arch).eval()
        baseline.load_state_dict(ours.state_dict())
    opt_off = torch.optim.Adam([p for p in official.parameters() if p.requires_grad], lr=1e-5)
    opt_ours = torch.optim.Adam([p for p in ours.parameters() if p.requires_grad], lr=1e-5)
    # each job: the official run, then ours (one or more variants), alternating round by round
    jobs = {
        "inference": (lambda: inference(official, mixture, True), {
            "inference": lambda: inference(ours, mixture, False),
            **({"inference, prepared": lambda: inference(prepared, mixture, False)} if prepared is not None else {}),
            **({"inference, baseline": lambda: inference(baseline, mixture, False)} if baseline is not None else {}),
        }),
        "train step": (lambda: train_step(official, opt_off, mixture, True), {
            "train step": lambda: train_step(ours, opt_ours, mixture, False),
        }),
    }
    if args.skip_train:
        del jobs["train step"]
    official_median = {}
    print(f"\n{'':20s} {'official min / median (s)':>28s} {'ours min / median (s)':>24s} {'ratio (min)':>12s} "
          f"{'ratio (median)':>15s} {'CPU-time ratio (median)':>24s}")
    for name, (run_official, variants) in jobs.items():
        run_official()  # warm-up
        for run in variants.values():
            run()
        t_off, t_ours = [], {v: [] for v in variants}
        for _ in range(args.rounds):
            t_off.append(timed_cpu(run_official))
            for v, run in variants.items():
                t_ours[v].append(timed_cpu(run))
        wall_off = [w for w, _ in t_off]
        mo, do, co = min(wall_off), statistics.median(wall_off), statistics.median(c for _, c in t_off)
        official_median[name] = do
        for v, times in t_ours.items():
            wall = [w for w, _ in times]
            mu, du, cu = min(wall), statistics.median(wall), statistics.median(c for _, c in times)
            print(f"{v:20s} {mo:13.3f} / {do:8.3f}      {mu:11.3f} / {du:8.3f}   {mu / mo:10.2f}   {du / do:13.2f}   "
                  f"{cu / co:22.2f}")

    if args.profile:
        ours = {name.replace("inference", "ours"): run for name, run in jobs["inference"][1].items()}
        profile_ops(args, {"official": jobs["inference"][0], **ours})
    if not args.skip_memory:
        print("\npeak live tensor memory (torch.profiler allocation events, MiB):")
        for name, (run_official, variants) in jobs.items():
            run_ours = variants[name]
            off, our = peak_live_bytes(run_official) / 2 ** 20, peak_live_bytes(run_ours) / 2 ** 20
            print(f"  {name:12s} official {off:8.1f}   ours {our:8.1f}   ratio {our / max(off, 1e-9):.2f}")
    if args.floor:
        flops_official = count_flops(lambda: inference(official, mixture, True))
        print(f"\nofficial model: {flops_official / 1e9:.1f} GFLOP per inference (torch.utils.flop_counter)")
        compute_floor(args, ours, mixture, official_median["inference"])


MATMULS = ("linear", "matmul", "addmm", "mm", "bmm", "baddbmm")


def count_flops(fn):
    """FLOPs of ``fn`` (torch.utils.flop_counter), in-place ``addmm_``/``baddbmm_`` included: its registry
    has formulas for the out-of-place ops only, and would silently leave out our attention's products."""
    from torch.utils.flop_counter import FlopCounterMode

    in_place = {torch.ops.aten.addmm_: _accumulating_product_flops, torch.ops.aten.baddbmm_: _accumulating_product_flops}
    counter = FlopCounterMode(display=False, custom_mapping=in_place)
    with counter:
        fn()
    return counter.get_total_flops()


def _accumulating_product_flops(self_shape, a_shape, b_shape, out_shape=None, **kwargs):
    """``2 * (batch) * m * k * n`` of ``self += a @ b`` (shapes as flop_counter passes them)."""
    batch = a_shape[0] if len(a_shape) == 3 else 1
    return 2 * batch * a_shape[-2] * a_shape[-1] * b_shape[-1]


def record_matmuls(fn):
    """``{(aten op, argument shapes): calls}`` of the matrix products ``fn`` runs.

    Recorded at the highest aten level that reaches the dispatcher (``linear`` and ``matmul`` are not
    decomposed in inference mode), so each is timed as the model calls it.
    """
    from collections import Counter

    from torch.utils._python_dispatch import TorchDispatchMode

    calls = Counter()

    class Recorder(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.overloadpacket.__name__.rstrip("_") in MATMULS and not kwargs:
                calls[(func, tuple(tuple(a.shape) if isinstance(a, torch.Tensor) else a for a in args))] += 1
            return func(*args, **(kwargs or {}))

    with Recorder():
        fn()
    return calls


def _tensors(shapes, device=None):
    return [torch.randn(s, device=device) if isinstance(s, tuple) else s for s in shapes]


def time_matmul(func, shapes, repeats=5):
    """(best seconds, FLOPs) of one ``func`` on fresh contiguous tensors of ``shapes``."""
    flops = count_flops(lambda: func(*_tensors(shapes, "meta")))
    args = _tensors(shapes)
    with torch.inference_mode():
        func(*args)
        return min(timed(lambda: func(*args)) for _ in range(repeats)), flops


def compute_floor(args, model, mixture, official_seconds=None):
    """Print the fp32 floor of this machine for ``model``'s architecture (see the module docstring, 5.)."""
    seconds = mixture.shape[-1] / args.sample_rate
    flops = count_flops(lambda: inference(model, mixture, False))
    calls = record_matmuls(lambda: inference(model, mixture, False))
    square, square_flops = time_matmul(torch.ops.aten.mm.default, [(2048, 2048), (2048, 2048)])
    peak = square_flops / square
    floor = 0.0
    print(f"\ncompute floor ({torch.get_num_threads()} thread(s)): ours {flops / 1e9:.1f} GFLOP per inference, "
          f"{flops / 1e9 / seconds:.1f} GFLOP per second of audio; 2048 x 2048 matrix product: {peak / 1e9:.1f} GFLOP/s")
    rows, recorded = [], 0
    for (func, shapes), count in calls.items():
        each, op_flops = time_matmul(func, shapes)
        floor += count * each
        recorded += count * op_flops
        rows.append((count * each, func.overloadpacket.__name__, shapes, count, each, op_flops))
    print(f"  {'op':>9s} {'argument shapes':58s} {'calls':>5s} {'ms each':>8s} {'GFLOP/s':>8s}")
    for _, name, shapes, count, each, op_flops in sorted(rows, reverse=True):
        print(f"  {name:>9s} {str(list(shapes))[:58]:58s} {count:5d} {each * 1e3:8.2f} {op_flops / each / 1e9:8.1f}")
    # the floor is only a floor if every matrix product was recorded: the rest of the FLOPs are convolutions
    print(f"  recorded matrix products: {recorded / flops:.1%} of the FLOPs (the rest: convolutions)")
    print(f"  matrix products alone, at their shapes: {floor:.3f} s (RTF {floor / seconds:.2f}); "
          f"all FLOPs at the 2048 x 2048 rate: {flops / peak:.3f} s (RTF {flops / peak / seconds:.2f})")
    if official_seconds:
        print(f"  official model (median above): {official_seconds:.3f} s -> best fp32 ratio reachable here: "
              f"{floor / official_seconds:.2f} (matrix products alone), {flops / peak / official_seconds:.2f} "
              f"(all FLOPs at the square-product rate)")


def profile_ops(args, runs, top=12):
    """torch.profiler's top operators (self CPU time) of one inference of each model, at each thread count."""
    from torch.profiler import ProfilerActivity, profile

    threads = torch.get_num_threads()
    for n in sorted({1, threads}):
        torch.set_num_threads(n)
        for name, run in runs.items():
            run()
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                run()
            events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
            total = sum(e.self_cpu_time_total for e in events)
            print(f"\nprofile: {name}, inference, {n} thread(s): {total / 1e6:.2f} s self CPU time in all")
            for e in events[:top]:
                print(f"  {e.key:34s} {e.self_cpu_time_total / 1e3:9.1f} ms {100 * e.self_cpu_time_total / total:5.1f}%  "
                      f"{e.count:5d} calls")
    torch.set_num_threads(threads)


def rtf_table(args, arch):
    torch.manual_seed(0)
    model = build_ours(arch).eval()
    print(f"\nRTF of our model ({args.model}, {sum(p.numel() for p in model.parameters()):,} parameters, "
          f"batch 1, {args.sample_rate} Hz, eval, inference_mode):")
    print(f"  {'seconds':>8s} {'time (s)':>9s} {'RTF':>7s}")
    for seconds in args.rtf_seconds:
        mixture = torch.randn(1, int(seconds * args.sample_rate))
        inference(model, mixture, False)
        best = min(timed(lambda: inference(model, mixture, False)) for _ in range(max(1, args.rounds // 2)))
        print(f"  {seconds:8.1f} {best:9.3f} {best / seconds:7.3f}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--official", action="store_true", help="compare with the official model (ClearerVoice-Studio's "
                        "train/speech_separation on PYTHONPATH)")
    parser.add_argument("--model", choices=sorted(MODELS), default="s")
    parser.add_argument("--num-spks", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=2.0, help="input length (official training segments: 2 s)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--sample-rate", type=int, default=8000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--rtf-seconds", type=float, nargs="*", default=[1.0, 4.0, 10.0])
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--baseline-path", default=None,
                        help="folder holding another nest_ext (e.g. `git archive OLD nest_ext | tar -x -C DIR`): its model joins the inference timing")
    parser.add_argument("--skip-train", action="store_true", help="inference only (no train-step timing)")
    parser.add_argument("--profile", action="store_true", help="top operators of each model's inference (1 and N threads)")
    parser.add_argument("--floor", action="store_true", help="FLOPs and the fp32 matrix-product floor of this machine "
                        "(with --official: the best ratio to the official time reachable here)")
    parser.add_argument("--quick", action="store_true", help="S widths with 2 layers, 1 s, 2 rounds (under a minute)")
    args = parser.parse_args(argv)
    if args.quick:
        args.model, args.seconds, args.rounds, args.rtf_seconds = "s-2layer", 1.0, 2, [1.0, 4.0]
    torch.set_num_threads(args.threads)
    arch = architecture(args.model, args.num_spks)
    print(f"MossFormer2 benchmark: model {args.model} {arch}, batch {args.batch} x {args.seconds} s at "
          f"{args.sample_rate} Hz, {args.threads} thread(s), torch {torch.__version__}, fp32 CPU")

    official_cls = None
    if not args.official:
        print("official comparison skipped: no --official given")
    else:
        try:
            official_cls = import_official()
        except ImportError as err:
            print(f"official comparison skipped: cannot import models.mossformer2.mossformer2: {err} (put the "
                  "checkout's train/speech_separation on PYTHONPATH; it needs einops, rotary-embedding-torch and "
                  "torchinfo)")
    if official_cls is not None:
        compare(args, arch, official_cls)
    elif args.floor:
        torch.manual_seed(0)
        compute_floor(args, build_ours(arch).eval(), torch.randn(args.batch, int(args.seconds * args.sample_rate)))
    rtf_table(args, arch)


if __name__ == "__main__":
    main()
