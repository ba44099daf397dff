"""The Makefile's torch step: the CPU wheel index first, the default index when that index cannot be reached, nothing
when the wanted torch is installed. Run against a stand-in python that records its arguments (no install)."""
import os
import shutil
import stat
import subprocess

import pytest

from conftest import ROOT

FAKE_PYTHON = """#!/bin/sh
echo "$*" >> "$(dirname "$0")/calls"
case "$*" in
  *"import torch"*) [ -n "$TORCH_PRESENT" ] ;;      # is the wanted torch installed?
  *"--index-url"*) [ -z "$INDEX_DOWN" ] ;;           # the CPU index: reachable or not
  *) true ;;
esac
"""


def make_torch(tmp_path, *args, **env):
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    python = tmp_path / "python"
    python.write_text(FAKE_PYTHON)
    python.chmod(python.stat().st_mode | stat.S_IEXEC)
    (tmp_path / "calls").unlink(missing_ok=True)
    full_env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "MAKEFLAGS")}
    proc = subprocess.run(["make", "-s", "-C", str(ROOT), "torch", f"PYTHON={python}", *args],
                          env={**full_env, **env}, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return (tmp_path / "calls").read_text().splitlines(), proc.stderr


def test_torch_comes_from_the_cpu_index(tmp_path):
    calls, _ = make_torch(tmp_path)
    assert len(calls) == 2 and "import torch" in calls[0]
    assert "--index-url https://download.pytorch.org/whl/cpu" in calls[1] and calls[1].endswith("torch==2.13.0")


def test_an_unreachable_index_falls_back_to_the_default_index(tmp_path):
    calls, stderr = make_torch(tmp_path, "TORCH_INDEX_URL=https://mirror.invalid/whl/cpu", INDEX_DOWN="1")
    assert len(calls) == 3 and "--index-url https://mirror.invalid/whl/cpu" in calls[1]
    assert calls[2] == "-m pip install -q torch==2.13.0"  # the default index
    assert "not installed from https://mirror.invalid/whl/cpu: using the default index" in stderr


def test_an_empty_index_url_means_the_default_index_and_installed_torch_is_kept(tmp_path):
    calls, _ = make_torch(tmp_path, "TORCH_INDEX_URL=")
    assert len(calls) == 2 and "--index-url" not in calls[1]
    calls, _ = make_torch(tmp_path, TORCH_PRESENT="1")
    assert len(calls) == 1  # only the check
