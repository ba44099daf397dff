"""nest_ext.data.audio_io and bad_audio: one error for every reader, one resampler, one bad-audio report."""
import logging
import pickle

import numpy as np
import pytest
import soundfile as sf
import torch
from omegaconf import OmegaConf

from conftest import ROOT, speech_like, write_manifest, write_wav
from nest_ext.data.audio_io import BadAudioError, load_audio, read_audio_info, read_audio_segment, resample
from nest_ext.data.bad_audio import BadAudioReport, ManifestLines

SR = 8000


@pytest.fixture
def bad_files(tmp_path):
    """One file of each kind every reader must refuse; name -> path."""
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" + bytes(range(256)) * 4)
    zero = tmp_path / "zero_bytes.wav"
    zero.write_bytes(b"")
    return {"missing": str(tmp_path / "missing.wav"), "corrupt": str(corrupt), "zero_bytes": str(zero)}


# ---- (a) one except BadAudioError catches every reader ----------------------------------------------


def _noise_sampling(path, tmp_path):
    from nest_ext.data.noise_sampling import clear_audio_info_cache, load_noise_audio

    clear_audio_info_cache()
    load_noise_audio({"audio_filepath": path, "duration": 1.0}, SR, max_audio_len=4000, max_trial=1)


def _dynamic_mixing(path, tmp_path):
    from nest_ext.data.dynamic_mixing import DynamicMixer, SourceUtterance, SpeakerPool

    good = write_wav(tmp_path / "good_source.wav", speech_like(1.0, SR, seed=1), SR)
    mixer = DynamicMixer(SpeakerPool([SourceUtterance(path, "aaa"), SourceUtterance(good, "bbb")]), 2, SR)
    mixer.mix(np.random.default_rng(0))


def _separation_dataset(path, tmp_path):
    from nest_ext.data.separation_dataset import SeparationDataset

    good = [write_wav(tmp_path / f"sep{k}.wav", speech_like(0.5, SR, seed=k), SR) for k in range(2)]
    manifest = write_manifest(tmp_path / "sep.json", [{"input_filepath": path, "target_filepath": good}])
    SeparationDataset(manifest, SR, on_bad_audio="error")[0]


def _ssl_dataset(path, tmp_path):
    from nest_ext.data.ssl_dataset import get_audio_noise_dataset_from_config

    manifest = write_manifest(tmp_path / "train.json", [{"audio_filepath": path, "duration": 1.0}])
    cfg = {"manifest_filepath": manifest, "noise_manifest": None, "sample_rate": 16000, "batch_size": 1,
           "shuffle": False, "on_bad_audio": "error", "check_audio_at_start": False}
    get_audio_noise_dataset_from_config(OmegaConf.create(cfg), global_rank=0, world_size=1)[0]


READERS = {
    "read_audio_info": lambda path, tmp_path: read_audio_info(path),
    "read_audio_segment": lambda path, tmp_path: read_audio_segment(path, SR),
    "load_audio": lambda path, tmp_path: load_audio(path, SR),
    "noise_sampling": _noise_sampling,
    "dynamic_mixing": _dynamic_mixing,
    "separation_dataset": _separation_dataset,
    "ssl_dataset": _ssl_dataset,
}


@pytest.mark.parametrize("kind", ["missing", "corrupt", "zero_bytes"])
@pytest.mark.parametrize("reader", sorted(READERS))
def test_one_except_catches_every_reader(reader, kind, bad_files, tmp_path):
    path = bad_files[kind]
    with pytest.raises(BadAudioError) as info:
        READERS[reader](path, tmp_path)
    assert info.value.path.endswith(f"{kind}.wav") and f"{kind}.wav" in str(info.value)
    if reader in ("read_audio_info", "read_audio_segment", "load_audio", "dynamic_mixing"):
        # the readers themselves say what is wrong, in the same words
        expected = {"missing": "missing file", "corrupt": "(", "zero_bytes": "empty file (0 bytes)"}[kind]
        assert expected in info.value.reason


