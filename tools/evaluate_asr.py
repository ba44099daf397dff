#!/usr/bin/env python
"""Transcribe test sets with an ASR .nemo and score them (MooER-style `text` and `wer` files per set).

    python tools/evaluate_asr.py --model M.nemo --manifest test_clean.json test_other.json --out-dir eval

For each manifest NAME.json: OUT_DIR/NAME/text (`UTTID hypothesis` per line), OUT_DIR/NAME/ref
(`UTTID reference`), OUT_DIR/NAME/wer (WER, CER, counts). A summary of every set is printed and written
to OUT_DIR/summary.json. UTTID is the entry's `utt_id` / `id` if present, else the audio file's stem.
"""
import argparse
import json
import sys
from pathlib import Path

from nest_ext.parts.atomic_io import atomic_write


def read_manifest(manifest):
    entries = []
    with open(manifest, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                entry = json.loads(line)
                if "audio_filepath" not in entry or "text" not in entry:
                    raise ValueError(f"{manifest}:{lineno}: needs 'audio_filepath' and 'text'")
                entries.append(entry)
    return entries


def utt_id(entry):
    return str(entry.get("utt_id") or entry.get("id") or Path(entry["audio_filepath"]).stem)


def _text_of(hyp):
    return hyp.text if hasattr(hyp, "text") else str(hyp)


def evaluate_set(model, manifest, out_dir, batch_size=8):
    """Transcribe one manifest and write its text/ref/wer files; return the scores."""
    from nemo.collections.asr.metrics.wer import word_error_rate

    entries = read_manifest(manifest)
    hyps = model.transcribe([e["audio_filepath"] for e in entries], batch_size=batch_size, verbose=False)
    if isinstance(hyps, tuple):  # some NeMo versions return (best, all)
        hyps = hyps[0]
    hyps = [_text_of(h) for h in hyps]
    refs = [str(e["text"]) for e in entries]
    ids = [utt_id(e) for e in entries]
    wer = word_error_rate(hyps, refs)
    cer = word_error_rate(hyps, refs, use_cer=True)
    set_dir = Path(out_dir) / Path(manifest).stem
    set_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(set_dir / "text", "".join(f"{i} {h}\n" for i, h in zip(ids, hyps)))
    atomic_write(set_dir / "ref", "".join(f"{i} {r}\n" for i, r in zip(ids, refs)))
    words = sum(len(r.split()) for r in refs)
    atomic_write(set_dir / "wer", f"%WER {100 * wer:.2f} [ {words} words, {len(refs)} utterances ]\n"
                                   f"%CER {100 * cer:.2f}\n")
    return {"set": Path(manifest).stem, "manifest": str(manifest), "wer": wer, "cer": cer,
            "utterances": len(refs), "words": words}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="ASR .nemo (e.g. fine-tuned with fastconformer_ctc_bpe_finetune)")
    p.add_argument("--manifest", nargs="+", required=True)
    p.add_argument("--out-dir", default="asr_eval")
    p.add_argument("--batch-size", type=int, default=8)
    args = p.parse_args(argv)

    from nemo.collections.asr.models import ASRModel

    from nest_ext.parts.nemo_targets import allow_nest_ext_targets

    allow_nest_ext_targets()  # the fine-tuned model's encoder is nest_ext.modules.ConformerEncoder
    model = ASRModel.restore_from(args.model, map_location="cpu")
    model.eval()
    results = [evaluate_set(model, m, args.out_dir, args.batch_size) for m in args.manifest]
    atomic_write(Path(args.out_dir) / "summary.json", json.dumps(results, indent=1) + "\n")
    for r in results:
        print(f"{r['set']}: WER {100 * r['wer']:.2f}%  CER {100 * r['cer']:.2f}%  ({r['utterances']} utts)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
