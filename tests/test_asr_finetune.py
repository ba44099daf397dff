"""From a NEST checkpoint to ASR: tokenizer, CTC fine-tuning through train.py, per-set WER (evaluate_asr)."""
import json
import logging
import re
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
    from nest_ext.cli import build_tokenizer

    bad = write_manifest(tmp_path / "bad.json", [{"audio_filepath": "a.wav", "text": "x"}, {"audio_filepath": "b"}])
    with pytest.raises(ValueError, match=r"bad.json:2: entry has no 'text'"):
        build_tokenizer.read_texts([bad])


@pytest.fixture(scope="module")
def tiny_ctc(tmp_path_factory):
    """An untrained tiny FastConformer-CTC-BPE .nemo (our fine-tuning config, tiny encoder): random weights decode
    to deterministic, non-empty text, which is all evaluate_asr's plumbing needs."""
    from omegaconf import open_dict

    from nemo.collections.asr.models import EncDecCTCModelBPE

    from nest_ext.cli.build_tokenizer import build_tokenizer
    from nest_ext.cli.nemo_comparison import load_our_config
    from nest_ext.parts.nemo_targets import allow_nest_ext_targets

    allow_nest_ext_targets()  # the config's encoder is nest_ext.modules.ConformerEncoder

    root = tmp_path_factory.mktemp("ctc")
    texts = write_manifest(root / "texts.json", [{"audio_filepath": "x", "text": " ".join(WORDS[i:] + WORDS[:i])}
                                                  for i in range(len(WORDS))])
    tok = build_tokenizer([texts], root / "tokenizer", vocab_size=40)
    cfg = load_our_config("fastconformer_ctc_bpe_finetune").model
    with open_dict(cfg):
        cfg.tokenizer.dir = str(tok)
        cfg.train_ds = cfg.test_ds = None
        cfg.validation_ds.manifest_filepath = None  # NeMo's transcribe reads validation_ds.use_start_end_token
        for override in TINY_ENCODER:
            key, value = override.split("=")
            cfg.encoder[key.rsplit(".", 1)[1]] = int(value)
    torch.manual_seed(0)
    model = EncDecCTCModelBPE(cfg=cfg)
    path = root / "tiny_ctc.nemo"
    model.save_to(str(path))
    return path


def _wer_file(path):
    lines = path.read_text().splitlines()
    pattern = r"%(WER|CER) ([\d.]+|inf) \[ (\d+) / (\d+), (\d+) ins, (\d+) del, (\d+) sub \]"
    parsed = {m.group(1): m for m in (re.fullmatch(pattern, line) for line in lines[:2])}
    assert set(parsed) == {"WER", "CER"}, lines
    return parsed, lines


def test_evaluate_asr_honours_offset_and_duration(tiny_ctc, tmp_path, caplog):
    """Segments of one long file (offset/duration) decode exactly as the same audio cut into files; the wer file
    has Kaldi's S/D/I line, equal to NeMo's word_error_rate_detail of the text/ref files; progress is logged."""
    from nemo.collections.asr.metrics.wer import word_error_rate_detail

    from nest_ext.cli.evaluate_asr import main

    parts = [speech_like(1.0, seed=s) for s in (11, 12)]
    cut = [write_wav(tmp_path / f"part{k}.wav", a) for k, a in enumerate(parts)]
    whole = write_wav(tmp_path / "whole.wav", np.concatenate(parts))
    refs = ["alpha bravo charlie", "delta echo"]
    files = write_manifest(tmp_path / "files.json", [{"audio_filepath": c, "duration": 1.0, "text": r, "utt_id": f"u{k}"}
                                                     for k, (c, r) in enumerate(zip(cut, refs))])
    # relative paths: resolved against the manifest's folder, as NeMo's datasets do
    segments = write_manifest(tmp_path / "segments.json", [
        {"audio_filepath": "whole.wav", "offset": float(k), "duration": 1.0, "text": r, "utt_id": f"u{k}"}
        for k, r in enumerate(refs)])
    full = write_manifest(tmp_path / "full.json", [{"audio_filepath": whole, "duration": 2.0, "text": refs[0]}])
    out = tmp_path / "eval"
    with caplog.at_level(logging.INFO, logger="nest_ext"):
        assert main(["--model", str(tiny_ctc), "--manifest", files, segments, full, "--out-dir", str(out),
                     "--device", "cpu", "--batch-size", "1", "--progress-every", "0"]) == 0
    hyp = {name: (out / name / "text").read_text() for name in ("files", "segments", "full")}
    assert hyp["files"] == hyp["segments"] and hyp["files"].strip() != "u0\nu1"  # same and not empty
    assert hyp["full"].split(" ", 1)[1] != hyp["files"].splitlines()[0].split(" ", 1)[1]  # offsets did matter
    summary = {s["set"]: s for s in json.loads((out / "summary.json").read_text())}
    h = [line.split(" ", 1)[1] if " " in line else "" for line in hyp["files"].splitlines()]
    wer, words, ins, dels, subs = word_error_rate_detail(h, refs)
    parsed, lines = _wer_file(out / "files" / "wer")
    m = parsed["WER"]
    assert (int(m.group(4)), int(m.group(5)), int(m.group(6)), int(m.group(7))) == (
        words, round(ins * words), round(dels * words), round(subs * words))
    assert int(m.group(3)) == round(wer * words) and lines[2] == "%UTTERANCES 2"
    s = summary["files"]
    assert (s["words"], s["substitutions"], s["deletions"], s["insertions"]) == (
        words, round(subs * words), round(dels * words), round(ins * words))
    assert s["wer"] == pytest.approx(wer)
    progress = [r.getMessage() for r in caplog.records if r.getMessage().startswith("transcribing segments")]
    assert progress and all("ETA" in p and "utt/s" in p for p in progress), progress
    assert progress[-1].startswith("transcribing segments: 2/2 utt (100%)")


def test_evaluate_asr_normalisation_and_errors(tiny_ctc, tmp_path, capsys):
    from nest_ext.cli.evaluate_asr import error_detail, main

    assert error_detail(["a b x", ""], ["a b c d", "e"]) == {
        "rate": 0.6, "ref_len": 5, "substitutions": 1, "deletions": 2, "insertions": 0}
    assert error_detail(["a"], [""])["insertions"] == 1
    audio = write_wav(tmp_path / "a.wav", speech_like(0.8, seed=3))
    manifest = write_manifest(tmp_path / "t.json", [{"audio_filepath": audio, "text": "Hello, World!"}])
    for normalize, ref in (("none", "Hello, World!"), ("case", "hello, world!"), ("punctuation", "Hello World"),
                           ("all", "hello world")):
        out = tmp_path / normalize
        assert main(["--model", str(tiny_ctc), "--manifest", manifest, "--out-dir", str(out), "--device", "cpu",
                     "--normalize", normalize, "--no-progress"]) == 0
        assert (out / "t" / "ref").read_text() == f"a {ref}\n"
    # a line without text: named before any decoding, exit 2
    bad = write_manifest(tmp_path / "bad.json", [{"audio_filepath": audio, "text": "x"}, {"audio_filepath": audio}])
    assert main(["--model", str(tiny_ctc), "--manifest", bad, "--out-dir", str(tmp_path / "b")]) == 2
    assert "error: " in capsys.readouterr().err and not (tmp_path / "b").exists()


@pytest.mark.slow
def test_nest_checkpoint_to_ctc_finetune_and_wer(tmp_path):
    from nest_ext.models import EncDecDenoiseMaskedTokenPredModel
    from nest_ext.cli.nemo_comparison import load_our_config
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
