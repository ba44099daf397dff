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
``.nemo`` is printed at the end.
"""
import importlib.util
import math
import sys
import time
from pathlib import Path
from typing import List, Optional

from omegaconf import DictConfig, OmegaConf, open_dict

from nemo.core.config import hydra_runner

ROOT = Path(__file__).resolve().parent
DEMO_CONFIG = "nest_demo"
DEFAULT_MODEL = "nest_ext.models.ssl_models.EncDecDenoiseMaskedTokenPredModel"


def demo_argv(demo_dir: Path = ROOT / "demo_data"):
    """Command-line arguments of the demo; synthesises its corpus first if it is missing."""
    spec = importlib.util.spec_from_file_location("make_demo_data", ROOT / "tools" / "make_demo_data.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    tool.make_demo_data(demo_dir)
    m = {name: str(demo_dir / f"{name}_manifest.json") for name in ("train", "val", "noise")}
    return [
        f"--config-name={DEMO_CONFIG}",
        # absolute paths, so the demo runs from any working directory
        f"model.train_ds.manifest_filepath={m['train']}",
        f"model.train_ds.noise_manifest={m['noise']}",
        f"model.validation_ds.manifest_filepath={m['val']}",
        f"model.validation_ds.noise_manifest={m['noise']}",
    ]


def build_callbacks(cfg: DictConfig, configured=()) -> list:
    """The run's Lightning callbacks: ``configured`` (those instantiated from ``trainer.callbacks``) plus ours.

    The place to attach run-wide callbacks without touching configs: ``UseAtomicCheckpointIO`` (checkpoints go to
    a temporary file beside the target, then ``os.replace``) and ``TrainingHealthMonitor`` from ``model.health``
    (on by default; not added when ``configured`` already has one).
    """
    from nest_ext.parts.atomic_checkpoint import UseAtomicCheckpointIO
    from nest_ext.parts.health import add_health_monitor

    return add_health_monitor(list(configured) + [UseAtomicCheckpointIO()], cfg.model)


def model_class(cfg: DictConfig):
    """``cfg.model.target`` if set (a ``ModelPT`` or, like NeMo's SALM, a ``LightningModule`` subclass), else
    nest_ext's NEST model. A class whose optional dependencies are missing exits naming the extra to install."""
    import hydra.utils
    from lightning.pytorch import LightningModule

    from nemo.core.classes import ModelPT

    import nest_ext.models.ssl_models  # noqa: F401  (lets NeMo instantiate nest_ext.* targets)
    from nest_ext.parts.extras import MissingExtraError

    target = cfg.model.get("target", None) or DEFAULT_MODEL
    try:
        cls = hydra.utils.get_class(target)
    except ImportError as e:
        cause = e
        while cause is not None and not isinstance(cause, MissingExtraError):
            cause = cause.__cause__ or cause.__context__
        if cause is None:
            raise
        from hydra.core.hydra_config import HydraConfig

        name = HydraConfig.get().job.config_name if HydraConfig.initialized() else "this config"
        raise SystemExit(f"config {name} (model.target={target}) {cause}") from None
    if not (isinstance(cls, type) and issubclass(cls, (ModelPT, LightningModule))):
        raise SystemExit(f"model.target={target!r} is not a NeMo model class (a ModelPT or LightningModule subclass)")
    return cls


def trainer_kwargs(cfg: DictConfig) -> dict:
    """Lightning Trainer arguments from ``cfg.trainer`` (NeMo's resolution), fit for CPU-only machines."""
    import torch

    from nemo.utils import logging
    from nemo.utils.trainer_utils import resolve_trainer_cfg

    from nest_ext.parts.atomic_checkpoint import UseAtomicCheckpointIO
    from nest_ext.parts.health import TrainingHealthMonitor
    from nest_ext.parts.nemo_targets import allow_nest_ext_targets

    # so `trainer.callbacks: [{_target_: nest_ext.parts.health.TrainingHealthMonitor, ...}]` passes NeMo's allow-list
    allow_nest_ext_targets(TrainingHealthMonitor, UseAtomicCheckpointIO)
    kwargs = dict(resolve_trainer_cfg(cfg.trainer))
    on_cpu = kwargs.get("accelerator") == "cpu" or (kwargs.get("accelerator") in (None, "auto")
                                                   and not torch.cuda.is_available())
    if on_cpu and kwargs.get("devices") == -1:
        # NeMo's configs say -1 = "all GPUs"; Lightning rejects -1 for CPU, where it means one process
        logging.info("trainer.devices=-1 on CPU: using devices=1")
        kwargs["devices"] = 1
    if on_cpu and kwargs.get("sync_batchnorm"):
        logging.info("trainer.sync_batchnorm=true on CPU: turned off (SyncBatchNorm needs GPUs)")
        kwargs["sync_batchnorm"] = False
    kwargs["callbacks"] = build_callbacks(cfg, kwargs.get("callbacks") or [])
    return kwargs


def find_nemo(log_dir, since: float):
    """The newest ``.nemo`` exp_manager wrote under ``log_dir`` at or after time ``since`` (None if none)."""
    if log_dir is None:
        return None
    found = sorted((p for p in Path(log_dir).rglob("*.nemo") if p.stat().st_mtime >= since),
                   key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def missing_values(cfg: DictConfig) -> List[str]:
    """Dotted keys whose value is ``???``. Interpolations are not followed (``OmegaConf.missing_keys`` raises on
    one that points at a missing value, e.g. ``init_from_nemo_model.nest.path: ${nest_checkpoint}``)."""
    found = []

    def walk(node, key):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{key}.{k}" if key else str(k))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{key}[{i}]")
        elif node == "???":
            found.append(key)

    walk(OmegaConf.to_container(cfg, resolve=False), "")
    return found


# any one of these names the training data of a NeMo dataset config (manifests, tarred, lhotse)
DATA_KEYS = ("manifest_filepath", "input_cfg", "shar_path", "cuts_path")


def settle_data_alternatives(cfg: DictConfig) -> None:
    """A dataset's required manifest (``???``) is not needed when the data come another way (``shar_path``,
    ``input_cfg``, ``cuts_path``, e.g. lhotse Shar shards): set it to null in ``cfg``."""
    model = cfg.get("model", None)
    for name in ("train_ds", "validation_ds", "test_ds"):
        section = model.get(name, None) if model is not None else None
        if (isinstance(section, DictConfig) and OmegaConf.is_missing(section, "manifest_filepath")
                and any(section.get(key, None) for key in DATA_KEYS[1:])):
            with open_dict(section):
                section.manifest_filepath = None


def check_required_values(cfg: DictConfig) -> None:
    """Stop with the keys to set when a required value is missing or no training data is named; runs before
    anything is created (no ``nemo_experiments/``)."""
    example = ("\n  e.g. python train.py model.train_ds.manifest_filepath=train.json "
               "model.validation_ds.manifest_filepath=val.json\n  (python train.py with no arguments runs the demo)")
    settle_data_alternatives(cfg)
    missing = missing_values(cfg)
    if missing:  # a clear message instead of a traceback from deep inside NeMo or Lightning
        raise SystemExit("These config values must be set: " + ", ".join(missing) + example)
    if "train_ds" not in cfg.model:
        return  # a model that takes its data elsewhere
    train_ds = cfg.model.train_ds
    if train_ds is not None and "manifest_filepath" not in train_ds:
        return  # not a NeMo audio dataset section (e.g. SALM's data_path): the model checks its own data
    if train_ds is None or not any(train_ds.get(key, None) for key in DATA_KEYS):
        raise SystemExit("No training data: set model.train_ds.manifest_filepath (or model.train_ds.input_cfg for "
                         "lhotse)" + example)


def training_batches_per_device(trainer, loader) -> Optional[int]:
    """Training batches of one epoch on one device, as Lightning will count them; None when it cannot be known
    before training (a loader without a length)."""
    import torch.utils.data

    try:
        batches = len(loader)
    except TypeError:
        return None
    dataset, batch_size = getattr(loader, "dataset", None), getattr(loader, "batch_size", None)
    world = int(getattr(trainer, "world_size", 1) or 1)
    if world > 1 and not isinstance(dataset, torch.utils.data.IterableDataset):  # iterable ones split themselves
        if batch_size is None or not hasattr(dataset, "__len__"):
            return None
        per_device = math.ceil(len(dataset) / world)  # Lightning's DistributedSampler pads to equal shares
        batches = per_device // batch_size if loader.drop_last else math.ceil(per_device / batch_size)
    limit = trainer.limit_train_batches
    if isinstance(limit, int):
        return min(batches, limit)
    return int(batches * limit) if isinstance(limit, float) else batches


def check_training_batches(trainer, loader) -> None:
    """Stop before training, saying what to do, when an epoch has no training batch, or when
    ``trainer.val_check_interval`` is a number of steps larger than an epoch (NeMo's NEST config has 2500;
    Lightning would stop with "must be less than or equal to the number of the training batches")."""
    batches = training_batches_per_device(trainer, loader)
    if batches == 0:
        raise SystemExit(
            f"The training data gives no batch per epoch per device ({len(loader.dataset)} items, batch_size "
            f"{loader.batch_size}, drop_last={loader.drop_last}): lower model.train_ds.batch_size or set "
            "model.train_ds.drop_last=false"
        )
    interval = trainer.val_check_interval
    if not isinstance(interval, int) or isinstance(interval, bool) or trainer.check_val_every_n_epoch is None:
        return
    if batches is not None and interval > batches:
        raise SystemExit(
            f"trainer.val_check_interval={interval} (steps) is more than the {batches} training batches of an epoch "
            f"per device: add trainer.val_check_interval=1.0 (validate once per epoch) or a number <= {batches}"
        )


@hydra_runner(config_path="config", config_name="nest_fast-conformer")
def main(cfg: DictConfig):
    check_required_values(cfg)
    import lightning.pytorch as pl

    from nemo.utils import logging
    from nemo.utils.exp_manager import exp_manager

    logging.info(f"Config:\n{OmegaConf.to_yaml(cfg)}")

    trainer = pl.Trainer(**trainer_kwargs(cfg))
    log_dir = exp_manager(trainer, cfg.get("exp_manager", None))
    model = model_class(cfg)(cfg=cfg.model, trainer=trainer)
    model.maybe_init_from_pretrained_checkpoint(cfg)
    check_training_batches(trainer, model._train_dl)
    started = time.time()
    trainer.fit(model)

    if trainer.is_global_zero:
        path = find_nemo(log_dir, started)
        if path is None:  # no checkpoint callback wrote one: save the final model
            from nest_ext.parts.atomic_io import atomic_path, remove_temps

            suffix = getattr(model, "SAVE_SUFFIX", ".nemo")  # NestSALM: a small .ckpt of the trained weights
            path = Path(log_dir or ".") / f"{cfg.name}{suffix}"
            remove_temps(path, only_orphans=True)  # what a save killed in an earlier run left
            with atomic_path(path, suffix=suffix) as tmp:  # NeMo wants the .nemo suffix
                model.save_to(tmp)
        print(f"\nTrained model ({Path(path).suffix}): {Path(path).resolve()}", flush=True)


if __name__ == "__main__":
    if len(sys.argv) == 1:
        sys.argv += demo_argv()
    main()
