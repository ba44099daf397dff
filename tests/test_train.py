"""train.py: trains from a temporary manifest and leaves a checkpoint and a .nemo; clear errors; demo data."""
import json
import os
import re
import subprocess
import sys

import pytest
import soundfile as sf
from omegaconf import OmegaConf, open_dict

from conftest import ROOT
from nest_ext.cli import preflight


@pytest.fixture(scope="module")
def train_py():
    from nest_ext.cli import train

    return train


@pytest.fixture(scope="module")
def demo_tool():
    from nest_ext.cli import make_demo_data

    return make_demo_data


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory, demo_tool):
    out = tmp_path_factory.mktemp("corpus")
    return demo_tool.make_demo_data(out, num_train=6, num_val=2, num_noise=1, noise_dur=4.0, seed=1)


def _compose(name="nest_fast-conformer", overrides=()):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "config"), version_base=None):
        return compose(config_name=name, overrides=list(overrides))


def test_make_demo_data_is_complete_consistent_and_idempotent(tiny_corpus, demo_tool):
    for name in demo_tool.MANIFESTS:
        entries = [json.loads(line) for line in open(tiny_corpus / name)]
        assert entries
        for e in entries:
            info = sf.info(str(tiny_corpus / e["audio_filepath"]))
            assert info.samplerate == 16000 and abs(info.duration - e["duration"]) < 1e-3
    assert not [p for p in tiny_corpus.rglob(".*.tmp")]
    before = os.stat(tiny_corpus / "train_manifest.json").st_mtime_ns
    demo_tool.make_demo_data(tiny_corpus, num_train=6, num_val=2, num_noise=1)
    assert os.stat(tiny_corpus / "train_manifest.json").st_mtime_ns == before  # left alone


def test_missing_manifest_is_named_without_traceback(train_py):
    cfg = _compose()
    with pytest.raises(SystemExit, match=r"must be set: model\.train_ds\.manifest_filepath"):
        train_py.run(cfg)


@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "config").glob("*.yaml") if "demo" not in p.stem))
def test_every_training_config_stops_first_without_its_data(train_py, name):
    """Each config (the demos excepted) needs its data named; the CTC one also its checkpoint and tokenizer."""
    with pytest.raises(SystemExit) as stop:
        preflight.check_required_values(_compose(name))
    message = str(stop.value)
    if name == "nest_fast-conformer-v2-xlarge":  # NeMo's file: data by manifest or lhotse input_cfg, both null
        assert message.startswith("No training data: set model.train_ds.manifest_filepath")
    elif not name.startswith(("nest", "mossformer2", "fastconformer")):  # other models' configs: their data key
        assert message.startswith(("These config values must be set: ", "No training data: ")), message
        assert "model.train_ds." in message
    else:
        assert "must be set: " in message and "model.train_ds.manifest_filepath" in message
        assert "model.validation_ds.manifest_filepath" in message
    if name == "fastconformer_ctc_bpe_finetune":  # ${nest_checkpoint} is referenced: reported once, not a traceback
        assert "nest_checkpoint" in message and "model.tokenizer.dir" in message and message.count("nest_checkpoint") == 1


def test_data_check_leaves_models_with_their_own_data_sections(train_py):
    preflight.check_required_values(OmegaConf.create({"model": {"data": {"input_cfg": "x.yaml"}}}))
    preflight.check_required_values(OmegaConf.create({"model": {"train_ds": {"data_path": "x.json"}}}))
    preflight.check_required_values(OmegaConf.create({"model": {"train_ds": {"use_lhotse": True, "shar_path": "s"}}}))
    with pytest.raises(SystemExit, match="No training data"):
        preflight.check_required_values(OmegaConf.create({"model": {"train_ds": None}}))
    # a required manifest is not needed when the data come as lhotse Shar shards: it becomes null
    cfg = _compose("mossformer2_libri2mix", ["model.train_ds.use_lhotse=true", "model.train_ds.shar_path=shar",
                                             "model.validation_ds.manifest_filepath=cv.json"])
    preflight.check_required_values(cfg)
    assert cfg.model.train_ds.manifest_filepath is None


@pytest.mark.slow
def test_separation_config_without_manifests_stops_before_creating_anything(tmp_path):
    r = _run(["--config-name", "mossformer2_wsj0-2mix"], cwd=tmp_path)
    assert r.returncode == 1
    assert ("These config values must be set: model.train_ds.manifest_filepath, "
            "model.validation_ds.manifest_filepath") in r.stderr
    assert "Traceback" not in r.stdout + r.stderr and list(tmp_path.iterdir()) == []  # no nemo_experiments/


