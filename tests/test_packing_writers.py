"""nest_ext.data.packing's writer interface: a format registered from outside plugs into pack_shards unchanged."""
import io
import json
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from nest_ext.data.packing import FORMATS, EncodedAudio, PackingError, ShardItem, ShardWriter, add_tar_member, pack_shards
from nest_ext.data.packing.writers import NemoShardWriter
from test_pack_shards import _make_kaldi_dir, _read_tar, _temps, _tree


class WenetWriter(ShardWriter):
    """A format written outside the package (here a minimal WeNet-like layout: ``shards_{i:09d}.tar`` with
    ``KEY.wav`` + ``KEY.txt`` members, listed in ``data.list``; the package's own is ``--format wenet``)."""

    name = "wenet-test"
    index_files = ("data.list",)

    @classmethod
    def outputs(cls, out_dir, shard_id):
        return [os.path.join(out_dir, f"shards_{shard_id:09d}.tar")]

    def __init__(self, out_dir, shard_id, **options):
        super().__init__(out_dir, shard_id)
        self.tar = tarfile.open(self.temp_for(self.outputs(out_dir, shard_id)[0]), "w")

    def add(self, item):
        audio = item.sole_audio(self.name)
        add_tar_member(self.tar, f"{item.key}.{audio.ext}", audio.data)
        add_tar_member(self.tar, f"{item.key}.txt", item.meta["text"].encode("utf-8"))

    def commit(self):
        self.tar.close()
        return self.publish_temps()

    def abort(self):
        self.tar.close()
        super().abort()

    @classmethod
    def finalize(cls, out_dir, markers):
        return {"data.list": "".join(os.path.join(out_dir, rel) + "\n" for m in markers for rel in m["files"]).encode()}


@pytest.fixture
def wenet_format(monkeypatch):
    monkeypatch.setitem(FORMATS, WenetWriter.name, WenetWriter)
    return WenetWriter.name


def test_registered_writer_plugs_in_without_driver_change(tmp_path, wenet_format):
    scp, text, sources = _make_kaldi_dir(tmp_path / "data", n=5)
    kw = dict(wav_scp=scp, text=text, shard_size=2, text_norm=True, format=wenet_format, progress=False,
              shuffle=False)
    s = pack_shards(out_dir=str(tmp_path / "w1"), **kw)
    out = tmp_path / "w1"
    # 7 entries, 2 of them bad (missing, corrupt): 4 shards planned, 5 utterances written.
    assert s.complete and s.num_shards == 4 and s.num_written == 5 and len(s.bad) == 2
    tars = (out / "data.list").read_text().splitlines()
    assert tars == [str(out / f"shards_{i:09d}.tar") for i in range(4)]
    members = [m for t in tars for m in _read_tar(t)]
    assert [name for name, _ in members] == [f"{u}.{ext}" for u in sources for ext in ("wav", "txt")]
    got = dict(members)
    for utt, ref in sources.items():
        np.testing.assert_array_equal(sf.read(io.BytesIO(got[f"{utt}.wav"]), dtype="int16")[0], ref)
        assert got[f"{utt}.txt"].decode().startswith("hello world number")
    assert json.loads((out / "pack_summary.json").read_text())["written"] == 5
    assert not _temps(out)
    # The driver's guarantees hold for it too: same bytes for any worker count or split, --skip-existing.
    pack_shards(out_dir=str(tmp_path / "w2"), num_workers=2, **kw)
    pack_shards(out_dir=str(tmp_path / "split"), shard_idx=1, shard_count=2, **kw)
    pack_shards(out_dir=str(tmp_path / "split"), shard_idx=0, shard_count=2, **kw)
    assert _tree(out) == _tree(tmp_path / "w2") == _tree(tmp_path / "split")
    again = pack_shards(out_dir=str(out), skip_existing=True, **kw)
    assert again.shards_skipped == [0, 1, 2, 3] and again.complete


def test_unknown_format_names_the_registered_ones(tmp_path, wenet_format):
    with pytest.raises(PackingError, match=r"\('nemo', 'lhotse-shar', 'wenet', 'wenet-test'\)"):
        pack_shards(out_dir=str(tmp_path), wav_scp="x", format="kaldi-ark", progress=False)


def test_single_audio_format_rejects_a_multi_payload_item_and_leaves_nothing(tmp_path):
    a = EncodedAudio(b"RIFF", "wav", 4, 8000, 1)
    w = WenetWriter(str(tmp_path), 0)  # a format that stores one audio per example
    with pytest.raises(PackingError, match="'ex1' has mixture, s1, s2"):
        w.add(ShardItem("ex1", {"mixture": a, "s1": a, "s2": a}))
    w.abort()
    assert list(Path(tmp_path).rglob("*")) == []


def test_nemo_writer_stores_each_payload_of_a_multi_payload_item(tmp_path):
    a = EncodedAudio(b"RIFF", "wav", 4, 8000, 1)
    w = NemoShardWriter(str(tmp_path), 0)
    item = ShardItem("ex1", {"mixture": a, "s1": a, "s2": a}, input_id="ex.1")
    item.meta = {"input_filepath": item.member_name("mixture"), "target_filepath": ["ex1.s1.wav", "ex1.s2.wav"]}
    w.add(item)
    files = w.commit()
    assert files == {p: os.path.getsize(tmp_path / p) for p in ("audio_0.tar", "sharded_manifests/manifest_0.json")}
    assert [n for n, _ in _read_tar(tmp_path / "audio_0.tar")] == ["ex1.mixture.wav", "ex1.s1.wav", "ex1.s2.wav"]
    entry = json.loads((tmp_path / "sharded_manifests" / "manifest_0.json").read_text())
    assert entry == {"input_filepath": "ex1.mixture.wav", "target_filepath": ["ex1.s1.wav", "ex1.s2.wav"],
                     "duration": 0.0005, "shard_id": 0, "utt_id": "ex.1"}


def test_reencoded_float_wav_has_no_write_time(tmp_path):
    """libsndfile puts the time of writing into a float WAV's PEAK chunk: re-encoded float audio must not
    carry it, or shards written at different times (a split job, a rerun) differ."""
    src = tmp_path / "f.wav"
    sf.write(str(src), np.linspace(-0.5, 0.5, 3200, dtype=np.float32), 16000, subtype="FLOAT")
    (tmp_path / "wav.scp").write_text(f"u1 {src}\n")
    pack_shards(out_dir=str(tmp_path / "out"), wav_scp=str(tmp_path / "wav.scp"), sample_rate=8000, progress=False)
    (name, data), = _read_tar(tmp_path / "out" / "audio_0.tar")
    peak = data.index(b"PEAK")
    assert sf.info(io.BytesIO(data)).subtype == "FLOAT" and data[peak + 8 : peak + 12] == b"\x01\0\0\0"  # version 1
    assert data[peak + 12 : peak + 16] == bytes(4)
    audio, sr = sf.read(io.BytesIO(data), dtype="float32")
    assert sr == 8000 and len(audio) == 1600