def test_error_is_one_class_with_one_message_and_survives_pickling():
    import nest_ext.data.dynamic_mixing as dm
    import nest_ext.data.noise_sampling as ns
    import nest_ext.data.separation_dataset as sd
    import nest_ext.data.ssl_dataset as ssl

    assert ns.BadAudioError is dm.BadAudioError is sd.BadAudioError is ssl.BadAudioError is BadAudioError
    err = BadAudioError("/x/a.wav", "missing file", "train.json:3")
    assert str(err) == "bad audio /x/a.wav (listed at train.json:3): missing file"
    assert str(BadAudioError("/x/a.wav", "missing file")) == "bad audio /x/a.wav: missing file"
    # the datasets raised RuntimeError, the separation loader ValueError: both still catch it
    assert isinstance(err, RuntimeError) and isinstance(err, ValueError)
    back = pickle.loads(pickle.dumps(err))  # errors cross DataLoader worker processes
    assert (back.path, back.reason, back.where, str(back)) == (err.path, err.reason, err.where, str(err))


def test_segment_reads_check_rate_channels_truncation_and_nan(tmp_path):
    audio = speech_like(0.5, SR, seed=0)
    path = write_wav(tmp_path / "a.wav", audio, SR)
    np.testing.assert_array_equal(read_audio_segment(path, SR, start=100, frames=300), sf.read(path, dtype="float32")[0][100:400])
    cases = {
        "sample rate 8000 Hz, expected 16000 Hz": lambda: read_audio_segment(path, 16000),
        "asked for 10 frames from 3995": lambda: read_audio_segment(path, SR, start=3995, frames=10),
        "2 channels, expected mono": lambda: read_audio_segment(
            write_wav(tmp_path / "st.wav", np.zeros((100, 2)), SR), SR),
        "NaN or Inf": lambda: read_audio_segment(str(tmp_path / "nan.wav"), SR),
    }
    sf.write(tmp_path / "nan.wav", np.full(100, np.nan, dtype=np.float32), SR, subtype="FLOAT")
    for reason, read in cases.items():
        with pytest.raises(BadAudioError, match=reason):
            read()


def test_load_audio_channels(tmp_path):
    stereo = np.stack([speech_like(0.3, SR, seed=1), speech_like(0.3, SR, seed=2)], axis=1)
    path = write_wav(tmp_path / "stereo.wav", stereo, SR)
    np.testing.assert_array_equal(load_audio(path, SR, channel=1), sf.read(path, dtype="float32")[0][:, 1])
    # a fine file and an open choice: ValueError, not bad audio
    with pytest.raises(ValueError, match="stereo.wav has 2 channels.*--channel N") as info:
        load_audio(path, SR)
    assert not isinstance(info.value, BadAudioError)
    with pytest.raises(ValueError, match="channel 2 does not exist"):
        load_audio(path, SR, channel=2)
    with pytest.raises(BadAudioError, match="contains no samples"):
        load_audio(write_wav(tmp_path / "empty.wav", np.zeros(0), SR), SR)


# ---- (b) one resampler ------------------------------------------------------------------------------


@pytest.mark.parametrize("rates", [(16000, 8000), (44100, 16000), (8000, 16000), (22050, 8000)])
def test_resample_is_librosas_soxr_hq_with_its_length(rates):
    librosa = pytest.importorskip("librosa")
    orig, target = rates
    x = speech_like(0.37, orig, seed=3)[:-1]  # an odd length
    ours = resample(x, orig, target)
    theirs = librosa.resample(x, orig_sr=orig, target_sr=target)
    assert ours.dtype == np.float32 and ours.shape == theirs.shape == (int(np.ceil(len(x) * target / orig)),)
    np.testing.assert_array_equal(ours, theirs)
    # [T, C] is resampled per channel
    two = resample(np.stack([x, -x], axis=1), orig, target)
    np.testing.assert_array_equal(two, np.stack([ours, -ours], axis=1))
    np.testing.assert_array_equal(resample(x, orig, orig), x)


def test_speed_perturb_uses_the_resampler():
    from nest_ext.data.dynamic_mixing import speed_perturb

    x = speech_like(0.5, SR, seed=4)
    np.testing.assert_array_equal(speed_perturb(x, 1.05), resample(x, 21, 20))
    assert speed_perturb(x, 1.0) is x


