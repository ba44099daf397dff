"""Build a SentencePiece tokenizer for CTC/RNNT fine-tuning from the `text` of NeMo manifests.

    nest-build-tokenizer --manifest train.json [more.json ...] --vocab-size 256 --out-dir tokenizer
    python tools/build_tokenizer.py ...                  # the same command from a checkout

Writes OUT_DIR/tokenizer.model, tokenizer.vocab and vocab.txt (NeMo's layout, usable as
`model.tokenizer.dir=OUT_DIR model.tokenizer.type=bpe`). Uses NeMo's own `create_spt_model`.

Exit status: 0 on success, 2 on unusable input (a manifest line without `text`, a vocabulary too large).
"""
import os
import shutil
import tempfile
from pathlib import Path

from nest_ext.cli.conventions import EXIT_USAGE, add_out_dir, error, make_parser, setup_logging
from nest_ext.cli.manifests import read_entries


def read_texts(manifests):
    """Transcripts of every manifest line; a line without `text` is an error naming file and line."""
    texts = [str(e["text"]) for manifest in manifests for e in read_entries(manifest, required=("text",))]
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


def build_parser():
    p = make_parser(__doc__)
    p.add_argument("--manifest", nargs="+", required=True, metavar="JSON",
                   help="NeMo manifest(s) whose 'text' fields are the training text")
    add_out_dir(p, help="tokenizer folder to write (replaced if it exists)")
    p.add_argument("--vocab-size", type=int, default=256, metavar="N", help="vocabulary size (default 256)")
    p.add_argument("--tokenizer-type", default="bpe", choices=["bpe", "unigram"],
                   help="SentencePiece model type (default bpe)")
    p.add_argument("--no-lower-case", dest="lower_case", action="store_false",
                   help="keep the transcripts' case (default: lower-case them)")
    p.add_argument("--character-coverage", type=float, default=1.0, metavar="F",
                   help="SentencePiece character coverage (default 1.0; e.g. 0.9995 for large alphabets)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    try:
        out = build_tokenizer(args.manifest, args.out_dir, args.vocab_size, args.tokenizer_type, args.lower_case,
                              args.character_coverage)
    except (ValueError, FileNotFoundError) as e:
        return error(e, EXIT_USAGE)
    print(f"tokenizer written to {out}")
    return 0


if __name__ == "__main__":  # python -m nest_ext.cli.build_tokenizer
    raise SystemExit(main())
