"""The separation half of `make demo`: its synthetic two-speaker set and tools/run_demo.py end to end.

The NEST half (tools/make_demo_data.py's corpus, `python train.py`) is covered by tests/test_train.py.
"""
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo_tool():
    from nest_ext.cli import make_demo_data

    return make_demo_data


@pytest.fixture(scope="module")
def run_demo():
    from nest_ext.cli import run_demo

    return run_demo


def _median_f0(x, sample_rate, fmin=40.0, fmax=500.0):
    """Median autocorrelation pitch (Hz) over the loud 40 ms frames of ``x`` [T]."""
    frame, hop = int(0.04 * sample_rate), int(0.02 * sample_rate)
    starts = range(0, len(x) - frame, hop)
    energy = np.array([np.sum(x[i : i + frame] ** 2) for i in starts])
    lo, hi = int(sample_rate / fmax), int(sample_rate / fmin)
    f0 = []
    for i, e in zip(starts, energy):
        if e < 0.3 * energy.max():
            continue
        seg = x[i : i + frame] - x[i : i + frame].mean()
        ac = np.correlate(seg, seg, "full")[frame - 1 :]
        f0.append(sample_rate / (lo + int(np.argmax(ac[lo:hi]))))
    return float(np.median(f0))


def test_separation_demo_data_is_well_formed_and_idempotent(demo_tool, tmp_path):
    out = demo_tool.make_separation_demo_data(tmp_path / "separation", quiet=True)  # the demo's own sizes
    low_f0, high_f0 = [], []
    for split, count in (("train", 16), ("val", 4)):
        rows = [json.loads(line) for line in open(out / f"{split}_manifest.json")]
        assert len(rows) == count
        for row in rows:
            assert len(set(row["speaker_ids"])) == len(row["target_filepath"]) == 2, row
            mix, rate = sf.read(str(out / row["input_filepath"]), dtype="float32")
            sources = []
            for rel in row["target_filepath"]:
                audio, r = sf.read(str(out / rel), dtype="float32")
                assert r == rate == 8000 and audio.ndim == 1 and audio.shape == mix.shape, rel
                sources.append(audio)
            assert abs(len(mix) / rate - row["duration"]) < 1e-6 and 1.7 < row["duration"] < 2.5
            np.testing.assert_allclose(mix, sources[0] + sources[1], atol=1e-7)  # mixture = sum of sources
            assert 0.4 < np.abs(mix).max() <= 0.9 + 1e-6  # no clipping, not silent
            for audio in sources:  # both speakers talk at comparable levels
                assert 0.1 < np.sqrt(np.mean(audio**2)) / np.sqrt(np.mean(mix**2)) < 1.0
            low_f0.append(_median_f0(sources[0], rate))
            high_f0.append(_median_f0(sources[1], rate))
    # the two speakers' measured pitch ranges do not overlap: what makes the demo task learnable
    assert max(low_f0) < min(high_f0), (sorted(low_f0), sorted(high_f0))
    assert not list(out.rglob(".*.tmp"))

    before = os.stat(out / "train_manifest.json").st_mtime_ns
    demo_tool.make_separation_demo_data(out, quiet=True)
    assert os.stat(out / "train_manifest.json").st_mtime_ns == before  # a complete set is left alone


@pytest.mark.slow
def test_run_demo_trains_separates_and_scores(demo_tool, run_demo, tmp_path, monkeypatch):
    import torch

    monkeypatch.chdir(tmp_path)  # nothing may land in the working directory either
    data = demo_tool.make_separation_demo_data(tmp_path / "sep", num_train=4, num_val=2, seed=3, quiet=True)
    exp, out = tmp_path / "exp", tmp_path / "out"
    # 4 mixtures / batch 4 = one step per epoch: 2 steps, each followed by a validation
    result = run_demo.run_demo(data, exp, out, ["trainer.max_steps=2"])

    assert result["model"].is_file() and exp in result["model"].parents
    mix, rate = sf.read(str(result["mixture"]), dtype="float32")
    assert result["mixture"] == data / "val" / "mix" / "val_000.wav"
    assert [p.name for p in result["separated"]] == ["val_000_s1.wav", "val_000_s2.wav"]
    estimates = []
    for path in result["separated"]:
        audio, r = sf.read(str(path), dtype="float32")
        assert path.parent == out and r == rate == 8000 and audio.shape == mix.shape
        assert np.abs(audio).max() > 0
        estimates.append(audio)
    assert not np.allclose(estimates[0], estimates[1])
    metrics = result["metrics"]
    assert math.isfinite(metrics["si_sdr_i"]) and sorted(metrics["perm"]) == [0, 1]

    # a second `make demo`: train.py resumes at max_steps, trains no further and still names a .nemo
    again = run_demo.train(data, exp, ["trainer.max_steps=2"])
    assert again.is_file()
    (last,) = (exp / "MossFormer2_demo" / "checkpoints").glob("*-last.ckpt")
    assert torch.load(last, map_location="cpu", weights_only=False)["global_step"] == 2
