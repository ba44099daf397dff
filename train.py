#!/usr/bin/env python
"""Train a NeMo model from a Hydra config: NEST pretraining by default, like NeMo's
``examples/asr/speech_pretraining/masked_token_pred_pretrain.py``.

    python train.py model.train_ds.manifest_filepath=train.json model.validation_ds.manifest_filepath=val.json \\
        model.train_ds.noise_manifest=noise.json trainer.accelerator=cpu
    python train.py --config-name nest_fast-conformer_small ...     # a size from config/
    python train.py                                                 # the demo (see config/nest_demo.yaml)
    USE_NEMO_CONFORMER=true python train.py ...                     # NeMo's ConformerEncoder instead of ours

Any key of the config can be overridden (``key=value``; ``+key=value`` adds a key Hydra does not know).
The model class is ``model.target`` (a dotted class path) when the config sets it -- the MossFormer2 and
CTC fine-tuning configs do -- and nest_ext's ``EncDecDenoiseMaskedTokenPredModel`` otherwise. NeMo's
``exp_manager`` handles logging, checkpoints and resuming; ``init_from_nemo_model`` /
``init_from_pretrained_model`` / ``init_from_ptl_ckpt`` work as in NeMo's scripts. The path of the
``.nemo`` is printed at the end. The code is :mod:`nest_ext.cli.train`; this file stays here so Hydra finds
``config/`` beside it.
"""
import sys

from omegaconf import DictConfig

from nemo.core.config import hydra_runner
from nest_ext.cli.train import demo_argv, run


@hydra_runner(config_path="config", config_name="nest_fast-conformer")
def main(cfg: DictConfig):
    run(cfg)


if __name__ == "__main__":
    if len(sys.argv) == 1:
        sys.argv += demo_argv()
    main()
