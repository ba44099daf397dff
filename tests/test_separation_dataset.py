"""Separation dataset: crops, padding, lengths, bad audio, epochs/seeds, dynamic mixing recipe."""
import logging

import numpy as np
import pytest
import soundfile as sf
import torch
from omegaconf import OmegaConf

from conftest import write_manifest, write_wav
from nest_ext.data.dynamic_mixing import (
    DynamicMixer,
    SourceUtterance,
    SpeakerPool,
    sample_levels_db,
    speed_perturb,
)
from nest_ext.data.separation_dataset import (
    SeparationDataset,
    collate_separation_batch,
    get_separation_dataset_from_config,
    set_separation_epoch,
)

SR = 8000


def _noise(n, seed):
    return (0.1 * np.random.default_rng(seed).standard_normal(n)).astype(np.float32)


def _corpus(tmp_path, lengths, num_spks=2, speakers=None):
    """Mixture = sum of sources, one manifest line per length; returns (manifest, rows)."""
    rows = []
    for i, n in enumerate(lengths):
        srcs = [_noise(n, 100 * i + k) for k in range(num_spks)]
        targets = [write_wav(tmp_path / f"s{k + 1}" / f"u{i}.wav", s, SR) for k, s in enumerate(srcs)]
        mix = write_wav(tmp_path / "mix" / f"u{i}.wav", np.sum(srcs, 0), SR)
        row = {"input_filepath": mix, "target_filepath": targets, "duration": n / SR}
        if speakers is not None:
            row["speaker_ids"] = speakers[i]
        rows.append(row)
    return write_manifest(tmp_path / "manifest.json", rows), rows


def test_crops_padding_lengths(tmp_path):
    manifest, rows = _corpus(tmp_path, [12000, 2000, 8000])
    ds = SeparationDataset(manifest, SR, num_spks=2, segment_seconds=0.5)
    items = [ds[i] for i in range(3)]
    assert [it["input_signal"].shape[0] for it in items] == [4000, 2000, 4000]  # short one kept whole
    for i, it in enumerate(items):
        # mixture and sources are cut at the same offset: the crop of the mixture is the sum of the crops
        torch.testing.assert_close(it["input_signal"], it["target_signal"].sum(0), atol=1e-4, rtol=0)
        full = sf.read(rows[i]["target_filepath"][0], dtype="float32")[0]
        crop = it["target_signal"][0].numpy()
        candidates = np.flatnonzero(full[: len(full) - len(crop) + 1] == crop[0])
        starts = [s for s in candidates if np.array_equal(full[s : s + len(crop)], crop)]
        assert len(starts) == 1  # a contiguous window of the file
    batch = collate_separation_batch(items)
    assert batch["input_signal"].shape == (3, 4000) and batch["target_signal"].shape == (3, 2, 4000)
    assert batch["input_length"].tolist() == [4000, 2000, 4000] and batch["input_length"].dtype == torch.int64
    assert torch.equal(batch["target_length"], batch["input_length"])
    assert batch["input_signal"][1, 2000:].abs().sum() == 0 and batch["target_signal"][1, :, 2000:].abs().sum() == 0
    torch.testing.assert_close(batch["target_signal"][1, :, :2000], items[1]["target_signal"])
    # whole utterances without segment_seconds
    ds_full = SeparationDataset(manifest, SR, num_spks=2)
    assert ds_full[0]["input_signal"].shape[0] == 12000
    np.testing.assert_array_equal(ds_full[0]["target_signal"][1].numpy(), sf.read(rows[0]["target_filepath"][1], dtype="float32")[0])


def test_crops_reproducible_per_seed_and_epoch(tmp_path):
    manifest, _ = _corpus(tmp_path, [16000])
    a = SeparationDataset(manifest, SR, segment_seconds=0.1, seed=3)
    b = SeparationDataset(manifest, SR, segment_seconds=0.1, seed=3)
    c = SeparationDataset(manifest, SR, segment_seconds=0.1, seed=4)
    assert torch.equal(a[0]["input_signal"], b[0]["input_signal"])
    assert not torch.equal(a[0]["input_signal"], c[0]["input_signal"])
    epoch0 = a[0]["input_signal"]
    a.set_epoch(1)
    assert a.epoch == 1 and not torch.equal(a[0]["input_signal"], epoch0)
    assert torch.equal(a[0]["input_signal"], a[0]["input_signal"])  # same epoch -> same crop


