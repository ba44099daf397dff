"""nest_ext.metrics: the SI-SDR definition against its formula, valid-length PIT scores, perceptual helpers with
stand-in packages, and the report writer's CSV/JSON/HTML/audio outputs."""
import csv
import importlib.machinery
import importlib.util
import json
import sys
import types

import numpy as np
import pytest
import soundfile as sf
import torch

from nest_ext.metrics import (
    BestWorst,
    ReportExample,
    perceptual_metrics,
    pesq_mode,
    pesq_score,
    pit_si_sdr_scores,
    write_evaluation,
    write_html_report,
)
from nest_ext.metrics.si_sdr import si_sdr


def _si_sdr_formula(est, ref):
    """Le Roux et al. (2019), eq. (1)-(3), on zero-mean signals; float64, independent of torchmetrics."""
    est = np.asarray(est, np.float64) - np.mean(est)
    ref = np.asarray(ref, np.float64) - np.mean(ref)
    target = (est @ ref) / (ref @ ref) * ref
    return 10 * np.log10((target @ target) / ((est - target) @ (est - target)))


def test_si_sdr_is_zero_mean_si_sdr():
    g = torch.Generator().manual_seed(0)
    ref = torch.randn(3, 2000, generator=g, dtype=torch.float64) + 0.5
    est = 0.7 * ref + 0.3 * torch.randn(3, 2000, generator=g, dtype=torch.float64) + 0.2
    got = si_sdr(est, ref)
    assert got.tolist() == pytest.approx([_si_sdr_formula(e, r) for e, r in zip(est.numpy(), ref.numpy())], abs=1e-9)
    # an offset on either side does not count; without zero-mean it would (the definition that was dropped)
    torch.testing.assert_close(si_sdr(est + 3.0, ref - 1.0), got)
    from torchmetrics.functional.audio import scale_invariant_signal_distortion_ratio

    assert (scale_invariant_signal_distortion_ratio(est, ref) - got).abs().min() > 0.1


def test_pit_scores_match_each_utterance_alone_and_ignore_padding():
    g = torch.Generator().manual_seed(1)
    lengths = [900, 600]
    refs = torch.randn(2, 2, 900, generator=g)
    est = refs[:, [1, 0]] + 0.4 * torch.randn(2, 2, 900, generator=g)
    mixture = refs.sum(1)
    est[1, :, 600:] = 50.0  # padding: whatever it holds must not count
    scores = pit_si_sdr_scores(est, refs, mixture=mixture.unsqueeze(1), input_length=torch.tensor(lengths))
    assert scores.perm.tolist() == [[1, 0], [1, 0]]
    for b, n in enumerate(lengths):
        for s in range(2):
            want = _si_sdr_formula(est[b, 1 - s, :n].numpy(), refs[b, s, :n].numpy())
            assert scores.si_sdr[b, s].item() == pytest.approx(want, abs=1e-3)
            base = _si_sdr_formula(mixture[b, :n].numpy(), refs[b, s, :n].numpy())
            assert scores.improvement[b, s].item() == pytest.approx(want - base, abs=1e-3)
    with pytest.raises(ValueError, match="needs the mixture"):
        pit_si_sdr_scores(est, refs).improvement
    with pytest.raises(ValueError, match="mixture must be"):
        pit_si_sdr_scores(est, refs, mixture=refs)


def _fake_package(monkeypatch, package, attr, fn):
    mod = types.ModuleType(package)
    mod.__spec__ = importlib.machinery.ModuleSpec(package, None)  # found by importlib.util.find_spec
    setattr(mod, attr, fn)
    monkeypatch.setitem(sys.modules, package, mod)


def test_perceptual_metrics_with_stand_in_packages(monkeypatch):
    calls = []

    def fake_pesq(rate, ref, est, mode):
        calls.append((rate, mode))
        if not ref.any():
            raise RuntimeError("No utterances detected")  # what pesq does on silence
        return float(np.corrcoef(ref, est)[0, 1])

    _fake_package(monkeypatch, "pesq", "pesq", fake_pesq)
    _fake_package(monkeypatch, "pystoi", "stoi", lambda ref, est, rate, extended=False: 0.5 + 0.5 * extended)
    refs = np.random.default_rng(0).standard_normal((2, 1600))
    got = perceptual_metrics(torch.from_numpy(refs), refs, 16000)
    assert got == {"pesq": pytest.approx(1.0), "stoi": 0.5} and calls == [(16000, "wb")] * 2
    assert pesq_score(refs[0], refs[0], 16000, mode="nb") == pytest.approx(1.0) and calls[-1] == (16000, "nb")
    assert np.isnan(pesq_score(refs[0], np.zeros(1600), 16000))
    assert perceptual_metrics(refs, refs, 44100) == {"stoi": 0.5}  # PESQ left out at a rate it does not support
    assert pesq_mode(8000) == "nb"
    with pytest.raises(ValueError, match="8000 or 16000"):
        pesq_mode(22050)
    with pytest.raises(ValueError, match="one shape"):
        perceptual_metrics(refs, refs[:1], 16000)


