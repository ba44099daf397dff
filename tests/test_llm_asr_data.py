"""LLM-based ASR parts that need no LLM: the frame-stacking connector, transcribed data in every layout
(NeMo manifest, pack_shards.py NeMo tarred / lhotse Shar output, WeNet shards), the SALM loader config,
WER/CER counts, and train.py naming the extra a config needs."""
import io
import json
import sys
import tarfile

import pytest
import soundfile as sf
import torch

from conftest import speech_like, write_manifest, write_wav

TEXTS = ["alpha bravo", "charlie", "delta echo foxtrot"]


def _wav_bytes(audio, sr=16000):
    buf = io.BytesIO()
    sf.write(buf, audio, sr, format="WAV")
    return buf.getvalue()


def _add(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("llm_data")
    rows = []
    for i, text in enumerate(TEXTS):
        dur = 0.5 + 0.1 * i
        rows.append({"audio_filepath": write_wav(d / "wav" / f"u{i}.wav", speech_like(dur, seed=i)),
                     "duration": dur, "text": text})
    return d, write_manifest(d / "train.json", rows)


# --- connector -------------------------------------------------------------------------------------------------
def test_connector_stacks_frames_then_mlp_and_counts_rows_own_frames():
    from nest_ext.modules.frame_stacking_connector import FrameStackingConnector

    torch.manual_seed(0)
    c = FrameStackingConnector(input_dim=4, output_dim=6, hidden_dim=8, stack=2)
    x = torch.randn(2, 4, 6)
    y, n = c(audio_signal=x, length=torch.tensor([6, 3]))
    # MooER's adapter by hand: frames (t0,t1),(t2,t3),... concatenated, Linear -> ReLU -> Linear
    stacked = x.transpose(1, 2).reshape(2, 3, 8)
    ref = c.output(torch.relu(c.stacking.proj_out(stacked))).transpose(1, 2)
    assert torch.allclose(y, ref, atol=1e-6) and y.shape == (2, 6, 3)
    assert n.tolist() == [3, 2]  # ceil(3 / 2): the half-filled last group counts
    # a row's output length does not depend on how much the batch is padded
    _, n_alone = c(audio_signal=x[1:, :, :3], length=torch.tensor([3]))
    assert n_alone.tolist() == [2]
    assert c.subsampling_factor == 2
    with pytest.raises(ValueError, match="expects 4 channels"):
        c(audio_signal=torch.randn(1, 5, 4), length=torch.tensor([4]))


# --- data layouts ----------------------------------------------------------------------------------------------
def _pack(manifest, out_dir, fmt):
    from nest_ext.cli import pack_shards as tool

    assert tool.main(["--manifest", manifest, "--out-dir", str(out_dir), "--format", fmt, "--shard-size", "2",
                      "--no-progress"]) == 0
    return str(out_dir)


def _triples(cuts):
    from nest_ext.data.asr_cuts import utterance_id

    return sorted((utterance_id(c), round(c.duration, 3), c.supervisions[0].text) for c in cuts)


@pytest.mark.slow
def test_every_layout_gives_the_same_transcribed_utterances(corpus):
    from nest_ext.data.asr_cuts import detect_layout, read_asr_cuts

    d, manifest = corpus
    expected = [(f"u{i}", round(0.5 + 0.1 * i, 3), t) for i, t in enumerate(TEXTS)]
    wenet = d / "wenet"
    wenet.mkdir()
    with tarfile.open(wenet / "shards_000000000.tar", "w") as tar:
        for i, text in enumerate(TEXTS):
            _add(tar, f"u{i}.wav", _wav_bytes(speech_like(0.5 + 0.1 * i, seed=i)))
            _add(tar, f"u{i}.txt", text.encode())
    (wenet / "data.list").write_text("shards_000000000.tar\n")
    sources = {"nemo-manifest": manifest, "nemo-tarred": _pack(manifest, d / "nemo", "nemo"),
               "lhotse-shar": _pack(manifest, d / "shar", "lhotse-shar"), "wenet": str(wenet)}
    for layout, path in sources.items():
        assert detect_layout(path) == layout
        assert _triples(read_asr_cuts(path)) == expected, layout
        audio = next(iter(read_asr_cuts(path))).load_audio()
        assert audio.shape[-1] > 0
    # pack_shards' NeMo layout writes a data.list of its own tars: still read as NeMo tarred
    assert detect_layout(str(d / "nemo" / "data.list")) == "nemo-tarred"
    # training: shards in random order, endlessly
    train = iter(read_asr_cuts(sources["nemo-tarred"], train=True, shard_seed=1))
    assert len([next(train) for _ in range(7)]) == 7


def test_bad_manifest_entries_are_reported_by_line_and_skipped(corpus, tmp_path, caplog):
    from nest_ext.data.asr_cuts import read_asr_cuts
    from nest_ext.data.audio_io import BadAudioError

    _, manifest = corpus
    rows = [json.loads(line) for line in open(manifest)]
    (tmp_path / "empty.wav").write_bytes(b"")
    bad = write_manifest(tmp_path / "bad.json", [
        rows[0], {"audio_filepath": str(tmp_path / "gone.wav"), "text": "x"},
        {"audio_filepath": str(tmp_path / "empty.wav"), "text": "y"}, {"audio_filepath": rows[1]["audio_filepath"]},
        rows[2]])
    cuts = list(read_asr_cuts(bad))
    assert [c.supervisions[0].text for c in cuts] == [TEXTS[0], TEXTS[2]]
    log = caplog.text
    assert f"gone.wav (listed at {bad}:2): missing file" in log and f"{bad}:3): empty file" in log
    assert f"{bad}:4): no 'text'" in log
    with pytest.raises(BadAudioError, match="gone.wav"):
        list(read_asr_cuts(bad, on_bad_audio="error"))
    with pytest.raises(ValueError, match="not a packed data folder"):
        read_asr_cuts(str(tmp_path))


def test_wenet_shards_report_and_skip_bad_members(tmp_path, caplog):
    from nest_ext.data.wenet_shards import LazyWenetShardIterator
    from nest_ext.data.audio_io import BadAudioError

    good = _wav_bytes(speech_like(0.3, seed=1))
    with tarfile.open(tmp_path / "shards_000000000.tar", "w") as tar:
        _add(tar, "a.b.wav", good)          # WeNet keys end at the last dot
        _add(tar, "a.b.txt", "first one".encode())
        _add(tar, "notext.wav", good)
        _add(tar, "corrupt.wav", b"RIFF not really audio")
        _add(tar, "corrupt.txt", b"x")
        _add(tar, "noaudio.txt", b"y")
    with tarfile.open(tmp_path / "shards_000000001.tar", "w") as tar:
        _add(tar, "c.txt", "second".encode())   # text first: order within a key does not matter
        _add(tar, "c.flac", good)
    (tmp_path / "data.list").write_text(
        "shards_000000000.tar\n\n# comment\n" + str(tmp_path / "shards_000000001.tar") + "\nshards_missing.tar\n")
    it = LazyWenetShardIterator(str(tmp_path / "data.list"))
    cuts = list(it)
    assert [(c.id, c.supervisions[0].text) for c in cuts] == [("a.b", "first one"), ("c", "second")]
    assert cuts[1].load_audio().shape == (1, 4800)
    assert it.report.count == 4
    log = caplog.text
    for what in ("notext.wav", "no transcript", "corrupt.wav", "undecodable audio", "noaudio", "no audio member",
                 "shards_missing.tar", "missing shard"):
        assert what in log, what
    with pytest.raises(BadAudioError, match="notext"):
        list(LazyWenetShardIterator(str(tmp_path), on_bad_audio="error"))


def test_salm_loader_config_builds_nemo_input_cfg():
    from nest_ext.data.salm_data import DATA_TYPE, salm_loader_config

    common = dict(instruction="Transcribe the audio.", audio_locator_tag="<a>", prompt_format="llama2",
                  token_equivalent_duration=0.16, sample_rate=16000)
    train = salm_loader_config({"data_path": ["x/train.json", "shards/more"], "batch_size": 2,
                                "on_bad_audio": "error"}, **common)
    assert [c["path"] for c in train["input_cfg"]] == ["x/train.json", "shards/more"]
    assert {c["type"] for c in train["input_cfg"]} == {DATA_TYPE}
    item = train["input_cfg"][0]
    assert (item["instruction"], item["audio_locator_tag"], item["on_bad_audio"]) == ("Transcribe the audio.", "<a>",
                                                                                   "error")
    assert train["prompt_format"] == "llama2" and train["token_equivalent_duration"] == 0.16
    assert not {"data_path", "on_bad_audio"} & set(train)  # NeMo's loader schema does not know them
    val = salm_loader_config({"data_path": "dev/data.list", "instruction": "Other."}, validation=True, **common)
    assert list(val["datasets"]) == ["dev"] and val["datasets"]["dev"]["input_cfg"][0]["instruction"] == "Other."
    own = salm_loader_config({"input_cfg": [{"type": "lhotse_as_conversation"}]}, **common)
    assert own["input_cfg"] == [{"type": "lhotse_as_conversation"}]
    with pytest.raises(ValueError, match="distinct names"):
        salm_loader_config({"data_path": ["a/dev.json", "b/dev.json"]}, validation=True, **common)


# --- scoring ---------------------------------------------------------------------------------------------------
def test_error_counts_match_nemo_word_error_rate_detail():
    from nemo.collections.asr.metrics.wer import word_error_rate_detail

    from nest_ext.metrics.error_rate import error_counts, normalize_transcript

    hyps = ["the cat sat on mat", "hello", "a b c d e", ""]
    refs = ["the cat sat on the mat", "hello world", "a x c", "one two"]
    for use_cer in (False, True):
        c = error_counts(hyps, refs, use_cer=use_cer)
        if not use_cer:
            wer, words, ins, dele, sub = word_error_rate_detail(hyps, refs)
            assert (c.rate, c.ref_len) == (pytest.approx(wer), words)
            assert (c.insertions, c.deletions, c.substitutions) == (round(ins * words), round(dele * words),
                                                                     round(sub * words))
        else:  # characters without spaces
            assert c.ref_len == sum(len(r.replace(" ", "")) for r in refs)
    assert normalize_transcript("Don't STOP, \"me\" now!") == "don't stop me now"
    assert normalize_transcript("Keep, Case", lowercase=False) == "Keep Case"
    assert normalize_transcript("a,b", punctuation=False) == "a,b"


# --- train.py ----------------------------------------------------------------------------------------------------
def test_train_py_names_the_llm_extra_when_it_is_missing(monkeypatch):
    from omegaconf import OmegaConf

    from nest_ext.cli import train as train_py
    import nest_ext.models

    # as if never imported (an earlier test may have): the import must run again
    monkeypatch.delitem(sys.modules, "nest_ext.models.salm_nest", raising=False)
    monkeypatch.delattr(nest_ext.models, "salm_nest", raising=False)
    monkeypatch.setitem(sys.modules, "peft", None)  # as if peft were not installed
    cfg = OmegaConf.create({"model": {"target": "nest_ext.models.salm_nest.NestSALM"}})
    with pytest.raises(SystemExit, match=r"nest_ext.models.salm_nest.NestSALM\) needs `pip install -e '\.\[llm\]'` "
                                         r"\(not installed: peft\)"):
        train_py.model_class(cfg)