def test_epoch_reaches_persistent_workers(tmp_path):
    manifest, _ = _corpus(tmp_path, [16000, 16000])
    ds = SeparationDataset(manifest, SR, segment_seconds=0.1, seed=0)
    dl = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=1, persistent_workers=True, collate_fn=ds.collate_fn)
    first = next(iter(dl))["input_signal"]
    assert set_separation_epoch(dl, 5)
    second = next(iter(dl))["input_signal"]
    expected = collate_separation_batch([ds[0], ds[1]])["input_signal"]  # epoch 5 in this process
    assert torch.equal(second, expected) and not torch.equal(first, second)


def test_bad_audio_skipped_with_path_and_line(tmp_path, caplog):
    manifest, rows = _corpus(tmp_path, [4000, 4000, 4000, 4000])
    write_wav(rows[1]["target_filepath"][0], _noise(8000, 0), 16000)  # wrong rate
    write_wav(rows[2]["target_filepath"][1], _noise(3000, 0), SR)  # wrong length
    rows.append({"input_filepath": str(tmp_path / "gone.wav"), "target_filepath": rows[0]["target_filepath"], "duration": 0.5})
    rows.append({"input_filepath": rows[0]["input_filepath"], "target_filepath": rows[0]["target_filepath"][:1]})
    rows.append({"input_filepath": rows[0]["input_filepath"], "target_filepath": rows[0]["target_filepath"], "duration": 0.01})
    write_manifest(manifest, rows)
    with caplog.at_level(logging.WARNING, logger="nest_ext.data.separation_dataset"):
        ds = SeparationDataset(manifest, SR, num_spks=2, min_duration=0.1)
        assert len(ds) == 4  # missing file and wrong speaker count left out at load, short one filtered
        assert any(f"{manifest}:5" in p and "gone.wav" in p for p in ds.manifest_problems)
        assert any(f"{manifest}:6" in p and "num_spks=2" in p for p in ds.manifest_problems)
        item = ds[1]
        assert item["index"] == 3  # served a good item instead
        assert ds[2]["index"] == 3
    text = caplog.text
    assert rows[1]["target_filepath"][0] in text and f"{manifest}:2" in text and "16000 Hz" in text
    assert f"{manifest}:3" in text and "differ in length" in text
    strict = SeparationDataset(manifest, SR, num_spks=2, min_duration=0.1, on_bad_audio="skip")
    strict.on_bad_audio = "error"
    with pytest.raises(RuntimeError, match="16000 Hz"):
        strict[1]
    with pytest.raises(ValueError, match="gone.wav"):
        SeparationDataset(manifest, SR, num_spks=2, on_bad_audio="error")


def test_config_and_relative_paths(tmp_path):
    manifest, rows = _corpus(tmp_path, [4000])
    rel = dict(rows[0], input_filepath="mix/u0.wav", target_filepath=["s1/u0.wav", "s2/u0.wav"])
    write_manifest(tmp_path / "rel.json", [rel])
    cfg = OmegaConf.create(
        {"manifest_filepath": f"{manifest},{tmp_path / 'rel.json'}", "sample_rate": SR, "num_spks": 2,
         "batch_size": 2, "shuffle": True, "segment_seconds": None, "dynamic_mixing": False}
    )
    ds = get_separation_dataset_from_config(cfg)
    assert len(ds) == 2 and torch.equal(ds[0]["input_signal"], ds[1]["input_signal"])
    assert ds.collate_fn is collate_separation_batch


