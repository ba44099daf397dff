"""tools/separate.py: per-speaker float WAVs at the model rate, resampling, multi-channel refusal, chunking."""
import json

import numpy as np
import pytest
import soundfile as sf
import torch
from omegaconf import OmegaConf

from conftest import ROOT, speech_like


@pytest.fixture(scope="module")
def separate_main():
    from nest_ext.cli.separate import main

    return main


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny 8 kHz model saved as .nemo; returns (path, the model in eval mode)."""
    from nest_ext.models.mossformer2_separation import MossFormer2SeparationModel

    torch.manual_seed(0)
    model = MossFormer2SeparationModel(OmegaConf.load(ROOT / "config" / "mossformer2_tiny.yaml").model).eval()
    path = tmp_path_factory.mktemp("model") / "tiny.nemo"
    model.save_to(str(path))
    return str(path), model


def _separated(model, audio):
    with torch.no_grad():
        return model(input_signal=torch.from_numpy(np.asarray(audio, dtype=np.float32))[None])[0][0].numpy()


def test_writes_one_float_wav_per_speaker(separate_main, tiny, tmp_path, capsys):
    path, model = tiny
    mix = speech_like(0.6, 8000, seed=1) + speech_like(0.6, 8000, seed=2)
    sf.write(tmp_path / "talk.wav", mix, 8000, subtype="PCM_16")
    out = tmp_path / "out"
    assert separate_main(["--model", path, "--output-dir", str(out), str(tmp_path / "talk.wav")]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["talk_s1.wav", "talk_s2.wav"]
    pcm, _ = sf.read(tmp_path / "talk.wav", dtype="float32")
    expected = _separated(model, pcm)
    for s in range(2):
        info = sf.info(str(out / f"talk_s{s + 1}.wav"))
        assert (info.samplerate, info.subtype, info.channels, info.frames) == (8000, "FLOAT", 1, len(pcm))
        np.testing.assert_allclose(sf.read(out / f"talk_s{s + 1}.wav", dtype="float32")[0], expected[s], atol=1e-6)


def test_resamples_other_rates(separate_main, tiny, tmp_path):
    from scipy.signal import resample_poly

    path, model = tiny
    mix16 = speech_like(0.8, 16000, seed=3) + speech_like(0.8, 16000, seed=4)
    sf.write(tmp_path / "wide.wav", mix16, 16000, subtype="FLOAT")
    assert separate_main(["--model", path, "--output-dir", str(tmp_path / "out"), str(tmp_path / "wide.wav")]) == 0
    s1, rate = sf.read(tmp_path / "out" / "wide_s1.wav", dtype="float32")
    assert rate == 8000 and len(s1) == len(mix16) // 2
    # Independent resampler (scipy polyphase): the separated signal is nearly the same
    expected = _separated(model, resample_poly(mix16, 1, 2))[0]
    assert np.corrcoef(s1, expected)[0, 1] > 0.99


def test_refuses_multichannel_unless_a_channel_is_chosen(separate_main, tiny, tmp_path, capsys):
    path, model = tiny
    stereo = np.stack([speech_like(0.5, 8000, seed=5), speech_like(0.5, 8000, seed=6)], axis=1)
    sf.write(tmp_path / "stereo.wav", stereo, 8000, subtype="FLOAT")
    out = tmp_path / "out"
    assert separate_main(["--model", path, "--output-dir", str(out), str(tmp_path / "stereo.wav")]) == 1
    err = capsys.readouterr().err
    assert "stereo.wav has 2 channels" in err and "--channel" in err
    assert not out.exists() or not any(out.iterdir())

    assert separate_main(["--model", path, "--output-dir", str(out), "--channel", "1", str(tmp_path / "stereo.wav")]) == 0
    np.testing.assert_allclose(
        sf.read(out / "stereo_s2.wav", dtype="float32")[0], _separated(model, stereo[:, 1])[1], atol=1e-6
    )
    assert separate_main(["--model", path, "--output-dir", str(out), "--channel", "2", str(tmp_path / "stereo.wav")]) == 1
    assert "channel 2 does not exist" in capsys.readouterr().err


def test_chunked_long_input_and_missing_file(separate_main, tiny, tmp_path, capsys):
    path, model = tiny
    mix = speech_like(2.0, 8000, seed=7) + speech_like(2.0, 8000, seed=8)
    sf.write(tmp_path / "long.wav", mix, 8000, subtype="FLOAT")
    out = tmp_path / "out"
    assert separate_main(["--model", path, "--output-dir", str(out), "--chunk-seconds", "0.5", str(tmp_path / "long.wav")]) == 0
    s1, _ = sf.read(out / "long_s1.wav", dtype="float32")
    assert len(s1) == len(mix) and np.isfinite(s1).all()
    # A window at least as long as the input is one pass: exactly the unchunked result
    assert model.separate(mix, chunk_seconds=3.0).numpy() == pytest.approx(_separated(model, mix), abs=1e-6)

    assert separate_main(["--model", path, "--output-dir", str(out), str(tmp_path / "absent.wav")]) == 1
    assert "absent.wav" in capsys.readouterr().err
    sf.write(tmp_path / "blip.wav", np.zeros(5, dtype=np.float32), 8000)  # shorter than one encoder frame
    assert separate_main(["--model", path, "--output-dir", str(out), str(tmp_path / "blip.wav")]) == 1
    assert "blip.wav" in capsys.readouterr().err


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_precision_option(separate_main, tiny, tmp_path, precision):
    """--precision runs the prepared model (bf16 autocast / int8 dynamic quantisation): float32 WAVs close to fp32."""
    path, model = tiny
    mix = speech_like(0.6, 8000, seed=5) + speech_like(0.6, 8000, seed=6)
    sf.write(tmp_path / "talk.wav", mix, 8000, subtype="FLOAT")
    out = tmp_path / precision
    assert separate_main(["--model", path, "--output-dir", str(out), "--precision", precision, str(tmp_path / "talk.wav")]) == 0
    expected = _separated(model, mix.astype(np.float32))
    for s in range(2):
        got, rate = sf.read(out / f"talk_s{s + 1}.wav", dtype="float32")
        assert rate == 8000 and sf.info(str(out / f"talk_s{s + 1}.wav")).subtype == "FLOAT"
        err = np.abs(got - expected[s]).max()
        assert 0 < err < 0.05 * np.abs(expected[s]).max()  # another computation, close to fp32


def _mixtures(folder, lengths, seed=20):
    """Float WAV mixtures of the given lengths (samples at 8 kHz) under ``folder``; their paths."""
    paths = []
    for i, n in enumerate(lengths):
        mix = speech_like(n / 8000, 8000, seed=seed + 2 * i) + speech_like(n / 8000, 8000, seed=seed + 2 * i + 1)
        path = folder / f"m{i}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, mix[:n].astype(np.float32), 8000, subtype="FLOAT")
        paths.append(path)
    return paths


def test_batched_output_equals_one_by_one(separate_main, tiny, tmp_path, capsys):
    """--batch-size 3: three equal-length files share a forward pass, a fourth of another length runs alone;
    every output is what separating the file alone gives."""
    path, model = tiny
    files = _mixtures(tmp_path / "in", [4000, 4000, 3200, 4000])
    one, batched = tmp_path / "one", tmp_path / "batched"
    assert separate_main(["--model", path, "--out-dir", str(one), *map(str, files)]) == 0
    assert separate_main(["--model", path, "--out-dir", str(batched), "--batch-size", "3", *map(str, files)]) == 0
    for f in files:
        alone = _separated(model, sf.read(f, dtype="float32")[0])
        for s in (1, 2):
            a = sf.read(one / f"{f.stem}_s{s}.wav", dtype="float32")[0]
            b = sf.read(batched / f"{f.stem}_s{s}.wav", dtype="float32")[0]
            np.testing.assert_allclose(b, a, atol=1e-5)
            np.testing.assert_allclose(a, alone[s - 1], atol=1e-6)
    assert capsys.readouterr().out.count(" -> ") == 8


def test_batches_are_one_forward_pass_per_equal_length_group(tiny, tmp_path):
    """separate_files groups by length: 3 files of 4000 samples and 1 of 3200 with batch size 2 -> 3 passes."""
    from nest_ext.models.separation_files import SeparationInput, separate_files

    _, model = tiny
    files = _mixtures(tmp_path / "in", [4000, 3200, 4000, 4000])
    seen = []
    real = model.separate

    class Spy:
        sample_rate = model.sample_rate

        def separate(self, batch, chunk_seconds=None):
            seen.append(tuple(batch.shape))
            return real(batch, chunk_seconds=chunk_seconds)

    results = list(separate_files(Spy(), [SeparationInput.of(str(f)) for f in files], str(tmp_path / "out"), batch_size=2))
    assert sorted(seen) == [(2, 4000), (3200,), (4000,)]
    assert sorted(r.input.name for r in results) == ["m0", "m1", "m2", "m3"] and all(r.error is None for r in results)


def test_folder_and_manifest_inputs(separate_main, tiny, tmp_path):
    """A folder (recursively; outputs keep its sub-folders) and a manifest (paths relative to it) as inputs."""
    path, _ = tiny
    _mixtures(tmp_path / "rec" / "day1", [2400, 2400])
    _mixtures(tmp_path / "rec" / "day2", [2000], seed=40)
    (tmp_path / "rec" / "notes.txt").write_text("not audio")
    listed = _mixtures(tmp_path / "data" / "mix", [1600], seed=50)
    manifest = tmp_path / "data" / "test.json"
    manifest.write_text(json.dumps({"input_filepath": "mix/m0.wav", "target_filepath": ["a.wav", "b.wav"]}) + "\n"
                        + json.dumps({"audio_filepath": str(listed[0]), "duration": 0.2}) + "\n")
    out = tmp_path / "out"
    assert separate_main(["--model", path, "--out-dir", str(out), "--batch-size", "4",
                          str(tmp_path / "rec"), str(manifest)]) == 0
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*.wav"))
    assert written == ["day1/m0_s1.wav", "day1/m0_s2.wav", "day1/m1_s1.wav", "day1/m1_s2.wav",
                       "day2/m0_s1.wav", "day2/m0_s2.wav", "mix/m0_s1.wav", "mix/m0_s2.wav"]


def test_bad_file_among_many_is_named_and_skipped(separate_main, tiny, tmp_path, capsys, caplog):
    path, _ = tiny
    files = _mixtures(tmp_path / "in", [2400, 2400, 2400])
    (tmp_path / "in" / "m1.wav").write_bytes(b"RIFF garbage, not a wav file")  # corrupt, same folder
    manifest = tmp_path / "list.json"
    manifest.write_text(json.dumps({"audio_filepath": str(tmp_path / "gone.wav")}) + "\n")
    out = tmp_path / "out"
    assert separate_main(["--model", path, "--out-dir", str(out), "--batch-size", "8",
                          str(tmp_path / "in"), str(manifest)]) == 1
    err = capsys.readouterr().err
    assert "m1.wav: unreadable" in err and "gone.wav: missing" in err
    assert "2 of 4 input(s) skipped" in caplog.text
    assert sorted(p.name for p in out.iterdir()) == ["m0_s1.wav", "m0_s2.wav", "m2_s1.wav", "m2_s2.wav"]
    assert files[0].exists()

    bad = tmp_path / "bad.json"
    bad.write_text("{not json\n")
    assert separate_main(["--model", path, "--out-dir", str(out), str(bad)]) == 2
    assert "bad.json:1" in capsys.readouterr().err
