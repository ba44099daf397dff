"""Transcribe test sets with an ASR .nemo and score them (MooER-style `text` and `wer` files per set).

    nest-evaluate-asr --model M.nemo --manifest test_clean.json test_other.json --out-dir eval
    nest-evaluate-asr --model M.nemo --manifest test.json --out-dir eval --device cuda --batch-size 64 --normalize all
    python tools/evaluate_asr.py ...                       # the same command from a checkout

For each manifest NAME.json: OUT_DIR/NAME/text (`UTTID hypothesis` per line), OUT_DIR/NAME/ref
(`UTTID reference`), OUT_DIR/NAME/wer (Kaldi's `%WER 12.34 [ 15 / 123, 1 ins, 2 del, 12 sub ]`, the same for
CER, and the number of utterances). A summary of every set is printed and written to OUT_DIR/summary.json.
UTTID is the entry's `utt_id` / `id` if present, else the audio file's stem.

The manifest goes to NeMo's own `transcribe` (with absolute audio paths), so `offset` and `duration` select
the segment of a longer file as in training. Scores are NeMo's `word_error_rate_detail` (CER over characters,
spaces included, as NeMo's `use_cer`). `--normalize` lower-cases and/or strips punctuation from hypotheses
and references before scoring (the `text`/`ref` files hold what was scored). On CUDA, inference runs under
autocast (`--amp-dtype`, off with `--no-amp`).

Exit status: 0 on success, 2 on bad arguments or an unusable manifest or model.
"""
import contextlib
import json
import logging
import os
import tempfile
from pathlib import Path

from nest_ext.cli.conventions import (
    EXIT_USAGE, CliError, add_device, add_out_dir, add_progress, error, make_parser, progress, progress_every,
    require_files, resolve_device, setup_logging,
)
from nest_ext.cli.manifests import read_entries
from nest_ext.parts.atomic_io import atomic_write

logger = logging.getLogger(__name__)
NORMALIZE = {"none": (False, False), "case": (True, False), "punctuation": (False, True), "all": (True, True)}


def read_manifest(manifest):
    """The manifest's entries; a line that is not JSON or lacks `audio_filepath`/`text` is named by file:line."""
    entries = read_entries(manifest, required=("audio_filepath", "text"))
    if not entries:
        raise ValueError(f"{manifest}: no entries")
    return entries


def utt_id(entry):
    return str(entry.get("utt_id") or entry.get("id") or Path(entry["audio_filepath"]).stem)


def _text_of(hyp):
    return hyp.text if hasattr(hyp, "text") else str(hyp)


def _autocast(device: str, amp_dtype):
    """Autocast on CUDA (NeMo's preprocessor keeps its features in float32); nothing on other devices."""
    import torch

    if amp_dtype is None or not device.startswith("cuda"):
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=getattr(torch, amp_dtype))


def transcribe_manifest(model, manifest, entries, batch_size=8, num_workers=0, device="cpu", amp_dtype=None,
                        bar=None):
    """Hypothesis texts of ``entries`` (read from ``manifest``), in order, through NeMo's ``transcribe``.

    NeMo reads a manifest handed to ``transcribe`` (``offset``/``duration`` included) but rewrites it into a
    temporary folder, where paths relative to the original manifest would no longer resolve: the copy given
    to it has absolute paths (NeMo's own rule, ``get_full_path``), and a ``duration`` (from the file's header)
    where an entry has none. ``bar`` (a Progress) counts utterances.
    """
    from nemo.collections.asr.parts.mixins.transcription import TranscribeConfig
    from nemo.collections.common.parts.preprocessing.manifest import get_full_path

    from nest_ext.data.audio_io import read_audio_info

    hyps = []
    with tempfile.TemporaryDirectory() as tmp:
        copy = os.path.join(tmp, "manifest.json")
        with open(copy, "w", encoding="utf-8") as f:
            for e in entries:
                e = {**e, "audio_filepath": get_full_path(e["audio_filepath"], str(manifest))}
                if e.get("duration") is None:  # NeMo's loaders need it: the rest of the file after the offset
                    info = read_audio_info(e["audio_filepath"])
                    e["duration"] = info.frames / info.samplerate - float(e.get("offset") or 0.0)
                f.write(json.dumps(e) + "\n")
        config = TranscribeConfig(batch_size=batch_size, num_workers=num_workers, verbose=False)
        with _autocast(device, amp_dtype):
            for batch in model.transcribe_generator(copy, override_config=config):
                if isinstance(batch, tuple):  # (best, all) hypotheses of some decoders
                    batch = batch[0]
                hyps.extend(_text_of(h) for h in batch)
                if bar is not None:
                    bar.update(len(batch))
    if len(hyps) != len(entries):
        raise RuntimeError(f"{manifest}: NeMo returned {len(hyps)} hypotheses for {len(entries)} entries")
    return hyps


def error_detail(hyps, refs, use_cer=False):
    """NeMo's ``word_error_rate_detail`` as counts: ``{rate, ref_len, substitutions, deletions, insertions}``."""
    from nemo.collections.asr.metrics.wer import word_error_rate_detail

    rate, ref_len, ins_rate, del_rate, sub_rate = word_error_rate_detail(hyps, refs, use_cer=use_cer)
    if ref_len == 0:  # NeMo says inf; with no reference token every hypothesis token is an insertion
        ins = sum(len(h) if use_cer else len(h.split()) for h in hyps)
        return {"rate": float("inf") if ins else 0.0, "ref_len": 0, "substitutions": 0, "deletions": 0,
                "insertions": ins}
    counts = {k: int(round(r * ref_len)) for k, r in (("substitutions", sub_rate), ("deletions", del_rate),
                                                      ("insertions", ins_rate))}
    return {"rate": rate, "ref_len": ref_len, **counts}


