"""The speech-restoration part of ``make demo``: prepare pairs, train the small restoration GAN through both phases,
restore a held-out degraded utterance and print what it gained.

Four steps, each printed so it can be rerun by hand:

1. clean speech into ``demo_data/restoration/clean/`` (espeak-ng sentences when it is installed, else the
   speech-like synthesis of :mod:`nest_ext.cli.synth`), then
   ``nest-prepare-restoration-data --clean demo_data/restoration/clean --out-dir demo_data/restoration/pairs ...``
   degrades them (:data:`DEMO_DEGRADATIONS`: noise, band limit, clipping, reverb);
2. ``python train.py --config-name restoration_gan_small ...`` trains the small generator (:data:`DEMO_OVERRIDES`:
   7 generator-only epochs, then 1 of generator + discriminator) and prints the ``.nemo``;
3. ``nest-restore --model X.nemo --out-dir demo_out/ DEGRADED.wav`` restores the first validation pair (an
   utterance not seen in training);
4. SI-SDR, log-spectral distance and multi-resolution STFT distance of the degraded input and of the restored
   output against the clean file (:func:`nest_ext.metrics.restoration.restoration_metrics`), and the gains.

    nest-restoration-demo                              # what `make demo` runs (python -m nest_ext.cli.restoration_demo)
    nest-restoration-demo trainer.max_epochs=20 model.gan_start_epoch=12   # any train.py override: a longer run
    nest-restoration-demo --data D --exp-dir E --out-dir O trainer.max_epochs=2   # elsewhere (tests)

Exit status 0 when every step worked; a failing step stops the demo with its command named.
"""
from __future__ import annotations

import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the checkout: train.py, config/, demo_data/
CONFIG = "restoration_gan_small"
# Short for `make demo` on 2 cores, long enough to gain: 63 generator-only steps (7 epochs), then 9 G+D steps
DEMO_OVERRIDES = {"trainer.max_epochs": "8", "model.gan_start_epoch": "7"}
NUM_CLEAN = 40  # clean utterances; the validation fraction below keeps 4 for validation
DEMO_DEGRADATIONS = [
    {"type": "reverb", "prob": 0.2, "rt60": [0.2, 0.5]},
    {"type": "noise", "prob": 0.9, "snr_db": [0.0, 15.0]},
    {"type": "bandlimit", "prob": 0.3, "rate": [6000, 10000]},
    {"type": "clipping", "prob": 0.2, "threshold": [0.3, 0.6]},
]


def make_clean_speech(folder: Path, count: int = NUM_CLEAN, sample_rate: int = 16000, seed: int = 0) -> Path:
    """``count`` clean utterances as 16-bit WAVs in ``folder`` (kept when already complete); espeak-ng when installed."""
    import numpy as np

    from nest_ext.cli.synth import speech_like
    from nest_ext.data.audio_io import write_audio
    from nest_ext.cli.espeak import espeak_available, espeak_sentences

    folder.mkdir(parents=True, exist_ok=True)
    if len(list(folder.glob("*.wav"))) >= count:
        return folder
    if espeak_available():
        audio = espeak_sentences(count, sample_rate, seed=seed)
    else:
        audio = [speech_like(2.0, sample_rate, seed=seed + i) for i in range(count)]
    for i, x in enumerate(audio):
        write_audio(str(folder / f"utt{i:03d}.wav"), np.asarray(x, np.float32), sample_rate, subtype="PCM_16")
    return folder


def run_restoration_demo(data: Path, exp_dir: Path, out_dir: Path, overrides=(), num_clean: int = NUM_CLEAN) -> dict:
    """All four steps; returns ``{"model", "degraded", "restored", "clean", "metrics"}`` and prints a summary."""
    import json

    from nest_ext.cli.restore import main as restore_main
    from nest_ext.cli.run_demo import train
    from nest_ext.data.audio_io import load_audio
    from nest_ext.data.restoration_pairs import prepare_restoration_pairs
    from nest_ext.metrics.restoration import restoration_metrics

    data, exp_dir, out_dir = Path(data).resolve(), Path(exp_dir).resolve(), Path(out_dir).resolve()
    clean_dir = make_clean_speech(data / "clean", num_clean)
    pairs = data / "pairs"
    print(f"\n$ nest-prepare-restoration-data --clean {clean_dir} --out-dir {pairs} --val-fraction 0.1 "
          "--degradations <DEMO_DEGRADATIONS> --skip-existing", flush=True)
    prepare_restoration_pairs(str(pairs), clean=str(clean_dir), degradations=DEMO_DEGRADATIONS, val_fraction=0.1,
                              skip_existing=True, progress=False)

    given = {o.split("=", 1)[0].lstrip("+~") for o in overrides}
    overrides = [f"{k}={v}" for k, v in DEMO_OVERRIDES.items() if k not in given] + list(overrides)
    model = train(pairs, exp_dir, overrides, config=CONFIG, demo="restoration demo")

    with open(pairs / "val_manifest.json", encoding="utf-8") as f:
        row = json.loads(f.readline())
    degraded, clean = pairs / row["input_filepath"], pairs / row["target_filepath"]
    cmd = ["--model", str(model), "--out-dir", str(out_dir), "--device", "cpu", "--no-progress", str(degraded)]
    print(f"\n$ nest-restore {shlex.join(cmd)}", flush=True)
    if restore_main(cmd) != 0:
        raise SystemExit(f"restoration demo: restoring {degraded} failed")
    restored = out_dir / f"{degraded.name[:-len(degraded.suffix)]}_restored.wav"

    sr = 16000
    metrics = restoration_metrics(load_audio(str(restored), sr), load_audio(str(clean), sr),
                                  load_audio(str(degraded), sr), sr, extra=())
    applied = ", ".join(d["type"] for d in row["degradations"])
    print(f"\nRestoration demo\n  model      {model}\n  degraded   {degraded} ({applied})\n  restored   {restored}"
          f"\n  {'metric':<22}{'input':>8}{'output':>8}{'gain':>8}")
    for name, label in (("si_sdr", "SI-SDR (dB, higher)"), ("lsd", "LSD (lower)"), ("mr_stft", "MR-STFT dist. (lower)")):
        a, b = metrics[f"{name}_input"], metrics[name]
        print(f"  {label:<22}{a:>8.2f}{b:>8.2f}{b - a:>+8.2f}")
    sys.stdout.flush()
    return {"model": model, "degraded": degraded, "restored": restored, "clean": clean, "metrics": metrics}


def build_parser():
    from nest_ext.cli.conventions import add_out_dir, make_parser

    p = make_parser(__doc__)
    p.add_argument("--data", default=str(ROOT / "demo_data" / "restoration"), help="clean speech and pairs go here")
    p.add_argument("--exp-dir", default=str(ROOT / "nemo_experiments"), help="exp_manager.exp_dir of the run")
    add_out_dir(p, required=False, default=str(ROOT / "demo_out"), help="where the restored file goes")
    p.add_argument("overrides", nargs="*", help="extra Hydra overrides for train.py (key=value)")
    return p


def main(argv=None) -> int:
    from nest_ext.cli.conventions import setup_logging

    args = build_parser().parse_args(argv)
    setup_logging()
    run_restoration_demo(Path(args.data), Path(args.exp_dir), Path(args.out_dir), args.overrides)
    return 0


if __name__ == "__main__":  # python -m nest_ext.cli.restoration_demo
    raise SystemExit(main())
