"""Benchmark: how fast does MossFormer2 learn to separate on CPU? SI-SDRi on unseen voices against compute.

Data (made here, 8 kHz): espeak-ng sentences of random words, one "speaker" per espeak accent x voice variant
(with its own pitch). Training speakers use variants m1-m5 and f1-f3, test speakers m6, m7, f4, f5 only: the
test voices' timbres never occur in training. Written: a source pool (single-speaker utterances with speaker
IDs), fixed two-speaker training mixtures drawn from that pool, and held-out test mixtures of test speakers
(each mixture cut to its shorter source, the second source at -5..+5 dB against the first).

Each run trains one config with the model API (the same Hydra composition, model class, data pipeline and
Lightning loop as ``train.py``), single process, DataLoader in-process (``num_workers=0``) so the budget counts
data loading too, and every ``--eval-every`` budget seconds separates every test mixture and prints the mean
SI-SDRi (the project's zero-mean SI-SDR, ``nest_ext.metrics.si_sdr``). Evaluation time is not charged to the
budget. Runs:

* ``small_fast``: ``config/mossformer2_small_fast.yaml``, dynamic mixing from the source pool;
* ``official``: the official-width configuration (dims 64, 2 layers, official inner widths, batch 4 x 2 s,
  Adam 1e-3 constant, fixed mixtures, no dynamic mixing).

Budget: ``--budget-cpu-s`` process CPU-seconds per run (all threads; robust on a shared machine), or
``--budget-minutes`` wall-clock. Both runs go concurrently, one subprocess each, ``--threads`` torch threads
each. 40 minutes on 2 fully used cores is 4,800 CPU-seconds.

Usage::

    python bench/separation_learning.py --budget-cpu-s 1200 --keep /tmp/seplearn   # both runs
    python bench/separation_learning.py --runs small_fast --budget-cpu-s 120 --set model.optim.lr=3e-3
    python bench/separation_learning.py --smoke                                     # < 1 min, a test
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from nest_ext.cli.espeak import synthesize

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_RATE = 8000
ACCENTS = ["en-us", "en-gb", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-rp", "en-gb-x-gbcwmd", "en-029",
           "en-us-nyc"]
TRAIN_VARIANTS = ["m1", "m2", "m3", "m4", "m5", "f1", "f2", "f3"]
TEST_VARIANTS = ["m6", "m7", "f4", "f5"]
WORDS = (  # from the Harvard sentences (IEEE 1969), public domain
    "birch canoe slid on the smooth planks glue sheet to dark blue background it is easy tell depth of a well "
    "these days chicken leg rare dish rice often served in round bowls juice lemons makes fine punch box was "
    "thrown beside parked truck hogs were fed chopped corn and garbage four hours steady work faced us large size "
    "stockings hard sell boy there when sun rose rod used catch pink salmon source huge river clear spring kick "
    "ball straight follow through help woman get back her feet pot tea helps pass evening smoky fires lack flame "
    "heat soft cushion broke man fall salt breeze came across from sea girl at booth sold fifty bonds"
).split()

# Runs: config name and overrides. The official-width configuration as the issue states it.
OFFICIAL = [
    "model.encoder.embedding_dim=64", "model.decoder.embedding_dim=64", "model.masker.embedding_dim=64",
    "model.masker.sequence_dim=64", "model.masker.num_layers=2", "model.masker.group_size=256",
    "model.masker.query_key_dim=128", "model.masker.fsmn_inner_dim=256",
    "model.train_ds.segment_seconds=2.0", "model.train_ds.batch_size=4", "model.train_ds.dynamic_mixing=false",
    "model.optim.lr=1e-3", "model.optim.weight_decay=0", "~model.optim.sched", "trainer.max_steps=-1",
]
RUNS = {"small_fast": ("mossformer2_small_fast", []), "official": ("mossformer2_tiny", OFFICIAL)}


# ---------------------------------------------------------------------------------------------- data
def espeak(text: str, voice: str, pitch: int, speed: int) -> np.ndarray:
    """One espeak-ng utterance at SAMPLE_RATE, peak 0.5."""
    audio = synthesize(text, voice, speed=speed, pitch=pitch, sample_rate=SAMPLE_RATE)
    return 0.5 * audio / max(float(np.abs(audio).max()), 1e-6)


def speakers(variants, rng):
    """(name, espeak voice, pitch) for every accent x variant, each with its own pitch."""
    return [(f"{a}+{v}", f"{a}+{v}", int(rng.integers(25, 75))) for a in ACCENTS for v in variants]


def write_utterances(folder: Path, spk_list, per_speaker: int, rng, prefix: str):
    """Single-speaker utterances; returns pool rows (path, duration, speaker) and the audio by row."""
    folder.mkdir(parents=True, exist_ok=True)
    rows, audio = [], []
    for name, voice, pitch in spk_list:
        for k in range(per_speaker):
            text = " ".join(rng.choice(WORDS, size=int(rng.integers(6, 11))))
            wav = espeak(text, voice, pitch, int(rng.integers(140, 190)))
            path = folder / f"{prefix}_{name.replace('+', '_')}_{k:02d}.wav"
            sf.write(path, wav, SAMPLE_RATE, subtype="FLOAT")
            rows.append({"audio_filepath": str(path), "duration": len(wav) / SAMPLE_RATE, "speaker": name})
            audio.append(wav)
    return rows, audio


def write_mixtures(folder: Path, rows, audio, count: int, rng, prefix: str) -> str:
    """``count`` two-speaker mixtures of distinct speakers, cut to the shorter source; returns the manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(count):
        while True:
            a, b = rng.choice(len(rows), size=2, replace=False)
            if rows[a]["speaker"] != rows[b]["speaker"]:
                break
        n = min(len(audio[a]), len(audio[b]))
        s1 = audio[a][:n]
        s2 = audio[b][:n] * np.sqrt(np.mean(s1 ** 2) / max(np.mean(audio[b][:n] ** 2), 1e-12))
        s2 = s2 * 10 ** (rng.uniform(-5, 5) / 20)
        scale = 0.9 / max(np.abs(s1 + s2).max(), np.abs(s1).max(), np.abs(s2).max())
        paths = [folder / f"{prefix}{i:04d}_{k}.wav" for k in ("mix", "s1", "s2")]
        for p, x in zip(paths, (s1 + s2, s1, s2)):
            sf.write(p, (x * scale).astype(np.float32), SAMPLE_RATE, subtype="FLOAT")
        out.append({"input_filepath": str(paths[0]), "target_filepath": [str(paths[1]), str(paths[2])],
                    "duration": n / SAMPLE_RATE, "speaker_ids": [rows[a]["speaker"], rows[b]["speaker"]]})
    manifest = folder / f"{prefix}.json"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in out))
    return str(manifest)


