"""Starting from NVIDIA's released NEST checkpoints: a NEST .nemo written by NeMo's own class (as
nvidia/ssl_en_nest_large_v1.0 is) initialises continued pretraining and CTC fine-tuning, from a path
(init_from_nemo_model) or by name (init_from_pretrained_model, through NeMo's Hugging Face cache; no network)."""
import shutil

import pytest
import torch
from omegaconf import open_dict

NAME = "nvidia/ssl_en_nest_large_v1.0"
# the CTC config's encoder shrunk to config/nest_demo.yaml's
DEMO_ENCODER = ["model.encoder.d_model=64", "model.encoder.n_heads=4", "model.encoder.n_layers=2",
                "model.encoder.subsampling_conv_channels=64", "model.encoder.conv_kernel_size=9"]


def compose(name, overrides=()):
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from conftest import ROOT

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "config"), version_base=None):
        return hydra_compose(config_name=name, overrides=list(overrides))


def put_in_hf_cache(cache, repo_id, nemo_file):
    """Lay ``nemo_file`` out as huggingface_hub's cache holds a downloaded ``repo_id`` (what from_pretrained finds
    before it would go online)."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True, exist_ok=True)
    shutil.copy(nemo_file, repo / "snapshots" / commit / (repo_id.split("/")[1] + ".nemo"))
    return cache


@pytest.fixture(scope="module")
def nvidia_nest(tmp_path_factory):
    """A NEST .nemo saved by NeMo's EncDecDenoiseMaskedTokenPredModel (NeMo's classes throughout, the demo's size),
    its weights moved off any fresh initialisation; also put in a Hugging Face cache as NAME."""
    from nemo.collections.asr.models.ssl_models import EncDecDenoiseMaskedTokenPredModel

    from nest_ext.parts.nemo_targets import to_nemo_targets

    cfg = to_nemo_targets(compose("nest_demo").model)
    with open_dict(cfg):
        cfg.train_ds = cfg.validation_ds = None
    torch.manual_seed(0)
    model = EncDecDenoiseMaskedTokenPredModel(cfg=cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    folder = tmp_path_factory.mktemp("nvidia_nest")
    model.save_to(str(folder / "nest.nemo"))
    assert "nest_ext" not in (folder / "nest.nemo").read_bytes().decode("latin-1")  # NeMo's names only
    put_in_hf_cache(folder / "hf_cache", NAME, folder / "nest.nemo")
    return folder, {k: v.clone() for k, v in model.state_dict().items()}


@pytest.fixture
def offline_hub(nvidia_nest, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(nvidia_nest[0] / "hf_cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def assert_equal_tensors(ours, theirs, prefix=""):
    names = [k for k in theirs if k.startswith(prefix)]
    assert names
    for k in names:
        assert torch.equal(ours[k], theirs[k]), f"{k} did not arrive from the NEST checkpoint"


@pytest.mark.parametrize("how", ["init_from_nemo_model", "init_from_pretrained_model"])
def test_continued_pretraining_starts_from_nemos_nest(nvidia_nest, offline_hub, how, monkeypatch):
    """train.py's NEST path: our model, then NeMo's maybe_init_from_pretrained_checkpoint, takes every weight."""
    from nest_ext.models import EncDecDenoiseMaskedTokenPredModel
    from nest_ext.modules import ConformerEncoder

    monkeypatch.delenv("USE_NEMO_CONFORMER", raising=False)
    folder, weights = nvidia_nest
    cfg = compose("nest_demo", [f"+{how}={folder / 'nest.nemo' if how == 'init_from_nemo_model' else NAME}"])
    with open_dict(cfg):
        cfg.model.train_ds = cfg.model.validation_ds = None
    model = EncDecDenoiseMaskedTokenPredModel(cfg=cfg.model)
    assert type(model.encoder) is ConformerEncoder
    assert not torch.equal(model.state_dict()["encoder.pre_encode.out.weight"], weights["encoder.pre_encode.out.weight"])
    model.maybe_init_from_pretrained_checkpoint(cfg)
    assert model.state_dict().keys() == weights.keys()
    assert_equal_tensors(model.state_dict(), weights)


@pytest.mark.parametrize("checkpoint", ["path", "name"])
def test_ctc_finetuning_starts_from_nemos_nest_encoder(nvidia_nest, offline_hub, tmp_path, checkpoint):
    """fastconformer_ctc_bpe_finetune: nest_checkpoint= a path or a Hugging Face name; the encoder arrives, the
    decoder stays new."""
    from nemo.collections.common.tokenizers.sentencepiece_tokenizer import create_spt_model

    from nest_ext.models import EncDecCTCModelBPE

    folder, weights = nvidia_nest
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("alpha bravo charlie delta echo foxtrot golf hotel india\n" * 20)
    create_spt_model(str(corpus), 24, sample_size=-1, do_lower_case=True, tokenizer_type="bpe",
                     output_dir=str(tmp_path / "tok"))
    source = str(folder / "nest.nemo") if checkpoint == "path" else NAME
    cfg = compose("fastconformer_ctc_bpe_finetune",
                  [f"nest_checkpoint={source}", f"model.tokenizer.dir={tmp_path / 'tok'}", *DEMO_ENCODER])
    with open_dict(cfg):
        cfg.model.train_ds = cfg.model.validation_ds = cfg.model.test_ds = None
    model = EncDecCTCModelBPE(cfg=cfg.model)
    decoder = {k: v.clone() for k, v in model.decoder.state_dict().items()}
    model.maybe_init_from_pretrained_checkpoint(cfg)
    encoder = {f"encoder.{k}": v for k, v in model.encoder.state_dict().items()}
    assert encoder.keys() == {k for k in weights if k.startswith("encoder.")}
    assert_equal_tensors(encoder, weights, "encoder.")
    assert all(torch.equal(v, model.decoder.state_dict()[k]) for k, v in decoder.items())


def test_ctc_refuses_a_nest_encoder_of_another_depth(nvidia_nest, tmp_path):
    """NeMo loads init_from_* non-strictly: a 2-layer NEST encoder into a 1-layer config would drop a layer."""
    from nemo.collections.common.tokenizers.sentencepiece_tokenizer import create_spt_model

    from nest_ext.models import EncDecCTCModelBPE

    (tmp_path / "corpus.txt").write_text("alpha bravo charlie delta echo\n" * 20)
    create_spt_model(str(tmp_path / "corpus.txt"), 16, sample_size=-1, do_lower_case=True, tokenizer_type="bpe",
                     output_dir=str(tmp_path / "tok"))
    cfg = compose("fastconformer_ctc_bpe_finetune", [f"nest_checkpoint={nvidia_nest[0] / 'nest.nemo'}",
                                                    f"model.tokenizer.dir={tmp_path / 'tok'}", *DEMO_ENCODER,
                                                    "model.encoder.n_layers=1"])
    with open_dict(cfg):
        cfg.model.train_ds = cfg.model.validation_ds = cfg.model.test_ds = None
    with pytest.raises(ValueError, match=r"does not fit this model's encoder: \d+ of its tensors have no place here "
                                         r"\(e.g. \['encoder.layers.1."):
        EncDecCTCModelBPE(cfg=cfg.model).maybe_init_from_pretrained_checkpoint(cfg)


def test_only_hugging_face_names_become_pretrained_names(tmp_path, monkeypatch):
    from omegaconf import OmegaConf

    from nest_ext.models.ctc_models import pretrained_names_as_such

    monkeypatch.chdir(tmp_path)
    (tmp_path / "org").mkdir()
    (tmp_path / "org" / "model").write_text("")  # an existing file that looks like a name stays a path
    cfg = OmegaConf.create({"init_from_nemo_model": {"hub": {"path": NAME, "include": ["encoder"]}}})
    new = pretrained_names_as_such(cfg)
    assert OmegaConf.to_container(new.init_from_pretrained_model) == {"hub": {"name": NAME, "include": ["encoder"]}}
    assert "init_from_nemo_model" not in new and "hub" in cfg.init_from_nemo_model  # the input is unchanged
    for path in ("exp/typo.nemo", "org/model"):  # a .nemo path, a file that exists
        no_names = OmegaConf.create({"init_from_nemo_model": {"file": {"path": path}}})
        assert pretrained_names_as_such(no_names) is no_names
    mixed = OmegaConf.create({"init_from_nemo_model": {"hub": {"path": NAME}, "file": {"path": "a.nemo"}}})
    with pytest.raises(ValueError, match="mixes model names"):
        pretrained_names_as_such(mixed)


@pytest.mark.slow
def test_train_py_continues_pretraining_from_a_pretrained_name(nvidia_nest, tmp_path):
    """python train.py --config-name nest_demo +init_from_pretrained_model=nvidia/ssl_en_nest_large_v1.0 ...: with
    lr 0 the trained .nemo holds exactly the pretrained weights (found in the Hugging Face cache, offline)."""
    import os
    import subprocess
    import sys

    from conftest import ROOT, speech_like, write_manifest, write_wav
    from nest_ext.models import EncDecDenoiseMaskedTokenPredModel
    from nest_ext.parts.synthetic_noise import noise_like

    folder, weights = nvidia_nest
    speech = [{"audio_filepath": write_wav(tmp_path / f"u{i}.wav", speech_like(1.5, seed=i)), "duration": 1.5}
              for i in range(4)]
    noise = [{"audio_filepath": write_wav(tmp_path / "n.wav", noise_like(4.0, 16000, seed=0)), "duration": 4.0}]
    train, noise = write_manifest(tmp_path / "train.json", speech), write_manifest(tmp_path / "noise.json", noise)
    env = {**os.environ, "HF_HUB_CACHE": str(folder / "hf_cache"), "HF_HUB_OFFLINE": "1"}
    env.pop("USE_NEMO_CONFORMER", None)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "--config-name", "nest_demo", f"+init_from_pretrained_model={NAME}",
         *(f"model.{ds}.{key}={value}" for ds in ("train_ds", "validation_ds")
           for key, value in (("manifest_filepath", train), ("noise_manifest", noise))),
         "model.optim.lr=0.0", "~model.optim.sched", "trainer.max_steps=2", f"exp_manager.exp_dir={tmp_path / 'exp'}",
         "exp_manager.checkpoint_callback_params.always_save_nemo=false"],
        capture_output=True, text=True, cwd=tmp_path, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"Model checkpoint restored from pretrained checkpoint with name : `{NAME}`" in proc.stdout + proc.stderr
    nemo_file = proc.stdout.split("Trained model (.nemo): ")[1].split()[0]
    trained = EncDecDenoiseMaskedTokenPredModel.restore_from(nemo_file, map_location="cpu")
    # parameters only: buffers (batch-norm statistics) move in training, lr 0 or not
    params = {k: p.detach() for k, p in trained.named_parameters()}
    assert len(params) > 10 and params.keys() <= weights.keys()
    assert_equal_tensors(params, {k: weights[k] for k in params})
