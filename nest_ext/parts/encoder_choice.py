"""Which parts a nest_ext model builds: ours (encoder, MLM losses), or NeMo's encoder when ``USE_NEMO_CONFORMER`` is set.

Our models build nest_ext's ConformerEncoder and MLM losses also where a config names NeMo's
(:func:`nest_ext.parts.nemo_targets.with_our_parts`), so a portable ``.nemo`` -- one that names NeMo's
classes -- comes back with our parts. ``USE_NEMO_CONFORMER=true`` (also ``1``/``yes``, any case) makes
them build ``nemo.collections.asr.modules.ConformerEncoder`` from the same encoder config instead. Both
have the same constructor arguments and state dict, so a ``.nemo`` saved with one restores with the
other. Encoder targets that are not a Conformer are left alone (with a warning when the variable is set).
The choice is logged.

Example::

    >>> use_nemo_conformer({"USE_NEMO_CONFORMER": "Yes"}), use_nemo_conformer({"USE_NEMO_CONFORMER": "0"})
    (True, False)

and in a model's ``__init__`` (the given config is not changed)::

    build_cfg = apply_encoder_choice(cfg)   # our parts; encoder._target_ is NeMo's when the variable is set
"""
from __future__ import annotations

import logging
import os
from typing import Mapping, Optional

from omegaconf import DictConfig, open_dict

from nest_ext.parts.nemo_targets import NEMO_CONFORMER, NEMO_EQUIVALENT, OUR_PARTS, with_our_parts

ENV_VAR = "USE_NEMO_CONFORMER"
# every spelling of a Conformer target the toggle may replace
CONFORMER_TARGETS = {
    t for pair in (*NEMO_EQUIVALENT.items(), *OUR_PARTS.items()) for t in pair if t.endswith(".ConformerEncoder")
}
TRUE_VALUES = {"true", "1", "yes"}

logger = logging.getLogger(__name__)


def use_nemo_conformer(env: Optional[Mapping[str, str]] = None) -> bool:
    """True when ``USE_NEMO_CONFORMER`` is ``true``/``1``/``yes`` (case-insensitive) in ``env`` (default os.environ)."""
    env = os.environ if env is None else env
    return env.get(ENV_VAR, "").strip().lower() in TRUE_VALUES


def encoder_target(encoder_cfg, env: Optional[Mapping[str, str]] = None) -> str:
    """The ``_target_`` to build for ``encoder_cfg`` under the toggle, and log the choice."""
    target = encoder_cfg.get("_target_", None) if encoder_cfg is not None else None
    if target is None:
        return target
    if use_nemo_conformer(env):
        if target in CONFORMER_TARGETS:
            logger.info(f"{ENV_VAR} is set: building NeMo's {NEMO_CONFORMER} instead of {target}")
            return NEMO_CONFORMER
        logger.warning(f"{ENV_VAR} is set but the encoder is {target}, not a ConformerEncoder: left as it is")
        return target
    if target in CONFORMER_TARGETS and not target.startswith("nemo."):
        logger.info(f"encoder: {target} (set {ENV_VAR}=true to build NeMo's ConformerEncoder instead)")
    else:
        logger.info(f"encoder: {target}")
    return target


def apply_encoder_choice(model_cfg: DictConfig, env: Optional[Mapping[str, str]] = None) -> DictConfig:
    """A copy of a model config to build from: our parts in place of NeMo's, and the encoder toggle applied.

    ``model_cfg`` is unchanged.
    """
    new = with_our_parts(model_cfg)
    if "encoder" not in new or new.encoder is None:
        return new
    target = encoder_target(new.encoder, env)
    with open_dict(new):
        new.encoder._target_ = target
    return new
