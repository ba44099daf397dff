#!/usr/bin/env python
"""Synthesise the demo corpus for ``python train.py`` (no downloads): speech-like audio, noise, manifests.

Writes under ``--out`` (default ``demo_data/`` beside this repo's ``train.py``)::

    audio/train_000.wav ...   speech-like utterances (nest_ext.parts.synth.speech_like), 16 kHz
    audio/val_000.wav ...
    noise/noise_000.wav ...   coloured noise with and without hum (nest_ext.parts.synth.noise_like)
    train_manifest.json  val_manifest.json  noise_manifest.json   NeMo manifests, paths relative to them

Everything is a function of ``--seed``. Files are written to a temporary name and renamed, and the
manifests come last, so an interrupted run never leaves a manifest pointing at missing or partial
audio; a complete corpus is left alone unless ``--force``.

    python tools/make_demo_data.py                 # once; train.py calls it when demo_data/ is missing
    python tools/make_demo_data.py --out /tmp/d --num-train 8 --num-val 2 --force
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from nest_ext.parts.synth import noise_like, speech_like  # noqa: E402

MANIFESTS = ("train_manifest.json", "val_manifest.json", "noise_manifest.json")


def _atomic_wav(path: Path, audio: np.ndarray, sample_rate: int):
    tmp = path.with_name(f".{path.name}.tmp")
    sf.write(str(tmp), audio, sample_rate, format="WAV", subtype="PCM_16")
    os.replace(tmp, path)


def _atomic_manifest(path: Path, entries):
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for e in entries:
            f.write(json.dumps(e) + "\n")
    os.replace(tmp, path)


def is_complete(out: Path) -> bool:
    """True when all three manifests exist (they are written last)."""
    return all((Path(out) / m).is_file() for m in MANIFESTS)


def make_demo_data(out=ROOT / "demo_data", num_train=48, num_val=8, num_noise=6, sample_rate=16000,
                   min_dur=1.5, max_dur=3.5, noise_dur=12.0, seed=0, force=False) -> Path:
    """Write the corpus (see module doc) and return ``out``; does nothing when it is already complete."""
    out = Path(out)
    if is_complete(out) and not force:
        print(f"demo data already in {out} (use --force to rewrite)")
        return out
    (out / "audio").mkdir(parents=True, exist_ok=True)
    (out / "noise").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    manifests = {}
    for split, count in (("train", num_train), ("val", num_val)):
        entries = []
        for i in range(count):
            dur = round(float(rng.uniform(min_dur, max_dur)), 3)
            rel = f"audio/{split}_{i:03d}.wav"
            audio = speech_like(dur, sample_rate, seed=int(rng.integers(2**31)))
            _atomic_wav(out / rel, audio, sample_rate)
            entries.append({"audio_filepath": rel, "duration": len(audio) / sample_rate, "text": ""})
        manifests[f"{split}_manifest.json"] = entries
    colors = ("pink", "white", "brown")
    noise = []
    for i in range(num_noise):
        rel = f"noise/noise_{i:03d}.wav"
        audio = noise_like(noise_dur, sample_rate, seed=int(rng.integers(2**31)), color=colors[i % 3],
                           hum_hz=50.0 if i % 2 else 0.0, level=float(rng.uniform(0.1, 0.5)))
        _atomic_wav(out / rel, audio, sample_rate)
        noise.append({"audio_filepath": rel, "duration": noise_dur})
    manifests["noise_manifest.json"] = noise
    for name in MANIFESTS:
        _atomic_manifest(out / name, manifests[name])
    total = sum(e["duration"] for e in manifests["train_manifest.json"])
    print(f"demo data: {num_train} train ({total:.0f} s), {num_val} val, {num_noise} noise files in {out}")
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(ROOT / "demo_data"), help="output folder (default: demo_data/)")
    p.add_argument("--num-train", type=int, default=48)
    p.add_argument("--num-val", type=int, default=8)
    p.add_argument("--num-noise", type=int, default=6)
    p.add_argument("--sample-rate", type=int, default=16000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="rewrite even if the corpus is complete")
    a = p.parse_args(argv)
    make_demo_data(a.out, a.num_train, a.num_val, a.num_noise, a.sample_rate, seed=a.seed, force=a.force)


if __name__ == "__main__":
    main()
