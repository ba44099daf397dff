"""Evaluation outputs: per-utterance CSV, summary JSON, an HTML report with tables, spectrograms and audio players.

Shared by the separation evaluation (``tools/evaluate_separation.py``) and the speech-restoration evaluation,
and specific to neither: an evaluation hands over one row per utterance and, for the utterances it wants
shown in full (e.g. the best and the worst), :class:`ReportExample`s with the signals to draw and play.

Rows are dicts with ``id``, ``input_filepath``, ``duration`` (seconds), one float per metric, and any
extra columns the evaluation names (``perm``, ``seconds`` of processing time, ...). :func:`write_evaluation`
writes into the output folder, each file atomically:

* ``metrics.csv``: one row per utterance: ``id, input_filepath, duration``, the metrics, the extra columns
  (floats with 4 decimals);
* ``summary.json``: manifest, counts, mean/median/std/min/max/count of every metric (NaNs left out of the
  statistics), the real-time factor (processing seconds / audio seconds, when rows have ``seconds``), the
  skipped entries with their reasons, and the metrics not computed because their package is missing;
* ``report.html`` (``report=True``): the summary, a histogram of the ranking metric, the worst and best
  utterances by that metric (all utterances when there are few), and per example a spectrogram image and
  audio players (``audio/<tag>_<k>.wav``, 16-bit PCM that every browser plays, scaled down only where it
  would clip). Images need matplotlib; without it the report says so and has none.

The ranking metric (``rank_by``) is one where higher is better (SI-SDRi, SI-SDR, PESQ).

Example:
    >>> import os, tempfile
    >>> rows = [{"id": f"u{i}", "input_filepath": f"u{i}.wav", "duration": 2.0, "si_sdr": float(i), "seconds": 0.5}
    ...         for i in range(3)]
    >>> out = tempfile.mkdtemp()
    >>> summary = write_evaluation(out, rows, ["si_sdr"], manifest="tt.json", extra_columns=["seconds"], report=False)
    >>> summary["num_evaluated"], summary["metrics"]["si_sdr"]["mean"], summary["real_time_factor"]
    (3, 1.0, 0.25)
    >>> sorted(os.listdir(out)), open(os.path.join(out, "metrics.csv")).readline().strip()
    (['metrics.csv', 'summary.json'], 'id,input_filepath,duration,si_sdr,seconds')
"""
from __future__ import annotations

import csv
import html
import io
import json
import math
import os
import statistics
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from nest_ext.parts.atomic_io import atomic_path, atomic_write

__all__ = [
    "METRIC_LABELS",
    "BestWorst",
    "ReportExample",
    "format_summary",
    "metric_stats",
    "write_csv",
    "write_evaluation",
    "write_html_report",
]

# Headings of the metrics the project computes; an evaluation may pass more (or others) as ``labels``.
METRIC_LABELS = {
    "si_sdr": "SI-SDR (dB)",
    "si_sdr_i": "SI-SDRi (dB)",
    "sdr": "SDR (dB)",
    "sdr_i": "SDRi (dB)",
    "pesq": "PESQ",
    "stoi": "STOI",
}
LEADING_COLUMNS = ("id", "input_filepath", "duration")


@dataclass(frozen=True)
class ReportExample:
    """One utterance shown in full: a spectrogram panel and an audio player per signal.

    ``tag`` names its files (``spectrogram_<tag>.png``, ``audio/<tag>_<k>.wav``); ``signals`` are
    ``(title, [T] array)`` pairs in display order, e.g. mixture, references, estimates.
    """

    tag: str
    uid: str
    caption: str
    signals: Sequence[Tuple[str, np.ndarray]]
    sample_rate: int


class BestWorst:
    """Keeps what goes with the highest and the lowest score seen (NaN scores are ignored).

    Example:
        >>> keep = BestWorst()
        >>> for score, name in [(1.0, "a"), (3.0, "b"), (float("nan"), "c"), (-2.0, "d")]:
        ...     keep.add(score, name)
        >>> keep.best, keep.worst
        ('b', 'd')
    """

    def __init__(self):
        self._best: Optional[Tuple[float, Any]] = None
        self._worst: Optional[Tuple[float, Any]] = None

    def add(self, score: float, item: Any) -> None:
        if math.isnan(score):
            return
        if self._best is None or score > self._best[0]:
            self._best = (score, item)
        if self._worst is None or score < self._worst[0]:
            self._worst = (score, item)

    @property
    def best(self) -> Any:
        return None if self._best is None else self._best[1]

    @property
    def worst(self) -> Any:
        return None if self._worst is None else self._worst[1]


def metric_stats(values: Sequence[float]) -> Dict[str, float]:
    """``mean, median, std`` (population), ``min, max`` and ``count`` of the non-NaN values."""
    vals = [float(v) for v in values if not math.isnan(v)]
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


