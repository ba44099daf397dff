"""Degradation chain and restoration dataset: every step keeps length and alignment and does what it says;
pairs are deterministic from (seed, utterance ID); specs are validated; the dataset serves aligned pairs, or
clean speech degraded on the fly (new draws each epoch), and skips bad files."""
import json

import numpy as np
import pytest
import torch

from conftest import write_manifest, write_wav
from nest_ext.data.degradations import DEFAULT_DEGRADATIONS, STEP_TYPES, DegradationChain, utterance_rng
from nest_ext.data.restoration_dataset import RestorationDataset, get_restoration_dataset_from_config
from nest_ext.cli.synth import speech_like

SR = 16000


@pytest.fixture(scope="module")
def clean():
    return speech_like(1.0, SR, seed=7)


def _one(kind, **params):
    return DegradationChain.from_spec([{"type": kind, "prob": 1.0, **params}])


def _band_energy(x, low_hz, high_hz=None):
    spec = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(x.shape[0], 1.0 / SR)
    band = (freqs >= low_hz) & (freqs < (high_hz or SR))
    return spec[band].sum() / spec.sum()


def _corr(a, b):
    a, b = a - a.mean(), b - b.mean()
    return float(np.dot(a, b) / np.sqrt(np.dot(a, a) * np.dot(b, b)))


@pytest.mark.parametrize("kind", sorted(STEP_TYPES))
def test_each_step_keeps_length_alignment_and_is_deterministic(clean, kind):
    chain = _one(kind)
    out, applied = chain.degrade(clean, SR, seed=3, utt_id="utt-a")
    assert out.shape == clean.shape and out.dtype == np.float32 and np.isfinite(out).all()
    assert [a["type"] for a in applied] == [kind]
    again, _ = chain.degrade(clean, SR, seed=3, utt_id="utt-a")
    assert np.array_equal(out, again)  # same seed and ID: the same pair
    assert not np.array_equal(out, clean)
    if kind != "packet_loss":  # still the same utterance at the same time (lag 0 correlates best)
        lags = {lag: _corr(np.roll(out, -lag), clean) for lag in (-40, -8, 0, 8, 40)}
        assert max(lags, key=lags.get) == 0, lags


def test_draws_depend_on_seed_and_utterance_only(clean):
    chain = DegradationChain.from_spec(None)
    a = chain.degrade(clean, SR, seed=0, utt_id="x")
    assert np.array_equal(a[0], DegradationChain.from_spec(None).degrade(clean, SR, seed=0, utt_id="x")[0])
    assert a[1] != chain.degrade(clean, SR, seed=0, utt_id="y")[1] or a[1] != chain.degrade(clean, SR, 1, "x")[1]
    assert utterance_rng(5, "abc").random() == utterance_rng(5, "abc").random()
    # min_applied: never a clean copy, even when every probability says no
    none = DegradationChain.from_spec({"steps": [{"type": "clipping", "prob": 0.0}, {"type": "eq_tilt", "prob": 0.0}]})
    for uid in range(5):
        assert len(none.degrade(clean, SR, 0, str(uid))[1]) == 1
    assert [s["type"] for s in DegradationChain.from_spec(None).steps] == [d["type"] for d in DEFAULT_DEGRADATIONS]