def _rows(n):
    return [
        {"id": f"u{i}", "input_filepath": f"/d/u{i}.wav", "duration": 1.0 + i, "score": float(i), "other": 0.5,
         "seconds": 0.1}
        for i in range(n)
    ]


def test_write_evaluation_csv_json_html_and_audio(tmp_path):
    rows = _rows(6)
    rows[2]["score"] = float("nan")  # e.g. PESQ refused one utterance
    loud = np.linspace(-3.0, 3.0, 800, dtype=np.float32)
    quiet = 0.25 * np.sin(np.arange(800, dtype=np.float32))
    keep = BestWorst()
    for r in rows:
        keep.add(r["score"], r["id"])
    examples = [ReportExample(tag, uid, "a caption", [("loud", loud), ("quiet", quiet)], 8000)
                for tag, uid in (("best", keep.best), ("worst", keep.worst))]
    skipped = [{"where": "tt.json:9", "reason": "cannot read <x>.wav"}]
    summary = write_evaluation(
        str(tmp_path), rows, ["score", "other"], manifest="tt.json", skipped=skipped, unavailable=["pesq"],
        extra_columns=["seconds"], title="Restoration <test>", rank_by="score", examples=examples,
        labels={"score": "Score (dB)"},
    )
    with open(tmp_path / "metrics.csv") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == ["id", "input_filepath", "duration", "score", "other", "seconds"]
    assert [r["score"] for r in table[:3]] == ["0.0000", "1.0000", "nan"]
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["metrics"]["score"] == {"mean": 2.6, "median": 3.0, "std": pytest.approx(np.std([0, 1, 3, 4, 5])),
                                         "min": 0.0, "max": 5.0, "count": 5}
    assert saved["real_time_factor"] == pytest.approx(0.6 / 21.0) and saved["skipped"] == skipped
    assert (saved["num_evaluated"], saved["num_skipped"], saved["extra_metrics_unavailable"]) == (6, 1, ["pesq"])
    assert summary["report"] == str(tmp_path / "report.html") and "report" not in saved

    page = (tmp_path / "report.html").read_text()
    assert "Restoration &lt;test&gt;" in page and "cannot read &lt;x&gt;.wav" in page and "Score (dB)" in page
    assert page.index("<h2>Utterances</h2>") < page.index("<td>u5</td>") < page.index("<td>u0</td>")  # best first
    assert "<h2>Best: u5 (a caption)</h2>" in page and "<h2>Worst: u0 (a caption)</h2>" in page
    for tag in ("best", "worst"):
        played, rate = sf.read(tmp_path / "audio" / f"{tag}_0.wav", dtype="float32")
        info = sf.info(str(tmp_path / "audio" / f"{tag}_0.wav"))
        assert rate == 8000 and info.subtype == "PCM_16" and f"src='audio/{tag}_1.wav'" in page
        np.testing.assert_allclose(played, loud / 3.0, atol=1e-4)  # scaled below full scale, not clipped
        np.testing.assert_allclose(sf.read(tmp_path / "audio" / f"{tag}_1.wav")[0], quiet, atol=1e-4)  # level kept
    if importlib.util.find_spec("matplotlib") is None:
        assert "matplotlib is not installed" in page
    else:
        for png in ("score_hist.png", "spectrogram_best.png", "spectrogram_worst.png"):
            assert (tmp_path / png).stat().st_size > 0 and png in page
    assert not list(tmp_path.glob(".*")) and not list((tmp_path / "audio").glob(".*"))  # no temp files left


def test_report_splits_worst_and_best_when_many(tmp_path):
    rows = _rows(7)
    summary = write_evaluation(str(tmp_path), rows, ["score"], manifest=["a.json", "b.json"], report=False)
    assert summary["manifest"] == ["a.json", "b.json"] and not (tmp_path / "report.html").exists()
    write_html_report(str(tmp_path), rows, summary, rank_by="score", table_rows=2, audio=False)
    page = (tmp_path / "report.html").read_text()
    worst, best = page.index("Worst 2 by score"), page.index("Best 2 by score")
    assert worst < page.index("<td>u0</td>") < page.index("<td>u1</td>") < best
    assert best < page.index("<td>u6</td>") < page.index("<td>u5</td>") and "<td>u3</td>" not in page
    empty = write_evaluation(str(tmp_path / "none"), [], ["score"], manifest="tt.json")
    assert empty["metrics"]["score"]["count"] == 0 and empty["real_time_factor"] is None
