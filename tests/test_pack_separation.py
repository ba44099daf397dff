"""pack_shards(task="separation") and issue 11's packing defaults: separation examples in nemo and Shar shards
(round trip, bad input by file, determinism, skip-existing), seeded shuffle, duration filters, Kaldi segments."""
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import speech_like, write_manifest
from nest_ext.data.packing import DEFAULT_SHARD_SIZE, PackingError, pack_shards
from test_pack_shards import _make_kaldi_dir, _manifest, _read_tar, _temps, _tree

SR = 8000


def separation_corpus(root, n=6, sr=SR, noise=False, bad=True, seed=0):
    """n examples (mixture = s1 + s2 [+ noise]) of different lengths, PCM_16, with speaker IDs; with ``bad``, one
    example with a missing source and one whose source is shorter than its mixture. Returns (manifest, refs)."""
    root = Path(root)
    rows, refs = [], {}
    for i in range(n):
        length = int((0.3 + 0.05 * i) * sr)
        parts = {f"s{k + 1}": speech_like(length / sr, sr, seed=seed + 10 * i + k) * 0.5 for k in range(2)}
        if noise:
            parts["noise"] = (0.01 * np.random.default_rng(i).standard_normal(length)).astype(np.float32)
        parts["mixture"] = sum(parts.values())
        paths = {}
        for name, audio in parts.items():
            paths[name] = root / name / f"ex{i}.wav"
            paths[name].parent.mkdir(parents=True, exist_ok=True)
            sf.write(str(paths[name]), audio, sr, subtype="PCM_16")
        row = {"input_filepath": os.path.relpath(paths["mixture"], root),  # relative to the manifest
               "target_filepath": [str(paths["s1"]), str(paths["s2"])], "duration": length / sr,
               "speaker_ids": [f"spk{i % 3}", f"spk{(i + 1) % 3 + 3}"]}
        if noise:
            row["noise_filepath"] = str(paths["noise"])
        rows.append(row)
        refs[f"ex{i}"] = {k: sf.read(str(p), dtype="int16")[0] for k, p in paths.items()}
    if bad:
        os.remove(rows[1]["target_filepath"][1])
        sf.write(rows[3]["target_filepath"][0], np.zeros(100, np.float32), sr, subtype="PCM_16")
        for k in ("ex1", "ex3"):
            refs.pop(k)
    return write_manifest(root / "tr.json", rows), refs


def test_nemo_separation_shards_round_trip_and_bad_examples(tmp_path, caplog):
    manifest, refs = separation_corpus(tmp_path / "data", noise=True)
    out = tmp_path / "out"
    with caplog.at_level("WARNING", logger="nest_ext.pack_shards"):
        s = pack_shards(out_dir=str(out), manifest=manifest, task="separation", shard_size=2, progress=False)
    assert s.complete and s.num_input == 6 and s.num_written == 4 and s.num_shards == 3
    reasons = {b.utt_id: b.reason for b in s.bad}
    assert reasons["ex1"].startswith("missing") and "(s2)" in reasons["ex1"]
    assert reasons["ex3"].startswith("mismatch: s1 has 100 samples")
    assert "ex2/" not in caplog.text and str(Path(manifest).parent / "s2" / "ex1.wav") in caplog.text
    entries = _manifest(out / "tarred_audio_manifest.json")
    assert sorted(e["utt_id"] if "utt_id" in e else e["input_filepath"].split(".")[0] for e in entries) == sorted(refs)
    assert (out / "data.list").read_text().splitlines() == [str(out / f"audio_{i}.tar") for i in range(3)]
    seen = {}
    for i in range(3):
        members = dict(_read_tar(out / f"audio_{i}.tar"))
        for e in _manifest(out / "sharded_manifests" / f"manifest_{i}.json"):
            key = e["input_filepath"].split(".")[0]
            assert e["input_filepath"] == f"{key}.mixture.wav" and e["shard_id"] == i
            assert e["target_filepath"] == [f"{key}.s1.wav", f"{key}.s2.wav"] and e["noise_filepath"] == f"{key}.noise.wav"
            assert e["speaker_ids"][0] == f"spk{int(key[2:]) % 3}"
            for name, member in [("mixture", e["input_filepath"]), ("s1", e["target_filepath"][0]),
                                 ("s2", e["target_filepath"][1]), ("noise", e["noise_filepath"])]:
                audio, sr = sf.read(io.BytesIO(members[member]), dtype="int16")
                assert sr == SR and int(e["duration"] * sr) == len(audio)
                np.testing.assert_array_equal(audio, refs[key][name])  # whole PCM files are stored byte for byte
            seen[key] = True
    assert sorted(seen) == sorted(refs)
    assert not _temps(out)


