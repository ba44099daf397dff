"""Real (synthetic) sentences from the espeak-ng speech synthesiser, for demos, tests and benchmarks that need
speech with words, several voices and no download.

:func:`espeak_sentences` reads Harvard sentences (IEEE 1969, public domain) with espeak-ng voices (accents and
its voice variants ``+f2``, ``+m3``, ...), at speaking rates drawn from the seed, resampled to the asked rate
(soxr), peak-normalised to ``level``, with a dither floor ``floor_db`` below full scale so that no reference is
digital silence (log-spectral metrics are undefined there). espeak-ng is a system package (``apt install
espeak-ng``); :func:`espeak_available` says whether it is on the PATH.

Example::

    >>> if espeak_available():
    ...     (x,) = espeak_sentences(1, 16000, seconds=1.5)
    ...     print(x.shape, x.dtype, 0.49 < float(abs(x).max()) < 0.51)
    ... else:
    ...     print((24000,), "float32", True)
    (24000,) float32 True
"""
from __future__ import annotations

import io
import shutil
import subprocess
from typing import List, Optional, Sequence

import numpy as np

__all__ = ["HARVARD_SENTENCES", "TRAIN_VOICES", "HELD_OUT_VOICES", "espeak_available", "espeak_say",
           "espeak_sentences"]

HARVARD_SENTENCES = (  # lists 1-3 of the Harvard sentences (IEEE 1969)
    "The birch canoe slid on the smooth planks.", "Glue the sheet to the dark blue background.",
    "It's easy to tell the depth of a well.", "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.", "The juice of lemons makes fine punch.",
    "The box was thrown beside the parked truck.", "The hogs were fed chopped corn and garbage.",
    "Four hours of steady work faced us.", "A large size in stockings is hard to sell.",
    "The boy was there when the sun rose.", "A rod is used to catch pink salmon.",
    "The source of the huge river is the clear spring.", "Kick the ball straight and follow through.",
    "Help the woman get back to her feet.", "A pot of tea helps to pass the evening.",
    "Smoky fires lack flame and heat.", "The soft cushion broke the man's fall.",
    "The salt breeze came across from the sea.", "The girl at the booth sold fifty bonds.",
    "The small pup gnawed a hole in the sock.", "The fish twisted and turned on the bent hook.",
    "Press the pants and sew a button on the vest.", "The swan dive was far short of perfect.",
    "The beauty of the view stunned the young boy.", "Two blue fish swam in the tank.",
    "Her purse was full of useless trash.", "The colt reared and threw the tall rider.",
    "It snowed, rained, and hailed the same morning.", "Read verse out loud for pleasure.",
)
# Voices for training sets, and others for held-out sets (other accents and speakers than any training voice)
TRAIN_VOICES = ("en-us", "en-gb", "en-us+f3", "en-gb+f2", "en-us+m3", "en-gb-scotland", "en-gb-x-gbclan+f4",
                "en-us+m7")
HELD_OUT_VOICES = ("en-029", "en-us-nyc+f5", "en-gb-x-rp+f1", "en-gb-x-gbcwmd+m2")


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def espeak_say(text: str, voice: str = "en-us", words_per_minute: int = 160,
               sample_rate: Optional[int] = None) -> np.ndarray:
    """``text`` spoken by ``voice``: float32 ``[T]`` at espeak-ng's rate (22.05 kHz) or ``sample_rate``."""
    import soundfile as sf

    raw = subprocess.run(["espeak-ng", "-v", voice, "-s", str(int(words_per_minute)), "--stdout", text],
                         check=True, capture_output=True).stdout
    audio, rate = sf.read(io.BytesIO(raw), dtype="float32")
    if sample_rate is not None and sample_rate != rate:
        import soxr

        audio = soxr.resample(audio, rate, sample_rate).astype(np.float32)
    return audio


def espeak_sentences(count: int, sample_rate: int = 16000, seed: int = 0, voices: Sequence[str] = TRAIN_VOICES,
                     seconds: Optional[float] = None, sentences: Sequence[str] = HARVARD_SENTENCES,
                     level: float = 0.5, floor_db: float = -70.0) -> List[np.ndarray]:
    """``count`` utterances: ``sentences[i % len]`` in voice ``voices[(i + i // len(sentences)) % len]`` (every
    sentence in several voices); with ``seconds``, each cut (or repeated) to exactly that length. Depends only on
    the arguments."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        text = sentences[i % len(sentences)]
        voice = voices[(i + i // len(sentences)) % len(voices)]
        audio = espeak_say(text, voice, int(rng.integers(140, 181)), sample_rate)
        nonzero = np.flatnonzero(np.abs(audio) > 1e-4)
        if nonzero.size:  # espeak's leading and trailing silence
            audio = audio[max(0, nonzero[0] - sample_rate // 20): nonzero[-1] + sample_rate // 20]
        audio = level * audio / max(float(np.abs(audio).max()), 1e-9)
        if seconds is not None:
            n = int(round(seconds * sample_rate))
            audio = np.tile(audio, -(-n // audio.shape[0]))[:n]
        floor = 10 ** (floor_db / 20) * rng.standard_normal(audio.shape[0])
        out.append((audio + floor).astype(np.float32))
    return out
