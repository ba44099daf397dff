"""Evaluate a speech separation model on a manifest: per-utterance metrics, summary, HTML report.

    nest-evaluate-separation --model MODEL.nemo --manifest tt.json --out-dir eval_dir [--device cuda]
    nest-evaluate-separation ... --batch-size 8 --precision int8    # equal-length mixtures share a forward pass
    python tools/evaluate_separation.py ...           # the same command from a checkout

Writes into ``--out-dir`` (``--out`` is the older spelling; each file atomically):

* ``metrics.csv``: one row per utterance: ``id, input_filepath, duration, si_sdr, si_sdr_i, sdr, sdr_i
  [, pesq, stoi], perm, seconds`` (metrics of :func:`nest_ext.metrics.separation_metrics`: estimates
  aligned to references with torchmetrics' PIT on SI-SDR, zero-mean SI-SDR as the model's ``val_sisdr``;
  PESQ/STOI only when ``pesq``/``pystoi`` are installed).
* ``summary.json``: count, mean/median/std/min/max of every metric, skipped entries with reasons.
* ``report.html``: the summary, the best and worst utterances, an SI-SDRi histogram, spectrograms
  (PNG, when matplotlib is installed; otherwise the report says so and has no images) and audio players
  (``audio/``) of the best and worst utterance. The files are written by :mod:`nest_ext.metrics.report`.

The core is :func:`evaluate`, which takes any ``separate_fn(mixture [T]) -> estimates [S, T]``, so it
also evaluates oracle or baseline separators, e.g. the "mixture as every estimate" baseline::

    summary = evaluate(lambda mix: mix.expand(2, -1), "tt.json", "eval_mixture_baseline", sample_rate=8000)
    summary["metrics"]["si_sdr_i"]["mean"]   # 0.0 by definition

Exit status: 0 when at least one utterance was evaluated, 1 when none was, 2 on bad arguments.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Callable, Dict, List, Optional, Sequence, Union

import numpy as np
import torch

from nest_ext.cli.conventions import (
    DEFAULT_PROGRESS_EVERY_S, EXIT_USAGE, CliError, add_device, add_out_dir, add_progress, error, make_parser,
    progress, progress_every, require_files, resolve_device, setup_logging,
)
from nest_ext.data.audio_io import load_audio, read_audio_info
from nest_ext.data.separation_dataset import load_separation_manifest
from nest_ext.metrics.perceptual import available_perceptual_metrics
from nest_ext.metrics.report import BestWorst, ReportExample, format_summary, write_evaluation
from nest_ext.metrics.separation import SEPARATION_METRIC_NAMES, separation_metrics
from nest_ext.modules.encoder_masker_decoder import fit_length
from nest_ext.parts.allocator import keep_freed_memory
from nest_ext.parts.background import prefetch
from nest_ext.parts.length_batches import equal_length_batches

logger = logging.getLogger(__name__)

SeparateFn = Callable[[torch.Tensor], Union[torch.Tensor, np.ndarray]]


def _read(path: str, sample_rate: Optional[int]) -> tuple:
    """``(audio [T], rate)``: mono, at ``sample_rate`` (the file's own rate when None), read and resampled
    as tools/separate.py reads its inputs."""
    rate = sample_rate or read_audio_info(path).samplerate
    return load_audio(path, rate), rate


def _example(tag: str, item: tuple) -> ReportExample:
    """The report's panels of one utterance: mixture, references, and the estimate matched to each reference."""
    si_sdr_i, uid, mixture, refs, est, perm, rate = item
    signals = [("mixture", mixture)] + [(f"reference s{k + 1}", r) for k, r in enumerate(refs)]
    signals += [(f"estimate for s{k + 1}", est[p]) for k, p in enumerate(perm)]
    return ReportExample(tag, uid, f"SI-SDRi {si_sdr_i:.2f} dB", signals, rate)


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
    progress_every_s: Optional[float] = DEFAULT_PROGRESS_EVERY_S,
    batch_size: int = 1,
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
        progress_every_s: seconds between progress lines when stderr is not a terminal (None: no progress).
        batch_size: above 1, up to this many mixtures of equal length go to ``separate_fn`` at once as
            ``[B, T]``, which must then return ``[B, S, T']`` (the model's does; no padding, so the scores are
            those of one-by-one separation). Files are read in a background thread either way.

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
    extras = available_perceptual_metrics() if extra_metrics else []
    rows: List[dict] = []
    extremes = BestWorst()  # signals of the best and worst utterance, kept for the report
    batches = [[examples[i] for i in idx] for idx in equal_length_batches(_length_keys(examples), batch_size)]
    with progress(progress_every_s, len(examples), desc="evaluating", unit="utt", logger=logger) as bar:
        # a reader thread decodes the next batches while this one is separated and scored
        for size, groups in prefetch(((len(b), _read_batch(b, sample_rate, skipped)) for b in batches), depth=2):
            for group in groups:
                _evaluate_group(group, separate_fn, batch_size > 1, extras, rows, extremes)
            bar.update(size)
    metric_names = list(SEPARATION_METRIC_NAMES) + [k for k in extras if rows and k in rows[0]]
    shown = [_example(tag, item) for tag, item in (("best", extremes.best), ("worst", extremes.worst)) if item]
    return write_evaluation(
        out_dir, rows, metric_names, manifest=manifest, skipped=skipped,
        unavailable=[k for k in ("pesq", "stoi") if k not in available_perceptual_metrics()],
        extra_columns=["perm", "seconds"], report=report, title="Separation evaluation", rank_by="si_sdr_i",
        examples=shown,
    )


def _length_keys(examples) -> list:
    """Per example, its mixture's header (frames, rate): equal keys give equal lengths after resampling.
    An unreadable header gets a key of its own (the read reports it)."""
    keys = []
    for i, ex in enumerate(examples):
        try:
            info = read_audio_info(ex.input_filepath)
            keys.append((info.frames, info.samplerate))
        except (ValueError, TypeError):
            keys.append(("unreadable", i))
    return keys


def _read_batch(batch, sample_rate: Optional[int], skipped: List[Dict[str, str]]) -> List[list]:
    """The readable examples of ``batch`` as ``(ex, mixture, refs, rate)``, in groups of equal length; the others
    are logged and added to ``skipped`` (list appends are atomic, so the reader thread may do it)."""
    groups: Dict[tuple, list] = {}
    for ex in batch:
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
        groups.setdefault((len(mixture), rate), []).append((ex, mixture, refs, rate))
    return list(groups.values())


def _evaluate_group(group: list, separate_fn: SeparateFn, batched: bool, extras: List[str], rows: List[dict],
                    extremes: BestWorst) -> None:
    """Separate equal-length examples (one forward pass when ``batched``) and score each into ``rows``."""
    mixtures = torch.from_numpy(np.stack([mixture for _, mixture, _, _ in group]))
    start = time.perf_counter()
    with torch.no_grad():
        if batched:
            estimates = torch.as_tensor(separate_fn(mixtures), dtype=torch.float32).detach().cpu()
            if estimates.ndim != 3 or estimates.shape[0] != len(group):
                raise ValueError(f"separate_fn returned shape {tuple(estimates.shape)} for a batch of "
                                 f"{len(group)}, expected [{len(group)}, S, T]")
        else:
            estimates = [separate_fn(m) for m in mixtures]
    seconds = (time.perf_counter() - start) / len(group)
    for (ex, mixture, refs, rate), est in zip(group, estimates):
        _score(ex, mixture, refs, rate, est, seconds, extras, rows, extremes)


def _score(ex, mixture: np.ndarray, refs: list, rate: int, est, seconds: float, extras: List[str],
           rows: List[dict], extremes: BestWorst) -> None:
    """Score one utterance's estimates into ``rows``; keep its signals when best or worst so far."""
    mix_t = torch.from_numpy(mixture)
    ref_t = torch.from_numpy(np.stack(refs))
    est = torch.as_tensor(est, dtype=torch.float32).detach().cpu()
    if est.ndim == 3 and est.shape[0] == 1:
        est = est[0]
    if est.ndim != 2 or est.shape[0] != ref_t.shape[0]:
        raise ValueError(f"{ex.where}: separate_fn returned shape {tuple(est.shape)}, expected [{ref_t.shape[0]}, T]")
    est = fit_length(est, ref_t.shape[-1])
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
    extremes.add(m["si_sdr_i"], (m["si_sdr_i"], row["id"], mixture, ref_t.numpy(), est.numpy(), m["perm"], rate))


def model_separate_fn(model_path: str, device: str = "cpu", chunk_seconds: Optional[float] = None,
                      precision: str = "fp32"):
    """``(separate_fn, sample_rate, num_spks)`` of a ``MossFormer2SeparationModel`` ``.nemo`` file, run at
    ``precision`` (:mod:`nest_ext.modules.mossformer2.inference`); ``separate_fn`` takes ``[T]`` or ``[B, T]``."""
    from nest_ext.models import MossFormer2SeparationModel
    from nest_ext.modules.mossformer2.inference import inference_precision, prepare_for_inference

    model = MossFormer2SeparationModel.restore_from(model_path, map_location=torch.device(device))
    model = prepare_for_inference(model, precision, inplace=True)

    def separate(mixture: torch.Tensor) -> torch.Tensor:
        with inference_precision(precision, torch.device(device).type):
            return model.separate(mixture.to(device), chunk_seconds=chunk_seconds).float()

    return separate, int(model.sample_rate), int(model.num_spks)


def build_parser():
    parser = make_parser(__doc__)
    parser.add_argument("--model", required=True, metavar="NEMO", help="MossFormer2SeparationModel .nemo file")
    parser.add_argument("--manifest", required=True, nargs="+", metavar="JSON",
                        help="test manifest(s) (input_filepath / target_filepath)")
    add_out_dir(parser, "--out", help="where metrics.csv, summary.json and report.html go")
    add_device(parser)
    parser.add_argument("--chunk-seconds", type=float, default=None, metavar="S",
                        help="separate in overlapping chunks of S seconds (long inputs, bounded memory)")
    parser.add_argument("--batch-size", type=int, default=1, metavar="N",
                        help="mixtures of equal length separated together, up to N per forward pass (default 1)")
    parser.add_argument("--precision", choices=("fp32", "bf16", "int8"), default="fp32",
                        help="inference precision (nest_ext.modules.mossformer2.inference; int8: CPU only)")
    parser.add_argument("--max-items", type=int, default=None, metavar="N", help="evaluate only the first N entries")
    parser.add_argument("--no-extra-metrics", action="store_true", help="skip PESQ/STOI even when installed")
    add_progress(parser, unit="utterances")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    try:
        if args.batch_size < 1:
            raise CliError(f"--batch-size must be >= 1, got {args.batch_size}", EXIT_USAGE)
        device = resolve_device(args.device)
        require_files(args.model, *args.manifest)
    except CliError as e:
        return error(e.message, e.code)
    keep_freed_memory()  # large activations reused, not faulted in again each call (bench/allocator.py)
    try:
        separate, rate, spks = model_separate_fn(args.model, device, args.chunk_seconds, args.precision)
    except ValueError as err:  # int8 on a GPU
        return error(err, EXIT_USAGE)
    summary = evaluate(
        separate, args.manifest[0] if len(args.manifest) == 1 else args.manifest, args.out_dir,
        sample_rate=rate, num_spks=spks,
        max_items=args.max_items, extra_metrics=not args.no_extra_metrics, progress_every_s=progress_every(args),
        batch_size=args.batch_size,
    )
    print(format_summary(summary))
    print(f"wrote {os.path.join(args.out_dir, 'metrics.csv')}, summary.json, report.html")
    return 0 if summary["num_evaluated"] else 1


if __name__ == "__main__":  # python -m nest_ext.cli.evaluate_separation
    raise SystemExit(main())
