#!/usr/bin/env python
"""Does NEST pretraining help ASR? Pretrain, fine-tune CTC from NEST and from random init, compare WER.

    python bench/ssl_benefit.py --work-dir ssl_benefit                       # synthetic speech (espeak-ng), 20 min budget (measured: docs/benchmarks.md)
    python bench/ssl_benefit.py --work-dir ssl_benefit --budget-minutes 10
    python bench/ssl_benefit.py --work-dir mine --unlabelled unlab.json --noise noise.json \\
        --train train.json --dev dev.json --test test.json                    # your own data (NeMo manifests)

Steps, every one through the user's tools:
1. data: your manifests, or (default) espeak-ng speech: unlabelled audio in many voices and languages, and
   transcribed English for the labelled train / dev / test sets (``nest_ext.cli.espeak``);
2. NEST pretraining on the unlabelled audio plus the labelled training audio (``train.py``, ``--nest-config``
   with the recipe's overrides below) for ``--pretrain-steps``;
3. the tokenizer (``nest-build-tokenizer``) and two CTC fine-tunings (``train.py --config-name
   fastconformer_ctc_bpe_finetune``) on the labelled set: one from the NEST checkpoint, one from random
   initialisation, with the same steps, data, schedule and seed; dev WER is logged every ``--val-every`` steps;
4. ``nest-evaluate-asr`` on the test set for both; WER/CER side by side, the configuration, the dev-WER
   curves and the CPU time of each stage are printed and written to ``WORK_DIR/report.md`` and
   ``WORK_DIR/results.json``.

Budget: ``--budget-minutes`` (default 20: about 20 CPU-minutes, 17 minutes on two idle cores) is converted to
step counts with the per-step CPU times measured on the project's 2-core CPU machine (``REFERENCE_CPU_S`` below), so one command always runs the same steps
(and gives the same result) however loaded or fast the machine is; on a faster machine it simply ends
sooner. ``--pretrain-steps`` / ``--finetune-steps`` fix the steps directly. Each stage's process CPU time is
reported. Finished stages (data, NEST checkpoint, fine-tuned models) are reused when the command is rerun
with the same ``--work-dir``; ``--fresh`` starts over.

Long file: one recipe a user runs end to end (data, budgets, the two runs, their report) reads best in one place.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

from nest_ext.parts.atomic_io import atomic_write

ROOT = Path(__file__).resolve().parents[1]  # the checkout: train.py finds config/ beside it

# CPU seconds per step (process time, 2 threads) of the recipe below on the project's 2-core machine, and the
# share of the budget each stage gets; the rest goes to data synthesis, start-up and evaluation.
REFERENCE_CPU_S = {"pretrain": 0.65, "finetune": 0.45}
BUDGET_SHARE = {"pretrain": 0.5, "finetune": 0.2}  # fine-tuning: per initialisation
SEED = 1234
MIN_DURATION = 0.5  # seconds: NEST's 1.0 would drop the shortest utterances
LABELLED_LANGUAGES, LABELLED_VARIANTS = ("en-us",), ("", "+m3", "+f2")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work-dir", default="ssl_benefit")
    p.add_argument("--budget-minutes", type=float, default=20.0, help="total, at the reference machine's speed")
    p.add_argument("--pretrain-steps", type=int, help="overrides the budget")
    p.add_argument("--finetune-steps", type=int, help="overrides the budget (per initialisation)")
    p.add_argument("--seed", type=int, default=SEED)
    p.add_argument("--fresh", action="store_true", help="delete WORK_DIR first")
    p.add_argument("--sequential", action="store_true", help="one fine-tuning after the other (default: both at once)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch/OpenMP threads per process (1: steadiest on a shared machine, where spinning "
                        "OpenMP threads waste most of the CPU; 2 on an idle 2-core machine)")
    data = p.add_argument_group("data (default: synthesised with espeak-ng)")
    data.add_argument("--unlabelled", nargs="+", help="manifest(s) of unlabelled audio for NEST")
    data.add_argument("--noise", help="noise manifest for NEST's denoising augmentation")
    data.add_argument("--train", help="labelled manifest for CTC fine-tuning")
    data.add_argument("--dev", help="labelled manifest: dev WER during fine-tuning")
    data.add_argument("--test", help="labelled manifest: final WER")
    data.add_argument("--synth-unlabelled", type=int, default=1600,
                      help="utterances: 3/4 English from the closed vocabulary in every English voice, 1/4 pseudo-words "
                           "in 16 other languages")
    data.add_argument("--synth-train", type=int, default=200)
    data.add_argument("--synth-dev", type=int, default=40)
    data.add_argument("--synth-test", type=int, default=100)
    data.add_argument("--synth-words", type=int, default=40,
                      help="closed vocabulary of the synthetic English transcripts (and of the English unlabelled audio)")
    data.add_argument("--synth-min-words", type=int, default=2, help="words per utterance (2-4: about 0.7-2.4 s)")
    data.add_argument("--synth-max-words", type=int, default=4)
    rec = p.add_argument_group("recipe")
    rec.add_argument("--nest-config", default="nest_demo", help="NEST config in config/ (size from config)")
    rec.add_argument("--encoder", default="d_model=144,n_heads=4,n_layers=4,subsampling_conv_channels=64",
                     help="encoder overrides for both NEST and CTC (key=value,...); '' keeps the config's")
    rec.add_argument("--nest-overrides", nargs="*", default=[], help="more Hydra overrides for pretraining")
    rec.add_argument("--ft-overrides", nargs="*", default=[], help="more Hydra overrides for fine-tuning")
    rec.add_argument("--nest-batch", type=int, default=16)
    rec.add_argument("--nest-peak-lr", type=float, default=2e-3, help="peak of NEST's Noam schedule")
    rec.add_argument("--nest-warmup", type=int, default=100)
    rec.add_argument("--ft-batch", type=int, default=16)
    rec.add_argument("--ft-lr", type=float, default=5e-3, help="peak of the cosine schedule (warm-up: 10%% of steps)")
    rec.add_argument("--vocab-size", type=int, default=64)
    rec.add_argument("--val-every", type=int, default=0, help="dev WER every N fine-tuning steps (0: 10 points)")
    return p.parse_args(argv)


# ------------------------------------------------------------------------------------------------- data
def make_data(args, work: Path) -> dict:
    """Manifests of every set: the user's, or espeak-ng speech synthesised once into WORK_DIR/data."""
    out = {k: getattr(args, k) for k in ("unlabelled", "noise", "train", "dev", "test")}
    d = work / "data"
    out["noise"] = out["noise"] or str(_noise_manifest(d, args.seed))  # synthetic noise unless given
    if all(out[k] for k in ("unlabelled", "train", "dev", "test")):
        return out
    from nest_ext.cli import espeak as ec

    if ec.espeak_binary() is None:
        raise SystemExit("espeak-ng is not installed (apt-get install espeak-ng), and not every manifest was given")
    words = ec.vocabulary(args.synth_words)
    length = {"min_words": args.synth_min_words, "max_words": args.synth_max_words}
    n_eng = args.synth_unlabelled * 3 // 4
    out["unlabelled"] = out["unlabelled"] or [
        str(ec.write_corpus(d, "unlab_en", n_eng, seed=args.seed + 1, words=words, **length)),
        str(ec.write_corpus(d, "unlab_xx", args.synth_unlabelled - n_eng, seed=args.seed + 2,
                            languages=ec.OTHER_LANGUAGES, pseudo_words=True, **length))]
    # labelled speech is scarce in few voices (one accent, three speakers), as when transcribing is costly
    for i, name in enumerate(("train", "dev", "test")):
        out[name] = out[name] or str(ec.write_corpus(d, name, getattr(args, f"synth_{name}"), seed=args.seed + 3 + i,
                                                     words=words, languages=LABELLED_LANGUAGES,
                                                     variants=LABELLED_VARIANTS, **length))
    return out