def _pool(tmp_path, speakers=("aaa", "bbb", "ccc", "ddd"), per_speaker=3, n=6000):
    utts = []
    for s_i, spk in enumerate(speakers):
        for k in range(per_speaker):
            p = write_wav(tmp_path / "pool" / f"{spk}_{k}.wav", _noise(n + 500 * k, 10 * s_i + k), SR)
            utts.append(SourceUtterance(p, spk))
    return SpeakerPool(utts)


def test_dynamic_mixer_recipe(tmp_path):
    mixer = DynamicMixer(_pool(tmp_path), num_spks=3, sample_rate=SR, segment_frames=4000)
    rng = np.random.default_rng(0)
    for _ in range(20):
        mixture, sources, info = mixer.mix(rng)
        assert len(set(info["speakers"])) == 3  # distinct speakers every time
        assert [p.split("/")[-1][:3] for p in info["paths"]] == info["speakers"]
        assert mixture.shape == (4000,) and sources.shape == (3, 4000)
        np.testing.assert_allclose(mixture, sources.sum(0), atol=1e-6)
        peak = max(np.abs(mixture).max(), np.abs(sources).max())
        assert peak == pytest.approx(0.9, rel=1e-5)  # renormalised, never clipping
        # relative levels (mean absolute amplitude) follow the drawn dB levels
        lvl = np.asarray(info["levels_db"])
        amp = np.abs(sources).mean(1)
        np.testing.assert_allclose(20 * np.log10(amp / amp[0]), lvl - lvl[0], atol=1e-3)
        assert np.all(lvl <= 0) and np.all(lvl >= -45)
    with pytest.raises(ValueError, match="at least 5 distinct speakers"):
        DynamicMixer(_pool(tmp_path), num_spks=5, sample_rate=SR)


def test_level_distribution_matches_speechbrain_statistics():
    rng = np.random.default_rng(0)
    levels = np.stack([sample_levels_db(rng, 2) for _ in range(4000)])
    assert levels[:, 0].mean() == pytest.approx(-27.43, abs=0.15) and levels[:, 0].std() == pytest.approx(2.57, abs=0.15)
    rel = levels[:, 1] - levels[:, 0]
    assert rel.mean() == pytest.approx(-2.51, abs=0.15) and rel.std() == pytest.approx(2.66, abs=0.15)


def test_speed_perturb_scales_time_and_pitch():
    t = np.arange(8000) / SR
    tone = np.sin(2 * np.pi * 400 * t).astype(np.float32)
    fast = speed_perturb(tone, 1.05)
    slow = speed_perturb(tone, 0.95)
    assert abs(len(fast) - 8000 / 1.05) <= 1 and abs(len(slow) - 8000 / 0.95) <= 1
    for sig, factor in ((fast, 1.05), (slow, 0.95)):
        spec = np.abs(np.fft.rfft(sig * np.hanning(len(sig))))
        freq = np.argmax(spec) * SR / len(sig)
        assert freq == pytest.approx(400 * factor, abs=2)


def test_dynamic_mixing_dataset_epochs_and_seeds(tmp_path):
    speakers = [["aaa", "bbb"], ["ccc", "ddd"], ["aaa", "ccc"], ["bbb", "ddd"]]
    manifest, _ = _corpus(tmp_path, [6000, 7000, 8000, 9000], speakers=speakers)
    make = lambda seed: SeparationDataset(manifest, SR, segment_seconds=0.5, dynamic_mixing=True, speed_perturb=True, seed=seed)
    ds, same, other = make(1), make(1), make(2)
    assert len(ds) == 4
    epoch0 = [ds[i]["input_signal"] for i in range(4)]
    assert all(torch.equal(x, same[i]["input_signal"]) for i, x in enumerate(epoch0))  # reproducible
    assert not torch.equal(epoch0[0], other[0]["input_signal"])
    ds.set_epoch(1)
    epoch1 = [ds[i]["input_signal"] for i in range(4)]
    assert sum(not torch.equal(a, b) for a, b in zip(epoch0, epoch1)) >= 3  # new mixtures each epoch
    item = ds[0]
    assert item["target_signal"].shape == (2, 4000)
    torch.testing.assert_close(item["input_signal"], item["target_signal"].sum(0), atol=1e-5, rtol=0)
    # the manifest's own mixtures are not what dynamic mixing serves
    static = SeparationDataset(manifest, SR, segment_seconds=0.5)
    assert not any(torch.equal(static[i]["input_signal"], epoch0[i]) for i in range(4))