def test_separation_packing_is_deterministic_and_resumable(tmp_path):
    manifest, _ = separation_corpus(tmp_path / "data", n=7)
    kw = dict(manifest=manifest, task="separation", shard_size=2, progress=False)
    pack_shards(out_dir=str(tmp_path / "w1"), **kw)
    pack_shards(out_dir=str(tmp_path / "w2"), num_workers=2, **kw)
    pack_shards(out_dir=str(tmp_path / "split"), shard_idx=1, shard_count=2, **kw)
    pack_shards(out_dir=str(tmp_path / "split"), shard_idx=0, shard_count=2, **kw)
    clean = _tree(tmp_path / "w1")
    assert clean == _tree(tmp_path / "w2") == _tree(tmp_path / "split")
    out = tmp_path / "w1"
    with open(out / "audio_1.tar", "r+b") as f:  # damaged after the fact: redone
        f.truncate(512)
    again = pack_shards(out_dir=str(out), skip_existing=True, **kw)
    assert again.shards_done == [1] and again.shards_skipped == [0, 2, 3] and _tree(out) == clean


def test_shar_separation_cuts_carry_sources_and_speakers(tmp_path):
    from lhotse import CutSet

    manifest, refs = separation_corpus(tmp_path / "data", noise=True)
    kw = dict(manifest=manifest, task="separation", shard_size=3, format="lhotse-shar", progress=False)
    s = pack_shards(out_dir=str(tmp_path / "shar"), **kw)
    assert s.complete and s.num_written == 4
    index = json.loads((tmp_path / "shar" / "shar_index.json").read_text())
    assert sorted(index) == ["cuts", "noise_recording", "recording", "target_recording"]
    cuts = {c.id: c for c in CutSet.from_shar(fields=index)}
    assert sorted(cuts) == sorted(refs)
    for key, ref in refs.items():
        cut = cuts[key]
        np.testing.assert_allclose(cut.load_audio()[0], ref["mixture"] / 32768, atol=1e-6)  # FLAC: lossless
        sources = cut.load_target_recording()
        assert sources.shape == (2, len(ref["s1"]))
        np.testing.assert_allclose(sources, np.stack([ref["s1"], ref["s2"]]) / 32768, atol=1e-6)
        np.testing.assert_allclose(cut.load_noise_recording()[0], ref["noise"] / 32768, atol=1e-6)
        assert cut.custom["speaker_ids"][0] == f"spk{int(key[2:]) % 3}"
        # a crop of the cut crops the sources with it (NeMo's lhotse audio-to-audio convention)
        part = cut.truncate(offset=0.1, duration=0.1)
        np.testing.assert_allclose(part.load_target_recording(), sources[:, 800:1600], atol=1e-6)
    pack_shards(out_dir=str(tmp_path / "shar2"), num_workers=2, **kw)
    assert _tree(tmp_path / "shar") == {k: v.replace(str(tmp_path / "shar2").encode(), str(tmp_path / "shar").encode())
                                        for k, v in _tree(tmp_path / "shar2").items()}


def test_separation_task_needs_a_separation_manifest(tmp_path):
    scp, _, _ = _make_kaldi_dir(tmp_path / "data", n=2, bad=False)
    with pytest.raises(PackingError, match="separation manifest"):
        pack_shards(out_dir=str(tmp_path / "o"), wav_scp=scp, task="separation", progress=False)
    bad = write_manifest(tmp_path / "b.json", [{"audio_filepath": "x.wav"}])
    with pytest.raises(PackingError, match="no usable entry"):
        pack_shards(out_dir=str(tmp_path / "o"), manifest=bad, task="separation", progress=False)


def test_default_shuffle_is_seeded_and_spreads_a_sorted_input(tmp_path):
    """A sorted wav.scp (speaker by speaker) must not give single-speaker shards; the order depends on the seed
    alone, and shuffle=False keeps input order."""
    scp, _, sources = _make_kaldi_dir(tmp_path / "data", n=8, bad=False)
    order = {}
    for name, kw in (("a", {}), ("b", {}), ("seed1", {"seed": 1}), ("input", {"shuffle": False})):
        pack_shards(out_dir=str(tmp_path / name), wav_scp=scp, shard_size=4, progress=False, **kw)
        order[name] = [e["audio_filepath"][:-4] for e in _manifest(tmp_path / name / "tarred_audio_manifest.json")]
    assert order["a"] == order["b"] and order["a"] != order["seed1"]
    assert order["input"] == list(sources) != order["a"] and sorted(order["a"]) == sorted(sources)
    by_shard = [{u.split("-")[0] for u in order["a"][i:i + 4]} for i in (0, 4)]
    assert all(len(s) == 2 for s in by_shard)  # both speakers in each shard
    assert DEFAULT_SHARD_SIZE == 1000


