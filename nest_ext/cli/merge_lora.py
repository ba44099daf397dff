"""Fold a trained NestSALM's LoRA adapters into its LLM and write the result as a Hugging Face directory.

    nest-merge_lora --model SALM-NEST-LoRA.ckpt --out-dir merged_llm [--dtype bfloat16]
    python tools/merge_lora.py --model M.ckpt --out-dir merged_llm --llm /models/Qwen2-7B-Instruct

The directory (``config.json``, weights, generation config, the LLM's original tokenizer) loads with
``AutoModelForCausalLM.from_pretrained`` and gives the same outputs as the LLM with the adapters on; it can
serve as ``model.pretrained_llm`` of a later run. It appears only when complete; an existing non-empty
``--out-dir`` is refused. The connector is not part of it (it stays in the checkpoint).

Exit status: 0 on success, 2 on bad arguments or an unusable checkpoint.
"""
import argparse
import logging
import sys

from nest_ext.cli.salm_model_args import DTYPES, add_model_arguments, load_model


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nest-merge_lora", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(p)
    p.add_argument("--out-dir", required=True, help="where the merged Hugging Face LLM directory goes")
    p.add_argument("--dtype", choices=sorted(DTYPES), default=None,
                   help="weights dtype of the written model (default: as loaded, float32)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        model = load_model(args)
        model.merge_lora()
        out = model.save_llm(args.out_dir, dtype=DTYPES[args.dtype] if args.dtype else None)
    except (ValueError, OSError) as e:  # FileExistsError / FileNotFoundError included
        print(f"merge_lora: error: {e}", file=sys.stderr)
        return 2
    print(f"Merged LLM: {out}", flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
