"""tools/prepare_separation_data.py on tiny fake wsj0-2mix, LibriMix and WHAMR! trees with planted defects."""
import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, write_wav

from nest_ext.cli import prepare_separation_data as prep

WSJ_NAMES = ["011a010b_0.6_20ao010t_-0.6.wav", "01zc0207_1.2_40na010x_-1.2.wav", "22ha010c_0.3_01aa010k_-0.3.wav"]
LIBRI_NAMES = ["103-1240-0003_1235-135887-0017.wav", "19-198-0001_26-495-0002.wav"]


def _tone(n, seed):
    return (0.1 * np.random.default_rng(seed).standard_normal(n)).astype(np.float32)


def _write_mixture(split_dir, name, mix_dir, src_dirs, n=800, sr=8000):
    srcs = [_tone(n, k) for k in range(len(src_dirs))]
    for d, s in zip(src_dirs, srcs):
        write_wav(split_dir / d / name, s, sr)
    write_wav(split_dir / mix_dir / name, sum(srcs), sr)


def _read(path):
    with open(path) as f:
        return [json.loads(l) for l in f if l.strip()]


def _problem_files(report, split):
    return {p["file"]: p["problem"] for p in report.splits[split].problems}


@pytest.fixture
def wsj(tmp_path):
    base = tmp_path / "wsj0-mix" / "2speakers" / "wav8k" / "min"
    for split in ("tr", "cv", "tt"):
        for name in WSJ_NAMES:
            _write_mixture(base / split, name, "mix", ["s1", "s2"])
    tr = base / "tr"
    (tr / "s2" / WSJ_NAMES[0]).unlink()  # missing source
    write_wav(tr / "s1" / WSJ_NAMES[1], _tone(700, 0), 8000)  # wrong length
    write_wav(tr / "s2" / WSJ_NAMES[2], _tone(1600, 0), 16000)  # wrong rate (same duration)
    write_wav(tr / "s1" / "orphan0a_0.1_orphan0b_-0.1.wav", _tone(800, 0), 8000)  # source without mixture
    return base


def test_wsj0_2mix_manifests_and_problems(wsj, tmp_path):
    out = tmp_path / "manifests"
    # the folder above wav8k/min is enough: the version is found
    report = prep.prepare_separation_manifests(str(wsj.parents[1]), str(out))
    assert report.layout == "wsj0mix" and report.base_dir == str(wsj)
    assert set(report.splits) == {"tr", "cv", "tt"}
    for split in ("cv", "tt"):
        rows = _read(out / f"{split}.json")
        assert len(rows) == 3 and not report.splits[split].problems
        for row, name in zip(rows, sorted(WSJ_NAMES)):
            assert row["input_filepath"] == str(wsj / split / "mix" / name)
            assert row["target_filepath"] == [str(wsj / split / "s1" / name), str(wsj / split / "s2" / name)]
            assert row["duration"] == pytest.approx(0.1)
        assert rows[0]["speaker_ids"] == ["011", "20a"]
    # tr: every defect reported by file, only the good-for-nothing mixtures left out
    assert _read(out / "tr.json") == []
    problems = _problem_files(report, "tr")
    assert "missing" in problems[str(wsj / "tr" / "s2" / WSJ_NAMES[0])]
    assert "700 frames" in problems[str(wsj / "tr" / "s1" / WSJ_NAMES[1])]
    assert "16000 Hz" in problems[str(wsj / "tr" / "s2" / WSJ_NAMES[2])]
    assert "without a mixture" in problems[str(wsj / "tr" / "s1" / "orphan0a_0.1_orphan0b_-0.1.wav")]
    saved = json.loads((out / "prepare_report.json").read_text())
    assert len(saved["splits"]["tr"]["problems"]) == 4 and saved["splits"]["tr"]["num_written"] == 0
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*"))  # atomic writes leave no temp files


def test_strict_fails_and_writes_nothing(wsj, tmp_path):
    out = tmp_path / "strict"
    with pytest.raises(prep.PreparationError, match="4 problem"):
        prep.prepare_separation_manifests(str(wsj), str(out), strict=True)
    assert not out.exists()
    # the good splits alone pass strict mode
    report = prep.prepare_separation_manifests(str(wsj), str(out), splits=["cv"], strict=True)
    assert report.splits["cv"].num_written == 3 and not (out / "tr.json").exists()


def test_cli_exit_codes(wsj, tmp_path, capsys):
    assert prep.main([str(wsj), str(tmp_path / "o1"), "--splits", "tt"]) == 0
    assert "tt: 3/3 mixtures" in capsys.readouterr().out
    # as a script: exit status 1 and the reason on stderr
    script = str(ROOT / "tools" / "prepare_separation_data.py")
    bad = subprocess.run([sys.executable, script, str(wsj), str(tmp_path / "o2"), "--strict"], capture_output=True, text=True)
    assert bad.returncode == 1 and "missing" in bad.stderr
    assert not (tmp_path / "o2").exists()


