"""Benchmark: does the restoration GAN learn -- on held-out sentences and voices, against the degraded input (the
identity baseline)? And what does a training step cost in each phase?

Clean speech: espeak-ng Harvard sentences (``nest_ext.cli.espeak``), training sentences in 8 voices, held-out
*other* sentences in 4 *other* voices (accents and speakers never seen in training); without espeak-ng, the
speech-like synthesis of ``nest_ext.cli.synth``. Pairs are made by the preparation tool
(``prepare_restoration_pairs``) with the chain of ``--degradations`` (a YAML list of steps; default
``bench/restoration_chain.yaml``; ``default`` for the default chain), and the model of ``--config`` is trained
with Lightning, as ``train.py`` would: generator-only steps, then G+D steps from ``gan_start_epoch``. Every
``--eval-every`` batches the held-out utterances are restored whole and the table prints, for the output and for
the degraded input (what the identity scores):

* MR-STFT: multi-resolution STFT distance at Parallel WaveGAN's resolutions (lower is better);
* SI-SDR (dB, higher is better);
* LSD: log-spectral distance (lower is better).

The mean wall time of a generator-only step and of a G+D step, and the total training time, are printed at the
end, with ``uptime``'s load.

Usage::

    python bench/restoration_learning.py                      # small config, ~10-15 min on 2 cores
    python bench/restoration_learning.py --degradations default --steps 600
    python bench/restoration_learning.py --config restoration_gan_tiny --steps 200 --eval-every 50
    python bench/restoration_learning.py --config restoration_gan --segment-seconds 1.0 --batch-size 2 --steps 4
"""
import argparse
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import soundfile as sf
import torch

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CHAIN = ROOT / "bench" / "restoration_chain.yaml"


def clean_speech(count: int, sample_rate: int, seconds: float, held_out: bool, source: str, seed: int):
    """``count`` clean utterances of ``seconds``: training or held-out sentences and voices."""
    from nest_ext.cli import espeak
    from nest_ext.cli.synth import speech_like

    if source == "espeak":
        split = 22  # sentences 0-21 train, 22-29 held out
        sentences = espeak.HARVARD_SENTENCES[split:] if held_out else espeak.HARVARD_SENTENCES[:split]
        voices = espeak.HELD_OUT_VOICES if held_out else espeak.TRAIN_VOICES
        return espeak.espeak_sentences(count, sample_rate, seed=seed + held_out, voices=voices, seconds=seconds,
                                       sentences=sentences)
    return [speech_like(seconds, sample_rate, seed=seed + (10_000 if held_out else 0) + i) for i in range(count)]


