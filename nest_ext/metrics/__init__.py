"""nest_ext.metrics: evaluation metrics and reports, shared by separation and speech-restoration evaluation.

* :mod:`~nest_ext.metrics.si_sdr`: the one SI-SDR definition (zero-mean), ``si_sdr``, ``pit_si_sdr_scores``
  (SI-SDR / SI-SDRi of the best permutation, batched, on valid lengths): also what the separation model logs;
* :mod:`~nest_ext.metrics.separation`: ``separation_metrics`` of one utterance (SI-SDR, SI-SDRi, SDR, SDRi,
  PESQ/STOI), ``pit_align``;
* :mod:`~nest_ext.metrics.perceptual`: optional PESQ (nb/wb) and STOI, when their packages are installed;
* :mod:`~nest_ext.metrics.report`: ``write_evaluation`` (CSV, JSON, HTML with spectrograms and audio players);
* :mod:`~nest_ext.metrics.error_rate`: word / character error rates with substitution, deletion and insertion
  counts (Kaldi's alignment through ``kaldialign``, as NeMo's WER), and transcript normalisation.

Layer: above ``parts``, ``modules`` and ``losses`` (it may import them), below ``models`` and the command line.
Names resolve lazily, so ``import nest_ext.metrics`` imports neither torchmetrics nor NeMo. The function
``si_sdr`` is imported from its module (``nest_ext.metrics.si_sdr`` is the module).

Example::

    >>> from nest_ext.metrics import metric_stats
    >>> metric_stats([1.0, 3.0, float("nan")])["mean"]
    2.0
    >>> from nest_ext.metrics import error_counts
    >>> error_counts(["a b c"], ["a x c d"]).errors
    2
"""
from nest_ext.parts.lazy_exports import lazy_exports

_EXPORTS = {
    "ErrorCounts": "nest_ext.metrics.error_rate",
    "error_counts": "nest_ext.metrics.error_rate",
    "normalize_transcript": "nest_ext.metrics.error_rate",
    "ZERO_MEAN": "nest_ext.metrics.si_sdr",
    "PitSiSdr": "nest_ext.metrics.si_sdr",
    "pit_si_sdr_scores": "nest_ext.metrics.si_sdr",
    "SEPARATION_METRIC_NAMES": "nest_ext.metrics.separation",
    "pit_align": "nest_ext.metrics.separation",
    "separation_metrics": "nest_ext.metrics.separation",
    "available_perceptual_metrics": "nest_ext.metrics.perceptual",
    "perceptual_metrics": "nest_ext.metrics.perceptual",
    "pesq_mode": "nest_ext.metrics.perceptual",
    "pesq_score": "nest_ext.metrics.perceptual",
    "stoi_score": "nest_ext.metrics.perceptual",
    "METRIC_LABELS": "nest_ext.metrics.report",
    "BestWorst": "nest_ext.metrics.report",
    "ReportExample": "nest_ext.metrics.report",
    "format_summary": "nest_ext.metrics.report",
    "metric_stats": "nest_ext.metrics.report",
    "write_csv": "nest_ext.metrics.report",
    "write_evaluation": "nest_ext.metrics.report",
    "write_html_report": "nest_ext.metrics.report",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
