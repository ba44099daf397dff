#!/usr/bin/env python
"""Build a SentencePiece tokenizer for CTC/RNNT fine-tuning from the `text` of NeMo manifests.

    python tools/build_tokenizer.py --manifest train.json [more.json ...] --vocab-size 256 --out-dir tokenizer

Writes OUT_DIR/tokenizer.model, tokenizer.vocab and vocab.txt (NeMo's layout, usable as
`model.tokenizer.dir=OUT_DIR model.tokenizer.type=bpe`). Uses NeMo's own `create_spt_model`.
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path


def read_texts(manifests):
    """Transcripts of every manifest line; a line without `text` is an error naming file and line."""
    texts = []
    for manifest in manifests:
        with open(manifest, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{manifest}:{lineno}: not JSON ({e})") from None
                if "text" not in entry:
                    raise ValueError(f"{manifest}:{lineno}: entry has no 'text'")
                texts.append(str(entry["text"]))
    if not any(t.strip() for t in texts):
        raise ValueError(f"no transcript found in {', '.join(map(str, manifests))}")
    return texts


def build_tokenizer(manifests, out_dir, vocab_size=256, tokenizer_type="bpe", lower_case=True,
                    character_coverage=1.0):
    """Train the tokenizer into a temporary folder beside OUT_DIR, then move it into place."""
    from nemo.collections.common.tokenizers.sentencepiece_tokenizer import create_spt_model

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    texts = read_texts(manifests)
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        corpus = work / "corpus.txt"
        corpus.write_text("\n".join(texts) + "\n", encoding="utf-8")
        try:
            create_spt_model(str(corpus), vocab_size, sample_size=-1, do_lower_case=lower_case,
                             tokenizer_type=tokenizer_type, output_dir=str(work / "tok"),
                             character_coverage=character_coverage)
        except RuntimeError as e:  # sentencepiece says e.g. "Vocabulary size too high (300). Please set it to a value <= 97."
            raise ValueError(f"sentencepiece could not build a vocabulary of {vocab_size}: {e}") from None
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(work / "tok", out_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out_dir


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--manifest", nargs="+", required=True)
    p.add_argument("--out-dir", required=True)
    p.add_argument("--vocab-size", type=int, default=256)
    p.add_argument("--tokenizer-type", default="bpe", choices=["bpe", "unigram"])
    p.add_argument("--no-lower-case", dest="lower_case", action="store_false")
    p.add_argument("--character-coverage", type=float, default=1.0)
    args = p.parse_args(argv)
    try:
        out = build_tokenizer(args.manifest, args.out_dir, args.vocab_size, args.tokenizer_type, args.lower_case,
                              args.character_coverage)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"tokenizer written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
