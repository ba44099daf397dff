""".nemo files leave the package: stock NeMo, in a process without nest_ext, restores our NEST and CTC models with
NeMo's classes and gives our numbers; the MossFormer2 .nemo says that it needs nest_ext."""
import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf, open_dict

from conftest import ROOT

NEMO_CONFORMER = "nemo.collections.asr.modules.ConformerEncoder"
TINY_ENCODER = dict(d_model=32, n_heads=2, n_layers=1, subsampling_conv_channels=16, dropout=0.0,
                    dropout_pre_encoder=0.0, dropout_att=0.0)

# Runs in a fresh interpreter (-I: no PYTHONPATH, no script folder on sys.path) where importing nest_ext fails, as
# on a machine without it. Restores each .nemo through NeMo's base classes and saves what it computed.
NEMO_ONLY = r"""
import importlib.abc, sys, torch

class NoNestExt(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "nest_ext":
            raise ModuleNotFoundError(f"No module named {name!r}")

sys.meta_path.insert(0, NoNestExt())
from nemo.collections.asr.models import ASRModel
from nemo.collections.audio.models import AudioToAudioModel

folder = sys.argv[1]
x = torch.load(f"{folder}/inputs.pt")
out = {}
for name in ("nest", "ctc"):
    model = ASRModel.restore_from(f"{folder}/{name}.nemo", map_location="cpu").eval()
    out[name + "_classes"] = [type(model).__module__ + "." + type(model).__name__, type(model.encoder).__module__]
    with torch.no_grad():
        if name == "nest":
            out[name] = model(input_signal=x["audio"], input_signal_length=x["lengths"], noisy_input_signal=x["audio"],
                              noisy_input_signal_length=x["lengths"], apply_mask=False)
        else:
            out[name] = model(input_signal=x["audio"], input_signal_length=x["lengths"])
    out[name] = [t.clone() for t in out[name]]  # plain tensors, without NeMo's neural-type attributes
try:
    AudioToAudioModel.restore_from(f"{folder}/separation.nemo", map_location="cpu")
    out["separation_error"] = None
except Exception as e:
    out["separation_error"] = f"{type(e).__name__}: {e}"
out["separation_requires"] = AudioToAudioModel.restore_from(f"{folder}/separation.nemo", return_config=True).get("requires")
out["nest_ext_imported"] = sorted(m for m in sys.modules if m.split(".")[0] == "nest_ext")
torch.save(out, f"{folder}/nemo_only.pt")
"""


def nest_model():
    from nest_ext.models import EncDecDenoiseMaskedTokenPredModel

    cfg = OmegaConf.load(ROOT / "config" / "nest_fast-conformer.yaml").model
    with open_dict(cfg):
        cfg.num_classes = 16
        cfg.encoder.update(TINY_ENCODER)
        cfg.train_ds = cfg.validation_ds = None
    return EncDecDenoiseMaskedTokenPredModel(cfg=cfg)


def tokenizer_dir(tmp_path):
    from nemo.collections.common.tokenizers.sentencepiece_tokenizer import create_spt_model

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(["alpha bravo charlie delta echo foxtrot golf hotel india"] * 20) + "\n")
    create_spt_model(str(corpus), 24, sample_size=-1, do_lower_case=True, tokenizer_type="bpe",
                     output_dir=str(tmp_path / "tokenizer"))
    return tmp_path / "tokenizer"


def ctc_model(tmp_path):
    from nest_ext.models import EncDecCTCModelBPE

    cfg = OmegaConf.load(ROOT / "config" / "fastconformer_ctc_bpe_finetune.yaml").model
    with open_dict(cfg):
        cfg.tokenizer.dir = str(tokenizer_dir(tmp_path))
        cfg.encoder.update(TINY_ENCODER)
        cfg.train_ds = cfg.validation_ds = cfg.test_ds = None
    return EncDecCTCModelBPE(cfg=cfg)


def separation_model():
    from nest_ext.models import MossFormer2SeparationModel

    return MossFormer2SeparationModel(OmegaConf.load(ROOT / "config" / "mossformer2_tiny.yaml").model)


