#!/usr/bin/env python
"""Evaluate a speech separation model on a manifest: per-utterance metrics, summary, HTML report.

    python tools/evaluate_separation.py --model MODEL.nemo --manifest tt.json --out eval_dir [--device cuda]

Writes into ``--out`` (each file atomically):

* ``metrics.csv``: one row per utterance: ``id, input_filepath, duration, si_sdr, si_sdr_i, sdr, sdr_i
  [, pesq, stoi], perm, seconds`` (metrics of ``nest_ext.parts.separation_metrics``: estimates
  aligned to references with torchmetrics' PIT on SI-SDR; PESQ/STOI only when ``pesq``/``pystoi``
  are installed).
* ``summary.json``: count, mean/median/std/min/max of every metric, skipped entries with reasons.
* ``report.html``: the summary, the best and worst utterances, an SI-SDRi histogram and
  spectrograms of the best/worst utterance (PNG, when matplotlib is installed; otherwise the report
  says so and has no images).

The core is :func:`evaluate`, which takes any ``separate_fn(mixture [T]) -> estimates [S, T]``, so it
also evaluates oracle or baseline separators, e.g. the "mixture as every estimate" baseline::

    summary = evaluate(lambda mix: mix.expand(2, -1), "tt.json", "eval_mixture_baseline", sample_rate=8000)
    summary["metrics"]["si_sdr_i"]["mean"]   # 0.0 by definition
"""
from __future__ import annotations

import argparse
import csv
import html
import io
import json
import logging
import math
import os
import statistics
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence, Union

import numpy as np
import torch

try:
    import nest_ext  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from nest_ext.data.audio_io import load_audio, read_audio_info
from nest_ext.data.separation_dataset import load_separation_manifest
from nest_ext.parts.atomic_io import atomic_write
from nest_ext.parts.separation_metrics import SEPARATION_METRIC_NAMES, available_extra_metrics, separation_metrics

logger = logging.getLogger("evaluate_separation")

SeparateFn = Callable[[torch.Tensor], Union[torch.Tensor, np.ndarray]]


def _read(path: str, sample_rate: Optional[int]) -> tuple:
    """``(audio [T], rate)``: mono, at ``sample_rate`` (the file's own rate when None), read and resampled
    as tools/separate.py reads its inputs."""
    rate = sample_rate or read_audio_info(path).samplerate
    return load_audio(path, rate), rate


def _fit_length(est: torch.Tensor, length: int) -> torch.Tensor:
    if est.shape[-1] >= length:
        return est[..., :length]
    return torch.nn.functional.pad(est, (0, length - est.shape[-1]))


def _stats(values: Sequence[float]) -> Dict[str, float]:
    vals = [v for v in values if not math.isnan(v)]
    if not vals:
        return {"mean": float("nan"), "median": float("nan"), "std": float("nan"), "min": float("nan"), "max": float("nan"), "count": 0}
    return {
        "mean": float(statistics.fmean(vals)),
        "median": float(statistics.median(vals)),
        "std": float(statistics.pstdev(vals)),
        "min": float(min(vals)),
        "max": float(max(vals)),
        "count": len(vals),
    }