def make_pairs(folder: Path, clean, sample_rate: int, degradations, seed: int) -> str:
    """Clean WAVs, then the preparation tool's pairs; returns the train manifest (every pair in it)."""
    from nest_ext.data.audio_io import write_audio
    from nest_ext.data.restoration_pairs import prepare_restoration_pairs

    for i, audio in enumerate(clean):
        write_audio(str(folder / "clean" / f"utt{i:04d}.wav"), audio, sample_rate, subtype="FLOAT")
    prepare_restoration_pairs(str(folder / "pairs"), clean=str(folder / "clean"), degradations=degradations,
                              val_fraction=0.0, sample_rate=sample_rate, seed=seed, subtype="FLOAT", progress=False)
    return str(folder / "pairs" / "train_manifest.json")


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="restoration_gan_small", help="config name under config/")
    parser.add_argument("--steps", type=int, default=480, help="training batches")
    parser.add_argument("--train-utts", type=int, default=96)
    parser.add_argument("--test-utts", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=2.0, help="length of each utterance")
    parser.add_argument("--segment-seconds", type=float, default=None, help="training crop (config's by default)")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--gan-start-epoch", type=int, default=None, help="config's by default")
    parser.add_argument("--eval-every", type=int, default=80)
    parser.add_argument("--degradations", default=str(DEFAULT_CHAIN),
                        help="YAML file of steps, or 'default' for the default chain")
    parser.add_argument("--source", choices=["espeak", "synth"], default=None)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy machine)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", default=None, help="keep the data and logs in this folder")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    from omegaconf import OmegaConf

    from nest_ext.models.restoration_gan import RestorationGANModel
    from nest_ext.cli.espeak import espeak_available

    print(f"load at start: {uptime()}")
    source = args.source or ("espeak" if espeak_available() else "synth")
    degradations = None if args.degradations == "default" else args.degradations
    work = Path(args.keep or tempfile.mkdtemp(prefix="restoration_bench_"))
    cfg = OmegaConf.load(ROOT / "config" / f"{args.config}.yaml")
    sr = int(cfg.model.sample_rate)
    t0 = time.perf_counter()
    train = make_pairs(work / "train", clean_speech(args.train_utts, sr, args.seconds, False, source, args.seed), sr,
                       degradations, args.seed)
    test = make_pairs(work / "test", clean_speech(args.test_utts, sr, args.seconds, True, source, args.seed), sr,
                      degradations, args.seed + 1)
    print(f"data: {args.train_utts} training + {args.test_utts} held-out utterances of {args.seconds} s from {source} "
          f"(held out: other sentences, other voices), degraded by {args.degradations} "
          f"({time.perf_counter() - t0:.1f} s) in {work}")

    cfg.model.train_ds.manifest_filepath = train
    cfg.model.validation_ds.manifest_filepath = None
    if args.segment_seconds is not None:
        cfg.model.train_ds.segment_seconds = args.segment_seconds
    if args.batch_size is not None:
        cfg.model.train_ds.batch_size = args.batch_size
    if args.gan_start_epoch is not None:
        cfg.model.gan_start_epoch = args.gan_start_epoch
    batches_per_epoch = -(-args.train_utts // int(cfg.model.train_ds.batch_size))
    max_epochs = -(-args.steps // batches_per_epoch)
    probe = Probe(test, args.eval_every)
    trainer = pl.Trainer(
        max_epochs=max_epochs, limit_train_batches=batches_per_epoch, accelerator="cpu", devices=1, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        callbacks=[probe], default_root_dir=str(work),
    )
    model = RestorationGANModel(cfg.model, trainer=trainer)
    n_g = sum(p.numel() for p in model.generator.parameters())
    n_d = sum(p.numel() for p in model.discriminator.parameters())
    print(f"model: {args.config}, generator {n_g:,} parameters, discriminators {n_d:,}; batch "
          f"{cfg.model.train_ds.batch_size} x {cfg.model.train_ds.segment_seconds} s, {batches_per_epoch} batches per "
          f"epoch, GAN from epoch {cfg.model.gan_start_epoch} (batch {cfg.model.gan_start_epoch * batches_per_epoch}), "
          f"{max_epochs} epochs, torch threads {args.threads}")
    print(f"{'batch':>6} {'phase':>5} | {'MR-STFT':>8} {'input':>7} | {'SI-SDR':>7} {'input':>7} | {'LSD':>6} "
          f"{'input':>6} | {'d_real':>6} {'d_fake':>6}")
    t_fit = time.perf_counter()
    trainer.fit(model)
    t_fit = time.perf_counter() - t_fit
    final = probe.evaluate(trainer, model, final=True)
    print("\nheld-out means (identity = the degraded input):")
    print(f"{'metric':<10}{'input':>9}{'output':>9}{'gain':>9}")
    for name in ("mr_stft", "si_sdr", "lsd"):
        print(f"{name:<10}{final[name + '_input']:>9.3f}{final[name]:>9.3f}{final[name] - final[name + '_input']:>+9.3f}")
    for phase, times in probe.step_times.items():
        if times:
            skip = min(2, len(times) - 1)  # the first steps of a phase build caches
            print(f"{phase} step: mean {1000 * np.mean(times[skip:]):.0f} ms, median "
                  f"{1000 * np.median(times[skip:]):.0f} ms over {len(times) - skip} steps")
    print(f"training: {t_fit / 60:.1f} min wall (evaluations included); load at end: {uptime()}")
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)


class Probe(pl.Callback):
    """Times each training batch by phase; restores the held-out pairs every ``every`` batches."""

    def __init__(self, manifest: str, every: int):
        base = Path(manifest).parent
        rows = [json.loads(line) for line in open(manifest)]
        self.degraded = torch.stack([torch.from_numpy(sf.read(base / r["input_filepath"], dtype="float32")[0])
                                     for r in rows])
        self.clean = torch.stack([torch.from_numpy(sf.read(base / r["target_filepath"], dtype="float32")[0])
                                  for r in rows])
        self.every, self.batches, self.step_times = every, 0, {"generator-only": [], "G+D": []}
        self.input_scores = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.batches % self.every == 0:
            self.evaluate(trainer, pl_module)
        self._t = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        phase = "G+D" if pl_module.gan_active else "generator-only"
        self.step_times[phase].append(time.perf_counter() - self._t)
        self.batches += 1

    @staticmethod
    def scores(estimate, clean):
        from nest_ext.metrics.si_sdr import si_sdr
        from nest_ext.metrics.spectral_distance import log_spectral_distance, multi_resolution_stft_distance

        return {"mr_stft": float(multi_resolution_stft_distance(estimate, clean).mean()),
                "si_sdr": float(si_sdr(estimate.double(), clean.double()).mean()),
                "lsd": float(log_spectral_distance(estimate, clean).mean())}

    @torch.no_grad()
    def evaluate(self, trainer, model, final=False):
        if self.input_scores is None:
            self.input_scores = {f"{k}_input": v for k, v in self.scores(self.degraded, self.clean).items()}
        out = model.restore(self.degraded)
        s = {**self.scores(out, self.clean), **self.input_scores}
        m = trainer.callback_metrics
        get = lambda k: f"{float(m[k]):.3f}" if k in m else "-"  # noqa: E731
        phase = "G+D" if model.gan_active else "G"
        print(f"{self.batches:>6} {phase:>5} | {s['mr_stft']:>8.3f} {s['mr_stft_input']:>7.3f} | {s['si_sdr']:>7.2f} "
              f"{s['si_sdr_input']:>7.2f} | {s['lsd']:>6.3f} {s['lsd_input']:>6.3f} | {get('train/d_real'):>6} "
              f"{get('train/d_fake'):>6}" + ("  (final)" if final else ""), flush=True)
        return s


if __name__ == "__main__":
    main()