def test_separate_and_evaluate_see_the_same_resampled_audio(tmp_path, monkeypatch):
    """tools/separate.py (model.process) and tools/evaluate_separation.py read a 16 kHz mixture for an
    8 kHz model: both must hand the separator the very same samples, those of audio_io.resample."""
    from nest_ext.models.mossformer2_separation import MossFormer2SeparationModel

    from nest_ext.cli import evaluate_separation as ev

    sources = [speech_like(0.5, 16000, seed=k) for k in range(2)]
    mix = write_wav(tmp_path / "mix.wav", sum(sources), 16000)
    targets = [write_wav(tmp_path / f"s{k}.wav", s, 16000) for k, s in enumerate(sources)]
    manifest = write_manifest(tmp_path / "tt.json", [{"input_filepath": mix, "target_filepath": targets}])

    seen = {}
    model = MossFormer2SeparationModel(OmegaConf.load(ROOT / "config" / "mossformer2_tiny.yaml").model).eval()

    def capture(name):
        def separate(audio, chunk_seconds=None):
            seen[name] = np.array(audio, dtype=np.float32)
            return torch.from_numpy(np.stack([seen[name], seen[name]]))  # "mixture as every estimate"

        return separate

    monkeypatch.setattr(model, "separate", capture("separate"))
    model.process([mix], str(tmp_path / "out"))
    summary = ev.evaluate(lambda m: capture("evaluate")(m.numpy()), manifest, str(tmp_path / "eval"),
                          sample_rate=8000, report=False, extra_metrics=False)
    assert summary["num_evaluated"] == 1
    expected = resample(sf.read(mix, dtype="float32")[0], 16000, 8000)
    assert len(expected) == 4000
    np.testing.assert_array_equal(seen["separate"], expected)
    np.testing.assert_array_equal(seen["evaluate"], expected)


# ---- (c) the separation dataset reports through BadAudioReport ---------------------------------------


def test_separation_dataset_reports_bad_files_with_file_and_line(tmp_path, caplog):
    from nest_ext.data.separation_dataset import SeparationDataset

    rows = []
    for i in range(3):
        srcs = [speech_like(0.5, SR, seed=10 * i + k) for k in range(2)]
        targets = [write_wav(tmp_path / f"s{k}_{i}.wav", s, SR) for k, s in enumerate(srcs)]
        rows.append({"input_filepath": write_wav(tmp_path / f"mix{i}.wav", sum(srcs), SR), "target_filepath": targets,
                     "speaker_ids": [f"a{i}", f"b{i}"]})
    wrong_rate = write_wav(rows[1]["target_filepath"][0], speech_like(1.0, 16000, seed=1), 16000)
    rows.append(dict(rows[0], input_filepath=str(tmp_path / "gone.wav")))
    manifest = write_manifest(tmp_path / "m.json", rows)

    with caplog.at_level(logging.WARNING, logger="nest_ext.data.separation_dataset"):
        ds = SeparationDataset(manifest, SR)
        assert isinstance(ds.bad_audio, BadAudioReport) and len(ds) == 3
        assert ds[1]["index"] == 2  # replaced
        ds[1]  # reported once only
    assert ds.bad_audio.count == 2
    assert (str(tmp_path / "gone.wav"), "missing file(s)", f"{manifest}:4", "manifest") in ds.bad_audio.entries
    assert (wrong_rate, "sample rate 16000 Hz, expected 8000 Hz", f"{manifest}:2", "load") in ds.bad_audio.entries
    assert "gone.wav" in caplog.text and f"{manifest}:4" in caplog.text and f"{manifest}:2" in caplog.text

    mixing = SeparationDataset(manifest, SR, dynamic_mixing=True)
    for epoch in range(10):  # the bad source is drawn in about a third of the items
        mixing.set_epoch(epoch)
        for i in range(len(mixing)):
            mixing[i]
    assert [e[:3] for e in mixing.bad_audio.entries if e[3] != "manifest"] == [
        (wrong_rate, "sample rate 16000 Hz, expected 8000 Hz", f"{manifest}:2")
    ]
    mixing.on_bad_audio = "error"
    assert mixing.bad_audio.on_bad_audio == "error"
    with pytest.raises(ValueError, match="on_bad_audio must be one of"):
        SeparationDataset(manifest, SR, on_bad_audio="ignore")


def test_report_and_line_map_pickle_without_their_lock(tmp_path):
    manifest = tmp_path / "m.json"
    manifest.write_text('{"a": 1}\n\n{"a": 2}\n')
    report = BadAudioReport("skip", name="train")
    report.add("/x.wav", "missing file", "m.json:3", "start")
    lines = ManifestLines([str(manifest)])
    assert lines.where(1).endswith("m.json:3")
    for obj in (pickle.loads(pickle.dumps(report)), pickle.loads(pickle.dumps(lines))):
        assert "_lock" in vars(obj)
    back = pickle.loads(pickle.dumps(report))
    back.add("/y.wav", "missing file", "m.json:4", "load")
    assert back.count == 2 and dict(back.by_reason) == {"missing file": 2}
    assert pickle.loads(pickle.dumps(lines)).where(1).endswith("m.json:3")
