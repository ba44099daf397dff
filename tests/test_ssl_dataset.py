"""NEST datasets: items and collated + augmented batches equal NeMo's; bad audio reported and skipped.

NeMo's own datasets (``nemo.collections.asr.data.ssl_dataset``) are built from the same config beside
ours and both are driven with the same seeds (numpy for noise, Python ``random`` for NeMo's
``MultiSpeakerNoiseAugmentation``, torch).
"""
import io
import logging
import random
import tarfile

import numpy as np
import pytest
import soundfile as sf
import torch
from omegaconf import OmegaConf

from conftest import speech_like, write_manifest, write_wav

SR = 16000

BATCH_AUGMENTOR = {
    # NeMo's NEST config block, with prob 1.0 so every item is augmented (noise or speech mixing)
    "_target_": "nemo.collections.asr.modules.ssl_modules.MultiSpeakerNoiseAugmentation",
    "prob": 1.0,
    "noise_ratio": 0.5,
    "min_r_speech": -5.0,
    "max_r_speech": 5.0,
    "min_r_noise": -5.0,
    "max_r_noise": 20.0,
    "min_mix_rate": 0.5,
    "max_mix_rate": 0.5,
    "min_num_segments": 1,
    "max_num_segments": 1,
    "min_num_speakers": 1,
    "max_num_speakers": 1,
}


@pytest.fixture(scope="module")
def nemo_ssl():
    from nemo.collections.asr.data import ssl_dataset

    return ssl_dataset


@pytest.fixture(scope="module")
def ours():
    from nest_ext.data import ssl_dataset

    return ssl_dataset


@pytest.fixture(autouse=True)
def _fresh_cache():
    from nest_ext.data.noise_sampling import clear_audio_info_cache

    clear_audio_info_cache()
    yield
    clear_audio_info_cache()


@pytest.fixture
def nemo_log(caplog):
    logger = logging.getLogger("nemo_logger")  # NeMo's does not propagate; ours (nest_ext.*) reach caplog anyway
    logger.addHandler(caplog.handler)
    caplog.set_level(logging.WARNING)
    yield caplog
    logger.removeHandler(caplog.handler)


def seed_all(seed):
    np.random.seed(seed)
    random.seed(seed)
    torch.manual_seed(seed)


def noise_files(d):
    """Noise that NeMo reads once (positive-sum windows; short zero-mean files read whole) and silent noise
    (NeMo re-reads it 100 times; ours once, with the same random draws)."""
    rng = np.random.default_rng(0)
    long = 0.05 * rng.standard_normal(5 * SR) + 0.005
    short = 0.05 * rng.standard_normal(int(0.5 * SR))
    write_wav(d / "n_short.wav", short - short.mean())
    return write_manifest(
        d / "noise.json",
        [
            {"audio_filepath": write_wav(d / "n_long.wav", long), "duration": 5.0},
            {"audio_filepath": "n_short.wav", "duration": 0.5},  # relative to the manifest's folder
            {"audio_filepath": write_wav(d / "n_silent.wav", np.zeros(2 * SR)), "duration": 2.0},
        ],
    )


def train_manifest(d, durations=(1.3, 1.6, 0.7, 1.2, 1.5, 1.1), name="train.json"):
    entries = []
    for i, dur in enumerate(durations):
        path = write_wav(d / f"utt{i}.wav", speech_like(dur, seed=i))
        entries.append({"audio_filepath": path, "duration": dur, "text": "ignored"})
    return write_manifest(d / name, entries)


def make_config(manifest, noise, **extra):
    cfg = {
        "manifest_filepath": manifest,
        "noise_manifest": noise,
        "sample_rate": SR,
        "batch_size": 3,
        "shuffle": False,
        "num_workers": 0,
        "max_duration": 60.0,
        "min_duration": None,
        "batch_augmentor": BATCH_AUGMENTOR,
    }
    cfg.update(extra)
    return OmegaConf.create(cfg)


def assert_items_equal(a, b):
    assert a.sample_id == b.sample_id
    for field in ("audio", "audio_len", "noise", "noise_len"):
        torch.testing.assert_close(getattr(a, field), getattr(b, field), rtol=0, atol=0, msg=field)


