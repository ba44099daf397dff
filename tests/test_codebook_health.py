"""Codebook health while pretraining NEST: exact figures, the collapse warning/stop, Lightning and DDP paths."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import open_dict

from conftest import ROOT, write_manifest, write_wav
from nest_ext.parts.codebook_health import (
    CodebookHealthMonitor, CodebookTargets, codebook_monitor_from_config, codebook_stats,
)
from nest_ext.parts.health import TrainingHealthError
from nest_ext.cli.synth import speech_like
from nest_ext.parts.synthetic_noise import noise_like
from test_ssl_model import tiny_cfg

TESTS = Path(__file__).resolve().parent


def _entropy(counts):
    total = sum(counts)
    return -sum(c / total * math.log2(c / total) for c in counts if c)


def test_known_counts_give_exact_figures():
    # 2 utterances, 2 codebooks of 8 codes; frames past each length (code 7 here) must not count
    tokens = torch.tensor([
        [[0, 1], [0, 1], [3, 1], [5, 2], [7, 7]],
        [[0, 4], [3, 4], [7, 7], [7, 7], [7, 7]],
    ])
    masked = torch.tensor([[1, 1, 0, 0, 1], [0, 1, 1, 1, 1]], dtype=torch.bool)
    monitor = CodebookHealthMonitor(every_n_steps=1, min_coverage=None, min_perplexity=None)
    monitor.update(CodebookTargets(tokens, lengths=torch.tensor([4, 2]), masked=masked, num_classes=8))
    book0, book1 = monitor.end_window(trainer=None)
    # book 0 over the 6 valid frames: codes 0,0,3,5 | 0,3 -> counts {0: 3, 3: 2, 5: 1}
    assert book0["coverage"] == 3 / 8
    assert book0["entropy"] == pytest.approx(_entropy([3, 2, 1]), abs=1e-12)
    assert book0["perplexity"] == pytest.approx(2 ** _entropy([3, 2, 1]), abs=1e-12)
    assert book0["top_share"] == 3 / 6
    # book 1: 1,1,1,2 | 4,4 -> {1: 3, 2: 1, 4: 2}
    assert book1["coverage"] == 3 / 8 and book1["entropy"] == pytest.approx(_entropy([3, 1, 2]), abs=1e-12)
    # masked valid frames: 2 of 4 in the first utterance, 1 of 2 in the second
    assert book0["masked_share"] == book1["masked_share"] == 3 / 6
    assert book0["frames"] == 6


def test_window_accumulates_and_restarts():
    monitor = CodebookHealthMonitor(every_n_steps=2, min_coverage=None, min_perplexity=None)
    ones = torch.ones(1, 4, dtype=torch.bool)
    for code in (0, 1):
        monitor.update(CodebookTargets(torch.full((1, 4), code), torch.tensor([4]), ones, num_classes=4))
    assert monitor.end_window(None)[0]["perplexity"] == pytest.approx(2.0)  # codes 0 and 1, 4 frames each
    monitor.update(CodebookTargets(torch.tensor([[2, 3, 2, 3]]), torch.tensor([4]), ones, num_classes=4))
    assert monitor.end_window(None)[0]["coverage"] == 0.5  # the new window only


def test_stats_helper_uniform_codes():
    s = codebook_stats(torch.full((1, 16), 5), masked_frames=0, frames=80)[0]
    assert s["coverage"] == 1.0 and s["entropy"] == pytest.approx(4.0) and s["perplexity"] == pytest.approx(16.0)


@pytest.fixture(scope="module")
def speech_batch():
    lengths = torch.tensor([48000, 40000])
    audio = torch.zeros(2, 48000)
    for i, n in enumerate(lengths.tolist()):
        audio[i, :n] = torch.from_numpy(speech_like(n / 16000, 16000, seed=10 + i))
    return audio, lengths


def _model(**overrides):
    from nest_ext.models import EncDecDenoiseMaskedTokenPredModel

    cfg = tiny_cfg()
    with open_dict(cfg):
        cfg.num_classes = 64
        cfg.update(overrides)
    torch.manual_seed(0)
    return EncDecDenoiseMaskedTokenPredModel(cfg=cfg)


def _targets(model, batch):
    audio, lengths = batch
    model.train()
    model(input_signal=audio, input_signal_length=lengths, noisy_input_signal=audio,
          noisy_input_signal_length=lengths, apply_mask=True)
    return model.ssl_targets


def test_model_exposes_the_targets_it_trained_on(speech_batch):
    model = _model()
    captured = {}
    model.quantizer.register_forward_hook(lambda m, i, o: captured.update(tokens=o[1]))  # returns None
    targets = _targets(model, speech_batch)
    assert targets.tokens is not None and torch.equal(targets.tokens, captured["tokens"])  # not recomputed
    assert targets.num_classes == 64 and targets.masked.dtype == torch.bool
    assert targets.lengths.tolist() == [38, 32]  # encoder frames (8x subsampling of 300 and 250 frames)
    model.eval()
    model.ssl_targets = None
    model(input_signal=speech_batch[0], input_signal_length=speech_batch[1],
                          noisy_input_signal=speech_batch[0], noisy_input_signal_length=speech_batch[1])
    assert model.ssl_targets is None  # validation batches are not counted


def test_collapsed_quantizer_warns_and_can_stop(speech_batch, caplog):
    model = _model()
    with torch.no_grad():
        model.quantizer.proj.weight.zero_()  # every frame projects to 0: one code for all
    targets = _targets(model, speech_batch)
    assert targets.tokens.unique().numel() == 1
    monitor = CodebookHealthMonitor(every_n_steps=1, min_coverage=0.05, min_perplexity=8)
    monitor.update(targets)
    stats = monitor.end_window(None)
    assert stats[0]["perplexity"] == 1.0 and stats[0]["top_share"] == 1.0
    assert len(monitor.warnings) == 1
    message = monitor.warnings[0]
    assert "codebook 0: coverage 0.0156 < 0.05" in message and "codebook 0: perplexity 1.00 < 8" in message

    stopper = CodebookHealthMonitor(every_n_steps=1, action="stop")
    stopper.update(targets)
    with pytest.raises(TrainingHealthError, match="codebook 0: perplexity 1.00"):
        stopper.end_window(None)


def test_healthy_quantizer_does_not_warn(speech_batch):
    monitor = CodebookHealthMonitor(every_n_steps=1)
    monitor.update(_targets(_model(), speech_batch))
    s = monitor.end_window(None)[0]
    assert monitor.warnings == [] and s["perplexity"] > 8 and s["coverage"] > 0.2


def test_config_and_default_attachment():
    assert codebook_monitor_from_config(None).every_n_steps == 100
    with pytest.raises(ValueError, match="unknown model.codebook_health keys \\['every_n_step'\\]"):
        codebook_monitor_from_config({"every_n_step": 5})
    with pytest.raises(ValueError, match="action"):
        CodebookHealthMonitor(action="explode")
    model = _model()
    [monitor] = model.configure_callbacks()  # on by default, NEST config unchanged
    assert isinstance(monitor, CodebookHealthMonitor)
    assert _model(codebook_health={"enabled": False}).configure_callbacks() == []
    assert _model(codebook_health={"every_n_steps": 7}).configure_callbacks()[0].every_n_steps == 7


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("cb_data")
    rows = [{"audio_filepath": write_wav(d / f"u{i}.wav", speech_like(2.0, 16000, seed=i)), "duration": 2.0, "text": ""}
            for i in range(8)]
    noise = [{"audio_filepath": write_wav(d / "n.wav", noise_like(4.0, 16000, seed=1)), "duration": 4.0}]
    return write_manifest(d / "train.json", rows), write_manifest(d / "noise.json", noise)


def test_lightning_run_logs_figures(corpus, tmp_path):
    import lightning.pytorch as pl

    from nest_ext.models import EncDecDenoiseMaskedTokenPredModel

    cfg = tiny_cfg(*corpus)
    with open_dict(cfg):
        cfg.codebook_health = {"every_n_steps": 2}
        cfg.validation_ds = None
    trainer = pl.Trainer(max_steps=4, accelerator="cpu", logger=pl.loggers.CSVLogger(tmp_path), log_every_n_steps=1,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    model = EncDecDenoiseMaskedTokenPredModel(cfg=cfg, trainer=trainer)
    trainer.fit(model)
    [monitor] = [cb for cb in trainer.callbacks if isinstance(cb, CodebookHealthMonitor)]
    assert [h["step"] for h in monitor.history] == [2, 4]
    trainer.loggers[0].save()
    import csv

    with open(Path(trainer.loggers[0].log_dir) / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("codebook/perplexity")]
    assert [int(r["step"]) for r in rows] == [2, 4]  # once per window, not repeated at every logging step
    assert float(rows[-1]["codebook/perplexity"]) == pytest.approx(monitor.history[-1]["books"][0]["perplexity"])
    assert {"codebook/coverage", "codebook/entropy", "codebook/top_share", "codebook/masked_share"} <= set(rows[0])


_SITECUSTOMIZE = """
import json, os
if os.environ.get("NEST_EXT_CODEBOOK_PROBE"):
    import lightning.pytorch as _pl

    _init = _pl.Trainer.__init__

    class _Probe(_pl.Callback):
        def on_train_end(self, trainer, pl_module):
            from nest_ext.parts.codebook_health import CodebookHealthMonitor
            [m] = [cb for cb in trainer.callbacks if isinstance(cb, CodebookHealthMonitor)]
            with open(os.environ["NEST_EXT_CODEBOOK_PROBE"] + f".rank{trainer.global_rank}", "w") as f:
                json.dump(m.history, f)

    def _seeded_with_probe(self, *args, **kwargs):
        _pl.seed_everything(0)  # train.py builds the model after the trainer: same quantizer in every run
        kwargs["callbacks"] = list(kwargs.get("callbacks") or []) + [_Probe()]
        _init(self, *args, **kwargs)

    _pl.Trainer.__init__ = _seeded_with_probe