def perturbed(model):
    """The model in eval mode, its weights moved away from any fresh initialisation."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return model.eval()


def outputs(model, name, x):
    with torch.no_grad():
        if name == "nest":
            return model(input_signal=x["audio"], input_signal_length=x["lengths"], noisy_input_signal=x["audio"],
                         noisy_input_signal_length=x["lengths"], apply_mask=False)
        return model(input_signal=x["audio"], input_signal_length=x["lengths"])


def assert_same_outputs(name, ours, theirs):
    """Log-probs equal on valid frames (padding frames are defined by neither encoder), lengths exactly; NEST's masks
    and target tokens (made before the encoder) exactly, CTC's greedy tokens on valid frames."""
    log_probs, lengths = ours[0], ours[1]
    assert torch.equal(lengths, theirs[1])
    valid = torch.arange(log_probs.shape[1])[None, :] < lengths[:, None]
    torch.testing.assert_close(log_probs[valid], theirs[0][valid], atol=1e-4, rtol=1e-4)
    if name == "nest":
        assert torch.equal(ours[2], theirs[2]) and torch.equal(ours[3], theirs[3])
    else:
        assert torch.equal(ours[2][valid], theirs[2][valid])


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Our three tiny models saved as .nemo, a fixed input, our outputs on it, and what a NeMo-only process made of
    the files."""
    folder = tmp_path_factory.mktemp("portable")
    g = torch.Generator().manual_seed(1)
    x = {"audio": 0.1 * torch.randn(2, 16000, generator=g), "lengths": torch.tensor([16000, 11000])}
    torch.save(x, folder / "inputs.pt")
    models = {"nest": perturbed(nest_model()), "ctc": perturbed(ctc_model(folder)),
              "separation": separation_model()}
    for name, model in models.items():
        model.save_to(str(folder / f"{name}.nemo"))
    ours = {name: outputs(models[name], name, x) for name in ("nest", "ctc")}
    proc = subprocess.run([sys.executable, "-I", "-c", NEMO_ONLY, str(folder)], capture_output=True, text=True,
                          timeout=600, cwd=folder)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return folder, models, ours, torch.load(folder / "nemo_only.pt", weights_only=False)


@pytest.mark.slow
def test_nemo_without_nest_ext_restores_nest_and_ctc_with_nemos_classes_and_our_numbers(saved):
    _, _, ours, nemo_only = saved
    assert nemo_only["nest_ext_imported"] == []
    assert nemo_only["nest_classes"] == ["nemo.collections.asr.models.ssl_models.EncDecDenoiseMaskedTokenPredModel",
                                         "nemo.collections.asr.modules.conformer_encoder"]
    assert nemo_only["ctc_classes"] == ["nemo.collections.asr.models.ctc_bpe_models.EncDecCTCModelBPE",
                                        "nemo.collections.asr.modules.conformer_encoder"]
    for name in ("nest", "ctc"):
        assert_same_outputs(name, ours[name], nemo_only[name])


@pytest.mark.slow
def test_separation_nemo_says_it_needs_nest_ext(saved):
    _, _, _, nemo_only = saved
    # NeMo's own refusal names the class, hence the package
    assert "nest_ext.models.MossFormer2SeparationModel" in nemo_only["separation_error"]
    # and the saved config says what to install and how to restore
    assert "pip install nest_ext" in nemo_only["separation_requires"]
    assert "nest_ext.models.MossFormer2SeparationModel.restore_from" in nemo_only["separation_requires"]


@pytest.mark.slow
@pytest.mark.parametrize("toggle", ["", "true"])
def test_nest_ext_restores_portable_files_with_its_parts(saved, monkeypatch, toggle):
    """Through our classes the same files come back with our encoder and loss (NeMo's encoder under the toggle)."""
    from nemo.collections.asr.modules import ConformerEncoder as NeMoConformer
    from nest_ext.losses import MultiMLMLoss
    from nest_ext.models import EncDecCTCModelBPE, EncDecDenoiseMaskedTokenPredModel
    from nest_ext.modules import ConformerEncoder as OurConformer

    folder, models, ours, _ = saved
    monkeypatch.setenv("USE_NEMO_CONFORMER", toggle)
    for name, cls in (("nest", EncDecDenoiseMaskedTokenPredModel), ("ctc", EncDecCTCModelBPE)):
        restored = cls.restore_from(str(folder / f"{name}.nemo"), map_location="cpu").eval()
        assert type(restored) is cls and type(restored.encoder) is (NeMoConformer if toggle else OurConformer)
        assert_same_outputs(name, ours[name], outputs(restored, name, torch.load(folder / "inputs.pt")))
        assert restored.cfg.encoder._target_ == NEMO_CONFORMER  # and saves the portable names again
    assert isinstance(restored_loss := EncDecDenoiseMaskedTokenPredModel.restore_from(
        str(folder / "nest.nemo"), map_location="cpu").loss, MultiMLMLoss), type(restored_loss)


def test_saved_config_names_nemos_classes(monkeypatch):
    monkeypatch.delenv("USE_NEMO_CONFORMER", raising=False)
    model = nest_model()
    from nest_ext.modules import ConformerEncoder as OurConformer
    from nest_ext.losses import MultiMLMLoss

    assert type(model.encoder) is OurConformer and type(model.loss) is MultiMLMLoss
    for cfg in (model.cfg, model.hparams["cfg"]):
        assert cfg["target"] == "nemo.collections.asr.models.ssl_models.EncDecDenoiseMaskedTokenPredModel"
        assert cfg["encoder"]["_target_"] == NEMO_CONFORMER
        assert cfg["loss"]["_target_"] == "nemo.collections.asr.losses.MultiMLMLoss"
        assert "requires" not in cfg
    sep = separation_model().cfg
    assert sep.target == "nest_ext.models.MossFormer2SeparationModel" and "pip install nest_ext" in sep.requires


def test_target_maps_cover_every_spelling_and_invert():
    """Each of our classes stands for a NeMo class of its name (a subclass, or a drop-in); NeMo's spellings of a
    part all lead to ours; a config's own nest_ext classes with no NeMo twin stay and are named in ``requires``."""
    from hydra.utils import get_class

    from nest_ext.parts.nemo_targets import NEMO_EQUIVALENT, OUR_PARTS, nest_ext_targets, portable_config

    for ours, nemo in NEMO_EQUIVALENT.items():
        ours_cls, nemo_cls = get_class(ours), get_class(nemo)
        assert issubclass(ours_cls, nemo_cls) or ours_cls.__name__ == nemo_cls.__name__, ours
    for nemo, ours in OUR_PARTS.items():
        assert get_class(nemo) is get_class(NEMO_EQUIVALENT[ours]), nemo
    cfg = OmegaConf.create({"target": "nest_ext.models.ssl_models.EncDecDenoiseMaskedTokenPredModel",
                            "encoder": {"_target_": "nest_ext.modules.conformer.encoder.ConformerEncoder"},
                            "loss": {"_target_": "nest_ext.losses.mlm.MultiMLMLoss"},
                            "augmentor": [{"_target_": "nest_ext.data.Something"}], "requires": "stale"})
    saved = portable_config(cfg)
    assert nest_ext_targets(saved) == [("augmentor[0]._target_", "nest_ext.data.Something")]
    assert "nest_ext.data.Something" in saved.requires and cfg.requires == "stale"  # the input is unchanged