def kaldi_line(name, d):
    """``%WER 12.34 [ 15 / 123, 1 ins, 2 del, 12 sub ]``, as Kaldi's compute-wer prints it."""
    errors = d["substitutions"] + d["deletions"] + d["insertions"]
    return (f"%{name} {100 * d['rate']:.2f} [ {errors} / {d['ref_len']}, {d['insertions']} ins, "
            f"{d['deletions']} del, {d['substitutions']} sub ]")


def evaluate_set(model, manifest, out_dir, batch_size=8, normalize="none", num_workers=0, device="cpu",
                 amp_dtype=None, progress_every_s=None):
    """Transcribe one manifest and write its text/ref/wer files; return the scores. Progress is logged every
    ``progress_every_s`` seconds (None: not at all)."""
    from nest_ext.metrics.error_rate import normalize_transcript

    entries = read_manifest(manifest)
    name = Path(manifest).stem
    with progress(progress_every_s, len(entries), desc=f"transcribing {name}", unit="utt", logger=logger) as bar:
        hyps = transcribe_manifest(model, manifest, entries, batch_size, num_workers, device, amp_dtype, bar)
    refs = [str(e["text"]) for e in entries]
    lower, punct = NORMALIZE[normalize]
    if lower or punct:
        hyps = [normalize_transcript(h, lowercase=lower, punctuation=punct) for h in hyps]
        refs = [normalize_transcript(r, lowercase=lower, punctuation=punct) for r in refs]
    ids = [utt_id(e) for e in entries]
    wer, cer = error_detail(hyps, refs), error_detail(hyps, refs, use_cer=True)
    set_dir = Path(out_dir) / name
    set_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(set_dir / "text", "".join(f"{i} {h}\n" for i, h in zip(ids, hyps)))
    atomic_write(set_dir / "ref", "".join(f"{i} {r}\n" for i, r in zip(ids, refs)))
    atomic_write(set_dir / "wer", f"{kaldi_line('WER', wer)}\n{kaldi_line('CER', cer)}\n"
                                   f"%UTTERANCES {len(refs)}\n")
    return {"set": name, "manifest": str(manifest), "wer": wer["rate"], "cer": cer["rate"],
            "utterances": len(refs), "words": wer["ref_len"], "substitutions": wer["substitutions"],
            "deletions": wer["deletions"], "insertions": wer["insertions"], "characters": cer["ref_len"],
            "normalize": normalize}


def build_parser():
    p = make_parser(__doc__)
    p.add_argument("--model", required=True, metavar="NEMO",
                   help="ASR .nemo (e.g. fine-tuned with config/fastconformer_ctc_bpe_finetune.yaml)")
    p.add_argument("--manifest", nargs="+", required=True, metavar="JSON",
                   help="test manifest(s): audio_filepath, text, optional offset/duration; one set per file")
    add_out_dir(p, required=False, default="asr_eval", help="where <set>/text, ref, wer and summary.json go "
                                                            "(default asr_eval)")
    add_device(p)
    p.add_argument("--batch-size", type=int, default=8, metavar="N", help="utterances per batch (default 8)")
    p.add_argument("--num-workers", type=int, default=0, metavar="N",
                   help="data loading processes of NeMo's transcribe (default 0: in this process)")
    p.add_argument("--normalize", choices=list(NORMALIZE), default="none",
                   help="before scoring, lower-case (case), strip punctuation (punctuation) or both (all); "
                        "default none")
    p.add_argument("--amp-dtype", choices=["bfloat16", "float16"], default="bfloat16",
                   help="autocast dtype on CUDA (default bfloat16)")
    p.add_argument("--no-amp", action="store_true", help="full precision on CUDA too")
    add_progress(p, unit="utterances")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    try:
        device = resolve_device(args.device)
        require_files(args.model, *args.manifest)
        if args.batch_size < 1:
            raise CliError(f"--batch-size must be at least 1 (got {args.batch_size})", EXIT_USAGE)
        for m in args.manifest:
            read_manifest(m)  # every set's format before hours of decoding
    except CliError as e:
        return error(e.message, e.code)
    except ValueError as e:
        return error(e, EXIT_USAGE)

    import torch
    from nemo.collections.asr.models import ASRModel

    from nest_ext.parts.nemo_targets import allow_nest_ext_targets

    allow_nest_ext_targets()  # the fine-tuned model's encoder is nest_ext.modules.ConformerEncoder
    model = ASRModel.restore_from(args.model, map_location=torch.device(device))
    model.eval()
    amp_dtype = None if args.no_amp else args.amp_dtype
    if amp_dtype == "bfloat16" and device.startswith("cuda") and not torch.cuda.is_bf16_supported():
        logger.info("this GPU has no bfloat16: autocast in float16")
        amp_dtype = "float16"
    results = [evaluate_set(model, m, args.out_dir, args.batch_size, args.normalize, args.num_workers, device,
                            amp_dtype, progress_every(args)) for m in args.manifest]
    atomic_write(Path(args.out_dir) / "summary.json", json.dumps(results, indent=1) + "\n")
    for r in results:
        print(f"{r['set']}: WER {100 * r['wer']:.2f}% ({r['substitutions']} sub, {r['deletions']} del, "
              f"{r['insertions']} ins / {r['words']} words)  CER {100 * r['cer']:.2f}%  ({r['utterances']} utts)")
    return 0


if __name__ == "__main__":  # python -m nest_ext.cli.evaluate_asr
    raise SystemExit(main())