def write_csv(path: str, rows: Sequence[Mapping[str, Any]], fields: Sequence[str]) -> None:
    """``rows`` as CSV with the header ``fields`` (floats with 4 decimals), written atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fields), lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in row.items()})
    atomic_write(path, buf.getvalue())


def write_evaluation(
    out_dir: str,
    rows: Sequence[Mapping[str, Any]],
    metric_names: Sequence[str],
    *,
    manifest: Union[str, Sequence[str]],
    skipped: Sequence[Mapping[str, str]] = (),
    unavailable: Sequence[str] = (),
    extra_columns: Sequence[str] = (),
    report: bool = True,
    title: str = "Evaluation",
    rank_by: Optional[str] = None,
    examples: Sequence[ReportExample] = (),
    labels: Optional[Mapping[str, str]] = None,
) -> dict:
    """Write ``metrics.csv``, ``summary.json`` and (``report``) ``report.html`` into ``out_dir``; return the summary.

    Args:
        rows: one dict per utterance (see the module docstring).
        metric_names: the metric columns, in order.
        manifest: what was evaluated (recorded in the summary).
        skipped: ``{"where": ..., "reason": ...}`` per entry that was not evaluated.
        unavailable: metrics not computed because their package is missing.
        extra_columns: columns after the metrics in the CSV.
        rank_by: the metric that orders utterances in the report (default: the first).
        examples: utterances shown in full in the report.
        labels: headings for metric names beyond :data:`METRIC_LABELS`.

    The returned summary is the JSON's content, plus ``report`` (the HTML path) when one was written.
    """
    os.makedirs(out_dir, exist_ok=True)
    write_csv(os.path.join(out_dir, "metrics.csv"), rows, [*LEADING_COLUMNS, *metric_names, *extra_columns])
    timed = [r for r in rows if "seconds" in r]
    audio_seconds = sum(r["duration"] for r in timed)
    summary = {
        "manifest": manifest if isinstance(manifest, str) else list(manifest),
        "num_evaluated": len(rows),
        "num_skipped": len(skipped),
        "metrics": {k: metric_stats([r[k] for r in rows if k in r]) for k in metric_names},
        "real_time_factor": (sum(r["seconds"] for r in timed) / audio_seconds) if audio_seconds else None,
        "skipped": [dict(s) for s in skipped],
        "extra_metrics_unavailable": list(unavailable),
    }
    atomic_write(os.path.join(out_dir, "summary.json"), json.dumps(summary, indent=1) + "\n")
    if report:
        summary["report"] = write_html_report(
            out_dir, rows, summary, title=title, rank_by=rank_by, examples=examples, labels=labels
        )
    return summary


def format_summary(summary: dict) -> str:
    """Plain-text table of a summary (what the evaluation commands print)."""
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


def _save_figure(fig, path: str, dpi: int) -> None:
    import matplotlib.pyplot as plt

    with atomic_path(path, suffix=".png") as tmp:  # matplotlib picks the format from the suffix
        fig.savefig(tmp, dpi=dpi)
    plt.close(fig)


def _plots(
    out_dir: str, values: Sequence[float], rank_by: str, rank_label: str, examples: Sequence[ReportExample]
) -> Tuple[Optional[str], Dict[str, str]]:
    """PNG files: ``<rank_by>_hist.png`` (None without values) and a spectrogram figure per example tag."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hist, files = None, {}
    values = [v for v in values if not math.isnan(v)]
    if values:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.hist(values, bins=min(40, max(5, len(values) // 2)), color="#4472c4")
        ax.set_xlabel(rank_label)
        ax.set_ylabel("utterances")
        ax.set_title(f"{rank_label} per utterance")
        fig.tight_layout()
        hist = f"{rank_by}_hist.png"
        _save_figure(fig, os.path.join(out_dir, hist), dpi=100)
    for ex in examples:
        fig, axes = plt.subplots(len(ex.signals), 1, figsize=(7, 1.6 * len(ex.signals)), sharex=True)
        for ax, (name, sig) in zip(np.atleast_1d(axes), ex.signals):
            spec = _spectrogram_db(np.asarray(sig, dtype=np.float64), ex.sample_rate)
            vmax = spec.max()
            ax.imshow(spec, origin="lower", aspect="auto", vmin=vmax - 80, vmax=vmax, cmap="magma",
                      extent=(0, len(sig) / ex.sample_rate, 0, ex.sample_rate / 2000))
            ax.set_ylabel("kHz")
            ax.set_title(name, fontsize=9)
        np.atleast_1d(axes)[-1].set_xlabel("seconds")
        fig.suptitle(f"{ex.tag}: {ex.uid} ({ex.caption})", fontsize=10)
        fig.tight_layout()
        files[ex.tag] = f"spectrogram_{ex.tag}.png"
        _save_figure(fig, os.path.join(out_dir, files[ex.tag]), dpi=90)
    return hist, files


def _write_audio(out_dir: str, ex: ReportExample) -> List[Tuple[str, str]]:
    """``audio/<tag>_<k>.wav`` per signal of ``ex``; ``(title, relative path)`` pairs."""
    import soundfile as sf

    players = []
    for k, (name, sig) in enumerate(ex.signals):
        sig = np.asarray(sig, dtype=np.float32)
        peak = float(np.abs(sig).max()) if sig.size else 0.0
        if peak > 1.0:  # 16-bit PCM clips above full scale; quieter signals keep their level for comparison
            sig = sig / peak
        rel = f"audio/{ex.tag}_{k}.wav"
        with atomic_path(os.path.join(out_dir, rel), suffix=".wav") as tmp:
            sf.write(tmp, sig, ex.sample_rate, subtype="PCM_16")
        players.append((name, rel))
    return players


def write_html_report(
    out_dir: str,
    rows: Sequence[Mapping[str, Any]],
    summary: dict,
    *,
    title: str = "Evaluation",
    rank_by: Optional[str] = None,
    examples: Sequence[ReportExample] = (),
    labels: Optional[Mapping[str, str]] = None,
    table_rows: int = 10,
    audio: bool = True,
) -> str:
    """``report.html`` (see the module docstring); returns its path.

    ``table_rows``: utterances in each of the worst and best tables (all of them in one table when there are
    at most twice as many); ``audio``: write the examples' audio players.
    """
    labels = {**METRIC_LABELS, **(labels or {})}
    metric_names = list(summary["metrics"])
    rank_by = rank_by or (metric_names[0] if metric_names else None)
    esc = html.escape
    hist, images = None, {}
    note = ""
    if rows and rank_by:
        try:
            values = [r.get(rank_by, math.nan) for r in rows]
            hist, images = _plots(out_dir, values, rank_by, labels.get(rank_by, rank_by), examples)
        except ImportError:
            note = "matplotlib is not installed: this report has no images (pip install matplotlib for the histogram and spectrograms)."
    parts = [
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{esc(title)}</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}td:first-child{text-align:left}</style></head><body>",
        f"<h1>{esc(title)}</h1><p>Manifest: {esc(str(summary['manifest']))}<br>"
        f"Evaluated {summary['num_evaluated']} utterance(s), skipped {summary['num_skipped']}.</p>",
        "<h2>Summary</h2><table><tr><th>metric</th><th>mean</th><th>median</th><th>std</th><th>min</th><th>max</th><th>count</th></tr>",
    ]
    for name, s in summary["metrics"].items():
        cells = "".join(f"<td>{s[k]:.2f}</td>" for k in ("mean", "median", "std", "min", "max"))
        parts.append(f"<tr><td>{esc(labels.get(name, name))}</td>{cells}<td>{s['count']}</td></tr>")
    parts.append("</table>")
    if summary.get("real_time_factor") is not None:
        parts.append(f"<p>Real-time factor {summary['real_time_factor']:.3f}.</p>")
    if summary.get("extra_metrics_unavailable"):
        parts.append(f"<p>Not computed (package not installed): {esc(', '.join(summary['extra_metrics_unavailable']))}.</p>")
    if note:
        parts.append(f"<p class='note'><b>{esc(note)}</b></p>")
    if hist:
        parts.append(f"<p><img src='{esc(hist)}' alt='histogram of {esc(labels.get(rank_by, rank_by))}'></p>")

    header = "".join(f"<th>{esc(labels.get(n, n))}</th>" for n in metric_names)
    ranked = sorted(rows, key=lambda r: (math.isnan(r.get(rank_by, math.nan)), r.get(rank_by, math.nan)))
    tables = [("Utterances", ranked[::-1])] if len(rows) <= 2 * table_rows else [
        (f"Worst {table_rows} by {labels.get(rank_by, rank_by)}", ranked[:table_rows]),
        (f"Best {table_rows} by {labels.get(rank_by, rank_by)}", [r for r in ranked[::-1] if not math.isnan(r.get(rank_by, math.nan))][:table_rows]),
    ]
    for heading, subset in tables:
        parts.append(f"<h2>{esc(heading)}</h2><table><tr><th>id</th>{header}<th>duration (s)</th></tr>")
        for r in subset:
            cells = "".join(f"<td>{r[n]:.2f}</td>" if n in r else "<td></td>" for n in metric_names)
            parts.append(f"<tr><td>{esc(str(r['id']))}</td>{cells}<td>{r['duration']:.2f}</td></tr>")
        parts.append("</table>")

    for ex in examples:
        parts.append(f"<h2>{esc(ex.tag.capitalize())}: {esc(ex.uid)} ({esc(ex.caption)})</h2>")
        if ex.tag in images:
            parts.append(f"<p><img src='{esc(images[ex.tag])}' alt='spectrograms of {esc(ex.uid)}'></p>")
        if audio:
            parts.append("<table>")
            for name, rel in _write_audio(out_dir, ex):
                parts.append(f"<tr><td>{esc(name)}</td><td><audio controls preload='none' src='{esc(rel)}'></audio></td></tr>")
            parts.append("</table>")

    if summary["skipped"]:
        parts.append("<h2>Skipped</h2><ul>")
        parts.extend(f"<li>{esc(s['where'])}: {esc(s['reason'])}</li>" for s in summary["skipped"])
        parts.append("</ul>")
    parts.append("<p>Per-utterance numbers: <a href='metrics.csv'>metrics.csv</a>, summary: <a href='summary.json'>summary.json</a>.</p></body></html>\n")
    path = os.path.join(out_dir, "report.html")
    atomic_write(path, "\n".join(parts))
    return path