def _noise_manifest(d: Path, seed: int) -> Path:
    import soundfile as sf

    from nest_ext.parts.atomic_io import atomic_path
    from nest_ext.parts.synthetic_noise import noise_like

    manifest = d / "noise.json"
    if not manifest.exists():
        rows = []
        for i, (color, hum) in enumerate([("white", 0), ("pink", 50), ("brown", 0), ("pink", 0)]):
            path = d / "noise" / f"noise_{i}.wav"
            with atomic_path(path, suffix=".tmp.wav") as tmp:
                sf.write(tmp, noise_like(30.0, 16000, seed=seed + i, color=color, hum_hz=hum), 16000)
            rows.append(json.dumps({"audio_filepath": str(path), "duration": 30.0}))
        atomic_write(manifest, "\n".join(rows) + "\n")
    return manifest


def _hours(manifests) -> float:
    total = 0.0
    for m in [manifests] if isinstance(manifests, str) else manifests:
        with open(m, encoding="utf-8") as f:
            total += sum(json.loads(line)["duration"] for line in f if line.strip())
    return total / 3600


# ------------------------------------------------------------------------------------------------- runs
def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


class Job:
    """A subprocess with its output in ``log``; :meth:`wait` returns its own CPU seconds (``os.wait4``)."""

    def __init__(self, cmd, log: Path, threads: int = 1):
        log.parent.mkdir(parents=True, exist_ok=True)
        self.cmd, self.log = [str(c) for c in cmd], log
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        with open(log, "w") as f:
            self.proc = subprocess.Popen(self.cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT, env=env)

    def wait(self) -> float:
        _, status, usage = os.wait4(self.proc.pid, 0)
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        if self.proc.returncode != 0:
            raise SystemExit(f"failed ({self.proc.returncode}): {' '.join(self.cmd)}\n"
                             + "".join(open(self.log).readlines()[-40:]))
        return usage.ru_utime + usage.ru_stime