def evaluate(
    separate_fn: SeparateFn,
    manifest: Union[str, Sequence[str]],
    out_dir: str,
    sample_rate: Optional[int] = None,
    num_spks: Optional[int] = None,
    max_items: Optional[int] = None,
    extra_metrics: bool = True,
    report: bool = True,
    input_key: str = "input_filepath",
    target_key: str = "target_filepath",
) -> dict:
    """Separate every manifest mixture with ``separate_fn`` and score it; returns the summary dict.

    Args:
        separate_fn: ``mixture [T] float32 tensor -> estimates [S, T']``; ``T'`` is cut or zero-padded to ``T``.
        manifest: NeMo audio-to-audio manifest(s) (``input_filepath`` mixture, ``target_filepath`` sources).
        out_dir: where ``metrics.csv``, ``summary.json`` and ``report.html`` go (created).
        sample_rate: the separator's rate; files of another rate are resampled (soxr HQ, as separate.py does).
            ``None``: use each file's own rate.
        num_spks: expected number of sources per entry (others are skipped and reported).
        max_items: evaluate only the first N entries.
        extra_metrics: PESQ/STOI when their packages are importable.
        report: write the HTML report (and PNGs when matplotlib is importable).

    Unreadable/mismatched entries are skipped with the reason in ``summary["skipped"]``; a separator
    that returns the wrong number of sources raises ``ValueError``.
    """
    os.makedirs(out_dir, exist_ok=True)
    examples, problems = load_separation_manifest(
        manifest, num_spks=num_spks, input_key=input_key, target_key=target_key, on_bad_audio="skip"
    )
    skipped: List[Dict[str, str]] = [{"where": p.split(": ", 1)[0], "reason": p.split(": ", 1)[-1]} for p in problems]
    if max_items is not None:
        examples = examples[:max_items]
    extras = available_extra_metrics() if extra_metrics else []
    rows: List[dict] = []
    best = worst = None  # (si_sdr_i, signals) of the best and worst utterance, kept for the report
    for ex in examples:
        try:
            mixture, rate = _read(ex.input_filepath, sample_rate)
            refs = [_read(p, sample_rate)[0] for p in ex.target_filepaths]
            lengths = {len(mixture)} | {len(r) for r in refs}
            if len(lengths) != 1:
                raise ValueError(f"mixture and sources differ in length ({sorted(lengths)})")
        except Exception as e:  # bad file: report it, evaluate the rest
            logger.warning("skipping %s: %s", ex.where, e)
            skipped.append({"where": ex.where, "reason": str(e)})
            continue
        mix_t = torch.from_numpy(mixture)
        ref_t = torch.from_numpy(np.stack(refs))
        start = time.perf_counter()
        with torch.no_grad():
            est = separate_fn(mix_t)
        seconds = time.perf_counter() - start
        est = torch.as_tensor(est, dtype=torch.float32).detach().cpu()
        if est.ndim == 3 and est.shape[0] == 1:
            est = est[0]
        if est.ndim != 2 or est.shape[0] != ref_t.shape[0]:
            raise ValueError(f"{ex.where}: separate_fn returned shape {tuple(est.shape)}, expected [{ref_t.shape[0]}, T]")
        est = _fit_length(est, ref_t.shape[-1])
        m = separation_metrics(est, ref_t, mix_t, sample_rate=rate, extra=bool(extras))
        row = {
            "id": os.path.splitext(os.path.basename(ex.input_filepath))[0],
            "input_filepath": ex.input_filepath,
            "duration": round(len(mixture) / rate, 4),
        }
        row.update({k: m[k] for k in SEPARATION_METRIC_NAMES})
        row.update({k: m[k] for k in extras if k in m})
        row["perm"] = " ".join(str(p) for p in m["perm"])
        row["seconds"] = round(seconds, 4)
        rows.append(row)
        signals = (m["si_sdr_i"], row["id"], mixture, np.stack(refs), est.numpy(), m["perm"], rate)
        if best is None or m["si_sdr_i"] > best[0]:
            best = signals
        if worst is None or m["si_sdr_i"] < worst[0]:
            worst = signals

    metric_names = list(SEPARATION_METRIC_NAMES) + [k for k in extras if rows and k in rows[0]]
    fields = ["id", "input_filepath", "duration"] + metric_names + ["perm", "seconds"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in row.items()})
    atomic_write(os.path.join(out_dir, "metrics.csv"), buf.getvalue())

    total_audio = sum(r["duration"] for r in rows)
    summary = {
        "manifest": manifest if isinstance(manifest, str) else list(manifest),
        "num_evaluated": len(rows),
        "num_skipped": len(skipped),
        "metrics": {k: _stats([r[k] for r in rows]) for k in metric_names},
        "real_time_factor": (sum(r["seconds"] for r in rows) / total_audio) if total_audio else None,
        "skipped": skipped,
        "extra_metrics_unavailable": [k for k in ("pesq", "stoi") if k not in available_extra_metrics()],
    }
    atomic_write(os.path.join(out_dir, "summary.json"), json.dumps(summary, indent=1) + "\n")
    if report:
        summary["report"] = write_html_report(out_dir, rows, summary, best, worst)
    return summary