def assert_batches_equal(a, b):
    for field in ("audio", "audio_len", "noise", "noise_len", "noisy_audio", "noisy_audio_len"):
        torch.testing.assert_close(getattr(a, field), getattr(b, field), rtol=0, atol=0, msg=field)


def test_items_and_augmented_batches_equal_nemo(tmp_path, nemo_ssl, ours):
    cfg = make_config(train_manifest(tmp_path), noise_files(tmp_path))
    theirs = nemo_ssl.get_audio_noise_dataset_from_config(cfg.copy(), global_rank=0, world_size=1)
    mine = ours.get_audio_noise_dataset_from_config(cfg.copy(), global_rank=0, world_size=1)
    assert isinstance(mine, nemo_ssl.AudioNoiseDataset) and len(mine) == len(theirs) == 6

    seed_all(0)
    items_t = [theirs[i] for _ in range(2) for i in range(len(theirs))]
    seed_all(0)
    items_o = [mine[i] for _ in range(2) for i in range(len(mine))]
    for a, b in zip(items_t, items_o):
        assert isinstance(b, nemo_ssl.AudioNoiseItem)
        assert_items_equal(a, b)
    assert int(items_o[2].audio_len) == SR, "0.7 s audio is repeated up to min_audio_len_secs"
    noise_std = [it.noise[: int(it.noise_len)].std().item() for it in items_o]
    assert any(0 < s < 0.006 for s in noise_std), "the silent noise file (white noise path) must be covered"
    assert any(s > 0.03 for s in noise_std)

    # collate + MultiSpeakerNoiseAugmentation, several batches so both noise and speech mixing occur
    for seed in range(4):
        seed_all(seed)
        batch_t = theirs.collate_fn([theirs[i] for i in (seed % 6, (seed + 2) % 6, (seed + 3) % 6)])
        seed_all(seed)
        batch_o = mine.collate_fn([mine[i] for i in (seed % 6, (seed + 2) % 6, (seed + 3) % 6)])
        assert isinstance(batch_o, nemo_ssl.AudioNoiseBatch)
        assert_batches_equal(batch_t, batch_o)
        assert not torch.equal(batch_o.noisy_audio, batch_o.audio)


def test_bad_training_audio_found_at_start_reported_and_skipped(tmp_path, ours, nemo_log):
    good = [write_wav(tmp_path / f"good{i}.wav", speech_like(1.5, seed=i)) for i in range(3)]
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"this is not audio at all" * 100)
    zero_bytes = tmp_path / "zero_bytes.wav"
    zero_bytes.write_bytes(b"")
    empty = write_wav(tmp_path / "empty.wav", np.zeros(0))
    short = write_wav(tmp_path / "short.wav", speech_like(0.2))
    bad = {
        str(tmp_path / "missing.wav"): "missing file",
        str(corrupt): "unreadable audio header",
        str(zero_bytes): "empty file",
        empty: "no audio frames",
        short: "too short",
    }
    entries = [{"audio_filepath": p, "duration": 1.5} for p in [good[0], *bad, good[1], good[2]]]
    manifest = write_manifest(tmp_path / "train.json", entries)
    cfg = make_config(manifest, None, min_duration=1.0, batch_augmentor=None)

    ds = ours.get_audio_noise_dataset_from_config(cfg, global_rank=0, world_size=1)
    assert len(ds) == 3
    assert sorted(e.audio_file for e in ds.manifest_processor.collection) == sorted(good)
    assert ds.bad_audio.count == 5
    for line, (path, reason) in enumerate(bad.items(), start=2):
        assert any(
            p == path and reason in r and w.endswith(f"train.json:{line}") for p, r, w, _ in ds.bad_audio.entries
        ), (path, reason, ds.bad_audio.entries)
        assert path in nemo_log.text
    assert "train.json:2" in nemo_log.text

    # the usable entries load and batch normally
    batch = ds.collate_fn([ds[i] for i in range(len(ds))])
    assert batch.audio.shape == (3, int(1.5 * SR))

    with pytest.raises(ours.BadAudioError, match="missing.wav"):
        ours.get_audio_noise_dataset_from_config(
            make_config(manifest, None, min_duration=1.0, on_bad_audio="error"), global_rank=0, world_size=1
        )


