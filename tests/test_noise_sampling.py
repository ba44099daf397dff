"""Noise sampling: equal to NeMo's where NeMo reads a segment once; NeMo's defect fixed elsewhere.

Each test builds NeMo's ``load_noise_audio``/``sample_noise`` beside ours and compares numbers with the
same numpy seed, or counts the segment reads each makes.
"""
import logging
import time

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import write_wav

SR = 16000


@pytest.fixture(scope="module")
def nemo_ssl():
    from nemo.collections.asr.data import ssl_dataset

    return ssl_dataset


@pytest.fixture(scope="module")
def ours():
    from nest_ext.data import noise_sampling

    return noise_sampling


@pytest.fixture(autouse=True)
def _fresh_cache(ours):
    ours.clear_audio_info_cache()
    yield
    ours.clear_audio_info_cache()


@pytest.fixture
def nemo_log(caplog):
    """Warnings of NeMo (its logger does not propagate: hook the capture handler onto it) and ours (nest_ext.*)."""
    logger = logging.getLogger("nemo_logger")
    logger.addHandler(caplog.handler)
    caplog.set_level(logging.WARNING)
    yield caplog
    logger.removeHandler(caplog.handler)


class ReadCounter:
    """Counts segment reads: NeMo's (``AudioSegment.from_file`` as ssl_dataset sees it) and ours
    (``soundfile.SoundFile`` opens in nest_ext.data.noise_sampling)."""

    def __init__(self, monkeypatch, nemo_ssl, ours):
        self.nemo = 0
        self.ours = 0
        counter = self
        base = nemo_ssl.AudioSegment

        class CountingSegment(base):
            @classmethod
            def from_file(cls, *args, **kwargs):
                counter.nemo += 1
                return base.from_file(*args, **kwargs)

        monkeypatch.setattr(nemo_ssl, "AudioSegment", CountingSegment)

        class CountingSF:
            def __getattr__(self, name):
                return getattr(sf, name)

            def SoundFile(self, *args, **kwargs):  # noqa: N802 - mirrors soundfile's name
                counter.ours += 1
                return sf.SoundFile(*args, **kwargs)

        monkeypatch.setattr(ours, "sf", CountingSF())


def positive_sum_noise(seconds, seed):
    """Zero-mean white noise plus a small positive offset: every window of >= 0.25 s has a positive sum,
    so NeMo accepts its first read (the case where NeMo is not defective)."""
    rng = np.random.default_rng(seed)
    return (0.05 * rng.standard_normal(int(seconds * SR)) + 0.005).astype(np.float32)


def zero_mean_noise(seconds, seed):
    x = 0.05 * np.random.default_rng(seed).standard_normal(int(seconds * SR))
    return (x - x.mean()).astype(np.float32)


def run_sequence(fn, noise_data, lengths, seed):
    np.random.seed(seed)
    return [fn(noise_data, SR, n) for n in lengths]


def test_items_equal_nemo_where_nemo_reads_once(tmp_path, nemo_ssl, ours, monkeypatch):
    # long files (random segment drawn) and short zero-mean files (whole file read, no draw), some
    # without a duration in the manifest (NeMo decodes the whole file, we read only the needed frames)
    noise_data = [
        {"audio_filepath": write_wav(tmp_path / "long0.wav", positive_sum_noise(4.0, 0)), "duration": 4.0},
        {"audio_filepath": write_wav(tmp_path / "long1.wav", positive_sum_noise(3.0, 1)), "duration": 3.0},
        {"audio_filepath": write_wav(tmp_path / "short.wav", zero_mean_noise(0.4, 2)), "duration": 0.4},
        {"audio_filepath": write_wav(tmp_path / "nodur.wav", zero_mean_noise(3.0, 3))},
    ]
    lengths = [8000, 12345, 16000, 4000, 20000, 6400, 9999, 16000, 8000, 5000, 12000, 7000]
    reads = ReadCounter(monkeypatch, nemo_ssl, ours)
    theirs = run_sequence(nemo_ssl.sample_noise, noise_data, lengths, seed=123)
    assert reads.nemo == len(lengths), "the construction must keep NeMo at one read per item"
    mine = run_sequence(ours.sample_noise, noise_data, lengths, seed=123)
    assert reads.ours == len(lengths)
    for (n_t, l_t), (n_o, l_o), n in zip(theirs, mine, lengths):
        assert n_o.shape == n_t.shape == (n,)
        assert int(l_o) == int(l_t)
        torch.testing.assert_close(n_o, n_t, rtol=0, atol=0)
    assert any(int(l) < n for _, l in mine), "the short file must give a padded item"
    # and the random stream is left where NeMo leaves it
    np.random.seed(123)
    run_sequence(nemo_ssl.sample_noise, noise_data, lengths, seed=123)
    after_nemo = np.random.rand()
    run_sequence(ours.sample_noise, noise_data, lengths, seed=123)
    assert np.random.rand() == after_nemo