def make_data(work: Path, train_per_speaker: int, train_mixtures: int, test_mixtures: int, seed: int,
              max_speakers: int = None) -> dict:
    rng = np.random.default_rng(seed)
    train_spk, test_spk = speakers(TRAIN_VARIANTS, rng)[:max_speakers], speakers(TEST_VARIANTS, rng)[:max_speakers]
    pool_rows, pool_audio = write_utterances(work / "pool", train_spk, train_per_speaker, rng, "pool")
    pool = work / "pool.json"
    pool.write_text("".join(json.dumps(r) + "\n" for r in pool_rows))
    test_rows, test_audio = write_utterances(work / "test_src", test_spk, 2, rng, "test")
    return {
        "pool": str(pool),
        "train": write_mixtures(work / "train", pool_rows, pool_audio, train_mixtures, rng, "train"),
        "test": write_mixtures(work / "test", test_rows, test_audio, test_mixtures, rng, "test"),
        "pool_hours": sum(r["duration"] for r in pool_rows) / 3600, "train_speakers": len(train_spk),
        "test_speakers": len(test_spk),
    }


# ---------------------------------------------------------------------------------------------- one run
def load_test(manifest: str):
    import torch

    items = []
    for line in Path(manifest).read_text().splitlines():
        row = json.loads(line)
        mix = torch.from_numpy(sf.read(row["input_filepath"], dtype="float32")[0])
        refs = torch.stack([torch.from_numpy(sf.read(p, dtype="float32")[0]) for p in row["target_filepath"]])
        items.append((mix, refs))
    return items