def test_duration_filters_at_planning_and_after_decoding(tmp_path, caplog):
    scp, _, sources = _make_kaldi_dir(tmp_path / "data", n=6, bad=False)  # 0.100 s + 0.013 s steps
    with caplog.at_level("WARNING", logger="nest_ext.pack_shards"):
        s = pack_shards(out_dir=str(tmp_path / "scp"), wav_scp=scp, min_duration=0.12, max_duration=0.155, progress=False)
    kept = sorted(e["audio_filepath"][:-4] for e in _manifest(tmp_path / "scp" / "tarred_audio_manifest.json"))
    assert kept == sorted(list(sources)[2:5]) and s.num_written == 3
    assert sorted(b.reason.split(":")[0] for b in s.bad) == ["duration"] * 3
    assert "left out" not in caplog.text  # filtering is not reported as bad input
    manifest, refs = separation_corpus(tmp_path / "sep", n=4, bad=False)  # 0.30 .. 0.45 s, durations in the manifest
    s = pack_shards(out_dir=str(tmp_path / "sep_out"), manifest=manifest, task="separation", max_duration=0.37,
                    shard_size=1, progress=False)
    assert s.num_shards == 2 and s.num_written == 2  # filtered before planning: no empty shards
    with pytest.raises(PackingError, match="above max_duration"):
        pack_shards(out_dir=str(tmp_path / "x"), wav_scp=scp, min_duration=1.0, max_duration=0.5, progress=False)


def test_kaldi_segments_through_lhotse_with_speakers(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    rec = speech_like(2.0, 16000, seed=3)
    sf.write(str(root / "rec1.wav"), rec, 16000, subtype="PCM_16")
    (root / "wav.scp").write_text(f"rec1 {root / 'rec1.wav'}\n")
    (root / "segments").write_text("rec1-a rec1 0.25 0.75\nrec1-b rec1 1.5 -1\nlost-c rec9 0.0 1.0\n")
    (root / "utt2spk").write_text("rec1-a spkA\nrec1-b spkB\nlost-c spkC\n")
    (root / "text").write_text("rec1-a hello\nrec1-b world\nlost-c gone\n")
    s = pack_shards(out_dir=str(tmp_path / "out"), wav_scp=str(root / "wav.scp"), text=str(root / "text"),
                    segments=str(root / "segments"), shuffle=False, progress=False)
    assert s.num_written == 2 and [b.utt_id for b in s.bad] == ["lost-c"] and s.bad[0].origin.endswith("segments:3")
    entries = _manifest(tmp_path / "out" / "tarred_audio_manifest.json")
    assert [(e["audio_filepath"], e["text"], e["speaker"]) for e in entries] == [
        ("rec1-a.wav", "hello", "spkA"), ("rec1-b.wav", "world", "spkB")]
    members = dict(_read_tar(tmp_path / "out" / "audio_0.tar"))
    full = sf.read(str(root / "rec1.wav"), dtype="int16")[0]
    np.testing.assert_array_equal(sf.read(io.BytesIO(members["rec1-a.wav"]), dtype="int16")[0], full[4000:12000])
    np.testing.assert_array_equal(sf.read(io.BytesIO(members["rec1-b.wav"]), dtype="int16")[0], full[24000:])
    # utt2spk alone (no segments) gives the speaker key too
    scp, _, _ = _make_kaldi_dir(tmp_path / "k", n=2, bad=False)
    (tmp_path / "k" / "utt2spk").write_text("spk0-utt000 s0\nspk1-utt001 s1\n")
    pack_shards(out_dir=str(tmp_path / "o2"), wav_scp=scp, utt2spk=str(tmp_path / "k" / "utt2spk"), shuffle=False,
                progress=False)
    assert [e["speaker"] for e in _manifest(tmp_path / "o2" / "tarred_audio_manifest.json")] == ["s0", "s1"]


def test_cli_task_separation_and_new_defaults(tmp_path):
    import subprocess
    import sys

    from test_pack_shards import TOOL

    manifest, refs = separation_corpus(tmp_path / "data", n=5)
    base = [sys.executable, TOOL, "--task", "separation", "--manifest", manifest, "--shard-size", "2", "--no-progress"]
    r = subprocess.run(base + ["--out-dir", str(tmp_path / "cli"), "--max-duration", "0.42"], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    assert "left out: 3 (duration: 2, missing: 1)" in r.stderr  # ex3 (also broken) is filtered first
    lib = pack_shards(out_dir=str(tmp_path / "lib"), manifest=manifest, task="separation", shard_size=2,
                      max_duration=0.42, progress=False)
    assert _tree(tmp_path / "cli") == {k: v.replace(str(tmp_path / "lib").encode(), str(tmp_path / "cli").encode())
                                       for k, v in _tree(tmp_path / "lib").items()} and lib.num_written == 2
    r = subprocess.run(base + ["--out-dir", str(tmp_path / "ordered"), "--no-shuffle", "--seed", "3"],
                       capture_output=True, text=True)
    keys = [e["input_filepath"].split(".")[0] for e in _manifest(tmp_path / "ordered" / "tarred_audio_manifest.json")]
    assert r.returncode == 0 and keys == ["ex0", "ex2", "ex4"]
