"""The MossFormer2 part of ``make demo``: train the tiny separation model briefly, separate a mixture, score it.

Three steps, each command printed so it can be rerun by hand:

1. ``python train.py --config-name mossformer2_demo model.train_ds.manifest_filepath=... ...`` trains the
   tiny MossFormer2 (config/mossformer2_demo.yaml: 160 steps) on the synthetic two-speaker set that
   ``nest-make-demo-data`` (``tools/make_demo_data.py``) writes to ``demo_data/separation/`` (made here if missing), and prints the
   ``.nemo``. A second run resumes, finds max_steps reached and only re-saves the ``.nemo``.
2. ``python -m nest_ext.cli.separate --model X.nemo --out-dir demo_out/ MIX.wav`` (``nest-separate``) separates the first
   validation mixture (not seen in training) into ``demo_out/<name>_s1.wav`` and ``_s2.wav``.
3. SI-SDR and SI-SDRi of those files against the mixture's own sources
   (:func:`nest_ext.metrics.separation_metrics`, speakers matched by PIT).

    nest-run-demo                                             # what `make demo` runs (python tools/run_demo.py)
    nest-run-demo trainer.max_steps=200                       # any train.py override: a longer run
    nest-run-demo --data D --exp-dir E --out-dir O trainer.max_steps=2   # elsewhere (tests)

Exit status 0 when all three steps worked; a failing step stops the demo with its command named.
"""
from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

from nest_ext.cli.conventions import add_out_dir, make_parser, setup_logging
from nest_ext.cli.make_demo_data import make_separation_demo_data

ROOT = Path(__file__).resolve().parents[2]  # the checkout: train.py, config/, demo_data/
NEMO_LINE = "Trained model (.nemo):"


def run_step(cmd: list[str], what: str) -> str:
    """Run ``cmd``, echoing its output as it comes; return stdout+stderr. Exits naming ``what`` on failure."""
    print(f"\n$ {shlex.join(cmd)}", flush=True)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    lines = []
    for line in proc.stdout:
        sys.stdout.write(line)
        lines.append(line)
    if proc.wait() != 0:
        raise SystemExit(f"separation demo: {what} failed (exit status {proc.returncode}): {shlex.join(cmd)}")
    return "".join(lines)


def train(data: Path, exp_dir: Path, overrides=()) -> Path:
    """Step 1: train on ``data``'s manifests; the ``.nemo`` path that train.py printed."""
    cmd = [
        sys.executable, str(ROOT / "train.py"), "--config-name", "mossformer2_demo",
        f"model.train_ds.manifest_filepath={data / 'train_manifest.json'}",
        f"model.validation_ds.manifest_filepath={data / 'val_manifest.json'}",
        f"exp_manager.exp_dir={exp_dir}",
        *overrides,
    ]
    out = run_step(cmd, "training")
    found = [line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith(NEMO_LINE)]
    if not found:
        raise SystemExit(f"separation demo: train.py finished without printing '{NEMO_LINE} PATH'")
    return Path(found[-1])


def separate(model: Path, mixture: Path, out_dir: Path) -> list[Path]:
    """Step 2: the separate command on ``mixture``; the files it wrote (``<stem>_s1.wav`` ...)."""
    run_step([sys.executable, "-m", "nest_ext.cli.separate", "--model", str(model), "--out-dir", str(out_dir),
              str(mixture)], "separation")
    written = sorted(out_dir.glob(f"{mixture.stem}_s*.wav"))
    if not written:
        raise SystemExit(f"separation demo: the separate command wrote nothing for {mixture} into {out_dir}")
    return written


def score(estimate_files, source_files, mixture_file) -> dict:
    """Step 3: :func:`separation_metrics` of the separated files (``[S, T]``) against the sources."""
    import soundfile as sf
    import torch

    from nest_ext.metrics import separation_metrics

    def read(path):
        audio, rate = sf.read(str(path), dtype="float32")
        return torch.from_numpy(audio), rate

    mix, rate = read(mixture_file)
    refs = torch.stack([read(p)[0] for p in source_files])
    est = torch.stack([read(p)[0] for p in estimate_files])
    if est.shape != refs.shape:
        raise SystemExit(f"separation demo: separated {tuple(est.shape)} and sources {tuple(refs.shape)} differ")
    return separation_metrics(est, refs, mix, sample_rate=rate, extra=False)


def run_demo(data: Path, exp_dir: Path, out_dir: Path, overrides=()) -> dict:
    """All three steps; returns ``{"model", "mixture", "separated", "metrics"}`` and prints a summary."""
    data, exp_dir, out_dir = Path(data).resolve(), Path(exp_dir).resolve(), Path(out_dir).resolve()
    make_separation_demo_data(data)  # no-op when complete
    with open(data / "val_manifest.json", encoding="utf-8") as f:
        row = json.loads(f.readline())
    mixture = data / row["input_filepath"]
    sources = [data / p for p in row["target_filepath"]]

    model = train(data, exp_dir, overrides)
    separated = separate(model, mixture, out_dir)
    metrics = score(separated, sources, mixture)
    print(
        "\nSeparation demo"
        f"\n  model      {model}"
        f"\n  mixture    {mixture}"
        f"\n  separated  {', '.join(str(p) for p in separated)}"
        f"\n  SI-SDRi    {metrics['si_sdr_i']:.2f} dB (SI-SDR {metrics['si_sdr']:.2f} dB of the separated "
        f"sources, {metrics['si_sdr'] - metrics['si_sdr_i']:.2f} dB of the mixture)",
        flush=True,
    )
    return {"model": model, "mixture": mixture, "separated": separated, "metrics": metrics}


def build_parser():
    p = make_parser(__doc__)
    p.add_argument("--data", default=str(ROOT / "demo_data" / "separation"), metavar="DIR",
                   help="separation demo set (made there when missing; default demo_data/separation)")
    p.add_argument("--exp-dir", default=str(ROOT / "nemo_experiments"), metavar="DIR",
                   help="exp_manager.exp_dir of the run (default nemo_experiments/)")
    add_out_dir(p, required=False, default=str(ROOT / "demo_out"),
                help="where the separated files go (default demo_out/)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="extra Hydra overrides for train.py")
    return p


def main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    setup_logging()
    run_demo(Path(a.data), Path(a.exp_dir), Path(a.out_dir), a.overrides)
    return 0


if __name__ == "__main__":  # python -m nest_ext.cli.run_demo
    raise SystemExit(main())