"""


@pytest.mark.slow
def test_same_figures_with_one_and_two_cpu_processes(corpus, tmp_path):
    """8 utterances in one window: 1 process x batch 4 and 2 DDP ranks x batch 2 must log the same figures."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_SITECUSTOMIZE)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), str(ROOT), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1")
    train, noise = corpus
    histories = {}
    for devices, batch in ((1, 4), (2, 2)):
        probe = tmp_path / f"probe{devices}"
        env["NEST_EXT_CODEBOOK_PROBE"] = str(probe)
        cmd = [sys.executable, str(ROOT / "train.py"), "--config-name", "nest_demo",
               f"model.train_ds.manifest_filepath={train}", f"model.train_ds.noise_manifest={noise}",
               "model.validation_ds.manifest_filepath=null", f"model.train_ds.batch_size={batch}",
               "model.preprocessor.dither=0.0", "model.masking.mask_prob=1.0",  # no randomness in tokens or masks
               "+model.codebook_health.every_n_steps=2", "trainer.max_steps=2", "trainer.accelerator=cpu",
               f"trainer.devices={devices}", f"trainer.strategy={'ddp' if devices > 1 else 'auto'}",
               f"exp_manager.exp_dir={tmp_path / f'exp{devices}'}", "exp_manager.create_checkpoint_callback=false"]
        run = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        histories[devices] = [json.loads(Path(f"{probe}.rank{r}").read_text()) for r in range(devices)]
    [one] = histories[1]
    assert len(one) == 1 and one[0]["step"] == 2 and one[0]["books"][0]["frames"] > 0
    for rank_history in histories[2]:
        assert rank_history == one  # counts summed over ranks before the ratios: the global value on every rank