def test_sisdri(model, items) -> float:
    from nest_ext.metrics.si_sdr import pit_si_sdr_scores

    scores = []
    for mix, refs in items:
        est = model.separate(mix)
        scores.append(pit_si_sdr_scores(est[None], refs[None], mixture=mix[None]).improvement.mean().item())
    return float(np.mean(scores))


def run_one(args, data: dict) -> dict:
    """Train RUNS[args.run] for the budget; returns the curve [(budget s, steps, SI-SDRi)]."""
    import lightning.pytorch as pl
    import torch
    from hydra import compose, initialize_config_dir

    from nest_ext.models import MossFormer2SeparationModel

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    config_name, overrides = RUNS[args.run]
    overrides = overrides + [
        f"model.train_ds.manifest_filepath={data['train']}", "model.validation_ds.manifest_filepath=null",
        "model.train_ds.num_workers=0", "trainer.devices=1", "trainer.accelerator=cpu", "trainer.max_epochs=-1",
    ] + (args.set if args.run == "small_fast" or args.set_all else [])
    if args.run == "small_fast":
        overrides.append(f"model.train_ds.source_pool={data['pool']}")
    with initialize_config_dir(config_dir=str(ROOT / "config"), version_base=None):
        cfg = compose(config_name=config_name, overrides=overrides)
    clock = time.process_time if args.budget_minutes is None else time.perf_counter
    budget = args.budget_cpu_s if args.budget_minutes is None else 60 * args.budget_minutes
    items = load_test(data["test"])

    class Budget(pl.Callback):
        def __init__(self):
            self.start, self.eval_time, self.next_eval, self.curve = clock(), 0.0, 0.0, []

        def spent(self):
            return clock() - self.start - self.eval_time

        def evaluate(self, trainer, model):
            t = clock()
            sisdri = test_sisdri(model, items)
            self.eval_time += clock() - t
            self.curve.append((round(self.spent(), 1), trainer.global_step, round(sisdri, 2)))
            print(f"[{args.run}] {self.curve[-1][0]:8.1f} s {trainer.global_step:6d} steps  SI-SDRi {sisdri:6.2f} dB"
                  f"  (wall {time.perf_counter() - wall0:.0f} s)", flush=True)
            self.next_eval += budget / args.evals

        def on_train_batch_end(self, trainer, model, *unused):
            spent = self.spent()
            if spent >= self.next_eval or spent >= budget:
                self.evaluate(trainer, model)
            if spent >= budget or time.perf_counter() - wall0 > 60 * args.max_wall_minutes:
                trainer.should_stop = True

    wall0 = time.perf_counter()
    probe = Budget()
    trainer = pl.Trainer(
        max_epochs=-1, max_steps=int(cfg.trainer.max_steps), accelerator="cpu", devices=1, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        limit_val_batches=0, accumulate_grad_batches=int(cfg.trainer.accumulate_grad_batches),
        gradient_clip_val=cfg.trainer.gradient_clip_val, callbacks=[probe], default_root_dir=args.work,
    )
    model = MossFormer2SeparationModel(cfg.model, trainer=trainer)
    params = sum(p.numel() for p in model.parameters())
    ds = cfg.model.train_ds
    print(f"[{args.run}] {config_name}: {params:,} parameters, batch {ds.batch_size} x {ds.segment_seconds} s, "
          f"dynamic mixing {ds.dynamic_mixing}, lr {cfg.model.optim.lr}, sched "
          f"{cfg.model.optim.get('sched', {}).get('name') if cfg.model.optim.get('sched') else None}, "
          f"max_steps {cfg.trainer.max_steps}, threads {args.threads}", flush=True)
    probe.start = clock()
    probe.evaluate(trainer, model)  # the untrained model: the curve's origin
    probe.start, probe.eval_time, probe.curve[0] = clock(), 0.0, (0.0, 0, probe.curve[0][2])
    trainer.fit(model)
    if probe.curve[-1][1] != trainer.global_step:  # stopped by max_steps between evaluations
        probe.evaluate(trainer, model)
    return {"run": args.run, "params": params, "curve": probe.curve, "wall_s": time.perf_counter() - wall0}


