"""Synthesise the demo corpus for ``python train.py`` (no downloads): speech-like audio, noise, manifests.

Writes under ``--out-dir`` (``--out`` is the older spelling; default ``demo_data/`` beside this repo's ``train.py``)::

    audio/train_000.wav ...   speech-like utterances (nest_ext.cli.synth.speech_like), 16 kHz
    audio/val_000.wav ...
    noise/noise_000.wav ...   coloured noise with and without hum (nest_ext.parts.synthetic_noise.noise_like)
    train_manifest.json  val_manifest.json  noise_manifest.json   NeMo manifests, paths relative to them
    separation/                 8 kHz two-speaker mixtures for the MossFormer2 demo (make_separation_demo_data)
        {train,val}/{mix,s1,s2}/<name>.wav   32-bit float; mix = s1 + s2 sample for sample
        train_manifest.json  val_manifest.json   audio-to-audio manifests (input_filepath, target_filepath,
                                                 duration, speaker_ids), paths relative to them

The separation set has two synthetic speakers, ``low`` and ``high``: every utterance is
:func:`~nest_ext.cli.synth.speech_like` with its own seed, played back at a speaker-specific rate,
which scales pitch and formants together (a longer or shorter "vocal tract"). Their base pitch ranges
do not overlap (about 50-140 Hz and 155-435 Hz), so a tiny model can learn to tell them apart in a
few dozen steps.

Everything is a function of ``--seed``. Files are written to a temporary name and renamed, and the
manifests come last, so an interrupted run never leaves a manifest pointing at missing or partial
audio; a complete corpus is left alone unless ``--force``.

    nest-make-demo-data                            # once; train.py calls it when demo_data/ is missing
    nest-make-demo-data --out-dir /tmp/d --num-train 8 --num-val 2 --force
    python tools/make_demo_data.py ...             # the same command from a checkout

Example (the separation set alone)::

    >>> import json, tempfile
    >>> out = make_separation_demo_data(Path(tempfile.mkdtemp()) / "sep", num_train=2, num_val=1, quiet=True)
    >>> row = json.loads(open(out / "val_manifest.json").readline())
    >>> row["input_filepath"], row["target_filepath"], row["speaker_ids"]
    ('val/mix/val_000.wav', ['val/s1/val_000.wav', 'val/s2/val_000.wav'], ['low', 'high'])
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf

from nest_ext.cli.conventions import add_out_dir, make_parser, setup_logging
from nest_ext.cli.synth import speech_like
from nest_ext.parts.atomic_io import atomic_path, atomic_write
from nest_ext.parts.synthetic_noise import noise_like

ROOT = Path(__file__).resolve().parents[2]  # the checkout: demo_data/ goes beside train.py

MANIFESTS = ("train_manifest.json", "val_manifest.json", "noise_manifest.json")
SEPARATION_MANIFESTS = ("train_manifest.json", "val_manifest.json")
# name: playback-rate factor. Audio made at rate * factor and read at rate has every frequency divided
# by factor: speech_like's base pitch (85-240 Hz) becomes 50-141 Hz for "low", 155-436 Hz for "high".
SPEAKERS = {"low": 1.7, "high": 0.55}


def _atomic_wav(path: Path, audio: np.ndarray, sample_rate: int, subtype: str = "PCM_16"):
    with atomic_path(path, suffix=".wav") as tmp:
        sf.write(tmp, audio, sample_rate, format="WAV", subtype=subtype)


def _atomic_manifest(path: Path, entries):
    atomic_write(path, "".join(json.dumps(e) + "\n" for e in entries))


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


def speaker_utterance(speaker: str, num_samples: int, sample_rate: int, seed: int) -> np.ndarray:
    """float32 [num_samples] of ``speaker`` (a key of :data:`SPEAKERS`) at ``sample_rate``, peak 1."""
    rate = sample_rate * SPEAKERS[speaker]
    x = speech_like(num_samples / rate, int(round(rate)), seed=seed, peak=1.0)
    return x[:num_samples]  # rounding of the synthesis rate may add a sample


def is_separation_complete(out: Path) -> bool:
    """True when both separation manifests exist (they are written last)."""
    return all((Path(out) / m).is_file() for m in SEPARATION_MANIFESTS)


def make_separation_demo_data(out=ROOT / "demo_data" / "separation", num_train=16, num_val=4, sample_rate=8000,
                              min_dur=1.8, max_dur=2.4, seed=0, force=False, quiet=False) -> Path:
    """Write the two-speaker separation set (see module doc) and return ``out``; left alone when complete.

    Each mixture is ``s1 + s2`` (speaker ``low`` then ``high``), the sources' peak levels apart by a
    gap drawn in [-2.5, 2.5] dB (like wsj0-2mix's gains), scaled so the mixture peaks at 0.5-0.9. All
    three files are float32 WAVs, so the sum holds exactly in the files too.
    """
    out = Path(out)
    if is_separation_complete(out) and not force:
        if not quiet:
            print(f"separation demo data already in {out} (use --force to rewrite)")
        return out
    rng = np.random.default_rng([seed, 2])  # independent of the NEST corpus' stream
    manifests = {}
    for split, count in (("train", num_train), ("val", num_val)):
        for sub in ("mix", "s1", "s2"):
            (out / split / sub).mkdir(parents=True, exist_ok=True)
        entries = []
        for i in range(count):
            n = int(round(rng.uniform(min_dur, max_dur) * sample_rate))
            sources = [speaker_utterance(spk, n, sample_rate, int(rng.integers(2**31))) for spk in SPEAKERS]
            gap_db = rng.uniform(-2.5, 2.5)
            sources[0] *= 10 ** (gap_db / 40)
            sources[1] *= 10 ** (-gap_db / 40)
            mix = sources[0] + sources[1]
            scale = np.float32(rng.uniform(0.5, 0.9) / np.max(np.abs(mix)))
            sources = [s * scale for s in sources]
            mix = sources[0] + sources[1]  # recomputed after scaling: exact float32 sum of what is written
            name = f"{split}_{i:03d}.wav"
            targets = [f"{split}/s{k + 1}/{name}" for k in range(len(sources))]
            for rel, audio in zip(targets, sources):
                _atomic_wav(out / rel, audio, sample_rate, subtype="FLOAT")
            _atomic_wav(out / split / "mix" / name, mix, sample_rate, subtype="FLOAT")
            entries.append({"input_filepath": f"{split}/mix/{name}", "target_filepath": targets,
                            "duration": n / sample_rate, "speaker_ids": list(SPEAKERS)})
        manifests[f"{split}_manifest.json"] = entries
    for name in SEPARATION_MANIFESTS:
        _atomic_manifest(out / name, manifests[name])
    if not quiet:
        print(f"separation demo data: {num_train} train, {num_val} val two-speaker mixtures "
              f"({sample_rate} Hz) in {out}")
    return out


def build_parser():
    p = make_parser(__doc__.split("\nExample")[0])
    add_out_dir(p, "--out", required=False, default=str(ROOT / "demo_data"), help="output folder (default: demo_data/)")
    p.add_argument("--num-train", type=int, default=48, metavar="N", help="NEST training utterances (default 48)")
    p.add_argument("--num-val", type=int, default=8, metavar="N", help="NEST validation utterances (default 8)")
    p.add_argument("--num-noise", type=int, default=6, metavar="N", help="noise files (default 6)")
    p.add_argument("--sample-rate", type=int, default=16000, metavar="HZ",
                   help="of the NEST corpus (default 16000; the separation set is 8 kHz)")
    p.add_argument("--num-sep-train", type=int, default=16, metavar="N", help="separation training mixtures")
    p.add_argument("--num-sep-val", type=int, default=4, metavar="N", help="separation validation mixtures")
    p.add_argument("--seed", type=int, default=0, help="all randomness comes from it (default 0)")
    p.add_argument("--force", action="store_true", help="rewrite even if the corpus is complete")
    return p


def main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    setup_logging()
    make_demo_data(a.out_dir, a.num_train, a.num_val, a.num_noise, a.sample_rate, seed=a.seed, force=a.force)
    make_separation_demo_data(Path(a.out_dir) / "separation", a.num_sep_train, a.num_sep_val, seed=a.seed,
                              force=a.force)
    return 0


if __name__ == "__main__":  # python -m nest_ext.cli.make_demo_data
    raise SystemExit(main())
