"""Evaluate a speech restoration model on a manifest of (degraded, clean) pairs: per-utterance metrics of the
degraded input and of the restored output, their means and gains, and an HTML report.

    nest-evaluate-restoration --model MODEL.nemo --manifest test.json --out-dir eval/ [--device cuda]
    python tools/evaluate_restoration.py ...          # the same from a checkout

The manifest is NeMo's audio-to-audio layout (``input_filepath`` degraded, ``target_filepath`` clean), as
``prepare_restoration_data`` writes it; files of another rate are resampled to the model's. Writes into
``--out-dir`` (each file atomically, by :mod:`nest_ext.metrics.report`, shared with the separation evaluation):

* ``metrics.csv``: per utterance, for the output and for the input (``*_input``): SI-SDR (and SI-SDRi),
  log-spectral distance, multi-resolution STFT distance, PESQ (wide band at 16 kHz, narrow band at 8 kHz) and STOI
  when ``pesq`` / ``pystoi`` are installed, DNSMOS when ``speechmos`` is (offline models); ``seconds`` of
  restoration time. Definitions: :mod:`nest_ext.metrics.restoration`.
* ``summary.json``: mean/median/std/min/max of each, ``gains`` (mean output minus mean input; negative is better
  for the distances), skipped entries with their reasons, the metrics not computed.
* ``report.html``: the summary, the best and worst utterances by SI-SDRi with spectrograms of input, output and
  clean reference, and audio players.

The core is :func:`evaluate_restoration`, which takes any ``restore_fn(degraded [T]) -> restored [T]``, so the
identity (``lambda x: x``: every gain 0) or another system is evaluated the same way.
Exit status: 0 when at least one utterance was evaluated, 1 otherwise, 2 on bad arguments.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Callable, Dict, List, Optional, Sequence, Union

import numpy as np

from nest_ext.cli.conventions import (
    EXIT_FAILED, CliError, add_device, add_out_dir, add_progress, error, make_parser, progress, progress_every,
    require_files, resolve_device, setup_logging,
)

logger = logging.getLogger("nest_ext.evaluate_restoration")

RestoreFn = Callable[["torch.Tensor"], Union["torch.Tensor", np.ndarray]]  # noqa: F821
DISTANCES = ("lsd", "mr_stft")  # lower is better


def _example(tag: str, item: tuple):
    from nest_ext.metrics.report import ReportExample

    gain, uid, degraded, restored, clean, rate = item
    signals = [("degraded input", degraded), ("restored output", restored), ("clean reference", clean)]
    return ReportExample(tag, uid, f"SI-SDRi {gain:.2f} dB", signals, rate)


def gains(rows: Sequence[dict], names: Sequence[str]) -> Dict[str, float]:
    """Mean output minus mean input of every metric with an ``_input`` column (distances: negative is better)."""
    from nest_ext.metrics.report import metric_stats

    means = {k: metric_stats([r[k] for r in rows if k in r])["mean"] for k in names}
    return {k: means[k] - means[f"{k}_input"] for k in names if f"{k}_input" in means}


def evaluate_restoration(
    restore_fn: RestoreFn,
    manifest: Union[str, Sequence[str]],
    out_dir: str,
    sample_rate: int,
    max_items: Optional[int] = None,
    extra: Optional[Sequence[str]] = None,
    report: bool = True,
    progress_every_s: Optional[float] = None,
) -> dict:
    """Restore every degraded file of ``manifest`` with ``restore_fn`` at ``sample_rate`` and score it against
    its clean file; returns the summary (also written to ``out_dir``), with ``gains``.

    ``extra``: optional metrics to compute (``pesq``, ``stoi``, ``dnsmos``; default every installed one).
    Unreadable or mismatched entries are skipped with their reason in ``summary["skipped"]``.
    """
    import torch

    from nest_ext.data.audio_io import load_audio
    from nest_ext.data.separation_dataset import load_separation_manifest
    from nest_ext.metrics.report import BestWorst, write_evaluation
    from nest_ext.metrics.restoration import (
        RESTORATION_LABELS, available_restoration_extras, restoration_metric_names, restoration_metrics,
    )

    examples, problems = load_separation_manifest(manifest, num_spks=1, on_bad_audio="skip")
    skipped: List[Dict[str, str]] = [{"where": p.split(": ", 1)[0], "reason": p.split(": ", 1)[-1]} for p in problems]
    examples = examples[:max_items] if max_items is not None else examples
    installed = available_restoration_extras()
    extra = installed if extra is None else [e for e in extra if e in installed]
    rows, extremes = [], BestWorst()
    bar = progress(progress_every_s, len(examples), "evaluating", unit="utt", logger=logger)
    for ex in examples:
        bar.update(1)
        try:
            degraded = load_audio(ex.input_filepath, sample_rate)
            clean = load_audio(ex.target_filepaths[0], sample_rate)
            if degraded.shape != clean.shape:
                raise ValueError(f"degraded and clean differ in length ({degraded.shape[0]} vs {clean.shape[0]})")
        except ValueError as e:  # BadAudioError included: report it, evaluate the rest
            logger.warning("skipping %s: %s", ex.where, e)
            skipped.append({"where": ex.where, "reason": str(e)})
            continue
        start = time.perf_counter()
        with torch.no_grad():
            restored = torch.as_tensor(restore_fn(torch.from_numpy(degraded)), dtype=torch.float32).cpu().reshape(-1)
        seconds = time.perf_counter() - start
        if restored.shape[0] != clean.shape[0]:
            raise ValueError(f"{ex.where}: restore_fn returned {restored.shape[0]} samples for {clean.shape[0]}")
        m = restoration_metrics(restored, clean, degraded, sample_rate, extra=extra)
        uid = os.path.splitext(os.path.basename(ex.input_filepath))[0]
        rows.append({"id": uid, "input_filepath": ex.input_filepath, "duration": round(len(clean) / sample_rate, 4),
                     **m, "seconds": round(seconds, 4)})
        extremes.add(m["si_sdr_i"], (m["si_sdr_i"], uid, degraded, restored.numpy(), clean, sample_rate))
    bar.close()
    names = restoration_metric_names(extra, sample_rate)
    shown = [_example(tag, item) for tag, item in (("best", extremes.best), ("worst", extremes.worst)) if item]
    unavailable = [k for k in ("pesq", "stoi", "dnsmos") if k not in installed]
    summary = write_evaluation(
        out_dir, rows, names, manifest=manifest, skipped=skipped, unavailable=unavailable, extra_columns=["seconds"],
        report=report, title="Speech restoration evaluation", rank_by="si_sdr_i", examples=shown,
        labels=RESTORATION_LABELS, extra_summary={"sample_rate": sample_rate, "gains": gains(rows, names)},
    )
    return summary


def format_gains(summary: dict) -> str:
    """One line per metric: input -> output (gain), in the order of the summary."""
    lines = [f"{'metric':<14}{'input':>10}{'output':>10}{'gain':>10}"]
    for name, gain in summary["gains"].items():
        better = "lower is better" if name in DISTANCES else ""
        lines.append(f"{name:<14}{summary['metrics'][f'{name}_input']['mean']:>10.3f}"
                     f"{summary['metrics'][name]['mean']:>10.3f}{gain:>+10.3f}  {better}".rstrip())
    return "\n".join(lines)


def build_parser():
    p = make_parser(__doc__)
    p.add_argument("--model", required=True, metavar="NEMO", help="RestorationGANModel .nemo file")
    p.add_argument("--manifest", required=True, metavar="JSON", help="pairs: input_filepath (degraded), "
                                                                     "target_filepath (clean)")
    add_out_dir(p, "--out", help="output folder: metrics.csv, summary.json, report.html")
    p.add_argument("--chunk-seconds", type=float, default=30.0, metavar="S",
                   help="restore in overlapping windows of S seconds (default 30; 0: one pass)")
    p.add_argument("--max-items", type=int, default=None, metavar="N", help="evaluate the first N entries only")
    p.add_argument("--no-extra-metrics", action="store_true", help="no PESQ/STOI/DNSMOS even when installed")
    add_device(p)
    add_progress(p, unit="utterances")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    try:
        require_files(args.model, args.manifest)
        device = resolve_device(args.device)
    except CliError as e:
        return error(e.message, e.code)
    from nest_ext.cli.restore import load_restoration_model
    from nest_ext.metrics.report import format_summary

    model = load_restoration_model(args.model, device)
    summary = evaluate_restoration(
        lambda x: model.restore(x, chunk_seconds=args.chunk_seconds or None), args.manifest, args.out_dir,
        int(model.sample_rate), max_items=args.max_items, extra=[] if args.no_extra_metrics else None,
        progress_every_s=progress_every(args),
    )
    print(format_summary(summary))
    print(format_gains(summary))
    print(f"wrote {os.path.join(args.out_dir, 'metrics.csv')}, summary.json, report.html", flush=True)
    return 0 if summary["num_evaluated"] else EXIT_FAILED


if __name__ == "__main__":  # python -m nest_ext.cli.evaluate_restoration
    raise SystemExit(main())