def test_val_check_interval_beyond_an_epoch_stops_with_the_fix(train_py):
    import lightning.pytorch as pl
    import torch
    from types import SimpleNamespace

    loader = torch.utils.data.DataLoader(list(range(10)), batch_size=2)  # 5 batches
    trainer = pl.Trainer(accelerator="cpu", devices=1, val_check_interval=2500, logger=False)
    with pytest.raises(SystemExit, match=r"val_check_interval=2500 .* the 5 training batches .* "
                                         r"add trainer.val_check_interval=1.0"):
        preflight.check_training_batches(trainer, loader)
    preflight.check_training_batches(pl.Trainer(accelerator="cpu", devices=1, val_check_interval=5, logger=False),
                                      loader)
    preflight.check_training_batches(pl.Trainer(accelerator="cpu", devices=1, logger=False), loader)  # 1.0
    # NeMo's choice of "validate every N steps across epochs": Lightning allows it, so do we
    preflight.check_training_batches(pl.Trainer(accelerator="cpu", devices=1, val_check_interval=2500,
                                                 check_val_every_n_epoch=None, logger=False), loader)
    # counted as Lightning will: per device under DDP (padded shares), after limit_train_batches
    fake = SimpleNamespace(world_size=4, limit_train_batches=1.0)
    assert preflight.training_batches_per_device(fake, loader) == 2  # 10 items / 4 devices -> 3 each -> 2 batches
    fake.limit_train_batches = 0.5
    assert preflight.training_batches_per_device(SimpleNamespace(world_size=1, limit_train_batches=0.5), loader) == 2
    assert preflight.training_batches_per_device(SimpleNamespace(world_size=1, limit_train_batches=3), loader) == 3
    # an epoch without a batch (Lightning would silently train nothing)
    short = torch.utils.data.DataLoader(list(range(6)), batch_size=8, drop_last=True)
    with pytest.raises(SystemExit, match=r"no batch per epoch per device \(6 items, batch_size 8, drop_last=True\)"):
        preflight.check_training_batches(trainer, short)


@pytest.mark.slow
def test_train_py_names_the_val_check_interval_fix_before_training(tmp_path, tiny_corpus):
    r = _run([
        f"model.train_ds.manifest_filepath={tiny_corpus / 'train_manifest.json'}",
        f"model.validation_ds.manifest_filepath={tiny_corpus / 'val_manifest.json'}",
        f"model.train_ds.noise_manifest={tiny_corpus / 'noise_manifest.json'}",
        "trainer.accelerator=cpu", "model.train_ds.num_workers=0", "model.validation_ds.num_workers=0",
        "model.encoder.d_model=32", "model.encoder.n_layers=1", "model.encoder.n_heads=2",
        "model.encoder.subsampling_conv_channels=16", "model.num_classes=32", "model.train_ds.batch_size=2",
        f"exp_manager.exp_dir={tmp_path / 'exp'}", "exp_manager.create_tensorboard_logger=false",
    ], cwd=tmp_path)  # NeMo's NEST config: val_check_interval 2500; 6 utterances in batches of 2
    assert r.returncode == 1
    assert ("trainer.val_check_interval=2500 (steps) is more than the 3 training batches of an epoch per device: "
            "add trainer.val_check_interval=1.0") in r.stderr
    assert "Traceback" not in r.stderr and "Trained model" not in r.stdout and not list(tmp_path.rglob("*.ckpt"))


def test_model_class_comes_from_model_target(train_py):
    from nemo.collections.asr.models import EncDecCTCModelBPE
    from nest_ext.models import EncDecDenoiseMaskedTokenPredModel

    cfg = _compose()
    assert train_py.model_class(cfg) is EncDecDenoiseMaskedTokenPredModel
    with open_dict(cfg):
        cfg.model.target = "nemo.collections.asr.models.EncDecCTCModelBPE"
    assert train_py.model_class(cfg) is EncDecCTCModelBPE
    cfg.model.target = "torch.nn.Linear"
    with pytest.raises(SystemExit, match="not a NeMo model class"):
        train_py.model_class(cfg)


