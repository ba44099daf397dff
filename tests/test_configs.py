"""NEST configs: key-by-key equal to NeMo's originals; each size builds a model of NeMo's parameter count."""
import copy
import json

import pytest
from omegaconf import OmegaConf, open_dict

from conftest import ROOT, shared_reference
from nest_ext.parts.nest_sizes import NEST_SIZES, encoder_overrides

# our _target_s that stand for NeMo's class of the same name
MAPPED = {
    "nest_ext.losses.MultiMLMLoss": "nemo.collections.asr.losses.MultiMLMLoss",
    "nest_ext.modules.ConformerEncoder": "nemo.collections.asr.modules.ConformerEncoder",
    "nest_ext.modules.RandomProjectionVectorQuantizer": "nemo.collections.asr.modules.RandomProjectionVectorQuantizer",
}


def compose(name):
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "config"), version_base=None):
        return hydra_compose(config_name=name)


def flatten(node, prefix=""):
    if isinstance(node, dict):
        out = {} if node or not prefix else {prefix: {}}
        for k, v in node.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(node, list):
        out = {} if node else {prefix: []}
        for i, v in enumerate(node):
            out.update(flatten(v, f"{prefix}[{i}]"))
        return out
    return {prefix: node}


def differences(ours, theirs):
    """Keys whose value or type differ (interpolations compared as written), mapped _target_s excepted."""
    a = flatten(OmegaConf.to_container(ours, resolve=False))
    b = flatten(OmegaConf.to_container(theirs, resolve=False))
    diff = {}
    for key in set(a) | set(b):
        va, vb = a.get(key, "<absent>"), b.get(key, "<absent>")
        if va == vb and type(va) is type(vb):
            continue
        if key.endswith("_target_") and MAPPED.get(va) == vb:
            continue
        diff[key] = (va, vb)
    return diff


def nemo_original(name):
    return OmegaConf.load(shared_reference("nemo", f"{name}.yaml"))


@pytest.mark.parametrize("name", ["nest_fast-conformer", "nest_fast-conformer-v2-xlarge"])
def test_config_equals_nemo_original(name):
    ours = compose(name)
    assert differences(ours, nemo_original(name)) == {}
    assert ours.model.loss._target_ == "nest_ext.losses.MultiMLMLoss"
    assert ours.model.quantizer._target_ == "nest_ext.modules.RandomProjectionVectorQuantizer"


def test_difference_finder_sees_a_changed_value():
    ours = compose("nest_fast-conformer")
    ours.model.masking.block_size = 41
    assert set(differences(ours, nemo_original("nest_fast-conformer"))) == {"model.masking.block_size"}


@pytest.mark.parametrize("size", ["small", "medium", "xlarge", "xxlarge"])
def test_size_config_is_the_original_with_the_table_row(size):
    expected = copy.deepcopy(nemo_original("nest_fast-conformer"))
    expected.model.encoder.update(encoder_overrides(size))
    expected.model.optim.weight_decay = NEST_SIZES[size]["weight_decay"]
    assert differences(compose(f"nest_fast-conformer_{size}"), expected) == {}


@pytest.mark.parametrize("size", list(NEST_SIZES))
def test_size_builds_nemos_parameter_count(size, monkeypatch):
    """Our model from our config has NeMo's instantiated count, total and per child (built on meta)."""
    from nest_ext.cli.nemo_comparison import LargeTensorsOnMeta
    from nest_ext.models import EncDecDenoiseMaskedTokenPredModel

    monkeypatch.delenv("USE_NEMO_CONFORMER", raising=False)
    expected = json.loads(shared_reference("nemo", "nest_param_counts.json").read_text())[size]
    cfg = compose("nest_fast-conformer" if size == "large" else f"nest_fast-conformer_{size}").model
    with open_dict(cfg):
        cfg.train_ds = cfg.validation_ds = None
    with LargeTensorsOnMeta():
        model = EncDecDenoiseMaskedTokenPredModel(cfg=cfg)
    counts = {"total": sum(p.numel() for p in model.parameters()),
              "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad)}
    counts.update({name: sum(p.numel() for p in child.parameters()) for name, child in model.named_children()})
    assert counts == expected


def test_demo_config_builds_a_tiny_cpu_model():
    from nest_ext.models import EncDecDenoiseMaskedTokenPredModel

    cfg = compose("nest_demo")
    assert cfg.trainer.accelerator == "cpu" and cfg.trainer.devices == 1 and cfg.trainer.strategy == "auto"
    assert cfg.exp_manager.resume_if_exists and cfg.exp_manager.checkpoint_callback_params.always_save_nemo
    assert cfg.exp_manager.checkpoint_callback_params.every_n_train_steps > 0
    model_cfg = copy.deepcopy(cfg.model)
    with open_dict(model_cfg):
        model_cfg.train_ds = model_cfg.validation_ds = None
    model = EncDecDenoiseMaskedTokenPredModel(cfg=model_cfg)
    assert sum(p.numel() for p in model.parameters()) < 1_000_000
