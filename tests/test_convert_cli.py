"""tools/convert_mossformer2_checkpoint.py: the official tiny checkpoint -> .nemo -> tools/separate.py
reproduces the official estimates; checkpoints that do not fit fail with the list of keys, writing nothing."""
import os

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import shared_reference


@pytest.fixture(scope="module")
def official():
    return torch.load(shared_reference("mossformer2", "official_tiny_2spk.pt"), map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def convert():
    from nest_ext.cli.convert_mossformer2_checkpoint import main

    return main


def test_official_checkpoint_converts_and_separates_to_its_estimates(official, convert, tmp_path, capsys):
    nemo = tmp_path / "models" / "tiny.nemo"
    assert convert(["--official", str(shared_reference("mossformer2", "official_tiny_2spk.pt")), "--out", str(nemo)]) == 0
    assert nemo.is_file() and os.listdir(nemo.parent) == ["tiny.nemo"]  # no temporary left behind
    assert "787,482 parameters" in capsys.readouterr().out

    inputs = []
    for i, mixture in enumerate(official["mixture"]):
        inputs.append(str(tmp_path / f"mixture{i}.wav"))
        sf.write(inputs[-1], mixture.numpy(), 8000, subtype="FLOAT")
    out = tmp_path / "separated"
    from nest_ext.cli.separate import main as separate

    assert separate(["--model", str(nemo), "--output-dir", str(out)] + inputs) == 0
    for i in range(len(inputs)):
        for s in range(official["estimates"].shape[1]):
            audio, rate = sf.read(out / f"mixture{i}_s{s + 1}.wav", dtype="float32")
            assert rate == 8000 and sf.info(str(out / f"mixture{i}_s{s + 1}.wav")).subtype == "FLOAT"
            np.testing.assert_allclose(audio, official["estimates"][i, s].numpy(), rtol=0, atol=1e-4)


def test_bare_state_dict_architecture_from_shapes_and_flags(official, convert, tmp_path):
    from nest_ext.models.mossformer2_separation import MossFormer2SeparationModel

    bare = tmp_path / "bare.pt"
    torch.save({"model": official["state_dict"]}, bare)  # no config: architecture inferred from the shapes
    nemo = tmp_path / "bare.nemo"
    assert convert(["--official", str(bare), "--out", str(nemo), "--sample-rate", "16000"]) == 0
    model = MossFormer2SeparationModel.restore_from(str(nemo), map_location="cpu")
    assert model.sample_rate == 16000 and model.num_spks == 2
    assert model.cfg.masker.num_layers == 2 and model.cfg.encoder.embedding_dim == 64


def test_checkpoint_that_does_not_fit_fails_with_every_key(official, convert, tmp_path, capsys):
    state = dict(official["state_dict"])
    dropped = "mask_net.conv1d_encoder.weight"
    del state[dropped]
    state["mask_net.extra_head.weight"] = torch.zeros(3)
    bad = tmp_path / "bad.pt"
    torch.save({"config": official["config"], "state_dict": state}, bad)
    out = tmp_path / "out" / "bad.nemo"
    assert convert(["--official", str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "mask_net.extra_head.weight" in err and "unknown" in err
    assert "missing" in err and "input_proj" in err  # our name for the dropped official key
    assert not out.exists() and not (out.parent.exists() and os.listdir(out.parent))

    # A flag that contradicts the file: a third layer that the checkpoint lacks
    assert convert(["--official", str(shared_reference("mossformer2", "official_tiny_2spk.pt")), "--out", str(out),
                    "--num-mossformer-layer", "3"]) == 2
    assert "missing" in capsys.readouterr().err
    assert not out.exists()