def test_steps_do_what_they_say(clean):
    out, (info,) = _one("bandlimit", rate=[4000, 4000]).degrade(clean, SR, 0, "u")
    assert info["rate"] == 4000 and _band_energy(out, 2100) < 1e-4 < _band_energy(clean, 2100)
    out, (info,) = _one("clipping", threshold=[0.5, 0.5]).degrade(clean, SR, 0, "u")
    assert np.abs(out).max() == pytest.approx(0.5 * np.abs(clean).max(), rel=1e-5)
    out, (info,) = _one("noise", snr_db=[10.0, 10.0]).degrade(clean, SR, 0, "u")
    snr = 10 * np.log10(np.sum(clean.astype(np.float64) ** 2) / np.sum((out - clean).astype(np.float64) ** 2))
    assert snr == pytest.approx(10.0, abs=0.05) and info["noise"] in ("white", "pink", "brown")
    out, (info,) = _one("eq_tilt", db_per_octave=[6.0, 6.0]).degrade(clean, SR, 0, "u")
    assert _band_energy(out, 2000) > 2 * _band_energy(clean, 2000)
    assert np.sqrt(np.mean(out**2)) == pytest.approx(np.sqrt(np.mean(clean**2)), rel=1e-3)
    out, (info,) = _one("packet_loss", loss_rate=[0.3, 0.3], packet_ms=20).degrade(clean, SR, 0, "u")
    packets = (out.reshape(-1, 320) == 0).all(axis=1)
    assert packets.sum() == info["lost_packets"] > 0
    out, (info,) = _one("reverb", rt60=[0.5, 0.5], drr_db=[0.0, 0.0]).degrade(clean, SR, 0, "u")
    assert info["rt60"] == 0.5 and _corr(out, clean) < 0.95
    for codec in ("mulaw", "alaw", "gsm", "g721", "vorbis", "opus"):
        out, (info,) = _one("codec", codecs=[codec]).degrade(clean, SR, 0, "u")
        assert info["codec"] == codec and 0.6 < _corr(out, clean) < 0.99999, codec
        if codec in ("mulaw", "alaw", "gsm", "g721"):  # 8 kHz telephone codecs: nothing above 4 kHz
            assert _band_energy(out, 4200) < 0.01