def format_summary(summary: dict) -> str:
    """Plain-text table of the summary (what the command line prints)."""
    lines = [f"evaluated {summary['num_evaluated']} utterance(s), skipped {summary['num_skipped']}"]
    lines.append(f"{'metric':<10}{'mean':>10}{'median':>10}{'std':>10}")
    for name, s in summary["metrics"].items():
        lines.append(f"{name:<10}{s['mean']:>10.2f}{s['median']:>10.2f}{s['std']:>10.2f}")
    if summary.get("real_time_factor") is not None:
        lines.append(f"real-time factor {summary['real_time_factor']:.3f}")
    return "\n".join(lines)


def _spectrogram_db(x: np.ndarray, rate: int) -> np.ndarray:
    from scipy.signal import stft

    n = 256 if rate <= 8000 else 512
    _, _, z = stft(x, fs=rate, nperseg=n, noverlap=n * 3 // 4)
    return 20 * np.log10(np.abs(z) + 1e-8)


def _plots(out_dir: str, rows: List[dict], best, worst) -> List[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist([r["si_sdr_i"] for r in rows], bins=min(40, max(5, len(rows) // 2)), color="#4472c4")
    ax.set_xlabel("SI-SDRi (dB)")
    ax.set_ylabel("utterances")
    ax.set_title("SI-SDR improvement per utterance")
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "si_sdr_i_hist.png"), dpi=100)
    plt.close(fig)
    files.append("si_sdr_i_hist.png")
    for tag, item in (("best", best), ("worst", worst)):
        si_sdr_i, uid, mixture, refs, est, perm, rate = item
        panels = [("mixture", mixture)] + [(f"reference s{k + 1}", r) for k, r in enumerate(refs)]
        panels += [(f"estimate for s{k + 1}", est[p]) for k, p in enumerate(perm)]
        fig, axes = plt.subplots(len(panels), 1, figsize=(7, 1.6 * len(panels)), sharex=True)
        for ax, (title, sig) in zip(np.atleast_1d(axes), panels):
            spec = _spectrogram_db(sig, rate)
            vmax = spec.max()
            ax.imshow(spec, origin="lower", aspect="auto", vmin=vmax - 80, vmax=vmax, cmap="magma",
                      extent=(0, len(sig) / rate, 0, rate / 2000))
            ax.set_ylabel("kHz")
            ax.set_title(title, fontsize=9)
        np.atleast_1d(axes)[-1].set_xlabel("seconds")
        fig.suptitle(f"{tag}: {uid} (SI-SDRi {si_sdr_i:.2f} dB)", fontsize=10)
        fig.tight_layout()
        name = f"spectrogram_{tag}.png"
        fig.savefig(os.path.join(out_dir, name), dpi=90)
        plt.close(fig)
        files.append(name)
    return files


def write_html_report(out_dir: str, rows: List[dict], summary: dict, best=None, worst=None) -> str:
    """``report.html`` with the summary, best/worst utterances and the PNGs (when matplotlib is importable)."""
    images: List[str] = []
    note = ""
    if rows:
        try:
            images = _plots(out_dir, rows, best, worst)
        except ImportError:
            note = "matplotlib is not installed: this report has no images (pip install matplotlib for the histogram and spectrograms)."
    esc = html.escape
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>Separation evaluation</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}td:first-child{text-align:left}</style></head><body>",
        f"<h1>Separation evaluation</h1><p>Manifest: {esc(str(summary['manifest']))}<br>"
        f"Evaluated {summary['num_evaluated']} utterance(s), skipped {summary['num_skipped']}.</p>",
        "<h2>Summary</h2><table><tr><th>metric</th><th>mean</th><th>median</th><th>std</th><th>min</th><th>max</th></tr>",
    ]
    for name, s in summary["metrics"].items():
        parts.append(
            f"<tr><td>{esc(name)}</td>" + "".join(f"<td>{s[k]:.2f}</td>" for k in ("mean", "median", "std", "min", "max")) + "</tr>"
        )
    parts.append("</table>")
    if summary.get("extra_metrics_unavailable"):
        parts.append(f"<p>Not computed (package not installed): {esc(', '.join(summary['extra_metrics_unavailable']))}.</p>")
    if note:
        parts.append(f"<p class='note'><b>{esc(note)}</b></p>")
    for img in images:
        parts.append(f"<p><img src='{esc(img)}' alt='{esc(img)}'></p>")
    ranked = sorted(rows, key=lambda r: r["si_sdr_i"])
    for title, subset in (("Worst utterances", ranked[:10]), ("Best utterances", ranked[::-1][:10])):
        parts.append(f"<h2>{title}</h2><table><tr><th>id</th><th>SI-SDRi</th><th>SI-SDR</th><th>SDRi</th><th>seconds</th></tr>")
        for r in subset:
            parts.append(
                f"<tr><td>{esc(r['id'])}</td><td>{r['si_sdr_i']:.2f}</td><td>{r['si_sdr']:.2f}</td>"
                f"<td>{r['sdr_i']:.2f}</td><td>{r['duration']:.2f}</td></tr>"
            )
        parts.append("</table>")
    if summary["skipped"]:
        parts.append("<h2>Skipped</h2><ul>")
        parts.extend(f"<li>{esc(s['where'])}: {esc(s['reason'])}</li>" for s in summary["skipped"])
        parts.append("</ul>")
    parts.append("<p>Per-utterance numbers: <a href='metrics.csv'>metrics.csv</a>, summary: <a href='summary.json'>summary.json</a>.</p></body></html>\n")
    path = os.path.join(out_dir, "report.html")
    atomic_write(path, "\n".join(parts))
    return path


def model_separate_fn(model_path: str, device: str = "cpu", chunk_seconds: Optional[float] = None):
    """``(separate_fn, sample_rate, num_spks)`` of a ``MossFormer2SeparationModel`` ``.nemo`` file."""
    from nest_ext.models import MossFormer2SeparationModel

    model = MossFormer2SeparationModel.restore_from(model_path, map_location=torch.device(device))
    model.eval()

    def separate(mixture: torch.Tensor) -> torch.Tensor:
        return model.separate(mixture.to(device), chunk_seconds=chunk_seconds)

    return separate, int(model.sample_rate), int(model.num_spks)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Evaluate a separation model: metrics CSV, summary JSON, HTML report")
    parser.add_argument("--model", required=True, help="MossFormer2SeparationModel .nemo file")
    parser.add_argument("--manifest", required=True, help="test manifest (input_filepath / target_filepath)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--chunk-seconds", type=float, default=None, help="chunked inference for long inputs")
    parser.add_argument("--max-items", type=int, default=None)
    parser.add_argument("--no-extra-metrics", action="store_true", help="skip PESQ/STOI even when installed")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    separate, rate, spks = model_separate_fn(args.model, args.device, args.chunk_seconds)
    summary = evaluate(
        separate, args.manifest, args.out, sample_rate=rate, num_spks=spks,
        max_items=args.max_items, extra_metrics=not args.no_extra_metrics,
    )
    print(format_summary(summary))
    print(f"wrote {os.path.join(args.out, 'metrics.csv')}, summary.json, report.html")
    return 0 if summary["num_evaluated"] else 1


if __name__ == "__main__":
    sys.exit(main())
