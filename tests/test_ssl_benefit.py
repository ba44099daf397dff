"""bench/ssl_benefit.py end to end at CI size: pretraining, two fine-tunings, evaluation, report.

Only what is robust is asserted (the gain itself is measured in docs/benchmarks.md, not in a timed test):
both fine-tunings finish, the NEST-initialised one starts from the NEST encoder (fine-tuned with lr 0 here, so
its encoder must equal the checkpoint's exactly, while the random one differs), WER files are written.
"""
import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, speech_like, write_manifest, write_wav

WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima".split()


def _set(root, name, n, seed):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        dur = float(rng.uniform(1.0, 1.5))
        rows.append({"audio_filepath": write_wav(root / name / f"{i}.wav", speech_like(dur, seed=seed * 100 + i)),
                     "duration": dur, "text": " ".join(rng.choice(WORDS, size=3)), "utt_id": f"{name}-{i}"})
    return write_manifest(root / f"{name}.json", rows)


@pytest.mark.slow
@pytest.mark.timeout(1200)  # ~85 CPU-s, 4 NeMo start-ups: 1-2 min on 2 idle cores, 10 min under a load of 15
def test_pipeline_runs_and_nest_encoder_is_loaded(tmp_path):
    data = {name: _set(tmp_path / "data", name, n, seed) for name, n, seed in
            (("unlabelled", 8, 1), ("train", 6, 2), ("dev", 2, 3), ("test", 3, 4))}
    work = tmp_path / "work"
    cmd = [sys.executable, str(ROOT / "bench" / "ssl_benefit.py"), "--work-dir", str(work),
           "--unlabelled", data["unlabelled"], "--train", data["train"], "--dev", data["dev"], "--test", data["test"],
           "--encoder", "d_model=32,n_heads=2,n_layers=1,subsampling_conv_channels=16",
           "--pretrain-steps", "2", "--finetune-steps", "2", "--val-every", "2", "--vocab-size", "30",
           "--nest-batch", "4", "--ft-batch", "2", "--threads", "1",
           "--nest-overrides", "model.num_classes=32", "model.masking.mask_prob=0.05",
           "--ft-overrides", "model.optim.lr=0.0", "~model.optim.sched"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    report = json.loads((work / "results.json").read_text())
    assert set(report["results"]) == {"nest", "random"}
    nest, random = report["results"]["nest"], report["results"]["random"]
    assert nest["encoder_distance_to_nest"] == 0.0  # lr 0: exactly the pretrained encoder
    assert random["encoder_distance_to_nest"] > 0.1
    for init in ("nest", "random"):
        wer_file = work / f"eval_{init}" / "test" / "wer"
        assert wer_file.read_text().startswith("%WER ")
        assert 0.0 <= report["results"][init]["wer"] and report["results"][init]["curve"]  # dev WER was logged
    assert "| nest |" in proc.stdout and "| random |" in proc.stdout  # the side-by-side table
    assert (work / "report.md").exists()
