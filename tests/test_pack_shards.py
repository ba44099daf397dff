"""tools/pack_shards.py and nest_ext.data.packing: layout, bad input, pipes, determinism, crash safety."""
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import ROOT, speech_like
from nest_ext.data.packing import PackingError, normalize_text, pack_shards

TOOL = str(ROOT / "tools" / "pack_shards.py")


def _make_kaldi_dir(root, n=7, sr=16000, bad=True, pipe_cmd=None):
    """n PCM_16 WAVs of different lengths, wav.scp (+ a missing and a corrupt entry), text."""
    root = Path(root)
    (root / "wav").mkdir(parents=True, exist_ok=True)
    scp, text, sources = [], [], {}
    for i in range(n):
        path = root / "wav" / f"s{i}.wav"
        audio = speech_like(0.1 + 0.013 * i, sr, seed=i)
        sf.write(str(path), audio, sr, subtype="PCM_16")
        utt = f"spk{i % 2}-utt{i:03d}"
        sources[utt] = sf.read(str(path), dtype="int16")[0]
        scp.append(f"{utt} {pipe_cmd.format(path=path) + ' |' if pipe_cmd else path}")
        text.append(f"{utt}   Hello \t WORLD  number {i} ")
    if bad:
        (root / "wav" / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" * 8)
        scp.insert(2, f"missing-utt {root / 'wav' / 'nope.wav'}")
        scp.insert(4, f"corrupt-utt {root / 'wav' / 'corrupt.wav'}")
        text += ["missing-utt a", "corrupt-utt b"]
    (root / "wav.scp").write_text("\n".join(scp) + "\n")
    (root / "text").write_text("\n".join(text) + "\n")
    return str(root / "wav.scp"), str(root / "text"), sources


def _read_tar(path):
    with tarfile.open(path) as t:
        return [(m.name, t.extractfile(m).read()) for m in t.getmembers()]


def _manifest(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def _tree(out_dir):
    """Every file under out_dir (relative path -> bytes), data.list made relative to compare runs."""
    out = {}
    for p in sorted(Path(out_dir).rglob("*")):
        if p.is_file():
            data = p.read_bytes()
            if p.name == "data.list":
                data = data.replace(str(Path(out_dir).resolve()).encode(), b"DIR")
            out[str(p.relative_to(out_dir))] = data
    return out


def _temps(out_dir):
    return [str(p) for p in Path(out_dir).rglob("*") if ".tmp." in p.name]


def test_normalize_text():
    assert normalize_text("  HELLO\t\tWorld \n It's ") == "hello world it's"
    assert normalize_text("") == ""


def test_kaldi_to_nemo_layout_bad_audio_reported_and_left_out(tmp_path, caplog):
    scp, text, sources = _make_kaldi_dir(tmp_path / "data")
    out = tmp_path / "out"
    with caplog.at_level("WARNING", logger="nest_ext.pack_shards"):
        s = pack_shards(out_dir=str(out), wav_scp=scp, text=text, shard_size=3, text_norm=True, progress=False,
                        shuffle=False)
    # 9 entries -> shards of 3 planned in input order; the missing and corrupt ones are left out.
    assert s.num_input == 9 and s.num_shards == 3 and s.num_written == 7 and s.complete
    assert sorted(b.utt_id for b in s.bad) == ["corrupt-utt", "missing-utt"]
    reasons = {b.utt_id: b.reason for b in s.bad}
    assert reasons["missing-utt"].startswith("missing") and reasons["corrupt-utt"].startswith("unreadable")
    assert "missing-utt" in caplog.text and "nope.wav" in caplog.text and "corrupt.wav" in caplog.text
    entries = _manifest(out / "tarred_audio_manifest.json")
    assert [e["audio_filepath"] for e in entries] == [f"{u}.wav" for u in sources]  # input order kept
    assert [e["shard_id"] for e in entries] == [0, 0, 1, 1, 2, 2, 2]
    assert entries[3]["text"] == "hello world number 3"
    assert (out / "data.list").read_text().splitlines() == [str(out / f"audio_{i}.tar") for i in range(3)]
    got = {}
    for i in range(3):
        part = _manifest(out / "sharded_manifests" / f"manifest_{i}.json")
        members = _read_tar(out / f"audio_{i}.tar")
        assert [m for m, _ in members] == [e["audio_filepath"] for e in part]
        for (name, data), e in zip(members, part):
            audio, sr = sf.read(io.BytesIO(data), dtype="int16")
            assert sr == 16000 and int(e["duration"] * sr) == len(audio)
            got[name[:-4]] = audio
    assert set(got) == set(sources)
    for utt, audio in sources.items():
        np.testing.assert_array_equal(got[utt], audio)
    with tarfile.open(out / "audio_0.tar") as t:
        assert all(m.mtime == 0 and m.uid == 0 and m.uname == "" for m in t.getmembers())
    assert not _temps(out)


def test_strict_and_cli_exit_codes(tmp_path):
    scp, text, _ = _make_kaldi_dir(tmp_path / "data", n=3)
    base = [sys.executable, TOOL, "--wav-scp", scp, "--text", text, "--no-progress"]
    ok = subprocess.run(base + ["--out-dir", str(tmp_path / "a")], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "missing-utt" in ok.stderr and "left out: 2" in ok.stderr
    bad = subprocess.run(base + ["--out-dir", str(tmp_path / "b"), "--strict"], capture_output=True, text=True)
    assert bad.returncode == 1 and "missing-utt" in bad.stderr and "nope.wav" in bad.stderr
    assert not (tmp_path / "b" / "tarred_audio_manifest.json").exists()
    with pytest.raises(PackingError, match="exactly one input"):
        pack_shards(out_dir=str(tmp_path / "c"), progress=False)


def test_malformed_input_lines_are_reported_by_line(tmp_path):
    scp, _, sources = _make_kaldi_dir(tmp_path / "data", n=2, bad=False)
    first = Path(scp).read_text().splitlines()[0]
    with open(scp, "ab") as f:
        f.write(b"lonely-id\n" + first.encode() + b"\n" + b"latin1-\xe9 /x.wav\n")
    s = pack_shards(out_dir=str(tmp_path / "k"), wav_scp=scp, progress=False)
    assert s.num_written == 2 and sorted(b.origin for b in s.bad) == [f"{scp}:3", f"{scp}:4", f"{scp}:5"]
    assert sorted(b.reason.split(":")[0] for b in s.bad) == ["duplicate", "malformed", "malformed"]
    man = tmp_path / "m.json"
    wav = str(tmp_path / "data" / "wav" / "s0.wav")
    man.write_text("\n".join([json.dumps({"audio_filepath": wav, "duration": 0.1}), "{not json",
                              json.dumps({"audio_filepath": 3}), json.dumps({"audio_filepath": wav, "offset": "x"})]))
    s = pack_shards(out_dir=str(tmp_path / "m"), manifest=str(man), progress=False)
    assert s.num_written == 1 and [b.origin for b in s.bad] == [f"{man}:{i}" for i in (2, 3, 4)]


def test_pipe_entries_rejected_unless_allowed(tmp_path):
    scp, text, sources = _make_kaldi_dir(tmp_path / "data", n=3, bad=False, pipe_cmd="cat {path}")
    r = subprocess.run([sys.executable, TOOL, "--wav-scp", scp, "--out-dir", str(tmp_path / "no"), "--no-progress"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "--allow-pipes" in r.stderr and "cat " in r.stderr
    assert not (tmp_path / "no" / "audio_0.tar").exists()
    s = pack_shards(out_dir=str(tmp_path / "yes"), wav_scp=scp, allow_pipes=True, progress=False)
    assert s.num_written == 3 and not s.bad
    for name, data in _read_tar(tmp_path / "yes" / "audio_0.tar"):
        np.testing.assert_array_equal(sf.read(io.BytesIO(data), dtype="int16")[0], sources[name[:-4]])
    # A failing command is a bad entry, named, not a crash.
    Path(scp).write_text(Path(scp).read_text() + "broken-utt false |\n")
    s = pack_shards(out_dir=str(tmp_path / "fail"), wav_scp=scp, allow_pipes=True, progress=False)
    assert s.num_written == 3 and [b.utt_id for b in s.bad] == ["broken-utt"] and "exited with 1" in s.bad[0].reason


def test_resampling_changes_rate_and_length(tmp_path):
    from scipy.signal import resample_poly

    scp, _, sources = _make_kaldi_dir(tmp_path / "data", n=3, bad=False)
    out = tmp_path / "out"
    pack_shards(out_dir=str(out), wav_scp=scp, sample_rate=8000, progress=False)
    entries = {e["audio_filepath"]: e for e in _manifest(out / "tarred_audio_manifest.json")}
    for name, data in _read_tar(out / "audio_0.tar"):
        audio, sr = sf.read(io.BytesIO(data), dtype="float32")
        src = sources[name[:-4]].astype(np.float32) / 32768
        assert sr == 8000 and abs(len(audio) - len(src) / 2) <= 1
        assert int(entries[name]["duration"] * 8000) == len(audio)
        # Same content at half the rate: compare against an independent resampler (scipy's polyphase filter, which
        # also removes what lies above the new Nyquist), away from the edges.
        ref = resample_poly(src, 1, 2)[: len(audio)]
        assert np.corrcoef(audio[20:-20], ref[20:-20])[0, 1] > 0.9


def test_identical_output_for_any_num_workers_and_split(tmp_path):
    scp, text, _ = _make_kaldi_dir(tmp_path / "data", n=9)
    kw = dict(wav_scp=scp, text=text, shard_size=2, progress=False)
    pack_shards(out_dir=str(tmp_path / "w1"), num_workers=1, **kw)
    pack_shards(out_dir=str(tmp_path / "w2"), num_workers=2, **kw)
    one, two = _tree(tmp_path / "w1"), _tree(tmp_path / "w2")
    assert one == two and any(k.endswith(".tar") for k in one)
    # Two processes of a split, each writing only its share into the same folder.
    a = pack_shards(out_dir=str(tmp_path / "split"), shard_idx=0, shard_count=2, **kw)
    assert not a.complete and a.shards_done == [0, 2, 4] and not (tmp_path / "split" / "data.list").exists()
    b = pack_shards(out_dir=str(tmp_path / "split"), shard_idx=1, shard_count=2, **kw)
    assert b.complete and b.shards_done == [1, 3, 5]
    assert _tree(tmp_path / "split") == one


def test_skip_existing_keeps_complete_shards_and_redoes_the_rest(tmp_path):
    scp, text, _ = _make_kaldi_dir(tmp_path / "data", n=6, bad=False)
    kw = dict(wav_scp=scp, text=text, shard_size=2, progress=False)
    out = tmp_path / "out"
    pack_shards(out_dir=str(out), **kw)
    clean = _tree(out)
    stat0 = os.stat(out / "audio_0.tar").st_mtime_ns
    with open(out / "audio_1.tar", "r+b") as f:  # damaged after the fact: size no longer matches its marker
        f.truncate(1000)
    os.remove(out / ".pack_state" / "shard_000002.json")  # as if killed before the marker was published
    s = pack_shards(out_dir=str(out), skip_existing=True, **kw)
    assert s.shards_skipped == [0] and s.shards_done == [1, 2] and s.complete
    assert os.stat(out / "audio_0.tar").st_mtime_ns == stat0
    assert _tree(out) == clean
    # A different plan (other options) is not "existing": everything is redone.
    s = pack_shards(out_dir=str(out), skip_existing=True, text_norm=True, **kw)
    assert s.shards_done == [0, 1, 2] and _manifest(out / "tarred_audio_manifest.json")[0]["text"].startswith("hello")


@pytest.mark.slow
def test_sigkill_then_rerun_gives_the_clean_result(tmp_path):
    # Pipe entries that sleep make the run slow enough to be killed part-way, with no test hook.
    scp, text, _ = _make_kaldi_dir(tmp_path / "data", n=8, pipe_cmd="sleep 0.5; cat {path}")
    out = tmp_path / "out"

    def cmd_with(workers):
        return [sys.executable, TOOL, "--wav-scp", scp, "--text", text, "--shard-size", "2", "--allow-pipes",
                "--num-workers", str(workers), "--skip-existing", "--no-progress", "--out-dir", str(out)]

    cmd = cmd_with(2)

    def run_and_kill(command, when):
        p = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.time() + 60
        while not when() and p.poll() is None and time.time() < deadline:
            time.sleep(0.005)
        finished = p.poll() is not None
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:  # it ended on its own: reported by the caller's assert
            pass
        p.wait()
        return finished

    # First kill: 2 decoding workers, mid-decoding (the pool decodes ahead of the writer); killing the process
    # group also takes the pool's processes down. Whatever temporaries exist must not count as shards.
    t0 = time.time()
    assert not run_and_kill(cmd, lambda: time.time() - t0 > 1.2), "finished before the kill"
    assert not (out / "tarred_audio_manifest.json").exists()
    # Second kill: 1 worker decodes and writes in turn (0.5 s per pipe entry), so 0.1 s after shard 1's marker
    # the run is always part-way through shard 2.
    marker1 = out / ".pack_state" / "shard_000001.json"
    t = []
    assert not run_and_kill(cmd_with(1), lambda: marker1.exists() and (t or t.append(time.time()))
                            and time.time() - t[0] > 0.1), "finished before the kill"
    assert not (out / "tarred_audio_manifest.json").exists()
    kept = {i: os.stat(out / f"audio_{i}.tar").st_mtime_ns for i in (0, 1)}
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert {i: os.stat(out / f"audio_{i}.tar").st_mtime_ns for i in (0, 1)} == kept  # complete shards kept
    subprocess.run([c if c != str(out) else str(tmp_path / "clean") for c in cmd], check=True, capture_output=True)
    assert _tree(out) == _tree(tmp_path / "clean")
    assert not _temps(out)
    assert "left out: 2" in r.stderr


def test_manifest_input_segments_and_name_collisions(tmp_path):
    sr = 16000
    a = speech_like(1.0, sr, seed=1)
    os.makedirs(tmp_path / "d1")
    os.makedirs(tmp_path / "d2")
    sf.write(str(tmp_path / "d1" / "x.y.wav"), a, sr, subtype="PCM_16")
    sf.write(str(tmp_path / "d2" / "x.y.wav"), a[:8000], sr, subtype="PCM_16")
    man = tmp_path / "m.json"
    man.write_text("\n".join(json.dumps(e) for e in [
        {"audio_filepath": "d1/x.y.wav", "duration": 1.0, "text": "one", "lang": "en"},  # relative to manifest
        {"audio_filepath": str(tmp_path / "d2" / "x.y.wav"), "duration": 0.5, "text": "two"},
        {"audio_filepath": "d1/x.y.wav", "offset": 0.25, "duration": 0.5, "text": "seg"},
    ]) + "\n")
    out = tmp_path / "out"
    pack_shards(out_dir=str(out), manifest=str(man), progress=False, shuffle=False)
    entries = _manifest(out / "tarred_audio_manifest.json")
    # Dots would split WebDataset keys; repeats must stay distinct because NeMo maps members by name.
    assert [e["audio_filepath"] for e in entries] == ["x_y.wav", "x_y_1.wav", "x_y_2.wav"]
    assert entries[0]["lang"] == "en" and "offset" not in entries[2]
    members = dict(_read_tar(out / "audio_0.tar"))
    seg, _ = sf.read(io.BytesIO(members["x_y_2.wav"]), dtype="int16")
    full = (np.clip(a, -1, 1) * 32767).astype(np.int16)
    src = sf.read(str(tmp_path / "d1" / "x.y.wav"), dtype="int16")[0]
    np.testing.assert_array_equal(seg, src[4000:12000])
    assert abs(entries[2]["duration"] - 0.5) < 1e-9 and len(full) == 16000


def test_lhotse_shar_read_back_by_lhotse(tmp_path):
    from lhotse import CutSet

    scp, text, sources = _make_kaldi_dir(tmp_path / "data", n=5)
    kw = dict(wav_scp=scp, text=text, shard_size=3, text_norm=True, format="lhotse-shar", progress=False, shuffle=False)
    s = pack_shards(out_dir=str(tmp_path / "shar"), **kw)
    assert s.complete and s.num_written == 5 and len(s.bad) == 2
    assert sorted(os.listdir(tmp_path / "shar" / "shar")) == [
        *[f"cuts.{i:06d}.jsonl.gz" for i in range(3)], *[f"recording.{i:06d}.tar" for i in range(3)]]
    index = json.loads((tmp_path / "shar" / "shar_index.json").read_text())
    for cuts in (CutSet.from_shar(in_dir=str(tmp_path / "shar" / "shar")), CutSet.from_shar(fields=index)):
        got = {c.id: c for c in cuts}
        assert list(got) == list(sources)
        for utt, ref in sources.items():
            audio = got[utt].load_audio()[0]
            np.testing.assert_allclose(audio, ref.astype(np.float32) / 32768, atol=1e-6)  # FLAC is lossless
            assert got[utt].supervisions[0].text.startswith("hello world number")
    pack_shards(out_dir=str(tmp_path / "shar2"), num_workers=2, **kw)
    assert _tree(tmp_path / "shar") == {k: v.replace(str(tmp_path / "shar2").encode(), str(tmp_path / "shar").encode())
                                        for k, v in _tree(tmp_path / "shar2").items()}


@pytest.mark.slow
def test_nemo_tarred_dataset_reads_the_shards(tmp_path):
    """NeMo's own TarredAudioToCharDataset, given the documented _OP_/_CL_ pattern, yields the source audio."""
    from nemo.collections.asr.data.audio_to_text import TarredAudioToCharDataset

    scp, text, sources = _make_kaldi_dir(tmp_path / "data", n=5)
    out = tmp_path / "out"
    pack_shards(out_dir=str(out), wav_scp=scp, text=text, shard_size=2, text_norm=True, progress=False, shuffle=False)
    n = len((out / "data.list").read_text().split())
    ds = TarredAudioToCharDataset(
        audio_tar_filepaths=f"{out}/audio__OP_0..{n - 1}_CL_.tar", manifest_filepath=str(out / "tarred_audio_manifest.json"),
        labels=list(" abcdefghijklmnopqrstuvwxyz'0123456789"), sample_rate=16000, return_sample_id=True, parser="base", normalize=False,
    )
    seen = []
    for f, fl, t, tl, idx in ds:
        entry = ds.get_manifest_sample(int(idx))
        utt = os.path.splitext(os.path.basename(entry.audio_file))[0]
        np.testing.assert_allclose(f.numpy(), sources[utt].astype(np.float32) / 32768, atol=1e-6)
        assert int(fl) == len(sources[utt]) and int(tl) == len(entry.text_raw if hasattr(entry, "text_raw") else entry.text)
        seen.append(utt)
    assert seen == list(sources)


@pytest.mark.slow
def test_nest_tarred_data_path_reads_the_shards(tmp_path):
    """The NEST training path (``is_tarred=true`` with the _OP_/_CL_ pattern) yields the packed audio."""
    from omegaconf import OmegaConf

    from conftest import write_manifest, write_wav
    from nest_ext.data.ssl_dataset import get_audio_noise_dataset_from_config

    sr, root = 16000, tmp_path / "data"
    (root / "wav").mkdir(parents=True)
    sources, lines = {}, []
    for i, dur in enumerate((1.2, 1.5, 1.1)):
        p = root / "wav" / f"u{i}.wav"
        sf.write(str(p), speech_like(dur, sr, seed=i), sr, subtype="PCM_16")
        sources[f"utt{i}"] = sf.read(str(p), dtype="float32")[0]
        lines.append(f"utt{i} {p}\n")
    (root / "wav.scp").write_text("".join(lines))
    out = tmp_path / "out"
    pack_shards(out_dir=str(out), wav_scp=str(root / "wav.scp"), shard_size=2, progress=False, shuffle=False)
    noise = write_manifest(tmp_path / "noise.json", [
        {"audio_filepath": write_wav(tmp_path / "n.wav", 0.05 * np.random.default_rng(0).standard_normal(3 * sr)),
         "duration": 3.0}])
    cfg = OmegaConf.create({
        "manifest_filepath": str(out / "tarred_audio_manifest.json"), "is_tarred": True,
        "tarred_audio_filepaths": f"{out}/audio__OP_0..1_CL_.tar", "noise_manifest": noise, "sample_rate": sr,
        "batch_size": 2, "shuffle": False, "num_workers": 0, "max_duration": 60.0, "min_duration": None})
    ds = get_audio_noise_dataset_from_config(cfg, global_rank=0, world_size=1)
    items = list(ds)
    assert len(items) == 3
    for item, ref in zip(items, sources.values()):
        np.testing.assert_allclose(item.audio.numpy(), ref, atol=1e-6)
        assert int(item.audio_len) == len(ref)


def test_wenet_format_round_trips_through_our_wenet_reader(tmp_path):
    """--format wenet: shards_{i:09d}.tar with KEY.wav + KEY.txt, data.list last; read back with the same ids,
    transcripts and samples; an id that is not loader-safe is renamed and mapped in key_map.tsv."""
    from nest_ext.cli.pack_shards import main as pack_main
    from nest_ext.data.wenet_shards import LazyWenetShardIterator

    scp, text, sources = _make_kaldi_dir(tmp_path / "data", n=5)
    lines = Path(scp).read_text().splitlines()
    lines[0] = lines[0].replace("spk0-utt000", "spk0.utt000", 1)  # a dot ends a WebDataset/WeNet key early
    Path(scp).write_text("\n".join(lines) + "\n")
    Path(text).write_text(Path(text).read_text().replace("spk0-utt000", "spk0.utt000", 1))
    sources["spk0.utt000"] = sources.pop("spk0-utt000")
    out = tmp_path / "wenet"
    assert pack_main(["--wav-scp", scp, "--text", text, "--out-dir", str(out), "--format", "wenet",
                      "--shard-size", "2", "--no-shuffle", "--no-progress"]) == 0
    tars = [str(out / f"shards_{i:09d}.tar") for i in range(4)]  # 7 planned (2 bad, left out at load) / 2 a shard
    assert sorted(str(p) for p in out.glob("*.tar")) == tars and (out / "data.list").read_text().splitlines() == tars
    names = [n for n, _ in _read_tar(out / "shards_000000000.tar")]
    assert [n.rsplit(".", 1)[1] for n in names] == ["wav", "txt"] * (len(names) // 2)  # pairs, side by side
    key_map = dict(line.split("\t") for line in (out / "key_map.tsv").read_text().splitlines())
    assert list(key_map.values()) == ["spk0.utt000"] and "." not in next(iter(key_map))
    cuts = {key_map.get(c.id, c.id): c for c in LazyWenetShardIterator(str(out / "data.list"), on_bad_audio="error")}
    assert sorted(cuts) == sorted(sources)
    for utt, ref in sources.items():
        np.testing.assert_allclose(cuts[utt].load_audio()[0], ref.astype(np.float32) / 32768, atol=1e-6)
        assert cuts[utt].supervisions[0].text.lower().split()[:3] == ["hello", "world", "number"]


def test_wenet_format_refuses_separation_examples(tmp_path):
    from nest_ext.data.packing.item import EncodedAudio, ShardItem
    from nest_ext.data.packing.writers import get_writer

    writer = get_writer("wenet")(str(tmp_path), 0)
    a = EncodedAudio(b"x", "wav", 1, 8000, 1)
    with pytest.raises(PackingError, match="stores one audio per example; item 'ex1' has mixture, s1"):
        writer.add(ShardItem("ex1", {"mixture": a, "s1": a}))
    writer.abort()
    assert not list(tmp_path.iterdir()) or not list(tmp_path.rglob("*.tar"))
