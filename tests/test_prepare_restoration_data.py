"""prepare_restoration_data: pairs equal the degradation chain's, NeMo audio-to-audio manifests the dataset reads,
bad input reported by ID and path, identical bytes for any worker count or shard split, a SIGKILL then a
--skip-existing rerun gives the clean result."""
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

from conftest import ROOT, speech_like, write_manifest
from nest_ext.data.degradations import DegradationChain
from nest_ext.data.packing import PackingError
from nest_ext.data.restoration_pairs import prepare_restoration_pairs

TOOL = str(ROOT / "tools" / "prepare_restoration_data.py")
CHAIN = [{"type": "noise", "prob": 0.7, "snr_db": [0, 10]}, {"type": "bandlimit", "prob": 0.5},
         {"type": "clipping", "prob": 0.5}]


def _corpus(root, n=6, rate=22050, bad=True):
    """n clean files at another rate (one stereo), and, with ``bad``, a missing, a corrupt and a too-short entry."""
    root = Path(root)
    (root / "wav").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        audio = speech_like(0.3 + 0.05 * i, rate, seed=i)
        if i == 1:
            audio = np.stack([audio, 0.5 * audio], axis=1)
        sf.write(str(root / "wav" / f"u{i}.wav"), audio, rate)
        rows.append({"audio_filepath": f"wav/u{i}.wav", "duration": 0.3 + 0.05 * i})
    if bad:
        (root / "wav" / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" * 8)
        sf.write(str(root / "wav" / "short.wav"), np.zeros(50, np.float32), rate)
        rows[2:2] = [{"audio_filepath": "wav/gone.wav"}, {"audio_filepath": "wav/corrupt.wav"},
                     {"audio_filepath": "wav/short.wav"}]
    return write_manifest(root / "clean.json", rows)


def _tree(out_dir):
    """Every file under out_dir (relative path -> bytes), absolute paths made relative to compare runs."""
    out = {}
    for p in sorted(Path(out_dir).rglob("*")):
        if p.is_file():
            out[str(p.relative_to(out_dir))] = p.read_bytes().replace(str(Path(out_dir).resolve()).encode(), b"DIR")
    return out


def _lines(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def _temps(out_dir):
    return [str(p) for p in Path(out_dir).rglob("*") if ".tmp." in p.name]


def test_pairs_manifests_and_bad_input(tmp_path, caplog):
    manifest = _corpus(tmp_path / "data")
    out = tmp_path / "out"
    with caplog.at_level("WARNING"):
        s = prepare_restoration_pairs(str(out), clean=manifest, degradations=CHAIN, pairs_per_file=2,
                                      val_fraction=0.34, seed=3, shard_size=3, progress=False)
    assert s.complete and s.num_written == 12 and s.num_input == 9
    reasons = {b.utt_id: b.reason.split(":")[0] for b in s.bad}
    assert reasons == {"gone": "missing", "corrupt": "unreadable", "short": "too short"}
    for name in ("gone.wav", "corrupt.wav", "short.wav"):
        assert name in caplog.text  # reported by path, with the utterance ID
    train, val = _lines(out / "train_manifest.json"), _lines(out / "val_manifest.json")
    assert len(train) == 8 and len(val) == 4
    assert not {e["utt_id"] for e in train} & {e["utt_id"] for e in val}  # no clean utterance in both splits
    assert {e["shard_id"] for e in val}.isdisjoint({e["shard_id"] for e in train})
    chain = DegradationChain.from_spec(CHAIN)
    for e in train + val:
        degraded, rate = sf.read(str(out / e["input_filepath"]), dtype="float32")
        clean, _ = sf.read(str(out / e["target_filepath"]), dtype="float32")
        assert rate == 16000 and degraded.shape == clean.shape and int(e["duration"] * rate) == len(clean)
        # the pair is the chain's degradation of the clean file for (seed, "<id>#<k>"), to PCM_16 precision
        ref, applied = chain.degrade(clean / e.get("gain", 1.0), 16000, seed=3, utt_id=f"{e['utt_id']}#{e['pair']}")
        assert applied == e["degradations"]
        np.testing.assert_allclose(degraded, ref * e.get("gain", 1.0), atol=2e-4)
    assert [e["pair"] for e in train[:2]] == [0, 1] and train[0]["utt_id"] == train[1]["utt_id"]
    assert not _temps(out)
    # the manifests train the model's dataset as they are
    from nest_ext.data.restoration_dataset import get_restoration_dataset_from_config

    ds = get_restoration_dataset_from_config({"manifest_filepath": str(out / "train_manifest.json"),
                                              "sample_rate": 16000, "segment_seconds": 0.2})
    batch = ds.collate_fn([ds[0], ds[1]])
    assert tuple(batch["input_signal"].shape) == (2, 3200) and tuple(batch["target_signal"].shape) == (2, 1, 3200)


def test_identical_bytes_for_any_workers_and_split(tmp_path):
    manifest = _corpus(tmp_path / "data", n=5, bad=False)
    for fmt in ("tar", "manifest"):
        kw = dict(clean=manifest, degradations=CHAIN, pairs_per_file=2, val_fraction=0.2, shard_size=3,
                  format=fmt, progress=False)
        prepare_restoration_pairs(str(tmp_path / fmt / "w1"), **kw)
        prepare_restoration_pairs(str(tmp_path / fmt / "w2"), num_workers=2, **kw)
        split = str(tmp_path / fmt / "split")
        a = prepare_restoration_pairs(split, shard_idx=1, shard_count=2, **kw)
        assert not a.complete and not os.path.exists(os.path.join(split, "train_manifest.json"))
        b = prepare_restoration_pairs(split, shard_idx=0, shard_count=2, **kw)
        assert b.complete
        one = _tree(tmp_path / fmt / "w1")
        assert one == _tree(tmp_path / fmt / "w2") == _tree(split)
        if fmt == "tar":
            with tarfile.open(tmp_path / fmt / "w1" / "pairs_0.tar") as t:
                assert t.getnames()[:2] == ["u0_0.degraded.wav", "u0_0.clean.wav"]
            assert len((tmp_path / fmt / "w1" / "val.list").read_text().splitlines()) == 1
    # another seed: other pairs
    other = prepare_restoration_pairs(str(tmp_path / "seed1"), seed=1, **kw)
    assert other.complete and _tree(tmp_path / "seed1") != one


def test_cli_noise_manifest_folder_input_and_usage_errors(tmp_path):
    from nest_ext.cli.prepare_restoration_data import main
    from nest_ext.parts.synthetic_noise import noise_like

    folder = tmp_path / "clean" / "spk1"
    folder.mkdir(parents=True)
    for i in range(2):
        sf.write(str(folder / f"utt{i}.flac"), speech_like(0.4, 16000, seed=i), 16000)
    sf.write(str(tmp_path / "n.wav"), noise_like(1.0, 16000, seed=0), 16000)
    noise = write_manifest(tmp_path / "noise.json", [{"audio_filepath": str(tmp_path / "n.wav"), "duration": 1.0}])
    chain = tmp_path / "chain.yaml"
    chain.write_text("- {type: noise, prob: 1.0, snr_db: [5, 5]}\n")
    out = tmp_path / "out"
    assert main(["--clean", str(tmp_path / "clean"), "--out-dir", str(out), "--degradations", str(chain),
                 "--noise-manifest", noise, "--val-fraction", "0", "--no-progress"]) == 0
    rows = _lines(out / "train_manifest.json")
    assert [r["utt_id"] for r in rows] == ["spk1/utt0", "spk1/utt1"] and not _lines(out / "val_manifest.json")
    assert rows[0]["degradations"] == [{"type": "noise", "snr_db": 5.0, "noise": "n.wav"}]
    # a noise manifest with a chain that has no noise step is a usage error, named
    chain.write_text("- {type: clipping}\n")
    assert main(["--clean", str(tmp_path / "clean"), "--out-dir", str(tmp_path / "x"), "--degradations",
                 str(chain), "--noise-manifest", noise]) == 2
    with pytest.raises(PackingError, match="unknown type 'hiss'"):
        prepare_restoration_pairs(str(tmp_path / "y"), clean=str(tmp_path / "clean"), degradations=[{"type": "hiss"}])
    # a missing degradations file is a named usage error too, not a traceback
    assert main(["--clean", str(tmp_path / "clean"), "--out-dir", str(tmp_path / "z"), "--degradations",
                 str(tmp_path / "no_such_chain.yaml")]) == 2
    with pytest.raises(SystemExit):
        main(["--clean", "x", "--out-dir", "y", "--pairs-per-file", "0"])


@pytest.mark.slow
def test_sigkill_then_skip_existing_rerun_gives_the_clean_result(tmp_path):
    # Kaldi pipe entries that sleep make the run slow enough to be killed part-way, with no test hook.
    data = tmp_path / "data"
    data.mkdir()
    lines = []
    for i in range(8):
        sf.write(str(data / f"u{i}.wav"), speech_like(0.3, 16000, seed=i), 16000)
        lines.append(f"utt{i} sleep 0.3; cat {data / f'u{i}.wav'} |")
    (data / "wav.scp").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"

    def cmd(workers, where=out):
        return [sys.executable, TOOL, "--wav-scp", str(data / "wav.scp"), "--allow-pipes", "--shard-size", "2",
                "--num-workers", str(workers), "--skip-existing", "--no-progress", "--val-fraction", "0.25",
                "--out-dir", str(where)]

    def run_and_kill(command, when):
        p = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.time() + 120
        while not when() and p.poll() is None and time.time() < deadline:
            time.sleep(0.005)
        finished = p.poll() is not None
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait()
        return finished

    marker = out / ".pack_state" / "shard_000000.json"
    assert not run_and_kill(cmd(2), lambda: marker.exists()), "finished before the kill"
    assert not (out / "train_manifest.json").exists()
    t = []
    marker1 = out / ".pack_state" / "shard_000001.json"
    assert not run_and_kill(cmd(1), lambda: marker1.exists() and (t or t.append(time.time()))
                            and time.time() - t[0] > 0.1), "finished before the kill"
    assert not (out / "train_manifest.json").exists()
    kept = os.stat(out / "pairs" / "shard_000000").st_mtime_ns
    r = subprocess.run(cmd(2), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert os.stat(out / "pairs" / "shard_000000").st_mtime_ns == kept  # a complete shard is kept
    subprocess.run(cmd(1, tmp_path / "clean"), check=True, capture_output=True)
    assert _tree(out) == _tree(tmp_path / "clean")
    assert not _temps(out) and len(_lines(out / "train_manifest.json")) == 6