def test_dc_offset_noise_read_once_unaltered_and_faster(tmp_path, nemo_ssl, ours, monkeypatch):
    dc = (0.05 * np.random.default_rng(5).standard_normal(20 * SR) - 0.01).astype(np.float32)
    path = write_wav(tmp_path / "dc.wav", dc)
    on_disk, _ = sf.read(path, dtype="float32")
    entry = {"audio_filepath": path, "duration": 20.0}
    n = 2 * SR
    reads = ReadCounter(monkeypatch, nemo_ssl, ours)

    np.random.seed(7)
    noise, noise_len = ours.load_noise_audio(entry, SR, max_audio_len=n)
    assert reads.ours == 1
    np.random.seed(7)
    start = int(np.random.uniform(0, 20.0 - n / SR) * SR)
    # used as it is: exactly the file's samples at the drawn offset, DC offset kept
    np.testing.assert_array_equal(noise.numpy(), on_disk[start:start + n])
    assert int(noise_len) == n
    assert noise.mean().item() == pytest.approx(-0.01, abs=3e-3)

    # NeMo re-reads this noise max_trial (100) times; ours once. Alternate to share machine load.
    def per_item(fn, k):
        t0 = time.perf_counter()
        for _ in range(k):
            fn(entry, SR, max_audio_len=n)
        return (time.perf_counter() - t0) / k

    t_ours, t_nemo = [], []
    for _ in range(2):
        t_nemo.append(per_item(nemo_ssl.load_noise_audio, 1))
        t_ours.append(per_item(ours.load_noise_audio, 5))
    assert reads.nemo >= 100
    ratio = min(t_ours) / min(t_nemo)
    assert ratio < 0.5, f"ours {min(t_ours):.4f} s vs NeMo {min(t_nemo):.4f} s per item"


def test_silent_noise_gets_white_noise_without_rereads(tmp_path, nemo_ssl, ours, monkeypatch, nemo_log):
    silent = {"audio_filepath": write_wav(tmp_path / "silent.wav", np.zeros(3 * SR)), "duration": 3.0}
    good = {"audio_filepath": write_wav(tmp_path / "good.wav", positive_sum_noise(3.0, 9)), "duration": 3.0}
    lengths = [8000, 8000, 16000]
    reads = ReadCounter(monkeypatch, nemo_ssl, ours)

    theirs = run_sequence(nemo_ssl.sample_noise, [silent], lengths, seed=3)
    assert reads.nemo == 100 * len(lengths)
    mine = run_sequence(ours.sample_noise, [silent], lengths, seed=3)
    assert reads.ours == len(lengths)
    for (n_t, l_t), (n_o, l_o) in zip(theirs, mine):
        # same white noise: NeMo's WhiteNoisePerturbation with the random stream NeMo would have
        torch.testing.assert_close(n_o, n_t, rtol=0, atol=0)
        assert int(l_o) == int(l_t)
        rms_db = 20 * np.log10(n_o.std().item())
        assert -91 <= rms_db <= -45
    assert "silent" in nemo_log.text and "silent.wav" in nemo_log.text

    # later items (a non-silent file) still equal NeMo's: the random stream was kept aligned
    np.random.seed(11)
    t = [nemo_ssl.sample_noise([silent, good], SR, 8000) for _ in range(6)]
    np.random.seed(11)
    o = [ours.sample_noise([silent, good], SR, 8000) for _ in range(6)]
    for (a, _), (b, _) in zip(t, o):
        torch.testing.assert_close(b, a, rtol=0, atol=0)