def start_train(overrides, seed: int, exp_dir: Path, log: Path, threads: int = 1) -> Job:
    """``train.py`` with ``overrides``, seeded (``seed_everything`` before train.py runs), in the background."""
    return Job([sys.executable, __file__, "_train", str(seed), *overrides, f"exp_manager.exp_dir={exp_dir}"], log,
               threads)


def finish_train(job: Job, exp_dir: Path) -> tuple:
    """Wait for a training job, then mark ``exp_dir`` finished: (its final .nemo, its CPU seconds)."""
    cpu = job.wait()
    nemo = _newest(Path(exp_dir))
    if nemo is None:
        raise SystemExit(f"no .nemo under {exp_dir}; see {job.log}")
    atomic_write(Path(exp_dir) / "FINISHED", f"{nemo}\n")
    return nemo, cpu


def finished(exp_dir: Path):
    """The final .nemo of a finished training run in ``exp_dir`` (None if it did not finish: rerun it, and
    exp_manager resumes from its last checkpoint)."""
    marker = Path(exp_dir) / "FINISHED"
    return Path(marker.read_text().strip()) if marker.exists() else None


def _seeded_train(argv):
    """Internal: ``_train SEED overrides...`` seeds every RNG, then runs train.py as ``__main__``."""
    import runpy

    import lightning.pytorch as pl

    pl.seed_everything(int(argv[0]), workers=True)
    sys.argv = [str(ROOT / "train.py"), *argv[1:]]
    runpy.run_path(str(ROOT / "train.py"), run_name="__main__")


def encoder_overrides(spec: str) -> list:
    return [f"model.encoder.{kv.strip()}" for kv in spec.split(",") if kv.strip()]


def _d_model(args) -> int:
    for kv in args.encoder.split(","):
        if kv.strip().startswith("d_model="):
            return int(kv.split("=", 1)[1])
    raise SystemExit("--encoder must set d_model (the Noam schedule of NEST scales the learning rate by it)")


def merge_overrides(recipe, extra) -> list:
    """``recipe`` then ``extra``, minus the recipe entries whose key ``extra`` sets or deletes (``~key``).

    >>> merge_overrides(["a.x=1", "a.y=2", "b=3"], ["a.x=5", "~b"])
    ['a.y=2', 'a.x=5', '~b']
    """
    def key(override):
        return override.lstrip("+~").split("=", 1)[0]

    given = [key(e) for e in extra]
    kept = [r for r in recipe if not any(key(r) == g or key(r).startswith(g + ".") for g in given)]
    return kept + list(extra)


