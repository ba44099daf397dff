"""Separation data at scale: tarred and lhotse shards read back (crops, ranks, workers, epochs), dynamic mixing
from the data's own stream and from a source pool (manifest, tarred or Shar)."""
import json
import os

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import speech_like, write_manifest
from nest_ext.data.packing import pack_shards
from nest_ext.data.separation_data import get_separation_dataloader
from nest_ext.data.separation_dataset import SeparationDataset
from nest_ext.data.streaming_mixer import StreamingMixer
from nest_ext.data.tarred_separation_dataset import TarredSeparationDataset
from test_pack_separation import separation_corpus

SR = 8000


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    """8 clean examples (6 speakers) packed as nemo shards of 2 and as Shar shards of 2."""
    root = tmp_path_factory.mktemp("sep")
    manifest, refs = separation_corpus(root / "data", n=8, bad=False)
    pack_shards(out_dir=str(root / "tar"), manifest=manifest, task="separation", shard_size=2, progress=False)
    pack_shards(out_dir=str(root / "shar"), manifest=manifest, task="separation", shard_size=2,
                format="lhotse-shar", progress=False)
    return root, manifest, refs


def _tarred(root, **kw):
    args = dict(manifest_filepath=str(root / "tar" / "tarred_audio_manifest.json"),
                tarred_audio_filepaths=str(root / "tar" / "audio__OP_0..3_CL_.tar"), sample_rate=SR, num_spks=2)
    args.update(kw)
    return TarredSeparationDataset(**args)


def _which(item, refs):
    """The example an uncropped item is (its mixture equals the packed PCM mixture)."""
    mix = np.round(item["input_signal"].numpy() * 32768).astype(np.int64)
    found = [k for k, r in refs.items() if len(r["mixture"]) == len(mix) and np.array_equal(r["mixture"], mix)]
    assert len(found) == 1
    return found[0]


def _window_of(part, full, tol=1e-4):
    """Whether ``part`` is a contiguous window of ``full`` up to a gain (dynamic mixing rescales sources)."""
    n = len(part)
    for s in range(len(full) - n + 1):
        w = full[s:s + n]
        g = float(np.dot(w, part) / max(np.dot(w, w), 1e-12))
        if g > 0 and np.max(np.abs(g * w - part)) < tol * max(1.0, np.max(np.abs(part))):
            return True
    return False