def test_dynamic_mixing_speakers_from_file_names_and_bad_sources(tmp_path, caplog):
    rows = []
    names = ["011a010b_0.6_20ao010t_-0.6", "01zc0207_1.2_40na010x_-1.2", "22ha010c_0.3_01aa010k_-0.3"]
    for i, name in enumerate(names):
        srcs = [_noise(5000, 10 * i + k) for k in range(2)]
        t = [write_wav(tmp_path / f"s{k + 1}" / f"{name}.wav", s, SR) for k, s in enumerate(srcs)]
        rows.append({"input_filepath": write_wav(tmp_path / "mix" / f"{name}.wav", sum(srcs), SR), "target_filepath": t})
    write_wav(rows[0]["target_filepath"][0], _noise(5000, 0), 16000)  # a bad source in the pool
    manifest = write_manifest(tmp_path / "m.json", rows)
    ds = SeparationDataset(manifest, SR, dynamic_mixing=True, seed=0)
    assert sorted(ds.mixer.pool.speakers) == ["011", "01a", "01z", "20a", "22h", "40n"]
    with caplog.at_level(logging.WARNING, logger="nest_ext.data.separation_dataset"):
        for epoch in range(4):
            ds.set_epoch(epoch)
            for i in range(len(ds)):
                assert ds[i]["target_signal"].shape[0] == 2
    assert rows[0]["target_filepath"][0] in caplog.text and f"{manifest}:1" in caplog.text
    assert rows[0]["target_filepath"][0] not in [u.path for u in ds.mixer.pool.by_speaker["011"]]
    anon = [write_wav(tmp_path / "anon" / f"rec{k}.wav", _noise(5000, k), SR) for k in range(3)]
    manifest2 = write_manifest(tmp_path / "anon.json", [{"input_filepath": anon[0], "target_filepath": anon[1:]}])
    with pytest.raises(ValueError, match="speaker_ids"):
        SeparationDataset(manifest2, SR, dynamic_mixing=True, dynamic_mixing_speakers="ids")


def test_dynamic_mixing_auto_speakers_fall_back_to_one_per_file(tmp_path, caplog):
    """No speaker IDs and no known name pattern: with dynamic_mixing_speakers auto (the default) each source file
    is its own speaker, with a warning that says how many mixtures and why; speaker_id_regex reads names."""
    rows = []
    for i in range(3):
        srcs = [_noise(4000, 10 * i + k) for k in range(2)]
        t = [write_wav(tmp_path / f"s{k + 1}" / f"take{i}_{'AB'[k]}{i}.wav", s, SR) for k, s in enumerate(srcs)]
        rows.append({"input_filepath": write_wav(tmp_path / "mix" / f"take{i}_A{i}_B{i}.wav", sum(srcs), SR),
                     "target_filepath": t})
    manifest = write_manifest(tmp_path / "m.json", rows)
    with caplog.at_level(logging.WARNING, logger="nest_ext.data.mixture_sources"):
        ds = SeparationDataset(manifest, SR, dynamic_mixing=True)
    assert len(ds.mixer.pool.speakers) == 6 and all(s.startswith("file:") for s in ds.mixer.pool.speakers)
    assert "speaker IDs for 0 of 3 mixtures" in caplog.text and "its own speaker" in caplog.text
    assert ds[0]["target_signal"].shape[0] == 2
    ds = SeparationDataset(manifest, SR, dynamic_mixing=True, speaker_id_regex=r"take\d+_(\w)\d+_(\w)\d+")
    assert ds.mixer.pool.speakers == ["A", "B"]
    with pytest.raises(ValueError, match="needs a group"):
        SeparationDataset(manifest, SR, dynamic_mixing=True, speaker_id_regex="take")