def nest_recipe(args, steps: int) -> list:
    """NEST overrides of the recipe, then the user's ``--nest-overrides`` (which replace the recipe's)."""
    warmup = args.nest_warmup
    # NoamAnnealing: lr(step) = lr * d_model^-0.5 * min(step^-0.5, step * warmup^-1.5), peak at step = warmup
    noam_lr = args.nest_peak_lr * _d_model(args) ** 0.5 * warmup ** 0.5
    recipe = [f"model.train_ds.batch_size={args.nest_batch}", f"model.validation_ds.batch_size={args.nest_batch}",
              f"model.optim.lr={noam_lr:.6g}", f"model.optim.sched.warmup_steps={warmup}",
              f"+model.codebook_health.every_n_steps={max(1, min(100, steps // 10))}",
              # NEST masks 40-frame (0.4 s) blocks of minutes-long audio; utterances here last 1-2 s
              "model.masking.block_size=20", "model.masking.mask_prob=0.02",
              f"model.train_ds.min_duration={MIN_DURATION}", f"model.validation_ds.min_duration={MIN_DURATION}"]
    return merge_overrides(recipe, args.nest_overrides)


def ft_recipe(args, steps: int) -> list:
    """CTC fine-tuning overrides of the recipe (both initialisations alike), then ``--ft-overrides``."""
    recipe = [f"model.train_ds.batch_size={args.ft_batch}", f"model.validation_ds.batch_size={args.ft_batch}",
              f"model.optim.lr={args.ft_lr:g}", f"model.optim.sched.warmup_steps={max(1, steps // 10)}",
              # no SpecAugment: at a few hundred steps it only slows learning down
              "model.spec_augment.freq_masks=0", "model.spec_augment.time_masks=0"]
    return merge_overrides(recipe, args.ft_overrides)


def pretrain_overrides(args, data, steps: int) -> list:
    return [f"--config-name={args.nest_config}", "name=nest",
            f"model.train_ds.manifest_filepath=[{','.join(data['unlabelled'] + [data['train']])}]",
            f"model.train_ds.noise_manifest={data['noise']}",
            f"model.validation_ds.manifest_filepath={data['dev']}", f"model.validation_ds.noise_manifest={data['noise']}",
            f"trainer.max_steps={steps}", "trainer.max_epochs=-1", f"trainer.val_check_interval={steps}",
            "trainer.check_val_every_n_epoch=null", "trainer.enable_progress_bar=false",
            "exp_manager.create_tensorboard_logger=true", f"exp_manager.checkpoint_callback_params.every_n_train_steps={steps}",
            *encoder_overrides(args.encoder), *nest_recipe(args, steps)]


