"""Zero-mean coloured noise (white, pink, brown) with an optional mains hum, synthesised from a seed: the demo's
noise corpus and the degradation chain's noise when it has no noise file.

Example::

    >>> n = noise_like(2.0, 16000, seed=1, color="pink")
    >>> n.shape, n.dtype, abs(float(n.mean())) < 1e-3, round(float(abs(n).max()), 6)
    ((32000,), dtype('float32'), True, 0.3)
    >>> bool((n == noise_like(2.0, 16000, seed=1, color="pink")).all())
    True
"""
import numpy as np

__all__ = ["noise_like"]


def noise_like(
    duration: float, sample_rate: int = 16000, seed: int = 0, color: str = "pink", hum_hz: float = 0.0,
    level: float = 0.3,
) -> np.ndarray:
    """Zero-mean coloured noise float32 [round(duration * sample_rate)] with peak ``level``.

    Args:
        color: ``white``, ``pink`` (1/f power) or ``brown`` (1/f^2 power), shaped in the frequency domain.
        hum_hz: add a mains hum with harmonics at this frequency (0 = none).
    """
    rng = np.random.default_rng(seed)
    n = int(round(duration * sample_rate))
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1.0 / sample_rate)
    f[0] = f[1] if n > 1 else 1.0
    exponent = {"white": 0.0, "pink": 0.5, "brown": 1.0}
    if color not in exponent:
        raise ValueError(f"color must be one of {sorted(exponent)}, got {color!r}")
    x = np.fft.irfft(spec / f ** exponent[color], n=n)
    if hum_hz:
        t = np.arange(n) / sample_rate
        x = x / (np.std(x) or 1.0) + sum(0.5 / h * np.sin(2 * np.pi * h * hum_hz * t) for h in (1, 2, 3))
    x -= x.mean()
    peak = np.max(np.abs(x)) or 1.0
    return (level * x / peak).astype(np.float32)
