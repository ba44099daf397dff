"""Fold a trained NestSALM's LoRA adapters into its LLM and write the result as a Hugging Face directory.

    nest-merge-lora --model SALM-NEST-LoRA.ckpt --out-dir merged_llm [--dtype bfloat16]
    python tools/merge_lora.py --model M.ckpt --out-dir merged_llm --llm /models/Qwen2-7B-Instruct

The directory (``config.json``, weights, generation config, the LLM's original tokenizer) loads with
``AutoModelForCausalLM.from_pretrained`` and gives the same outputs as the LLM with the adapters on; it can
serve as ``model.pretrained_llm`` of a later run. It appears only when complete; an existing non-empty
``--out-dir`` is refused. The connector is not part of it (it stays in the checkpoint).

Exit status: 0 on success, 2 on bad arguments or an unusable checkpoint.
"""
import argparse

from nest_ext.cli.conventions import EXIT_USAGE, add_out_dir, error, make_parser, setup_logging
from nest_ext.cli.salm_model_args import DTYPES, add_model_arguments, load_model


def build_parser() -> argparse.ArgumentParser:
    p = make_parser(__doc__)
    add_model_arguments(p)
    add_out_dir(p, help="where the merged Hugging Face LLM directory goes")
    p.add_argument("--dtype", choices=sorted(DTYPES), default=None,
                   help="weights dtype of the written model (default: as loaded, float32)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    try:
        model = load_model(args)
        model.merge_lora()
        out = model.save_llm(args.out_dir, dtype=DTYPES[args.dtype] if args.dtype else None)
    except (ValueError, OSError) as e:  # FileExistsError / FileNotFoundError included
        return error(e, EXIT_USAGE)
    print(f"Merged LLM: {out}", flush=True)
    return 0


if __name__ == "__main__":  # python -m nest_ext.cli.merge_lora
    raise SystemExit(main())