# ---------------------------------------------------------------------------------------------- main
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    parser.add_argument("--budget-cpu-s", type=float, default=1200.0, help="process CPU-seconds per run")
    parser.add_argument("--budget-minutes", type=float, default=None, help="wall-clock budget instead")
    parser.add_argument("--max-wall-minutes", type=float, default=60.0, help="safety stop per run")
    parser.add_argument("--evals", type=int, default=8, help="evaluations over the budget")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--train-per-speaker", type=int, default=8)
    parser.add_argument("--train-mixtures", type=int, default=400)
    parser.add_argument("--test-mixtures", type=int, default=40)
    parser.add_argument("--set", action="append", default=[], help="Hydra override for small_fast (repeatable)")
    parser.add_argument("--set-all", action="store_true", help="apply --set to every run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", default=None, help="data and results folder (reused when its data exists)")
    parser.add_argument("--smoke", action="store_true", help="tiny data and budgets (a test, < 1 min)")
    parser.add_argument("--run", default=None, help=argparse.SUPPRESS)  # internal: the child process's run
    parser.add_argument("--work", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.smoke:
        args.budget_cpu_s, args.budget_minutes, args.evals = 2.0, None, 1
        args.train_per_speaker, args.train_mixtures, args.test_mixtures = 1, 8, 2
    work = Path(args.keep or tempfile.mkdtemp(prefix="separation_learning_"))
    data_file = work / "data.json"
    if args.run is not None:  # child: one run, result as JSON
        result = run_one(args, json.loads(data_file.read_text()))
        (work / f"result_{args.run}.json").write_text(json.dumps(result))
        return result

    if not data_file.exists():
        t0 = time.perf_counter()
        data = make_data(work, args.train_per_speaker, args.train_mixtures, args.test_mixtures, args.seed,
                         max_speakers=3 if args.smoke else None)
        data_file.write_text(json.dumps(data))
        print(f"data in {work} ({time.perf_counter() - t0:.0f} s)")
    data = json.loads(data_file.read_text())
    print(f"data: pool {data['pool_hours'] * 60:.1f} min of {data['train_speakers']} training speakers, "
          f"{args.train_mixtures} fixed training mixtures, {args.test_mixtures} test mixtures of "
          f"{data['test_speakers']} unseen speakers")
    unit = "CPU-s" if args.budget_minutes is None else "wall s"
    budget = args.budget_cpu_s if args.budget_minutes is None else 60 * args.budget_minutes
    print(f"budget {budget:.0f} {unit} per run, {args.threads} thread(s) each, runs concurrent; "
          f"load: {os.getloadavg()[0]:.2f}", flush=True)
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    children = []
    for run in args.runs:
        cmd = [sys.executable, __file__, *_without_keep(sys.argv[1:] if argv is None else argv),
               "--run", run, "--keep", str(work), "--work", str(work / run)]
        children.append(subprocess.Popen(cmd, env=env))
    if any(c.wait() for c in children):
        raise SystemExit("a run failed (see its output above)")
    results = {run: json.loads((work / f"result_{run}.json").read_text()) for run in args.runs}
    print(f"\nSI-SDRi (dB) on {args.test_mixtures} test mixtures of unseen voices against {unit} spent training; "
          f"load at the end: {os.getloadavg()[0]:.2f}")
    for run, res in results.items():
        print(f"{run} ({res['params']:,} parameters, {res['wall_s'] / 60:.1f} min wall):")
        print("  " + "  ".join(f"{s:.0f}s/{n}st:{v:+.2f}" for s, n, v in res["curve"]))
    return results


def _without_keep(argv):
    """The parent's arguments less ``--keep DIR`` (the child gets the work folder explicitly)."""
    out = []
    for a in argv:
        if out and out[-1] == "--keep":
            out.pop()
        elif not a.startswith("--keep="):
            out.append(a)
    return out


if __name__ == "__main__":
    main()
