"""tools/separate.py: per-speaker float WAVs at the model rate, resampling, multi-channel refusal, chunking."""
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
