"""Shared test helpers: reference files from ../shared, and synthetic audio written with soundfile."""
import json
import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_REFERENCE = Path(os.environ.get("NEST_EXT_SHARED_REFERENCE", ROOT.parent / "shared" / "reference"))


def shared_reference(*parts):
    """Path of a file under ../shared/reference, or skip the test with the reason when it is absent."""
    path = SHARED_REFERENCE.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"reference file {path} is absent (CI has ../shared beside the checkout)")
    return path


def write_wav(path, audio, sample_rate=16000):
    """Write float audio [T] or [T, C] as a WAV file and return its path as a string."""
    import soundfile as sf

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.asarray(audio, dtype=np.float32), sample_rate)
    return str(path)


def write_manifest(path, entries):
    """Write a NeMo JSON-lines manifest."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for entry in entries:
            f.write(json.dumps(entry) + "\n")
    return str(path)


def speech_like(duration, sample_rate=16000, seed=0):
    """The package's speech-like synthesis (:func:`nest_ext.cli.synth.speech_like`) at a fixed peak of 0.3, so the
    sum of two stays far from clipping."""
    from nest_ext.cli.synth import speech_like as synthesise

    return synthesise(duration, sample_rate, seed=seed, peak=0.3)


@pytest.fixture
def audio_dir(tmp_path):
    """A temporary folder for generated audio."""
    d = tmp_path / "audio"
    d.mkdir()
    return d