def test_partly_silent_segment_is_not_empty(ours):
    x = np.zeros(16000, dtype=np.float32)
    assert ours.is_silent(x)
    x[100] = 1.0 / 32768  # a single 16-bit LSB is audio
    assert not ours.is_silent(x)
    # negative or zero signed sum is not emptiness (NeMo's defect)
    assert not ours.is_silent(-0.01 * np.ones(1000, dtype=np.float32))
    assert not ours.is_silent(np.array([0.5, -0.5], dtype=np.float32))


def test_unreadable_noise_file_retried_with_warning_then_skipped(tmp_path, ours, monkeypatch, nemo_log):
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" + bytes(range(256)) * 10)
    good_path = write_wav(tmp_path / "good.wav", positive_sum_noise(2.0, 4))
    bad = {"audio_filepath": str(corrupt), "duration": 2.0}
    good = {"audio_filepath": good_path, "duration": 2.0}

    attempts = []
    real = ours._read_segment

    def counting(path, *args, **kwargs):
        attempts.append(path)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(ours, "_read_segment", counting)
    with pytest.raises(ours.BadAudioError, match="corrupt.wav"):
        ours.load_noise_audio(bad, SR, max_audio_len=4000, max_trial=7)
    assert attempts.count(str(corrupt)) == 7
    assert "corrupt.wav" in nemo_log.text and "retrying" in nemo_log.text

    # known unreadable now: later picks fail at once, and sample_noise picks the readable file
    attempts.clear()
    np.random.seed(0)
    outs = [ours.sample_noise([bad, good], SR, 4000) for _ in range(6)]
    assert all(o[0].abs().sum() > 0 for o in outs)
    assert attempts.count(good_path) == 6
    assert nemo_log.text.count("Could not load noise file") >= 1


def test_all_noise_unreadable_gives_zero_noise_with_warning(tmp_path, ours, nemo_log):
    missing = {"audio_filepath": str(tmp_path / "missing.wav"), "duration": 2.0}
    noise, noise_len = ours.sample_noise([missing], SR, 4000, max_trial=3)
    assert noise.shape == (4000,) and noise.abs().sum() == 0 and int(noise_len) == 4000
    assert "missing.wav" in nemo_log.text and "Failed to load noise audio after 3 attempts" in nemo_log.text


def test_no_noise_data_gives_zero_noise(ours, nemo_ssl):
    n_o, l_o = ours.sample_noise([], SR, 1234)
    n_t, l_t = nemo_ssl.sample_noise([], SR, 1234)
    torch.testing.assert_close(n_o, n_t)
    assert int(l_o) == int(l_t) == 1234


def test_entry_offset_and_multichannel_noise(tmp_path, ours):
    # NeMo ignores a noise entry's offset when it draws a segment and keeps [T, C] for stereo noise;
    # ours draws within [offset, offset + duration] and averages channels to mono
    x = np.stack([np.arange(4 * SR) / (4 * SR), -np.ones(4 * SR) * 0.25], axis=1).astype(np.float32)
    path = write_wav(tmp_path / "stereo.wav", x)
    entry = {"audio_filepath": path, "offset": 2.0, "duration": 1.0}
    np.random.seed(1)
    noise, _ = ours.load_noise_audio(entry, SR, max_audio_len=SR // 2)
    assert noise.shape == (SR // 2,)
    mono = x.mean(axis=1)
    np.random.seed(1)
    start = int((2.0 + np.random.uniform(0, 0.5)) * SR)
    np.testing.assert_allclose(noise.numpy(), mono[start:start + SR // 2], atol=1e-4)


def test_signatures_are_nemos(ours, nemo_ssl):
    import inspect

    for name in ("load_noise_audio", "sample_noise"):
        mine, theirs = inspect.signature(getattr(ours, name)), inspect.signature(getattr(nemo_ssl, name))
        assert [(p.name, p.default, p.kind) for p in mine.parameters.values()] == [
            (p.name, p.default, p.kind) for p in theirs.parameters.values()
        ], name