def finetune_overrides(args, data, steps: int, tokenizer: Path, nest) -> list:
    init = [f"nest_checkpoint={nest}"] if nest else ["nest_checkpoint=null", "~init_from_nemo_model"]
    val_every = args.val_every or max(1, steps // 10)
    return ["--config-name=fastconformer_ctc_bpe_finetune", "name=ctc", *init, f"model.tokenizer.dir={tokenizer}",
            f"model.train_ds.manifest_filepath={data['train']}", f"model.validation_ds.manifest_filepath={data['dev']}",
            "model.train_ds.num_workers=0", "model.validation_ds.num_workers=0", "model.train_ds.pin_memory=false",
            "model.validation_ds.pin_memory=false", "trainer.accelerator=cpu", "trainer.devices=1",
            "trainer.sync_batchnorm=false", f"trainer.max_steps={steps}", "trainer.max_epochs=-1",
            f"trainer.val_check_interval={val_every}", "trainer.check_val_every_n_epoch=null",
            "trainer.enable_progress_bar=false", "exp_manager.checkpoint_callback_params.save_top_k=1",
            *encoder_overrides(args.encoder), *ft_recipe(args, steps)]


def read_curve(exp_dir: Path, tag: str = "val_wer") -> list:
    """[(step, value)] of a scalar from the tensorboard events under ``exp_dir``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    points = {}
    for events in sorted(Path(exp_dir).rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
        acc.Reload()
        if tag in acc.Tags().get("scalars", []):
            points.update({e.step: e.value for e in acc.Scalars(tag)})
    return sorted(points.items())


def tool(name: str, argv) -> float:
    """Run ``nest_ext.cli.<name>``'s ``main(argv)`` (the ``nest-<name>`` command) in this process (one NeMo import
    for all); its CPU seconds."""
    import importlib

    module = importlib.import_module(f"nest_ext.cli.{name}")
    before = time.process_time()
    code = module.main([str(a) for a in argv])
    if code:
        raise SystemExit(f"nest-{name.replace('_', '-')} {' '.join(map(str, argv))} failed ({code})")
    return time.process_time() - before


def evaluate(model: Path, manifest: str, out_dir: Path) -> tuple:
    """``nest-evaluate-asr`` on one test manifest: (its summary, CPU seconds)."""
    cpu = tool("evaluate_asr", ["--model", model, "--manifest", manifest, "--out-dir", out_dir])
    return json.loads((out_dir / "summary.json").read_text())[0], cpu


# ------------------------------------------------------------------------------------------------- main
def plan_steps(args) -> dict:
    budget_cpu = args.budget_minutes * 60
    return {stage: getattr(args, f"{stage}_steps") or max(10, int(BUDGET_SHARE[stage] * budget_cpu
                                                                   / REFERENCE_CPU_S[stage]))
            for stage in ("pretrain", "finetune")}


def encoder_weights(nemo_path) -> dict:
    """The encoder's parameters in a .nemo (BatchNorm statistics left out), without building the model."""
    import tarfile

    import torch

    with tarfile.open(nemo_path) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("model_weights.ckpt"))
        state = torch.load(tar.extractfile(member), map_location="cpu", weights_only=True)
    return {k: v.double() for k, v in state.items()
            if k.startswith("encoder.") and "running_" not in k and "num_batches_tracked" not in k}


def distance_to(reference: dict, other: dict) -> float:
    """Relative L2 distance between two encoders' parameters (0: identical)."""
    import torch

    if reference.keys() != other.keys():
        return float("inf")
    diff = torch.sqrt(sum(((other[k] - v) ** 2).sum() for k, v in reference.items()))
    return float(diff / torch.sqrt(sum((v ** 2).sum() for v in reference.values())))


def _newest(folder: Path):
    found = sorted(folder.rglob("*.nemo"), key=lambda p: p.stat().st_mtime) if folder.exists() else []
    return found[-1] if found else None


