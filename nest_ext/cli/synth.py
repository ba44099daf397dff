"""Speech-like signals synthesised from a seed: the demo corpora and test audio, without downloads.

:func:`speech_like` is a crude source-filter voice: a harmonic glottal source whose pitch follows a
contour (declination over the phrase, accents, slow jitter), shaped by three formants that move between
vowel targets syllable by syllable, with noisy fricative bursts and pauses between words. It is not
speech, but it has speech's structure at the scales a masked-token model sees (pitch harmonics, formant
bands, 100-300 ms syllables, silences), so spectrogram tokens vary and training loss can fall.
Coloured noise is ``nest_ext.parts.synthetic_noise.noise_like`` (the degradation chain uses it too).

Outputs are float32 [T] in [-1, 1] and depend only on the arguments.

Example::

    >>> x = speech_like(1.5, sample_rate=16000, seed=3)
    >>> x.shape, x.dtype, float(abs(x).max()) <= 0.9
    ((24000,), dtype('float32'), True)
    >>> bool((x == speech_like(1.5, 16000, seed=3)).all())
    True
"""
from __future__ import annotations

import numpy as np

__all__ = ["speech_like", "VOWELS"]

# (F1, F2, F3) in Hz of a few vowels (adult averages), the formant targets syllables move between
VOWELS = {
    "a": (730, 1090, 2440),
    "e": (530, 1840, 2480),
    "i": (270, 2290, 3010),
    "o": (570, 840, 2410),
    "u": (300, 870, 2240),
    "ae": (660, 1720, 2410),
    "er": (490, 1350, 1690),
}
_BANDWIDTHS = np.array([90.0, 110.0, 170.0])  # formant bandwidths (Hz)


def _syllable_plan(n: int, sample_rate: int, rng: np.random.Generator):
    """Per-sample voicing envelope [T], fricative envelope [T] and a vowel index track [T]."""
    voiced = np.zeros(n)
    fric = np.zeros(n)
    vowel = np.zeros(n, dtype=np.int64)
    pos = int(rng.uniform(0.02, 0.15) * sample_rate)  # leading silence
    while pos < n:
        for _ in range(rng.integers(1, 5)):  # a word of 1-4 syllables
            if rng.random() < 0.4:  # a fricative onset
                flen = int(rng.uniform(0.04, 0.12) * sample_rate)
                m = max(0, min(n, pos + flen) - pos)
                fric[pos : pos + m] = np.hanning(flen)[:m]
                pos += flen
            slen = int(rng.uniform(0.12, 0.3) * sample_rate)
            m = min(n, pos + slen) - pos
            if m <= 0:
                break
            # raised-cosine attack/decay, flat nucleus
            ramp = max(1, slen // 4)
            env = np.ones(slen)
            env[:ramp] = 0.5 - 0.5 * np.cos(np.pi * np.arange(ramp) / ramp)
            env[-ramp:] = env[:ramp][::-1]
            voiced[pos : pos + m] = env[:m] * rng.uniform(0.6, 1.0)
            vowel[pos : pos + m] = rng.integers(len(VOWELS))
            pos += slen
        pos += int(rng.uniform(0.05, 0.35) * sample_rate)  # pause between words
    return voiced, fric, vowel


def _smooth(x: np.ndarray, width: int) -> np.ndarray:
    """Moving average (same length) so formant targets glide instead of jumping."""
    if width <= 1:
        return x
    pad = np.pad(x, (width // 2, width - 1 - width // 2), mode="edge")
    c = np.concatenate([[0.0], np.cumsum(pad)])  # running sums: O(T) whatever the width
    return (c[width:] - c[:-width]) / width


def speech_like(
    duration: float, sample_rate: int = 16000, seed: int = 0, max_harmonics: int = 40, peak: float | None = None
) -> np.ndarray:
    """A speech-like float32 signal [round(duration * sample_rate)] with peak ``peak`` (default: 0.3-0.9 from the seed).

    Args:
        duration: seconds.
        sample_rate: Hz.
        seed: all randomness (speaker pitch, contour, syllables, vowels) comes from it.
        max_harmonics: cap on the number of glottal harmonics (those above Nyquist are dropped anyway).
        peak: peak absolute value of the result; None draws one in [0.3, 0.9] (speakers differ in level).
    """
    rng = np.random.default_rng(seed)
    n = int(round(duration * sample_rate))
    t = np.arange(n) / sample_rate
    # pitch contour: speaker base, declination over the phrase, accents and slow jitter
    base = rng.uniform(85, 240)
    decl = 1.0 - rng.uniform(0.05, 0.2) * t / max(duration, 1e-3)
    accents = 1.0 + 0.12 * np.sin(2 * np.pi * rng.uniform(0.7, 2.5) * t + rng.uniform(0, 2 * np.pi))
    jitter = 1.0 + 0.02 * _smooth(rng.standard_normal(n), max(1, sample_rate // 50))
    f0 = base * decl * accents * jitter  # [T] Hz
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate

    voiced, fric, vowel = _syllable_plan(n, sample_rate, rng)
    table = np.array(list(VOWELS.values()), dtype=np.float64)  # [V, 3]
    formants = _smooth_columns(table[vowel], max(1, sample_rate // 25))  # [T, 3], gliding between vowels

    k = np.arange(1, max_harmonics + 1)  # [K]
    # harmonic gains change slowly: compute them every 5 ms and interpolate (10x faster than per sample)
    hop = max(1, sample_rate // 200)
    fr = np.arange(0, n + hop, hop).clip(max=n - 1)  # frame sample positions [F]
    freqs = f0[fr, None] * k[None, :]  # [F, K]
    # formant envelope at each harmonic: sum of resonances, with the source's -12 dB/octave tilt
    g = np.zeros_like(freqs)
    for i in range(3):
        g += 1.0 / (1.0 + ((freqs - formants[fr, i : i + 1]) / _BANDWIDTHS[i]) ** 2)
    g *= (freqs < 0.45 * sample_rate) / k[None, :]
    pos = np.arange(n) / hop
    i0 = pos.astype(np.int64)
    w = (pos - i0)[:, None]
    gain = g[i0] * (1.0 - w) + g[i0 + 1] * w  # [T, K]
    voice = (gain * np.sin(phase[:, None] * k[None, :])).sum(axis=1)

    # fricatives: white noise emphasised above ~3 kHz by a first difference
    hiss = np.diff(rng.standard_normal(n + 1))
    sig = voice * voiced + 0.15 * hiss * fric + 0.002 * rng.standard_normal(n)
    sig -= sig.mean()
    level = rng.uniform(0.3, 0.9) if peak is None else peak
    return (level * sig / (np.max(np.abs(sig)) or 1.0)).astype(np.float32)


def _smooth_columns(x: np.ndarray, width: int) -> np.ndarray:
    return np.stack([_smooth(x[:, j], width) for j in range(x.shape[1])], axis=1)