def test_trainer_kwargs_on_cpu(train_py, monkeypatch):
    cfg = _compose(overrides=["trainer.accelerator=cpu"])
    assert cfg.trainer.devices == -1 and cfg.trainer.sync_batchnorm  # NeMo's GPU defaults
    monkeypatch.setattr(train_py, "build_callbacks", lambda cfg, configured=(): ["marker"])
    kwargs = train_py.trainer_kwargs(cfg)
    assert kwargs["devices"] == 1 and kwargs["sync_batchnorm"] is False and kwargs["callbacks"] == ["marker"]


def _run(args, cwd, timeout=540):
    env = dict(os.environ, HYDRA_FULL_ERROR="0", PYTHONUNBUFFERED="1")
    env.pop("USE_NEMO_CONFORMER", None)
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.slow
def test_unknown_key_fails_with_hydras_message(tmp_path):
    r = _run(["model.no_such_key=1"], cwd=tmp_path)
    assert r.returncode != 0
    assert "Could not override 'model.no_such_key'" in r.stderr and "Key 'no_such_key' is not in struct" in r.stderr
    assert "Traceback" not in r.stdout + r.stderr


@pytest.mark.slow
def test_train_py_trains_on_a_manifest_and_leaves_checkpoint_and_nemo(tmp_path, tiny_corpus):
    exp = tmp_path / "exp"
    r = _run([
        f"model.train_ds.manifest_filepath={tiny_corpus / 'train_manifest.json'}",
        f"model.validation_ds.manifest_filepath={tiny_corpus / 'val_manifest.json'}",
        f"model.train_ds.noise_manifest={tiny_corpus / 'noise_manifest.json'}",
        "trainer.accelerator=cpu", "trainer.max_steps=3", "trainer.val_check_interval=1.0",
        "trainer.enable_progress_bar=false",
        "model.train_ds.batch_size=2", "model.validation_ds.batch_size=2",
        "model.train_ds.num_workers=0", "model.validation_ds.num_workers=0",
        "model.train_ds.pin_memory=false", "model.validation_ds.pin_memory=false",
        "model.encoder.d_model=32", "model.encoder.n_layers=1", "model.encoder.n_heads=2",
        "model.encoder.subsampling_conv_channels=16", "model.num_classes=32",
        f"exp_manager.exp_dir={exp}", "exp_manager.create_tensorboard_logger=false",
    ], cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    m = re.search(r"Trained model \(\.nemo\): (\S+)", r.stdout)
    assert m, r.stdout[-2000:]
    nemo_path = m.group(1)
    assert os.path.isfile(nemo_path) and str(exp) in nemo_path
    ckpts = [p.name for p in exp.rglob("*.ckpt")]
    assert any("step=3" in name for name in ckpts), ckpts  # a Lightning checkpoint of the last step

    from nest_ext.models import EncDecDenoiseMaskedTokenPredModel

    model = EncDecDenoiseMaskedTokenPredModel.restore_from(nemo_path, map_location="cpu")
    assert model.cfg.encoder.d_model == 32 and model.cfg.num_classes == 32


def test_speech_like_has_syllables_pauses_and_formant_energy():
    """The demo corpus's synthesis: deterministic per seed, with pauses and voiced low-frequency energy."""
    import numpy as np

    from nest_ext.cli.synth import speech_like
    from nest_ext.parts.synthetic_noise import noise_like

    x = speech_like(3.0, 16000, seed=5)
    assert np.array_equal(x, speech_like(3.0, 16000, seed=5)) and not np.array_equal(x, speech_like(3.0, 16000, 6))
    frames = x[: len(x) // 400 * 400].reshape(-1, 400)  # 25 ms frames
    energy_db = 10 * np.log10((frames ** 2).mean(1) + 1e-12)
    assert (energy_db < energy_db.max() - 30).mean() > 0.05  # pauses between words
    assert (energy_db > energy_db.max() - 15).mean() > 0.3  # and mostly voiced syllables
    spec = np.abs(np.fft.rfft(frames * np.hanning(400), axis=1)) ** 2
    freqs = np.fft.rfftfreq(400, 1 / 16000)
    loud = energy_db > energy_db.max() - 15
    assert spec[loud][:, freqs < 2500].sum() > 0.7 * spec[loud].sum()  # harmonics shaped by formants
    n = noise_like(2.0, 16000, seed=1, color="brown", hum_hz=50.0)
    assert abs(float(n.mean())) < 1e-6 and 0.29 < float(np.abs(n).max()) <= 0.3 + 1e-6
