"""Benchmark: MossFormer2 inference precision (fp32, bf16, int8; optionally torch.compile) -- speed and SI-SDRi cost.

Precisions are those of :mod:`nest_ext.modules.mossformer2.inference` (``separate.py --precision``).

1. Speed: real-time factor (processing time / audio duration) of one architecture (default MossFormer2-S,
   random weights -- speed does not depend on them) on ``--seconds`` of 8 kHz audio, batch 1,
   ``inference_mode``. The plain model (``eager``) and every precision alternate round by round in one
   process, so machine load hits all alike; printed: min / median time, RTF, ratio to fp32.
2. Quality (needs a trained model): ``--model MODEL.nemo --manifest test.json`` separates every mixture of
   the manifest at every precision through the user's path (``restore_from``, ``prepare_for_inference``,
   ``separate``) and prints the mean SI-SDRi (PIT, float64), its difference to fp32 (the cost; negative:
   worse than fp32) and the largest ``|output - fp32 output|`` over all mixtures.

``--compile`` adds ``torch.compile`` of the fp32-prepared model to the speed table (compiling takes
minutes on a CPU; the first call is reported separately).

Usage::

    python bench/separation_precision.py --quick                       # 2-layer S widths, 1 s, ~1 min
    python bench/separation_precision.py --arch s --seconds 2 --threads 2 --rounds 3
    python bench/separation_precision.py --model model.nemo --manifest test_manifest.json --arch none
"""
import argparse
import logging
import statistics
import time
import warnings

import torch

from mossformer2 import MODELS, architecture  # bench/mossformer2.py beside this script (the script's folder is on sys.path)

from nest_ext.modules.mossformer2 import MossFormer2
from nest_ext.modules.mossformer2.inference import PRECISIONS, inference_precision, prepare_for_inference


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def speed_table(args):
    torch.manual_seed(0)
    arch = architecture(args.arch, 2)
    model = MossFormer2(**arch).eval()
    mixture = torch.randn(1, int(args.seconds * 8000))
    runs = {"eager (plain fp32)": (model, "fp32")}
    for precision in args.precisions:
        runs[precision] = (prepare_for_inference(model, precision), precision)
    first_call = {}
    if args.compile:
        compiled = torch.compile(prepare_for_inference(model, "fp32"))
        with torch.inference_mode():
            first_call["torch.compile fp32"] = timed(lambda: compiled(mixture))
        runs["torch.compile fp32"] = (compiled, "fp32")

    def run(name):
        net, precision = runs[name]
        with torch.inference_mode(), inference_precision(precision):
            return net(mixture)

    reference = run("eager (plain fp32)")
    diffs = {name: (run(name).float() - reference).abs().max().item() for name in runs}  # also the warm-up
    times = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name in runs:
            times[name].append(timed(lambda: run(name)))
    base = min(times["fp32"]) if "fp32" in times else min(times["eager (plain fp32)"])
    print(f"\nspeed: {args.arch} ({sum(p.numel() for p in model.parameters()):,} parameters), batch 1 x {args.seconds} s "
          f"at 8 kHz, {torch.get_num_threads()} thread(s), {args.rounds} alternating rounds")
    print(f"  {'':22s} {'min (s)':>8s} {'median':>8s} {'RTF':>7s} {'/ fp32':>7s} {'max |y - eager|':>16s}")
    for name, values in times.items():
        print(f"  {name:22s} {min(values):8.3f} {statistics.median(values):8.3f} {min(values) / args.seconds:7.3f} "
              f"{min(values) / base:7.2f} {diffs[name]:16.2e}")
    for name, seconds in first_call.items():
        print(f"  {name}: first call (compilation) {seconds:.1f} s")


def quality_table(args):
    import numpy as np
    import soundfile as sf

    from nest_ext.data.separation_dataset import load_separation_manifest
    from nest_ext.losses.pit_sisdr import pit_si_sdr, si_sdr_valid
    from nest_ext.models.mossformer2_separation import MossFormer2SeparationModel, load_mono_audio

    logging.getLogger("nemo_logger").setLevel(logging.ERROR)
    examples, problems = load_separation_manifest(args.manifest)
    for p in problems:
        print(f"skipped: {p}")
    if args.limit:
        examples = examples[: args.limit]
    outputs, sisdri, seconds = {}, {}, {}
    for precision in args.precisions:
        model = MossFormer2SeparationModel.restore_from(args.model, map_location="cpu")
        model = prepare_for_inference(model, precision, inplace=True)
        rate = model.sample_rate
        outputs[precision], sisdri[precision], seconds[precision] = [], [], 0.0
        for ex in examples:
            mixture = torch.from_numpy(load_mono_audio(ex.input_filepath, rate))
            targets = torch.stack([torch.from_numpy(load_mono_audio(t, rate)) for t in ex.target_filepaths])
            with inference_precision(precision):
                start = time.perf_counter()
                estimates = model.separate(mixture)
                seconds[precision] += time.perf_counter() - start
            outputs[precision].append(estimates)
            est, ref = estimates[None].double(), targets[None].double()
            sdr, _ = pit_si_sdr(est, ref)
            base = si_sdr_valid(mixture.double().expand_as(targets)[None], ref).mean()
            sisdri[precision].append((sdr[0] - base).item())
    total = sum(sf.info(ex.input_filepath).duration for ex in examples)
    print(f"\nquality: {args.model}, {len(examples)} mixtures ({total:.1f} s) of {args.manifest}")
    print(f"  {'':6s} {'SI-SDRi (dB)':>13s} {'cost vs fp32':>13s} {'max |y - y_fp32|':>17s} {'RTF':>7s}")
    ref = sisdri.get("fp32")
    for precision in args.precisions:
        mean = float(np.mean(sisdri[precision]))
        cost = mean - float(np.mean(ref)) if ref else float("nan")
        diff = max((a - b).abs().max().item() for a, b in zip(outputs[precision], outputs["fp32"])) if ref else float("nan")
        print(f"  {precision:6s} {mean:13.3f} {cost:13.3f} {diff:17.2e} {seconds[precision] / total:7.3f}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", choices=sorted(MODELS) + ["none"], default="s", help="architecture of the speed table")
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=list(PRECISIONS))
    parser.add_argument("--compile", action="store_true", help="also time torch.compile of the fp32 model")
    parser.add_argument("--model", default=None, help="trained MossFormer2SeparationModel .nemo (quality table)")
    parser.add_argument("--manifest", default=None, help="held-out separation manifest (quality table)")
    parser.add_argument("--limit", type=int, default=None, help="first N mixtures of the manifest only")
    parser.add_argument("--quick", action="store_true", help="S widths with 2 layers, 1 s, 2 rounds")
    args = parser.parse_args(argv)
    if args.quick:
        args.arch, args.seconds, args.rounds = "s-2layer", 1.0, 2
    if "fp32" not in args.precisions:
        args.precisions.insert(0, "fp32")  # the reference of every comparison
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message=".*deprecated.*")  # torch.ao quantisation notices
    print(f"MossFormer2 inference precision benchmark: torch {torch.__version__}, {args.threads} thread(s), "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}, quantized engine {torch.backends.quantized.engine}")
    if args.arch != "none":
        speed_table(args)
    if args.model and args.manifest:
        quality_table(args)
    elif args.model or args.manifest:
        parser.error("the quality table needs both --model and --manifest")


if __name__ == "__main__":
    main()
