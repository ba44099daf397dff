"""tools/compare_with_nemo.py: configs, parameter counts and numbers against the installed NeMo."""
import json
import shutil
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from conftest import ROOT, shared_reference

from nest_ext.cli import nemo_comparison as nc

TOOL = [sys.executable, str(ROOT / "tools" / "compare_with_nemo.py")]


def test_mapped_target_rule():
    assert nc.is_mapped_target("model.loss._target_", "nest_ext.losses.MultiMLMLoss",
                               "nemo.collections.asr.losses.MultiMLMLoss")
    # another class, or a non-nest_ext target, is a real difference
    assert not nc.is_mapped_target("model.loss._target_", "nest_ext.losses.MLMLoss",
                                   "nemo.collections.asr.losses.MultiMLMLoss")
    assert not nc.is_mapped_target("model.loss._target_", "foo.MultiMLMLoss",
                                   "nemo.collections.asr.losses.MultiMLMLoss")
    assert not nc.is_mapped_target("model.loss.name", "nest_ext.x.A", "nemo.x.A")


def test_diff_configs_lists_every_kind():
    theirs = OmegaConf.create({"a": 1, "b": {"c": "${a}", "_target_": "nemo.x.Enc"}, "gone": True})
    ours = OmegaConf.create({"a": 1.0, "b": {"c": "${a}", "_target_": "nest_ext.x.Enc"}, "new": 3})
    d = nc.diff_configs(ours, theirs)
    kinds = {x["key"]: x["kind"] for x in d["differences"]}
    assert kinds == {"a": "value", "gone": "missing in ours", "new": "only in ours"}  # 1 vs 1.0 is a type change
    assert [m["key"] for m in d["mapped_targets"]] == ["b._target_"]


def test_our_configs_equal_nemo_originals():
    ref = shared_reference("nemo", "nest_fast-conformer.yaml").parent
    report = nc.compare_configs(ROOT / "config", ref)
    assert report["ok"], json.dumps(report, indent=1, default=str)
    names = {c["config"] for c in report["configs"]}
    assert names == {p.name for p in ref.glob("*.yaml")}  # every original is covered


def test_param_counts_all_sizes_match_nemo_and_reference():
    expected = json.loads(shared_reference("nemo", "nest_param_counts.json").read_text())
    report = nc.compare_param_counts(nemo_config_dir=shared_reference("nemo", "nest_fast-conformer.yaml").parent)
    assert report["ok"], json.dumps(report, indent=1)
    for row in report["rows"]:
        ref = expected[row["name"]]
        for key, value in ref.items():
            assert row["ours"][key] == value, (row["name"], key)


def test_numbers_small_equal():
    ref = shared_reference("nemo", "nest_fast-conformer.yaml").parent
    result = nc.compare_numbers("small", ROOT / "config", ref)
    assert result["encoder_class"].startswith("nest_ext."), result  # ours really is ours
    assert result["ok"], result


@pytest.mark.slow
def test_cli_exit_code_on_altered_config(tmp_path):
    ref = shared_reference("nemo", "nest_fast-conformer.yaml").parent
    ours = tmp_path / "config"
    shutil.copytree(ROOT / "config", ours)
    text = (ours / "nest_fast-conformer.yaml").read_text()
    assert "mask_prob: 0.01" in text
    (ours / "nest_fast-conformer.yaml").write_text(text.replace("mask_prob: 0.01", "mask_prob: 0.02", 1))

    ok = subprocess.run(TOOL + ["--nemo-config", str(ref), "--skip", "params,numbers", "--json"],
                        capture_output=True, text=True, cwd=ROOT)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert json.loads(ok.stdout)["ok"] is True

    bad = subprocess.run(TOOL + ["--nemo-config", str(ref), "--our-config-dir", str(ours),
                                 "--skip", "params,numbers"], capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 1
    assert "model.masking.mask_prob: value: ours=0.02 nemo=0.01" in bad.stdout
    assert "MISMATCH" in bad.stdout
