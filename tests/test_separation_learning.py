"""config/mossformer2_small_fast.yaml builds and trains (warm-up, dynamic mixing from a source pool), and
bench/separation_learning.py runs end to end in its --smoke mode."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from lightning.pytorch import Callback

from conftest import ROOT, speech_like, write_manifest, write_wav

SR = 8000


def _compose(overrides):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "config"), version_base=None):
        return compose(config_name="mossformer2_small_fast", overrides=overrides)


def _corpus(folder):
    """Two mixtures (a training manifest) and a pool of four single-speaker utterances of three speakers."""
    folder.mkdir()
    pool = [{"audio_filepath": write_wav(folder / f"u{i}.wav", speech_like(1.5, SR, seed=i), SR), "duration": 1.5,
             "speaker": f"spk{i % 3}"} for i in range(4)]
    rows = []
    for i in range(2):
        sources = [speech_like(1.2, SR, seed=10 + 2 * i + k) for k in range(2)]
        rows.append({"input_filepath": write_wav(folder / f"mix{i}.wav", np.sum(sources, 0), SR),
                     "target_filepath": [write_wav(folder / f"s{i}_{k}.wav", s, SR) for k, s in enumerate(sources)],
                     "duration": 1.2})
    return write_manifest(folder / "train.json", rows), write_manifest(folder / "pool.json", pool)


class _StopAfter(Callback):
    def __init__(self, steps):
        self.steps = steps

    def on_train_batch_end(self, trainer, *unused):
        trainer.should_stop = trainer.global_step >= self.steps


def test_small_fast_config_trains_two_steps_with_warmup_and_pool_mixing(tmp_path):
    from lightning.pytorch import Trainer

    from nest_ext.models import MossFormer2SeparationModel

    train, pool = _corpus(tmp_path / "data")
    cfg = _compose([f"model.train_ds.manifest_filepath={train}", f"model.train_ds.source_pool={pool}",
                    "model.validation_ds.manifest_filepath=null"])
    assert cfg.model.train_ds.dynamic_mixing and cfg.model.optim.sched.name == "CosineAnnealing"
    stop = _StopAfter(2)  # a 40-step schedule (4 warm-up steps), stopped after 2: still warming up
    trainer = Trainer(max_steps=40, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path),
                      gradient_clip_val=cfg.trainer.gradient_clip_val, callbacks=[stop])
    torch.manual_seed(0)
    model = MossFormer2SeparationModel(cfg.model, trainer=trainer)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    trainer.fit(model)
    assert trainer.global_step == 2
    assert all(not torch.equal(before[n], p.detach()) for n, p in model.named_parameters() if n in before)
    (sched,) = trainer.lr_scheduler_configs
    assert type(sched.scheduler).__name__ == "CosineAnnealing" and sched.scheduler.warmup_steps == 4
    assert 0 < trainer.optimizers[0].param_groups[0]["lr"] < float(cfg.model.optim.lr)
    # the mixtures come from the pool's speakers, not the manifest's sources
    dataset = model._train_dl.dataset
    assert dataset.mixer is not None
    _, _, info = dataset.mixer.mix(np.random.default_rng(0))
    assert set(info["speakers"]) <= {"spk0", "spk1", "spk2"} and len(set(info["speakers"])) == 2


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed (the bench's voices)")
def test_bench_smoke_prints_both_curves(tmp_path):
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "separation_learning.py"), "--smoke",
                          "--keep", str(tmp_path)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "SI-SDRi (dB) on 2 test mixtures of unseen voices" in run.stdout
    for name in ("small_fast", "official"):
        result = json.loads((tmp_path / f"result_{name}.json").read_text())
        assert len(result["curve"]) >= 2 and result["curve"][-1][1] > 0  # evaluated before and after training
        assert all(np.isfinite(v) for _, _, v in result["curve"])
    # test voices are unseen: no test speaker is in the training pool
    data = json.loads((tmp_path / "data.json").read_text())
    pool = {json.loads(l)["speaker"] for l in open(data["pool"])}
    test = {s for l in open(data["test"]) for s in json.loads(l)["speaker_ids"]}
    assert test and pool and not pool & test