def main(argv=None):
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)  # for the evaluations, which run in this process
    work = Path(args.work_dir).resolve()
    if args.fresh and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    t0, cpu, logs = time.time(), {}, work / "logs"
    before = _children_cpu() + time.process_time()
    data = make_data(args, work)
    cpu["data"] = _children_cpu() + time.process_time() - before
    steps = plan_steps(args)
    print(f"steps: {steps}; data: unlabelled {_hours(data['unlabelled']):.2f} h, train {_hours(data['train']) * 60:.1f}"
          f" min, dev {_hours(data['dev']) * 60:.1f} min, test {_hours(data['test']) * 60:.1f} min", flush=True)

    nest = finished(work / "nest")
    if nest is None:
        job = start_train(pretrain_overrides(args, data, steps["pretrain"]), args.seed, work / "nest",
                          logs / "pretrain.log", args.threads)
        nest, cpu["pretrain"] = finish_train(job, work / "nest")
    print(f"NEST checkpoint: {nest}", flush=True)

    tokenizer = work / "tokenizer"
    if not (tokenizer / "tokenizer.model").exists():
        cpu["tokenizer"] = tool("build_tokenizer", ["--manifest", data["train"], "--vocab-size", args.vocab_size,
                                                     "--out-dir", tokenizer])

    # the two fine-tunings: same steps, data, schedule and seed; at once (one process each) unless --sequential
    todo = [(init, ckpt) for init, ckpt in (("nest", nest), ("random", None)) if finished(work / f"ctc_{init}") is None]

    def launch(init, ckpt):
        return start_train(finetune_overrides(args, data, steps["finetune"], tokenizer, ckpt), args.seed,
                           work / f"ctc_{init}", logs / f"finetune_{init}.log", args.threads)

    jobs = {init: launch(init, ckpt) for init, ckpt in todo} if not args.sequential else {}
    for init, ckpt in todo:
        job = jobs.get(init) or launch(init, ckpt)
        _, cpu[f"finetune_{init}"] = finish_train(job, work / f"ctc_{init}")
    results, nest_encoder = {}, encoder_weights(nest)
    for init in ("nest", "random"):
        exp = work / f"ctc_{init}"
        model = finished(exp)
        summary, cpu[f"eval_{init}"] = evaluate(model, data["test"], work / f"eval_{init}")
        results[init] = {"wer": summary["wer"], "cer": summary["cer"], "model": str(model), "curve": read_curve(exp),
                         "encoder_distance_to_nest": distance_to(nest_encoder, encoder_weights(model))}
        print(f"{init}: test WER {100 * summary['wer']:.2f}%  CER {100 * summary['cer']:.2f}%", flush=True)

    report = {"command": " ".join(["python bench/ssl_benefit.py"] + (argv if argv is not None else sys.argv[1:])),
              "steps": steps, "encoder": args.encoder, "nest_config": args.nest_config,
              "nest_overrides": nest_recipe(args, steps["pretrain"]), "ft_overrides": ft_recipe(args, steps["finetune"]),
              "vocab_size": args.vocab_size, "seed": args.seed, "threads": args.threads,
              "data": {k: v for k, v in data.items()},
              "hours": {k: round(_hours(data[k]), 4) for k in ("unlabelled", "train", "dev", "test")},
              "results": results, "cpu_seconds": {k: round(v, 1) for k, v in cpu.items()},
              "wall_seconds": round(time.time() - t0, 1), "load_average": [round(x, 2) for x in os.getloadavg()]}
    atomic_write(work / "results.json", json.dumps(report, indent=1) + "\n")
    text = format_report(report)
    atomic_write(work / "report.md", text)
    print(text)
    return report


def format_report(r: dict) -> str:
    res, h = r["results"], r["hours"]
    lines = [f"command: `{r['command']}`",
             f"data: unlabelled {h['unlabelled']:.2f} h (+ the labelled training audio), labelled train "
             f"{60 * h['train']:.1f} min, dev {60 * h['dev']:.1f} min, test {60 * h['test']:.1f} min",
             f"steps: NEST {r['steps']['pretrain']}, CTC {r['steps']['finetune']} per initialisation; seed {r['seed']}, "
             f"{r['threads']} thread(s) per process",
             f"encoder: {r['encoder']}; NEST config {r['nest_config']}: {' '.join(r['nest_overrides'])}",
             f"fine-tuning (both): {' '.join(r['ft_overrides'])}; BPE vocabulary {r['vocab_size']}",
             f"CPU seconds: {r['cpu_seconds']}; wall {r['wall_seconds']} s; load average {r['load_average']}", "",
             "| init | test WER % | test CER % | encoder distance to NEST |", "|---|---|---|---|"]
    lines += [f"| {k} | {100 * v['wer']:.2f} | {100 * v['cer']:.2f} | {v['encoder_distance_to_nest']:.3f} |"
              for k, v in res.items()]
    curves = {k: dict(v["curve"]) for k, v in res.items()}
    lines += ["", "dev WER % during fine-tuning (step: " + ", ".join(res) + "):", "",
              "| step | " + " | ".join(res) + " |", "|---|" + "---|" * len(res)]
    for step in sorted(set().union(*curves.values())):
        lines.append(f"| {step + 1} | " + " | ".join(f"{100 * curves[k][step]:.1f}" if step in curves[k] else "-"
                                                     for k in res) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_train":
        _seeded_train(sys.argv[2:])
    else:
        main()
