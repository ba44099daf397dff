"""Read a ``.nemo`` file's config without unpacking its weights.

A ``.nemo`` is a tar holding ``model_config.yaml`` and ``model_weights.ckpt`` (NeMo's ``SaveRestoreConnector``);
reading the config alone is cheap even for a multi-GB model, e.g. to size a module that goes after its encoder.

Example::

    >>> import io, os, tarfile, tempfile
    >>> p = os.path.join(tempfile.mkdtemp(), "m.nemo")
    >>> data = b"encoder:\\n  d_model: 176\\n  feat_out: -1\\n"
    >>> with tarfile.open(p, "w") as t:
    ...     info = tarfile.TarInfo("./model_config.yaml"); info.size = len(data); t.addfile(info, io.BytesIO(data))
    >>> encoder_output_dim(read_nemo_config(p))
    176
"""
import tarfile

CONFIG_NAME = "model_config.yaml"


def read_nemo_config(path: str):
    """The ``DictConfig`` stored in a ``.nemo`` (``ValueError`` naming the file when it has none)."""
    from omegaconf import OmegaConf

    try:
        with tarfile.open(path, "r|*") as tar:  # streaming: stops at the config, usually the first member
            for member in tar:
                if member.isfile() and member.name.split("/")[-1] == CONFIG_NAME:
                    return OmegaConf.create(tar.extractfile(member).read().decode("utf-8"))
    except (tarfile.TarError, OSError) as e:
        raise ValueError(f"{path}: not a readable .nemo file ({e})") from None
    raise ValueError(f"{path}: no {CONFIG_NAME} inside (not a .nemo file)")


def encoder_output_dim(cfg) -> int:
    """Width of the encoder output for a NeMo model config: ``encoder.feat_out`` when set (> 0), else
    ``encoder.d_model``."""
    encoder = cfg.encoder
    feat_out = encoder.get("feat_out", -1)
    return int(feat_out) if feat_out is not None and int(feat_out) > 0 else int(encoder.d_model)
