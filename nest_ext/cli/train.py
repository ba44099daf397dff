"""The logic of ``train.py`` (NeMo's ``masked_token_pred_pretrain.py`` pattern): the model class from the config,
the Lightning trainer's arguments and callbacks, the demo's arguments, the final ``.nemo``.

``train.py`` at the repository root stays the entry point, so Hydra finds ``config/`` beside it
(``python train.py --config-name ...``); it calls :func:`run` with the composed config.
"""
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from nest_ext.cli.preflight import check_required_values, check_training_batches

ROOT = Path(__file__).resolve().parents[2]  # the checkout: train.py, config/, demo_data/
DEMO_CONFIG = "nest_demo"
DEFAULT_MODEL = "nest_ext.models.ssl_models.EncDecDenoiseMaskedTokenPredModel"


def demo_argv(demo_dir: Path = ROOT / "demo_data"):
    """Command-line arguments of the demo; synthesises its corpus first if it is missing."""
    from nest_ext.cli.make_demo_data import make_demo_data

    make_demo_data(demo_dir)
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


def run(cfg: DictConfig) -> None:
    """Train with the composed config ``cfg`` (what ``train.py``'s Hydra entry point hands over)."""
    check_required_values(cfg)
    import lightning.pytorch as pl

    from nest_ext.parts.logs import route_to_nemo_logger

    route_to_nemo_logger()  # our lines beside NeMo's: its console and exp_manager's log files

    from nemo.utils import logging
    from nemo.utils.exp_manager import exp_manager

    logging.info(f"Config:\n{OmegaConf.to_yaml(cfg)}")

    trainer = pl.Trainer(**trainer_kwargs(cfg))
    log_dir = exp_manager(trainer, cfg.get("exp_manager", None))
    model = model_class(cfg)(cfg=cfg.model, trainer=trainer)
    model.maybe_init_from_pretrained_checkpoint(cfg)
    train_dl = getattr(model, "_train_dl", None)  # NeMo's ModelPT; a LightningModule like SALM brings its own data
    if train_dl is not None:
        check_training_batches(trainer, train_dl)
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
