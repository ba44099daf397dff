"""Official MossFormer2 checkpoints: parity with the official fixture, layouts of the full and S models,
and clear failures on checkpoints that do not fit."""
import json

import pytest
import torch

from nest_ext.modules.mossformer2 import MossFormer2
from nest_ext.modules.mossformer2.converter import (
    MossFormer2CheckpointError,
    architecture_from_checkpoint,
    load_official_state_dict,
    official_to_ours,
    official_to_ours_name,
)
from conftest import shared_reference


@pytest.fixture(scope="module")
def fixture_ckpt():
    return torch.load(shared_reference("mossformer2", "official_tiny_2spk.pt"), map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def layouts():
    with open(shared_reference("mossformer2", "official_state_dict_layout.json"), encoding="utf-8") as f:
        return json.load(f)


def test_converted_official_fixture_reproduces_official_estimates(fixture_ckpt):
    arch = architecture_from_checkpoint(fixture_ckpt)
    assert arch == {k: fixture_ckpt["config"][k] for k in arch}
    model = MossFormer2(**arch)
    model.load_state_dict(official_to_ours(load_official_state_dict(fixture_ckpt), arch), strict=True)
    model.eval()
    with torch.no_grad():
        estimates = model(fixture_ckpt["mixture"])
    assert estimates.shape == fixture_ckpt["estimates"].shape
    torch.testing.assert_close(estimates, fixture_ckpt["estimates"], atol=1e-4, rtol=0)
    assert sum(p.numel() for p in model.parameters()) == 787_482


@pytest.mark.parametrize("name", ["mossformer2_ss_full", "mossformer2_ss_small"])
def test_full_and_small_layouts_map_one_to_one(layouts, name):
    layout = layouts[name]
    official = {key: torch.empty(shape, device="meta") for key, shape in layout["state_dict"]}
    arch = architecture_from_checkpoint({"state_dict": official})  # inferred from shapes alone
    assert arch == {k: layout["config"][k] for k in arch}
    with torch.device("meta"):
        model = MossFormer2(**arch)
    assert sum(p.numel() for p in model.parameters()) == layout["num_parameters"]
    ours = official_to_ours(official, arch)
    expected = model.state_dict()
    assert set(ours) == set(expected) and len(ours) == len(official)  # a bijection of names
    targets = [official_to_ours_name(k) for k in official]
    assert len(set(targets)) == len(targets)
    for key, tensor in ours.items():
        assert tensor.shape == expected[key].shape, key


def test_wrapped_checkpoints_are_unwrapped(fixture_ckpt):
    sd = fixture_ckpt["state_dict"]
    for wrapped in ({"model": {f"module.{k}": v for k, v in sd.items()}, "epoch": 3},
                    {"state_dict": {f"ss_network.{k}": v for k, v in sd.items()}},
                    dict(sd)):
        assert load_official_state_dict(wrapped).keys() == sd.keys()
    with pytest.raises(MossFormer2CheckpointError, match="encoder weight"):
        load_official_state_dict({"weight": torch.zeros(1)})


def test_unknown_missing_and_mismatched_keys_are_listed(fixture_ckpt):
    arch = architecture_from_checkpoint(fixture_ckpt)
    sd = dict(fixture_ckpt["state_dict"])
    dropped = "mask_net.mdl.intra_mdl.mossformerM.fsmn.1.gated_fsmn.fsmn.conv.prelu2.weight"
    del sd[dropped]
    del sd["dec.weight"]
    sd["mask_net.extra.weight"] = torch.zeros(3)
    sd["mask_net.conv1d_out.bias"] = torch.zeros(5)
    with pytest.raises(MossFormer2CheckpointError) as err:
        official_to_ours(sd, arch)
    e = err.value
    assert e.unknown == ["mask_net.extra.weight"]
    assert set(e.missing) == {"masker.layers.1.fsmn_block.gated_fsmn.fsmn.memory.layers.1.act.weight",
                              "decoder.deconv.weight"}
    assert len(e.mismatched) == 1 and "mask_net.conv1d_out.bias" in e.mismatched[0]
    for text in ("mask_net.extra.weight", "decoder.deconv.weight", "conv1d_out.bias", "1 unknown", "2 missing"):
        assert text in str(e)


def test_architecture_mismatch_fails_and_overrides_apply(fixture_ckpt):
    sd = load_official_state_dict(fixture_ckpt)
    wrong = architecture_from_checkpoint(fixture_ckpt, num_spks=3)
    assert wrong["num_spks"] == 3
    with pytest.raises(MossFormer2CheckpointError, match="shape mismatch"):
        official_to_ours(sd, wrong)
    fewer = architecture_from_checkpoint({"state_dict": fixture_ckpt["state_dict"]}, num_mossformer_layer=1)
    with pytest.raises(MossFormer2CheckpointError, match="unknown key"):
        official_to_ours(sd, fewer)
    with pytest.raises(TypeError):
        architecture_from_checkpoint(fixture_ckpt, num_heads=4)