def test_audio_failing_at_load_time_is_replaced_and_batches_stay_full(tmp_path, ours, nemo_log):
    manifest = train_manifest(tmp_path, durations=(1.2, 1.4, 1.6, 1.8, 2.0))
    cfg = make_config(manifest, noise_files(tmp_path))
    ds = ours.get_audio_noise_dataset_from_config(cfg, global_rank=0, world_size=1)
    assert len(ds) == 5 and ds.bad_audio.count == 0
    (tmp_path / "utt1.wav").write_bytes(b"garbage written after the start-up check")

    loader = torch.utils.data.DataLoader(ds, batch_size=2, collate_fn=ours.get_collate_fn(ds), drop_last=False)
    sizes = [b.audio.shape[0] for b in loader]
    assert sizes == [2, 2, 1]
    assert ds.bad_audio.count == 1
    assert "utt1.wav" in nemo_log.text and "train.json:2" in nemo_log.text

    ds_err = ours.get_audio_noise_dataset_from_config(
        make_config(manifest, None, check_audio_at_start=False, on_bad_audio="error"), global_rank=0, world_size=1
    )
    with pytest.raises(ours.BadAudioError, match="utt1.wav"):
        ds_err[1]


def test_no_usable_entry_fails_at_start_naming_the_manifest(tmp_path, ours):
    manifest = write_manifest(tmp_path / "only_bad.json", [{"audio_filepath": str(tmp_path / "gone.wav"),
                                                            "duration": 2.0}])
    with pytest.raises(ValueError, match="only_bad.json"):
        ours.get_audio_noise_dataset_from_config(make_config(manifest, None), global_rank=0, world_size=1)


@pytest.mark.parametrize("kind", ["unreadable", "empty_file", "missing_manifest"])
def test_noise_manifest_without_readable_entry_fails_at_start(tmp_path, ours, kind):
    train = train_manifest(tmp_path, durations=(1.2,))
    noise = tmp_path / "bad_noise.json"
    if kind == "unreadable":
        (tmp_path / "noise_corrupt.wav").write_bytes(b"not audio" * 50)
        write_manifest(noise, [{"audio_filepath": "noise_corrupt.wav", "duration": 1.0},
                               {"audio_filepath": "noise_missing.wav", "duration": 1.0}])
    elif kind == "empty_file":
        noise.write_text("\n")
    with pytest.raises((ValueError, FileNotFoundError), match="bad_noise.json"):
        ours.get_audio_noise_dataset_from_config(make_config(train, str(noise)), global_rank=0, world_size=1)


def _write_tar(path, members):
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _wav_bytes(audio):
    buf = io.BytesIO()
    sf.write(buf, audio, SR, format="WAV")
    return buf.getvalue()


def test_tarred_dataset_with_nemo_shard_pattern_equals_nemo(tmp_path, nemo_ssl, ours, nemo_log):
    durations = [1.2, 1.5, 1.1, 1.7]
    entries, shards = [], [[], []]
    for i, dur in enumerate(durations):
        shards[i % 2].append((f"utt{i}.wav", _wav_bytes(speech_like(dur, seed=i))))
        entries.append({"audio_filepath": f"utt{i}.wav", "duration": dur, "shard_id": i % 2})
    for s, members in enumerate(shards):
        _write_tar(tmp_path / f"audio_{s}.tar", members)
    manifest = write_manifest(tmp_path / "tarred_audio_manifest.json", entries)
    cfg = make_config(
        manifest, noise_files(tmp_path), is_tarred=True,
        tarred_audio_filepaths=str(tmp_path / "audio__OP_0..1_CL_.tar"), shuffle_n=0,
    )
    theirs = nemo_ssl.get_audio_noise_dataset_from_config(cfg.copy(), global_rank=0, world_size=1)
    mine = ours.get_audio_noise_dataset_from_config(cfg.copy(), global_rank=0, world_size=1)
    assert isinstance(mine, nemo_ssl.TarredAudioNoiseDataset)
    seed_all(1)
    items_t = list(theirs)
    seed_all(1)
    items_o = list(mine)
    assert len(items_o) == len(durations)
    for a, b in zip(items_t, items_o):
        assert_items_equal(a, b)
    seed_all(2)
    batch_t = theirs.collate_fn(items_t[:3])
    seed_all(2)
    assert_batches_equal(batch_t, mine.collate_fn(items_o[:3]))

    # a member that does not decode is reported by name and left out of the stream
    _write_tar(tmp_path / "audio_1.tar", [("utt1.wav", b"broken bytes"), shards[1][1]])
    mine = ours.get_audio_noise_dataset_from_config(cfg.copy(), global_rank=0, world_size=1)
    items = list(mine)
    assert len(items) == len(durations) - 1
    assert mine.bad_audio.count == 1 and "utt1.wav" in nemo_log.text


