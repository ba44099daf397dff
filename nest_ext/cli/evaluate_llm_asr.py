"""Transcribe test sets with a trained NestSALM (NEST encoder + LLM with LoRA) and score them per set.

    nest-evaluate-llm-asr --model SALM-NEST-LoRA.ckpt --test-sets test_clean.json test_other.json --out-dir eval
    python tools/evaluate_llm_asr.py --model M.ckpt --test-sets aishell_test/data.list --out-dir eval --cer

A test set is a NeMo manifest (``audio_filepath``, ``text``), a ``pack_shards.py`` output folder or WeNet
shards (``data.list``); its name is the file's stem (the folder's name for a folder or ``data.list``). Per set:

* ``OUT_DIR/<set>/text``: ``UTTID hypothesis`` per line, ``OUT_DIR/<set>/ref``: ``UTTID reference`` -- both as
  scored, i.e. normalised (lower case, no punctuation) unless ``--no-normalize`` / ``--keep-case`` /
  ``--keep-punctuation``;
* ``OUT_DIR/<set>/wer``: Kaldi's ``%WER 4.11 [ 123 / 2990, 10 ins, 20 del, 93 sub ]`` line (``%CER`` with
  ``--cer``: characters without spaces), then per utterance the counts and the aligned reference/hypothesis.

``OUT_DIR/summary.json`` and ``OUT_DIR/summary.txt`` hold the table over all sets, which is also printed.
Decoding is greedy (``--beam-size`` > 1: beam search through Hugging Face ``generate``) with the training
instruction as the prompt. Audio that cannot be read is reported by path and left out of both files.
Progress: a bar on a terminal, a log line every ``--progress-every`` seconds otherwise (``--log-every`` is the older
spelling).

Exit status: 0 when every set was scored, 2 on bad arguments or an unreadable set.
"""
import argparse
import itertools
import json
import logging
from pathlib import Path
from typing import Dict, List

from nest_ext.cli.conventions import (
    EXIT_USAGE, CliError, add_device, add_out_dir, add_progress, error, make_parser, progress, progress_every,
    resolve_device, setup_logging,
)
from nest_ext.cli.salm_model_args import DTYPES, add_model_arguments, load_model

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    p = make_parser(__doc__)
    add_model_arguments(p)
    p.add_argument("--test-sets", nargs="+", required=True, metavar="SET",
                   help="NeMo manifests, pack_shards folders or data.list files")
    add_out_dir(p, help="where <set>/text, ref, wer and summary.json / summary.txt go")
    p.add_argument("--cer", action="store_true", help="score characters (without spaces) instead of words")
    p.add_argument("--batch-size", type=int, default=8, metavar="N", help="utterances per batch (default 8)")
    add_device(p)  # "auto", the older spelling of the default, is still accepted
    p.add_argument("--dtype", choices=sorted(DTYPES), default=None,
                   help="compute dtype (autocast; weights stay float32). Default: bfloat16 on GPU, float32 on CPU")
    p.add_argument("--beam-size", type=int, default=1, metavar="N", help="1: greedy decoding")
    p.add_argument("--max-new-tokens", type=int, default=128, metavar="N",
                   help="longest transcript in LLM tokens (default 128)")
    p.add_argument("--instruction", default=None, help="prompt before the audio (default: the one trained with)")
    p.add_argument("--no-normalize", action="store_true", help="score the text as it is")
    p.add_argument("--keep-case", action="store_true", help="do not lower-case")
    p.add_argument("--keep-punctuation", action="store_true", help="do not remove punctuation")
    add_progress(p, "utterances", "--log-every")
    return p


def _count_lines(path: str) -> int:
    with open(path, encoding="utf-8") as f:
        return sum(1 for line in f if line.strip())


def _load_batch(cuts, sample_rate: int, report):
    """(audio [B, T] float32, lengths, kept cuts); a cut whose audio fails to load is reported and left out."""
    import numpy as np
    import torch

    from nest_ext.data.reporting_salm_dataset import describe_bad_audio

    signals, kept = [], []
    for cut in cuts:
        try:
            c = cut.resample(sample_rate) if cut.sampling_rate != sample_rate else cut
            audio = np.asarray(c.load_audio(), dtype=np.float32)
            audio = audio.mean(axis=0) if audio.ndim == 2 else audio  # channels first; mono down-mix
            if audio.size == 0:
                raise ValueError("no audio frames")
        except Exception as e:  # whatever the audio backend raises
            path, reason = describe_bad_audio(cut)
            report.add(path, f"{reason} ({type(e).__name__}: {e})", where=f"utterance {cut.id}", stage="evaluate")
            continue
        signals.append(torch.from_numpy(audio))
        kept.append(cut)
    if not signals:
        return None, None, []
    lens = torch.tensor([s.numel() for s in signals], dtype=torch.long)
    batch = torch.zeros(len(signals), int(lens.max()))
    for i, s in enumerate(signals):
        batch[i, : s.numel()] = s
    return batch, lens, kept