def test_noise_and_rir_manifests(tmp_path, clean):
    hum = write_wav(tmp_path / "hum.wav", 0.2 * np.sin(2 * np.pi * 50 * np.arange(SR // 2) / SR), SR)  # short: looped
    noise_manifest = write_manifest(tmp_path / "noise.json", [{"audio_filepath": "hum.wav", "duration": 0.5}])
    out, (info,) = _one("noise", snr_db=[0.0, 0.0], noise_manifest=noise_manifest).degrade(clean, SR, 0, "u")
    added = out - clean
    assert info["noise"] == "hum.wav" and _band_energy(added, 0, 60) > 0.99
    rir = np.zeros(800, np.float32)
    rir[100], rir[500] = 1.0, 0.5  # direct path after 100 samples, one echo 25 ms later
    rir_manifest = write_manifest(tmp_path / "rir.json", [{"audio_filepath": write_wav(tmp_path / "rir.wav", rir, SR)}])
    out, (info,) = _one("reverb", rir_manifest=rir_manifest).degrade(clean, SR, 0, "u")
    expected = clean + 0.5 * np.concatenate([np.zeros(400, np.float32), clean[:-400]])  # aligned on the direct path
    expected *= np.sqrt(np.mean(clean**2) / np.mean(expected**2))
    assert info == {"type": "reverb", "rir": "file"}
    np.testing.assert_allclose(out, expected, atol=2e-5)


def test_spec_validation(tmp_path):
    with pytest.raises(ValueError, match="unknown type 'hiss'"):
        DegradationChain.from_spec([{"type": "hiss"}])
    with pytest.raises(ValueError, match=r"unknown keys \['snr'\]"):
        DegradationChain.from_spec([{"type": "noise", "snr": [1, 2]}])
    with pytest.raises(ValueError, match="prob 1.5"):
        DegradationChain.from_spec([{"type": "noise", "prob": 1.5}])
    with pytest.raises(ValueError, match=r"unknown codecs \['amr'\]"):
        DegradationChain.from_spec([{"type": "codec", "codecs": ["amr"]}])
    spec = tmp_path / "chain.yaml"
    spec.write_text("- {type: clipping, prob: 1.0, threshold: [0.2, 0.3]}\n- {type: packet_loss, prob: 0.5}\n")
    chain = DegradationChain.from_spec(str(spec))
    assert [s["type"] for s in chain.steps] == ["clipping", "packet_loss"] and chain.steps[0]["threshold"] == [0.2, 0.3]


def _pairs(tmp_path, n=3, seconds=0.5):
    rows = []
    for i in range(n):
        clean = speech_like(seconds, SR, seed=i)
        rows.append({"input_filepath": write_wav(tmp_path / f"deg{i}.wav", 0.5 * clean, SR),
                     "target_filepath": write_wav(tmp_path / f"clean{i}.wav", clean, SR),
                     "audio_filepath": f"clean{i}.wav", "duration": seconds})
    return write_manifest(tmp_path / "pairs.json", rows)


def test_pairs_are_cropped_together(tmp_path):
    ds = RestorationDataset(_pairs(tmp_path), SR, segment_seconds=0.2, seed=1)
    batch = ds.collate_fn([ds[i] for i in range(len(ds))])
    assert batch["input_signal"].shape == (3, 3200) and batch["target_signal"].shape == (3, 1, 3200)
    torch.testing.assert_close(batch["input_signal"], 0.5 * batch["target_signal"][:, 0], atol=4e-5, rtol=0)  # same span
    ds.set_epoch(1)
    assert not torch.equal(ds[0]["target_signal"], batch["target_signal"][0])  # a new crop each epoch


def test_on_the_fly_degradation_is_seeded_by_epoch_and_item(tmp_path):
    cfg = {"manifest_filepath": _pairs(tmp_path), "sample_rate": SR, "segment_seconds": 0.25,
           "degrade_on_the_fly": True, "degradations": [{"type": "noise", "prob": 1.0}], "seed": 4}
    ds = get_restoration_dataset_from_config(cfg)
    item = ds[1]
    assert item["input_signal"].shape == (4000,) and item["target_signal"].shape == (1, 4000)
    assert not torch.equal(item["input_signal"], item["target_signal"][0])
    again = get_restoration_dataset_from_config(cfg)[1]
    assert torch.equal(item["input_signal"], again["input_signal"])
    ds.set_epoch(2)
    assert not torch.equal(ds[1]["input_signal"], item["input_signal"])


def test_bad_files_are_skipped_with_their_line(tmp_path, caplog):
    manifest = _pairs(tmp_path)
    (tmp_path / "clean1.wav").write_bytes(b"not audio")
    ds = RestorationDataset(manifest, SR, degrade_on_the_fly=True, degradations=[{"type": "clipping", "prob": 1.0}])
    with caplog.at_level("WARNING"):
        item = ds[1]
    assert item["index"] != 1 and "clean1.wav" in caplog.text and "pairs.json:2" in caplog.text
    with pytest.raises(RuntimeError, match="clean1.wav"):
        RestorationDataset(manifest, SR, degrade_on_the_fly=True, on_bad_audio="error")[1]


def test_default_chain_cost_per_pair(clean):
    """The default chain must stay cheap: >= 1,000 pairs/min of 4 s clips on 2 cores leaves ~120 ms per pair."""
    import time

    chain = DegradationChain.from_spec(None)
    x = np.tile(clean, 4)
    start = time.process_time()
    for i in range(20):
        chain.degrade(x, SR, 0, f"u{i}")
    per_pair = (time.process_time() - start) / 20
    assert per_pair < 0.12, f"default chain takes {1000 * per_pair:.0f} ms CPU per 4 s pair"
    json.dumps(chain.degrade(x, SR, 0, "u0")[1])  # the record of what was applied is JSON (for manifests)


def test_pyroomacoustics_reverb_when_installed(clean):
    pytest.importorskip("pyroomacoustics", reason="optional: pip install 'nest_ext[restoration]'")
    out, (info,) = _one("reverb", simulator="pyroomacoustics", rt60=[0.4, 0.4]).degrade(clean, SR, 0, "u")
    assert out.shape == clean.shape and np.isfinite(out).all() and len(info["room"]) == 3
    lags = {lag: _corr(np.roll(out, -lag), clean) for lag in (-16, -4, 0, 4, 16)}
    assert max(lags, key=lags.get) == 0 and lags[0] < 0.99  # aligned on the direct path, but reverberant