def test_lhotse_dataset_equals_nemo_and_drops_unloadable_cuts(tmp_path, nemo_ssl, ours, nemo_log):
    from lhotse import CutSet, Recording

    paths = [write_wav(tmp_path / f"l{i}.wav", speech_like(d, seed=i)) for i, d in enumerate((1.2, 1.5, 1.0))]
    cuts = CutSet.from_cuts(Recording.from_file(p).to_cut() for p in paths)
    noise = noise_files(tmp_path)
    aug = OmegaConf.create(BATCH_AUGMENTOR)
    theirs = nemo_ssl.LhotseAudioNoiseDataset(noise_manifest=noise, batch_augmentor_cfg=aug)
    mine = ours.LhotseAudioNoiseDataset(noise_manifest=noise, batch_augmentor_cfg=aug)
    for seed in range(3):
        seed_all(seed)
        batch_t = theirs[cuts]
        seed_all(seed)
        assert_batches_equal(batch_t, mine[cuts])

    (tmp_path / "l1.wav").unlink()
    batch = mine[cuts]
    assert batch.audio.shape[0] == 2
    assert mine.bad_audio.count == 1 and "l1.wav" in nemo_log.text


def test_concat_datasets_keep_the_batch_augmentor(tmp_path, ours):
    # NeMo 3.0.0 drops batch_augmentor for is_concat datasets (no augmentation); ours passes it on
    m1 = train_manifest(tmp_path / "a", durations=(1.2, 1.4))
    m2 = train_manifest(tmp_path / "b", durations=(1.3,))
    cfg = make_config([m1, m2], None, is_concat=True, concat_sampling_technique="round-robin")
    ds = ours.get_audio_noise_dataset_from_config(cfg, global_rank=0, world_size=1)
    assert [len(d) for d in ds.datasets] == [2, 1]
    assert all(d.batch_augmentor is not None for d in ds.datasets)
    collate = ours.get_collate_fn(ds)
    seed_all(0)
    batch = collate([item for item, _ in zip(iter(ds), range(3))])
    assert batch.noisy_audio.shape[0] == 3 and not torch.equal(batch.noisy_audio, batch.audio)


def test_lhotse_dataloader_from_nemo_manifest_config(tmp_path, ours):
    # the path the model takes for use_lhotse: NeMo's lhotse dataloader factory with our dataset
    from nemo.collections.common.data.lhotse import get_lhotse_dataloader_from_config

    cfg = make_config(train_manifest(tmp_path, durations=(1.2, 1.5, 1.1, 1.3)), noise_files(tmp_path),
                      use_lhotse=True, batch_size=2, seed=0, shuffle=False)
    dataset = ours.LhotseAudioNoiseDataset(noise_manifest=cfg.noise_manifest, batch_augmentor_cfg=cfg.batch_augmentor)
    loader = get_lhotse_dataloader_from_config(cfg, global_rank=0, world_size=1, dataset=dataset)
    batches = [b for b, _ in zip(loader, range(2))]
    assert [b.audio.shape[0] for b in batches] == [2, 2]
    for b in batches:
        assert b.noise.shape == b.audio.shape == b.noisy_audio.shape
        assert (b.noise_len <= b.audio.shape[1]).all()