def test_librimix_versions_and_relative_paths(tmp_path):
    root = tmp_path / "Libri2Mix"
    for rate, n in ((8000, 800), (16000, 1600)):
        for split in ("train-100", "dev"):
            for name in LIBRI_NAMES:
                _write_mixture(root / f"wav{rate // 1000}k" / "min" / split, name, "mix_clean", ["s1", "s2"], n=n, sr=rate)
                write_wav(root / f"wav{rate // 1000}k" / "min" / split / "noise" / name, _tone(n, 9), rate)
    with pytest.raises(prep.PreparationError, match="several versions"):
        prep.prepare_separation_manifests(str(root), str(tmp_path / "x"))
    out = tmp_path / "libri"
    report = prep.prepare_librimix(str(root), str(out), sample_rate=16000, relative_paths=True)
    assert report.layout == "librimix" and set(report.splits) == {"train-100", "dev"}
    rows = _read(out / "dev.json")
    assert len(rows) == 2 and report.num_problems == 0
    row = rows[0]
    assert not row["input_filepath"].startswith("/")
    assert (out / row["input_filepath"]).resolve() == (root / "wav16k" / "min" / "dev" / "mix_clean" / sorted(LIBRI_NAMES)[0]).resolve()
    assert row["speaker_ids"] == ["103", "1235"]
    assert len(row["target_filepath"]) == 2 and "/s1/" in row["target_filepath"][0]
    # the noise folder is not a target
    assert all("noise" not in t for r in rows for t in r["target_filepath"])


def test_whamr_reverb_mixtures_and_targets(tmp_path):
    base = tmp_path / "whamr" / "wav8k" / "min"
    dirs = ["s1_anechoic", "s2_anechoic", "s1_reverb", "s2_reverb"]
    for name in WSJ_NAMES[:2]:
        for d in dirs + ["noise"]:
            write_wav(base / "tt" / d / name, _tone(800, len(d)), 8000)
        for m in ("mix_clean_anechoic", "mix_both_anechoic", "mix_both_reverb", "mix_single_reverb"):
            write_wav(base / "tt" / m / name, _tone(800, 5), 8000)
    (base / "tt" / "mix_both_reverb" / WSJ_NAMES[1]).unlink()
    write_wav(base / "tt" / "s1_reverb" / WSJ_NAMES[0], _tone(800, 1), 16000)  # mismatched rate in reverb targets

    out = tmp_path / "a"
    report = prep.prepare_wham(str(base), str(out), mixture="mix_both", reverb=True)
    rows = _read(out / "tt.json")
    assert report.layout == "wham" and len(rows) == 1  # one reverberant mixture missing -> reported as orphans
    assert rows[0]["input_filepath"].endswith(f"mix_both_reverb/{WSJ_NAMES[0]}")
    assert [t.split("/")[-2] for t in rows[0]["target_filepath"]] == ["s1_anechoic", "s2_anechoic"]
    assert sum("without a mixture" in p["problem"] for p in report.splits["tt"].problems) == 2

    report = prep.prepare_wham(str(base), str(tmp_path / "b"), mixture="mix_both", reverb=True, reverb_targets=True)
    assert report.splits["tt"].num_written == 0
    assert "8000 Hz" in _problem_files(report, "tt")[str(base / "tt" / "s1_reverb" / WSJ_NAMES[0])]

    report = prep.prepare_wham(str(base), str(tmp_path / "c"), mixture="mix_single", reverb=True)
    rows = _read(tmp_path / "c" / "tt.json")
    assert len(rows) == 2 and all(len(r["target_filepath"]) == 1 for r in rows)
    assert "speaker_ids" not in rows[0]  # a 2-speaker name does not give a 1-speaker ID list


def test_unknown_tree_is_a_clear_error(tmp_path):
    (tmp_path / "junk" / "x").mkdir(parents=True)
    with pytest.raises(prep.PreparationError, match="no separation corpus found"):
        prep.prepare_separation_manifests(str(tmp_path / "junk"), str(tmp_path / "o"))


def test_speaker_id_report_and_regex(tmp_path, capsys):
    """Names outside the wsj0-mix/LibriMix patterns: the report says how many mixtures got speaker IDs and why
    the others did not; --speaker-id-regex reads them."""
    base = tmp_path / "mine" / "wav8k" / "min"
    names = ["spkA-u1_spkB-u2.wav", "spkC-u3_spkA-u4.wav", "noise.wav"]
    for name in names:
        _write_mixture(base / "tt", name, "mix", ["s1", "s2"])
    report = prep.prepare_separation_manifests(str(base), str(tmp_path / "plain"))
    ids = report.splits["tt"].speaker_ids
    assert ids["with_speaker_ids"] == 0 and ids["mixtures"] == 3 and ids["without"][0]["count"] == 3
    assert "neither the wsj0-mix nor the LibriMix pattern" in ids["without"][0]["reason"]
    assert "speaker IDs for 0 of 3 mixtures" in report.summary()
    out = tmp_path / "regex"
    assert prep.main([str(base), str(out), "--speaker-id-regex", r"(\w+)-u\d+_(\w+)-u\d+"]) == 0
    printed = capsys.readouterr().out
    assert "speaker IDs for 2 of 3 mixtures; 1 without: regex" in printed and "e.g. noise.wav" in printed
    rows = {r["input_filepath"].split("/")[-1]: r for r in _read(out / "tt.json")}
    assert rows["spkA-u1_spkB-u2.wav"]["speaker_ids"] == ["spkA", "spkB"] and "speaker_ids" not in rows["noise.wav"]
    saved = json.loads((out / "prepare_report.json").read_text())
    assert saved["splits"]["tt"]["speaker_ids"]["with_speaker_ids"] == 2
    # one group, matched once per speaker; a count that differs from the sources is named
    report = prep.prepare_separation_manifests(str(base), str(tmp_path / "one"), speaker_id_regex=r"(spk\w)-")
    assert report.splits["tt"].speaker_ids["with_speaker_ids"] == 2
    report = prep.prepare_separation_manifests(str(base), str(tmp_path / "three"), speaker_id_regex=r"(\w+)-(u\d)_(x)")
    assert "does not match" in report.splits["tt"].speaker_ids["without"][0]["reason"]
    assert prep.main([str(base), str(tmp_path / "bad"), "--speaker-id-regex", "no group"]) == 1
    assert "needs a group" in capsys.readouterr().err
