"""From a NEST checkpoint to ASR: tokenizer, CTC fine-tuning through train.py, per-set WER."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import ROOT, speech_like, write_manifest, write_wav

WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima".split()
TINY_ENCODER = ["model.encoder.d_model=64", "model.encoder.n_heads=4", "model.encoder.n_layers=2",
                "model.encoder.subsampling_conv_channels=64", "model.encoder.conv_kernel_size=9"]


def _corpus(root, n, seed):
    rng = np.random.default_rng(seed)
    entries = []
    for i in range(n):
        dur = float(rng.uniform(1.0, 1.6))
        path = write_wav(root / f"utt{seed}_{i}.wav", speech_like(dur, seed=seed * 100 + i))
        text = " ".join(rng.choice(WORDS, size=3))
        entries.append({"audio_filepath": path, "duration": dur, "text": text, "utt_id": f"u{seed}-{i}"})
    return entries


def _run(args, cwd):
    proc = subprocess.run([sys.executable] + args, capture_output=True, text=True, cwd=cwd, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_build_tokenizer_errors_name_the_line(tmp_path):
    sys.path.insert(0, str(ROOT / "tools"))
    import build_tokenizer

    bad = write_manifest(tmp_path / "bad.json", [{"audio_filepath": "a.wav", "text": "x"}, {"audio_filepath": "b"}])
    with pytest.raises(ValueError, match=r"bad.json:2: entry has no 'text'"):
        build_tokenizer.read_texts([bad])


@pytest.mark.slow
def test_nest_checkpoint_to_ctc_finetune_and_wer(tmp_path):
    from nest_ext.models import EncDecDenoiseMaskedTokenPredModel
    from nest_ext.parts.nemo_comparison import load_our_config
    from omegaconf import open_dict

    train = write_manifest(tmp_path / "train.json", _corpus(tmp_path / "wav", 6, seed=1))
    dev = write_manifest(tmp_path / "dev.json", _corpus(tmp_path / "wav", 2, seed=2))
    test = write_manifest(tmp_path / "test_a.json", _corpus(tmp_path / "wav", 3, seed=3))

    # A tiny NEST checkpoint (the demo's encoder), weights perturbed so they differ from any fresh init.
    cfg = load_our_config("nest_demo").model
    with open_dict(cfg):
        cfg.train_ds = None
        cfg.validation_ds = None
    nest = EncDecDenoiseMaskedTokenPredModel(cfg=cfg)
    with torch.no_grad():
        for p in nest.encoder.parameters():
            p.add_(0.01 * torch.randn_like(p))
    nest_path = tmp_path / "nest.nemo"
    nest.save_to(str(nest_path))

    tok_dir = tmp_path / "tokenizer"
    _run([str(ROOT / "tools" / "build_tokenizer.py"), "--manifest", train, dev, "--vocab-size", "40",
          "--out-dir", str(tok_dir)], ROOT)
    assert (tok_dir / "tokenizer.model").exists() and (tok_dir / "vocab.txt").exists()

    # lr 0 and no schedule: the steps run, and the encoder must still be exactly the NEST encoder afterwards
    _run([str(ROOT / "train.py"), "--config-name", "fastconformer_ctc_bpe_finetune", f"nest_checkpoint={nest_path}",
          f"model.tokenizer.dir={tok_dir}", f"model.train_ds.manifest_filepath={train}",
          f"model.validation_ds.manifest_filepath={dev}", "model.train_ds.batch_size=2",
          "model.validation_ds.batch_size=2", "model.train_ds.num_workers=0", "model.validation_ds.num_workers=0",
          "model.train_ds.pin_memory=false", "model.validation_ds.pin_memory=false",
          "model.optim.lr=0.0", "~model.optim.sched", "trainer.accelerator=cpu", "trainer.devices=1",
          "trainer.max_steps=3", f"exp_manager.exp_dir={tmp_path / 'exp'}",
          "exp_manager.create_tensorboard_logger=false", *TINY_ENCODER], ROOT)

    nemos = sorted((tmp_path / "exp").rglob("*.nemo"))
    assert nemos, "fine-tuning left no .nemo"
    from nemo.collections.asr.models import EncDecCTCModelBPE as NeMoCTC
    from nest_ext.models import EncDecCTCModelBPE

    # portable: NeMo's class restores it with NeMo's encoder, ours with ours
    assert type(NeMoCTC.restore_from(str(nemos[-1]), map_location="cpu").encoder).__module__.startswith("nemo.")
    asr = EncDecCTCModelBPE.restore_from(str(nemos[-1]), map_location="cpu")
    assert type(asr.encoder).__module__.startswith("nest_ext."), type(asr.encoder)
    nest_params = dict(nest.encoder.named_parameters())
    asr_params = dict(asr.encoder.named_parameters())
    assert nest_params.keys() == asr_params.keys()
    for name, p in asr_params.items():
        assert torch.equal(p, nest_params[name]), f"encoder.{name} does not come from the NEST checkpoint"

    out = tmp_path / "eval"
    proc = _run([str(ROOT / "tools" / "evaluate_asr.py"), "--model", str(nemos[-1]), "--manifest", test, dev,
                 "--out-dir", str(out)], ROOT)
    summary = json.loads((out / "summary.json").read_text())
    assert [s["set"] for s in summary] == ["test_a", "dev"]
    for s in summary:
        assert s["wer"] >= 0.0 and s["utterances"] == (3 if s["set"] == "test_a" else 2)
        lines = (out / s["set"] / "text").read_text().splitlines()
        assert [line.split(" ", 1)[0] for line in lines] == [f"u{3 if s['set'] == 'test_a' else 2}-{i}"
                                                           for i in range(s["utterances"])]
        assert (out / s["set"] / "wer").read_text().startswith("%WER ")
    assert "test_a: WER" in proc.stdout
