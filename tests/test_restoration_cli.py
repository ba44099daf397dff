"""restore and evaluate_restoration on a tiny RestorationGANModel: outputs at the model's rate from any input rate,
chunked inference of long inputs, bad input named, per-utterance metrics of input and output with their gains,
and the HTML report through nest_ext.metrics.report."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from omegaconf import OmegaConf

from conftest import ROOT, speech_like, write_manifest
from nest_ext.data.audio_io import load_audio

SR = 16000


@pytest.fixture(scope="module")
def tiny_nemo(tmp_path_factory):
    from nest_ext.models.restoration_gan import RestorationGANModel

    torch.manual_seed(0)
    cfg = OmegaConf.load(ROOT / "config" / "restoration_gan_tiny.yaml").model
    model = RestorationGANModel(cfg).eval()
    path = tmp_path_factory.mktemp("model") / "tiny.nemo"
    model.save_to(str(path))
    return str(path), model


def test_restore_any_rate_channel_chunks_and_bad_input(tmp_path, tiny_nemo, capsys):
    from nest_ext.cli.restore import main

    path, model = tiny_nemo
    stereo = np.stack([speech_like(0.7, 22050, seed=1), speech_like(0.7, 22050, seed=2)], axis=1)
    sf.write(str(tmp_path / "st.wav"), stereo, 22050)
    sf.write(str(tmp_path / "long.wav"), speech_like(3.0, SR, seed=3), SR)
    out = tmp_path / "out"
    assert main(["--model", path, "--out-dir", str(out), "--channel", "1", "--device", "cpu", "--no-progress",
                 str(tmp_path / "st.wav")]) == 0
    restored, rate = sf.read(str(out / "st_restored.wav"), dtype="float32")
    assert rate == SR and len(restored) == math.ceil(stereo.shape[0] * SR / 22050)  # the model's rate
    expected = model.restore(load_audio(str(tmp_path / "st.wav"), SR, channel=1)).numpy()
    np.testing.assert_allclose(restored, expected, atol=1e-5)
    # a long file in 1 s windows: same length, close to one pass (the model is near the identity)
    assert main(["--model", path, "--out-dir", str(out), "--chunk-seconds", "1", "--device", "cpu",
                 str(tmp_path / "long.wav")]) == 0
    chunked = sf.read(str(out / "long_restored.wav"), dtype="float32")[0]
    whole = model.restore(load_audio(str(tmp_path / "long.wav"), SR)).numpy()
    assert chunked.shape == whole.shape and np.corrcoef(chunked, whole)[0, 1] > 0.99
    # a missing and a multi-channel file without --channel: each named, exit status 1, the good one still written
    (tmp_path / "bad.wav").write_bytes(b"RIFFjunk")
    assert main(["--model", path, "--out-dir", str(tmp_path / "o2"), "--device", "cpu", str(tmp_path / "bad.wav"),
                 str(tmp_path / "st.wav"), str(tmp_path / "long.wav")]) == 1
    err = capsys.readouterr().err
    assert "bad.wav" in err and "st.wav has 2 channels" in err
    assert [p.name for p in (tmp_path / "o2").glob("*.wav")] == ["long_restored.wav"]


def _pairs(tmp_path, n=3):
    from nest_ext.data.degradations import DegradationChain

    chain = DegradationChain.from_spec([{"type": "noise", "prob": 1.0, "snr_db": [5, 10]}])
    rows = []
    for i in range(n):
        clean = speech_like(0.6, SR, seed=i)
        degraded, _ = chain.degrade(clean, SR, seed=0, utt_id=str(i))
        sf.write(str(tmp_path / f"c{i}.wav"), clean, SR, subtype="FLOAT")
        sf.write(str(tmp_path / f"d{i}.wav"), degraded, SR, subtype="FLOAT")
        rows.append({"input_filepath": f"d{i}.wav", "target_filepath": f"c{i}.wav", "duration": 0.6})
    rows.append({"input_filepath": "gone.wav", "target_filepath": "c0.wav", "duration": 0.6})
    return write_manifest(tmp_path / "test.json", rows)


def test_evaluate_restoration_identity_has_no_gain_and_report(tmp_path):
    from nest_ext.cli.evaluate_restoration import evaluate_restoration
    from nest_ext.metrics.restoration import restoration_metrics

    manifest = _pairs(tmp_path)
    summary = evaluate_restoration(lambda x: x, manifest, str(tmp_path / "ident"), SR, extra=[])
    assert summary["num_evaluated"] == 3 and summary["num_skipped"] == 1 and "gone.wav" in str(summary["skipped"])
    assert set(summary["gains"]) == {"si_sdr", "lsd", "mr_stft"}
    assert all(abs(g) < 1e-6 for g in summary["gains"].values())  # the identity changes nothing
    # a denoiser that halves the noise gains on every metric
    clean = {f"d{i}": torch.from_numpy(speech_like(0.6, SR, seed=i)) for i in range(3)}
    by_input = {}

    def half_noise(x):
        key = next(k for k in clean if torch.allclose(x, torch.from_numpy(load_audio(str(tmp_path / f"{k}.wav"), SR))))
        by_input[key] = True
        return 0.5 * (x + clean[key])

    summary = evaluate_restoration(half_noise, manifest, str(tmp_path / "half"), SR, extra=[])
    g = summary["gains"]
    assert g["si_sdr"] > 3 and g["lsd"] < 0 and g["mr_stft"] < 0 and len(by_input) == 3
    out = tmp_path / "half"
    saved = json.loads((out / "summary.json").read_text())
    assert saved["gains"] == pytest.approx(g) and saved["sample_rate"] == SR
    header = (out / "metrics.csv").read_text().splitlines()[0].split(",")
    assert header[:9] == ["id", "input_filepath", "duration", "si_sdr", "si_sdr_input", "si_sdr_i", "lsd",
                          "lsd_input", "mr_stft"]
    html = (out / "report.html").read_text()
    assert "degraded input" in html and "<audio" in html and "MR-STFT dist. input" in html
    row = next(r for r in (out / "metrics.csv").read_text().splitlines()[1:] if r.startswith("d1,"))
    ref = restoration_metrics(half_noise(torch.from_numpy(load_audio(str(tmp_path / "d1.wav"), SR))),
                              clean["d1"], load_audio(str(tmp_path / "d1.wav"), SR), SR, extra=())
    assert float(row.split(",")[3]) == pytest.approx(ref["si_sdr"], abs=1e-3)


def test_evaluate_restoration_cli_on_the_tiny_model(tmp_path, tiny_nemo, capsys):
    from nest_ext.cli.evaluate_restoration import main

    path, _ = tiny_nemo
    manifest = _pairs(tmp_path, n=2)
    assert main(["--model", path, "--manifest", manifest, "--out-dir", str(tmp_path / "ev"), "--device", "cpu",
                 "--no-extra-metrics", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "si_sdr" in out and "mr_stft" in out and "lower is better" in out
    assert sorted(p.name for p in (tmp_path / "ev").iterdir())[:3] == ["audio", "metrics.csv", "report.html"]
