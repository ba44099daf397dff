"""Benchmark: does the restoration GAN learn? And what does a training step cost in each phase?

Clean speech (espeak-ng sentences in several voices when ``espeak-ng`` is installed, else the speech-like
synthesis of :mod:`nest_ext.cli.synth`) is degraded by the degradation chain (the default one unless
``--degradations`` names a YAML file), written as (degraded, clean) pairs with NeMo manifests, and the model of
``--config`` (the tiny one by default) is trained on them with Lightning, exactly as ``train.py`` would. Every
``--eval-every`` steps the held-out pairs are restored and the table prints, against the degraded input as the
baseline, the multi-resolution STFT distance (the training loss's definition, lower is better) and SI-SDR
(higher is better). The mean wall time of a generator-only step (before ``gan_start_epoch``) and of a G+D step
(after) is printed at the end.

Usage::

    python bench/restoration_learning.py                         # tiny model, default chain, ~10 min on 2 cores
    python bench/restoration_learning.py --steps 200 --gan-start-epoch 2 --threads 2
    python bench/restoration_learning.py --config restoration_gan --segment-seconds 1.0 --batch-size 2 --steps 4
"""
import argparse
import json
import os
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

SENTENCES = [  # Harvard sentences (IEEE 1969), public domain
    "The birch canoe slid on the smooth planks.", "Glue the sheet to the dark blue background.",
    "It's easy to tell the depth of a well.", "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.", "The juice of lemons makes fine punch.",
    "The box was thrown beside the parked truck.", "The hogs were fed chopped corn and garbage.",
    "Four hours of steady work faced us.", "A large size in stockings is hard to sell.",
    "The boy was there when the sun rose.", "A rod is used to catch pink salmon.",
    "The source of the huge river is the clear spring.", "Kick the ball straight and follow through.",
    "Help the woman get back to her feet.", "A pot of tea helps to pass the evening.",
    "Smoky fires lack flame and heat.", "The soft cushion broke the man's fall.",
    "The salt breeze came across from the sea.", "The girl at the booth sold fifty bonds.",
]
VOICES = ["en-us", "en-gb", "en-us+f3", "en-gb+f2", "en-us+m3", "en-gb-scotland", "en-029", "en-us+f5"]