def evaluate_set(model, path: str, out_dir: Path, args) -> Dict:
    """Decode and score one test set; write its text / ref / wer files; return its summary row."""
    from nest_ext.data.asr_cuts import detect_layout, read_asr_cuts, utterance_id
    from nest_ext.data.salm_data import set_name
    from nest_ext.metrics.error_rate import ErrorCounts, normalize_transcript, utterance_counts
    from nest_ext.parts.atomic_io import atomic_write
    from nest_ext.data.bad_audio import BadAudioReport

    name = set_name(path)
    norm = (lambda t: t.strip()) if args.no_normalize else (
        lambda t: normalize_transcript(t, lowercase=not args.keep_case, punctuation=not args.keep_punctuation))
    report = BadAudioReport("skip", name=f"test set {name}")  # counts what the readers skip, too
    cuts = read_asr_cuts(path, train=False, report=report)
    total = _count_lines(path) if detect_layout(path) == "nemo-manifest" else None  # shards: unknown up front
    ids: List[str] = []
    hyps: List[str] = []
    refs: List[str] = []
    with progress(progress_every(args), total, f"{name}: decoding", "utt", logger) as bar:
        stream = iter(cuts)  # streamed: a large sharded set is never all in memory
        while batch := list(itertools.islice(stream, args.batch_size)):
            audio, lens, kept = _load_batch(batch, model.sampling_rate, report)
            bar.update(len(batch))
            if not kept:
                continue
            out = model.transcribe(audio, lens, instruction=args.instruction, max_new_tokens=args.max_new_tokens,
                                   num_beams=args.beam_size)
            ids += [utterance_id(c) for c in kept]
            hyps += [norm(h) for h in out]
            refs += [norm(c.supervisions[0].text) for c in kept]

    metric = "CER" if args.cer else "WER"
    total_counts, blocks = ErrorCounts(), []
    for uid, h, r in zip(ids, hyps, refs):
        counts, alignment = utterance_counts(h, r, use_cer=args.cer)
        total_counts = total_counts + counts
        correct = counts.ref_len - counts.substitutions - counts.deletions
        blocks.append(f"utt: {uid}\n{metric}: {100.0 * counts.rate:.2f} % N={counts.ref_len} C={correct} "
                      f"S={counts.substitutions} D={counts.deletions} I={counts.insertions}\n"
                      f"lab: {' '.join(a for a, _ in alignment)}\nrec: {' '.join(b for _, b in alignment)}\n")
    set_dir = out_dir / name
    set_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(set_dir / "text", "".join(f"{i} {h}\n" for i, h in zip(ids, hyps)))
    atomic_write(set_dir / "ref", "".join(f"{i} {r}\n" for i, r in zip(ids, refs)))
    atomic_write(set_dir / "wer", total_counts.kaldi_line(metric) + "\n\n" + "\n".join(blocks))
    return {"set": name, "path": str(path), "metric": metric, "rate": total_counts.rate,
            "errors": total_counts.errors, "n": total_counts.ref_len, "substitutions": total_counts.substitutions,
            "deletions": total_counts.deletions, "insertions": total_counts.insertions,
            "utterances": len(ids), "skipped": report.count}


def summary_table(rows: List[Dict]) -> str:
    """Fixed-width table of the per-set rows."""
    header = ("set", "metric", "%", "N", "sub", "del", "ins", "utts", "skipped")
    lines = [[r["set"], r["metric"], f"{100.0 * r['rate']:.2f}", r["n"], r["substitutions"], r["deletions"],
              r["insertions"], r["utterances"], r["skipped"]] for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *lines)]

    def fmt(row):  # set name left-aligned, numbers right-aligned
        return "  ".join(str(x).rjust(w) if i else str(x).ljust(w) for i, (x, w) in enumerate(zip(row, widths)))

    return "\n".join([fmt(header)] + [fmt(row) for row in lines]) + "\n"


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    from nest_ext.data.salm_data import set_name

    names = [set_name(p) for p in args.test_sets]
    if len(set(names)) != len(names):
        return error(f"test sets need distinct names, got {names}", EXIT_USAGE)
    import torch

    try:
        device = resolve_device(None if args.device == "auto" else args.device)
    except CliError as e:
        return error(e.message, e.code)
    dtype = DTYPES[args.dtype or ("bfloat16" if device.startswith("cuda") else "float32")]
    model = load_model(args).to(device)
    out_dir = Path(args.out_dir)
    rows = []
    for path in args.test_sets:
        try:
            with torch.autocast(device.split(":")[0], dtype=dtype, enabled=dtype != torch.float32):
                rows.append(evaluate_set(model, path, out_dir, args))
        except (ValueError, OSError) as e:
            return error(f"{path}: {e}", EXIT_USAGE)
        r = rows[-1]
        logger.info(f"{r['set']}: {r['metric']} {100.0 * r['rate']:.2f}% ({r['utterances']} utterances)")
    from nest_ext.parts.atomic_io import atomic_write

    table = summary_table(rows)
    atomic_write(out_dir / "summary.json", json.dumps(rows, indent=1) + "\n")
    atomic_write(out_dir / "summary.txt", table)
    print(table, end="", flush=True)
    return 0


if __name__ == "__main__":  # python -m nest_ext.cli.evaluate_llm_asr
    raise SystemExit(main())