def test_tarred_epoch_reads_every_example_once_and_ranks_are_disjoint(packed):
    root, _, refs = packed
    ds = _tarred(root)
    first = [_which(it, refs) for it in ds]
    assert sorted(first) == sorted(refs) and len(ds) == 8
    for it in _tarred(root):
        torch.testing.assert_close(it["input_signal"], it["target_signal"].sum(0), atol=2e-4, rtol=0)
    ds.set_epoch(1)
    assert sorted(_which(it, refs) for it in ds) == sorted(refs)
    assert [_which(it, refs) for it in ds] != first  # a new order each epoch
    ranks = [[_which(it, refs) for it in _tarred(root, global_rank=r, world_size=2)] for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 4 and not set(ranks[0]) & set(ranks[1])
    assert sorted(ranks[0] + ranks[1]) == sorted(refs)
    # two DataLoader workers split the rank's shards: still every example once
    loader = torch.utils.data.DataLoader(_tarred(root), batch_size=1, num_workers=2, collate_fn=lambda b: b[0])
    assert sorted(_which(it, refs) for it in loader) == sorted(refs)


def test_tarred_crops_and_equal_rank_lengths(packed, tmp_path):
    root, _, _ = packed
    ds = _tarred(root, segment_seconds=0.3, speed_perturb=True)
    items = list(ds)
    assert len(items) == 8 and all(it["input_signal"].shape[0] == 2400 for it in items)
    for it in items:  # mixture and sources cut at the same place
        torch.testing.assert_close(it["input_signal"], it["target_signal"].sum(0), atol=2e-3, rtol=0)
    # shards of 2, 2, 2, 1 examples over 2 ranks: both ranks yield the smaller count (no DDP rank waits forever)
    manifest, _ = separation_corpus(tmp_path / "odd", n=7, bad=False)
    pack_shards(out_dir=str(tmp_path / "t"), manifest=manifest, task="separation", shard_size=2, progress=False)
    kw = dict(manifest_filepath=str(tmp_path / "t" / "tarred_audio_manifest.json"),
              tarred_audio_filepaths=str(tmp_path / "t" / "audio__OP_0..3_CL_.tar"), sample_rate=SR)
    lengths = [len(list(TarredSeparationDataset(global_rank=r, world_size=2, **kw))) for r in (0, 1)]
    assert lengths == [3, 3]
    with pytest.raises(ValueError, match="cannot be scattered over 8 ranks"):
        TarredSeparationDataset(global_rank=0, world_size=8, **kw)


def test_tarred_bad_member_reported_and_skipped(packed, tmp_path, caplog):
    import shutil
    import tarfile

    root, _, refs = packed
    shutil.copytree(root / "tar", tmp_path / "tar")
    tar = tmp_path / "tar" / "audio_0.tar"
    with tarfile.open(tar) as t:
        members = [(m, t.extractfile(m).read()) for m in t.getmembers()]
    with tarfile.open(tar, "w") as t:  # one source member corrupted
        for m, data in members:
            data = b"RIFFjunk" * 8 if m.name.endswith(".s2.wav") and m.name == members[2][0].name else data
            m.size = len(data)
            t.addfile(m, __import__("io").BytesIO(data))
    ds = TarredSeparationDataset(str(tmp_path / "tar" / "tarred_audio_manifest.json"),
                                 str(tmp_path / "tar" / "audio__OP_0..3_CL_.tar"), sample_rate=SR)
    items = list(ds)
    assert len(items) == 8  # the epoch is full: reading goes on (and wraps) past the bad example
    assert ds.bad_audio.count >= 1 and members[2][0].name in caplog.text


def test_streaming_mixer_draws_distinct_speakers_from_a_window():
    rng = np.random.default_rng(0)
    m = StreamingMixer(num_spks=3, sample_rate=SR, segment_frames=500, buffer_size=6)
    for k in range(10):
        m.push(np.full(2000, 0.01 * (k + 1), np.float32), speaker=f"spk{k % 4}", name=f"u{k}", rng=rng)
    assert m.num_buffered == 6 and sorted(m.pool.speakers) == ["spk0", "spk1", "spk2", "spk3"]
    for _ in range(20):
        mixture, sources, info = m.mix(rng)
        assert len(set(info["speakers"])) == 3 and sources.shape == (3, 500)
        assert all(int(p.split("#")[0][1:]) >= 4 for p in info["paths"])  # only the last 6 pushed
        np.testing.assert_allclose(mixture, sources.sum(0), atol=1e-6)


def test_tarred_dynamic_mixing_from_its_own_stream(packed):
    root, _, refs = packed
    ds = _tarred(root, dynamic_mixing=True, segment_seconds=0.2, dynamic_mixing_buffer=8)
    items = list(ds)
    assert len(items) == 8
    originals = [r["mixture"][:1600] / 32768 for r in refs.values()]
    srcs = [r[k] / 32768 for r in refs.values() for k in ("s1", "s2")]
    for it in items:
        mix, s = it["input_signal"].numpy(), it["target_signal"].numpy()
        np.testing.assert_allclose(mix, s.sum(0), atol=1e-5)
        assert not any(np.allclose(mix, o, atol=1e-3) for o in originals)  # new mixtures, not the packed ones
        assert all(any(_window_of(x, full, tol=1e-3) for full in srcs) for x in s)  # made of packed sources


def _pool_manifest(root, speakers=("103", "1235", "7"), per_speaker=2):
    rows, files = [], {}
    for i, spk in enumerate(speakers):
        for k in range(per_speaker):
            name = f"{spk}-1240-{k:04d}"
            path = root / spk / f"{name}.flac"
            path.parent.mkdir(parents=True, exist_ok=True)
            audio = speech_like(0.4, SR, seed=50 + 10 * i + k) * 0.5
            sf.write(str(path), audio, SR, subtype="PCM_16")
            files[name] = sf.read(str(path), dtype="float32")[0]
            rows.append({"audio_filepath": str(path), "duration": 0.4, "text": ""})
    return write_manifest(root / "pool.json", rows), files


def test_dynamic_mixing_from_a_source_pool_manifest_and_shards(packed, tmp_path):
    root, manifest, _ = packed
    pool_manifest, files = _pool_manifest(tmp_path / "pool")
    # manifest pool, map-style training data: speakers from LibriSpeech names
    ds = SeparationDataset(manifest, SR, dynamic_mixing=True, segment_seconds=0.2, source_pool=pool_manifest)
    assert sorted(ds.mixer.pool.speakers) == ["103", "1235", "7"] and len(ds) == 8
    for i in range(len(ds)):
        s = ds[i]["target_signal"].numpy()
        assert all(any(_window_of(x, f) for f in files.values()) for x in s)
    # the same pool packed as tar shards (speaker from a manifest key) and as Shar, read as streams
    rows = [dict(json.loads(l), speaker=os.path.basename(json.loads(l)["audio_filepath"]).split("-")[0])
            for l in open(pool_manifest)]
    keyed = write_manifest(tmp_path / "keyed.json", rows)
    pack_shards(out_dir=str(tmp_path / "pool_tar"), manifest=keyed, shard_size=2, progress=False)
    pack_shards(out_dir=str(tmp_path / "pool_shar"), manifest=keyed, shard_size=2, format="lhotse-shar",
                progress=False)
    for pool in ("pool_tar", "pool_shar"):
        tds = _tarred(root, dynamic_mixing=True, segment_seconds=0.2, source_pool=str(tmp_path / pool),
                      dynamic_mixing_buffer=4)
        items = list(tds)
        assert len(items) == 8
        for it in items:
            s = it["target_signal"].numpy()
            assert all(any(_window_of(x, f, tol=1e-3) for f in files.values()) for x in s), pool


def test_lhotse_shar_loader_crops_and_mixes(packed):
    root, _, refs = packed
    cfg = {"use_lhotse": True, "shar_path": str(root / "shar"), "sample_rate": SR, "num_spks": 2, "batch_size": 2,
           "segment_seconds": 0.2, "shuffle": True, "num_workers": 0, "shard_seed": 0, "seed": 0,
           "shuffle_buffer_size": 8}  # NeMo's default 10000 would read the 8 cuts 1250 times first
    loader = get_separation_dataloader(cfg)
    it = iter(loader)
    for _ in range(4):
        batch = next(it)
        assert batch["input_signal"].shape == (2, 1600) and batch["target_signal"].shape == (2, 2, 1600)
        torch.testing.assert_close(batch["input_signal"], batch["target_signal"].sum(1), atol=2e-4, rtol=0)
        assert batch["input_length"].tolist() == [1600, 1600]
    loader = get_separation_dataloader(dict(cfg, dynamic_mixing=True, dynamic_mixing_buffer=6))
    srcs = [r[k] / 32768 for r in refs.values() for k in ("s1", "s2")]
    it = iter(loader)
    for _ in range(4):
        batch = next(it)
        assert batch["target_signal"].shape[1:] == (2, 1600)
        for s in batch["target_signal"].numpy():
            assert all(any(_window_of(x, full, tol=1e-3) for full in srcs) for x in s)


def test_shar_shards_scattered_over_ranks(packed):
    from nest_ext.data.lhotse_separation_dataset import resolve_shar_path

    root, _, _ = packed
    parts = [resolve_shar_path(str(root / "shar"), "scatter", r, 2) for r in (0, 1)]
    assert sorted(parts[0]) == ["cuts", "recording", "target_recording"]
    assert len(parts[0]["cuts"]) == len(parts[1]["cuts"]) == 2 and not set(parts[0]["cuts"]) & set(parts[1]["cuts"])
    assert resolve_shar_path(str(root / "shar"), "replicate", 1, 2)["cuts"] == resolve_shar_path(str(root / "shar"))["cuts"]


def test_bad_pool_file_is_reported_and_dropped(packed, tmp_path, caplog):
    root, _, _ = packed
    pool_manifest, files = _pool_manifest(tmp_path / "pool", speakers=("103", "1235", "7", "9"))
    bad = tmp_path / "pool" / "7" / "7-1240-0000.flac"
    sf.write(str(bad), np.zeros(6400, np.float32), 16000, subtype="PCM_16")  # another rate than the model's
    ds = _tarred(root, dynamic_mixing=True, segment_seconds=0.2, source_pool=pool_manifest, seed=1)
    for epoch in range(3):
        ds.set_epoch(epoch)
        assert len(list(ds)) == 8  # full epochs: a bad pool file is drawn again never
    assert ds.bad_audio.count == 1 and str(bad) in caplog.text and "16000 Hz" in caplog.text
    assert str(bad) not in [u.path for u in ds._mixer.pool.by_speaker.get("7", [])]