def clean_speech(count: int, sample_rate: int, seconds: float, source: str):
    """``count`` clean utterances (float32, ``seconds`` long: cropped or zero-padded) from ``source``."""
    import soxr

    from nest_ext.cli.synth import speech_like

    out = []
    for i in range(count):
        if source == "espeak":
            text, voice = SENTENCES[i % len(SENTENCES)], VOICES[(i // len(SENTENCES) + i) % len(VOICES)]
            raw = subprocess.run(["espeak-ng", "-v", voice, "-s", str(140 + 7 * (i % 6)), "--stdout", text],
                                 check=True, capture_output=True).stdout
            audio, rate = sf.read(__import__("io").BytesIO(raw), dtype="float32")
            audio = soxr.resample(audio, rate, sample_rate).astype(np.float32)
            audio = 0.5 * audio / max(float(np.abs(audio).max()), 1e-6)
        else:
            audio = speech_like(seconds, sample_rate, seed=i)
        n = int(seconds * sample_rate)
        out.append(np.pad(audio[:n], (0, max(0, n - audio.shape[0]))))
    return out


def write_pairs(folder: Path, clean, sample_rate: int, chain, seed: int, prefix: str) -> str:
    """Degrade and write pairs plus their NeMo audio-to-audio manifest; returns the manifest path."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, audio in enumerate(clean):
        uid = f"{prefix}{i:04d}"
        degraded, _ = chain.degrade(audio, sample_rate, seed=seed, utt_id=uid)
        paths = {k: str(folder / f"{uid}_{k}.wav") for k in ("degraded", "clean")}
        sf.write(paths["degraded"], degraded, sample_rate, subtype="FLOAT")
        sf.write(paths["clean"], audio, sample_rate, subtype="FLOAT")
        rows.append({"input_filepath": paths["degraded"], "target_filepath": paths["clean"],
                     "duration": len(audio) / sample_rate})
    manifest = folder / f"{prefix}.json"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(manifest)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="restoration_gan_tiny", help="config name under config/")
    parser.add_argument("--steps", type=int, default=400, help="training batches")
    parser.add_argument("--train-utts", type=int, default=64)
    parser.add_argument("--test-utts", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=2.0, help="length of each utterance")
    parser.add_argument("--segment-seconds", type=float, default=None, help="training crop (config's by default)")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--gan-start-epoch", type=int, default=None, help="config's by default")
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--degradations", default=None, help="YAML file of steps (default: the default chain)")
    parser.add_argument("--source", choices=["espeak", "synth"], default=None)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy machine)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", default=None, help="keep the data and logs in this folder")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    from omegaconf import OmegaConf

    from nest_ext.data.degradations import DegradationChain
    from nest_ext.models.restoration_gan import RestorationGANModel

    source = args.source or ("espeak" if shutil.which("espeak-ng") else "synth")
    work = Path(args.keep or tempfile.mkdtemp(prefix="restoration_bench_"))
    cfg = OmegaConf.load(ROOT / "config" / f"{args.config}.yaml")
    sr = int(cfg.model.sample_rate)
    chain = DegradationChain.from_spec(args.degradations)
    t0 = time.perf_counter()
    clean = clean_speech(args.train_utts + args.test_utts, sr, args.seconds, source)
    train = write_pairs(work / "data", clean[: args.train_utts], sr, chain, args.seed, "train")
    test = write_pairs(work / "data", clean[args.train_utts:], sr, chain, args.seed, "test")
    print(f"data: {args.train_utts} + {args.test_utts} utterances of {args.seconds} s from {source}, "
          f"degraded by {'the default chain' if args.degradations is None else args.degradations} "
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
    probe = Probe(test, sr, args.eval_every)
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
    print(f"{'batch':>6} {'phase':>5} {'STFT dist':>10} {'input':>8} {'SI-SDR dB':>10} {'input':>8} {'L1':>8} {'d_real':>7} {'d_fake':>7}")
    trainer.fit(model)
    probe.evaluate(trainer, model, final=True)
    for phase, times in probe.step_times.items():
        if times:
            skip = min(2, len(times) - 1)  # the first steps of a phase build caches
            print(f"{phase} step: mean {1000 * np.mean(times[skip:]):.0f} ms, median "
                  f"{1000 * np.median(times[skip:]):.0f} ms over {len(times) - skip} steps")
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)


class Probe(pl.Callback):
    """Times each training batch by phase; restores the test pairs every ``every`` batches."""

    def __init__(self, manifest: str, sample_rate: int, every: int):
        rows = [json.loads(line) for line in open(manifest)]
        self.degraded = torch.stack([torch.from_numpy(sf.read(r["input_filepath"], dtype="float32")[0]) for r in rows])
        self.clean = torch.stack([torch.from_numpy(sf.read(r["target_filepath"], dtype="float32")[0]) for r in rows])
        self.every, self.batches, self.step_times = every, 0, {"generator-only": [], "G+D": []}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.batches % self.every == 0:
            self.evaluate(trainer, pl_module)
        self._t = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        phase = "G+D" if pl_module.gan_active else "generator-only"
        self.step_times[phase].append(time.perf_counter() - self._t)
        self.batches += 1

    @torch.no_grad()
    def evaluate(self, trainer, model, final=False):
        from nest_ext.losses.pit_sisdr import si_sdr_valid

        was = model.training
        model.eval()
        length = torch.full((self.clean.shape[0],), self.clean.shape[1])
        out, _ = model(input_signal=self.degraded, input_length=length)
        model.train(was)
        dist = float(model._multi_stft(self.clean, out[:, 0], length))
        base = float(model._multi_stft(self.clean, self.degraded, length))
        sdr = float(si_sdr_valid(out, self.clean[:, None], length).mean())
        sdr0 = float(si_sdr_valid(self.degraded[:, None], self.clean[:, None], length).mean())
        m = trainer.callback_metrics
        get = lambda k: f"{float(m[k]):.3f}" if k in m else "-"  # noqa: E731
        phase = "G+D" if model.gan_active else "G"
        print(f"{self.batches:>6} {phase:>5} {dist:>10.4f} {base:>8.4f} {sdr:>10.2f} {sdr0:>8.2f} "
              f"{get('train/l1'):>8} {get('train/d_real'):>7} {get('train/d_fake'):>7}" + ("  (final)" if final else ""),
              flush=True)


if __name__ == "__main__":
    main()
