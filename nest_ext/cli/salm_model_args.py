"""Command-line options shared by the tools that load a trained NestSALM checkpoint (evaluate_llm_asr, merge_lora).

The checkpoint stores the paths of the NEST ``.nemo`` and of the LLM it was trained with; ``--nest`` / ``--llm``
point elsewhere when those moved (another machine, a copied model directory).
"""
import argparse

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True,
                   help="NestSALM checkpoint: the .ckpt train.py prints, or an exp_manager checkpoint of the run")
    p.add_argument("--nest", default=None, help="NEST/ASR .nemo to use instead of the one named in the checkpoint")
    p.add_argument("--llm", default=None, help="Hugging Face LLM directory instead of the one named in the checkpoint")


def load_model(args: argparse.Namespace, map_location: str = "cpu"):
    """The NestSALM of ``args.model`` (with ``--nest`` / ``--llm`` applied), in eval mode."""
    from nest_ext.models.salm_nest import NestSALM

    overrides = {}
    if args.nest:
        overrides.update(pretrained_nest=args.nest, pretrained_asr=args.nest)
    if args.llm:
        overrides["pretrained_llm"] = args.llm
    return NestSALM.restore_from(args.model, map_location=map_location, overrides=overrides).eval()
