"""Degradation chain for speech restoration: clean speech -> the degraded input of a (degraded, clean) pair.

A chain is a list of steps, each applied with its probability ``prob`` and parameters drawn uniformly from
``[low, high]`` ranges, in the order given (the default order follows the signal path of a recording:
room -> noise -> channel -> converter -> codec -> network). Steps (``type``):

===============  ===========================================================================================
``reverb``       convolve with a room impulse response: one from ``rir_manifest`` (NeMo manifest of RIR
                 files), else simulated: ``simulator: exponential`` (decaying noise tail of ``rt60`` s,
                 direct-to-reverberant ratio ``drr_db``; no dependency) or ``pyroomacoustics`` (a shoebox
                 room, ``pip install nest_ext[restoration]``). Aligned on the direct path, same RMS.
``noise``        additive noise at ``snr_db``: a random segment of a file of ``noise_manifest``, else
                 generated coloured noise (``colors``).
``bandlimit``    resample to ``rate`` Hz and back (``audio_io.resample``): everything above ``rate / 2`` is gone.
``eq_tilt``      spectral tilt of ``db_per_octave`` around 1 kHz, same RMS.
``clipping``     hard clipping at ``threshold`` x the peak.
``codec``        encode and decode with one of ``codecs`` through libsndfile, in memory: ``mulaw``,
                 ``alaw``, ``gsm`` (GSM 6.10), ``g721`` (G.721 ADPCM) at 8 kHz, the telephone rate;
                 ``vorbis`` and ``opus`` at ``compression_level`` (0 best, 1 smallest).
``packet_loss``  20 ms packets (``packet_ms``) zeroed with probability ``loss_rate``.
===============  ===========================================================================================

``min_applied`` (default 1): when the draws leave fewer steps on, random others are switched on, so no pair is
clean-as-clean by accident. Every step keeps the length and the time alignment with the clean signal.

Determinism: :meth:`DegradationChain.degrade` draws everything from :func:`utterance_rng` ``(seed, utt_id)``,
so a pair depends only on the seed, the utterance ID and the clean audio, whatever the process or order.

Spec (a list, or a path to a YAML file holding one; ``None`` is :data:`DEFAULT_DEGRADATIONS`)::

    - {type: noise, prob: 0.5, snr_db: [5, 30], noise_manifest: noise.json}
    - {type: codec, prob: 0.3, codecs: [gsm, opus]}

Example:
    >>> import numpy as np

from nest_ext.data.audio_io import load_audio, resample
    >>> from nest_ext.cli.synth import speech_like
    >>> chain = DegradationChain.from_spec([{"type": "bandlimit", "prob": 1.0, "rate": [4000, 4000]},
    ...                                     {"type": "clipping", "prob": 1.0, "threshold": [0.5, 0.5]}])
    >>> clean = speech_like(1.0, 16000, seed=0)
    >>> degraded, applied = chain.degrade(clean, 16000, seed=1, utt_id="utt1")
    >>> degraded.shape == clean.shape, [a["type"] for a in applied]
    (True, ['bandlimit', 'clipping'])
    >>> bool(np.array_equal(degraded, chain.degrade(clean, 16000, seed=1, utt_id="utt1")[0]))
    True
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from nest_ext.data.audio_io import load_audio, resample

__all__ = ["DEFAULT_DEGRADATIONS", "DegradationChain", "STEP_TYPES", "utterance_rng"]

logger = logging.getLogger(__name__)

# The default chain: each type with its probability; parameters are the defaults of STEP_TYPES
DEFAULT_DEGRADATIONS: List[Dict[str, Any]] = [
    {"type": "reverb", "prob": 0.25},
    {"type": "noise", "prob": 0.5},
    {"type": "bandlimit", "prob": 0.4},
    {"type": "eq_tilt", "prob": 0.3},
    {"type": "clipping", "prob": 0.2},
    {"type": "codec", "prob": 0.3},
    {"type": "packet_loss", "prob": 0.15},
]


def utterance_rng(seed: int, utt_id: str) -> np.random.Generator:
    """A generator that depends only on ``seed`` and ``utt_id`` (a stable hash, not Python's salted ``hash``)."""
    digest = hashlib.sha256(str(utt_id).encode("utf-8")).digest()
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, *np.frombuffer(digest[:16], dtype=np.uint32).tolist()])


def _read_audio(path: str, sample_rate: int, start: int = 0, frames: int = -1) -> np.ndarray:
    """Float32 mono ``[T]`` at ``sample_rate`` (channels averaged), reading ``frames`` frames of the file from frame
    ``start`` (file rate). Raises :class:`~nest_ext.data.audio_io.BadAudioError` naming the file."""
    return load_audio(path, sample_rate, start=start, frames=frames, mixdown=True)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0


def _fit(x: np.ndarray, n: int) -> np.ndarray:
    return x[:n] if x.shape[0] >= n else np.pad(x, (0, n - x.shape[0]))


def _uniform(rng: np.random.Generator, bounds: Sequence[float]) -> float:
    low, high = float(bounds[0]), float(bounds[1])
    return low if high <= low else float(rng.uniform(low, high))


def _manifest_paths(manifest: Union[str, Sequence[str], None]) -> List[str]:
    if not manifest:
        return []
    from nest_ext.data.ssl_dataset import load_noise_manifest

    return [entry["audio_filepath"] for entry in load_noise_manifest(manifest)]


# --------------------------------------------------------------------------------------------------- steps
# Each step: (audio float32 [T], sample_rate, rng, params) -> (audio [T], drawn values for the record)


def _reverb(x, sr, rng, p):
    if p["_rirs"]:
        rir = p["_load_rir"](p["_rirs"][int(rng.integers(len(p["_rirs"])))], sr)
        rir = rir[int(np.argmax(np.abs(rir))):]  # start at the direct path: output stays aligned with the input
        drawn = {"rir": "file"}
    elif p.get("simulator", "exponential") == "pyroomacoustics":
        rir, drawn = _pyroomacoustics_rir(sr, rng, _uniform(rng, p["rt60"]))
    else:
        rt60, drr = _uniform(rng, p["rt60"]), _uniform(rng, p["drr_db"])
        t = np.arange(1, int(min(rt60, 1.5) * sr)) / sr
        tail = rng.standard_normal(t.size) * np.exp(-6.908 * t / rt60)  # -60 dB at rt60
        tail *= 10 ** (-drr / 20) / max(np.sqrt(np.sum(tail**2)), 1e-12)
        rir, drawn = np.concatenate([[1.0], tail]), {"rt60": rt60, "drr_db": drr}
    from scipy.signal import oaconvolve

    y = oaconvolve(x, rir.astype(np.float32))[: x.shape[0]]
    return y * (_rms(x) / max(_rms(y), 1e-12)), drawn


def _pyroomacoustics_rir(sr, rng, rt60):
    try:
        import pyroomacoustics as pra
    except ImportError:
        raise ImportError("reverb simulator 'pyroomacoustics' needs: pip install 'nest_ext[restoration]'") from None
    room = np.array([rng.uniform(3, 10), rng.uniform(3, 10), rng.uniform(2.4, 4)])
    absorption, max_order = pra.inverse_sabine(rt60, room)
    shoebox = pra.ShoeBox(room, fs=sr, materials=pra.Material(absorption), max_order=min(max_order, 20))
    shoebox.add_source(rng.uniform(0.5, room - 0.5))
    shoebox.add_microphone(rng.uniform(0.5, room - 0.5))
    shoebox.compute_rir()
    rir = np.asarray(shoebox.rir[0][0], dtype=np.float64)
    return rir[int(np.argmax(np.abs(rir))):], {"rt60": rt60, "room": room.round(2).tolist()}


def _noise(x, sr, rng, p):
    power = _rms(x) ** 2
    if power <= 0:
        return x, {"snr_db": None}
    snr = _uniform(rng, p["snr_db"])
    noise, source = None, None
    paths = p["_noises"]
    for _ in range(3 if paths else 0):  # a bad file is reported and another tried
        path = paths[int(rng.integers(len(paths)))]
        try:
            noise, source = _noise_segment(path, x.shape[0], sr, rng), os.path.basename(path)
            break
        except Exception as e:
            logger.warning("degradation noise: skipping %s (%s)", path, e)
    if noise is None or _rms(noise) == 0:
        from nest_ext.parts.synthetic_noise import noise_like

        color = str(rng.choice(p.get("colors") or ["white"]))
        noise, source = noise_like(x.shape[0] / sr, sr, seed=int(rng.integers(2**31)), color=color), color
        noise = _fit(noise, x.shape[0])
    noise = noise * np.sqrt(power / 10 ** (snr / 10) / max(_rms(noise) ** 2, 1e-20))
    return x + noise.astype(np.float32), {"snr_db": snr, "noise": source}


def _noise_segment(path, n, sr, rng):
    from nest_ext.data.noise_sampling import cached_audio_info

    info = cached_audio_info(path)
    need = int(np.ceil(n * info.samplerate / sr)) + 16
    start = int(rng.integers(0, info.frames - need + 1)) if info.frames > need else 0
    seg = _read_audio(path, sr, start, need if info.frames > need else -1)
    return _fit(np.tile(seg, int(np.ceil(n / seg.shape[0]))), n)  # short noise repeats


def _bandlimit(x, sr, rng, p):
    rate = int(round(_uniform(rng, p["rate"])))
    if rate >= sr:
        return x, {"rate": sr}
    return _fit(resample(resample(x, sr, rate), rate, sr), x.shape[0]), {"rate": rate}


def _eq_tilt(x, sr, rng, p):
    tilt = _uniform(rng, p["db_per_octave"])
    spec = np.fft.rfft(x)
    freqs = np.clip(np.fft.rfftfreq(x.shape[0], 1.0 / sr), 50.0, None)
    y = np.fft.irfft(spec * 10 ** (tilt * np.log2(freqs / 1000.0) / 20), n=x.shape[0])
    return (y * (_rms(x) / max(_rms(y), 1e-12))).astype(np.float32), {"db_per_octave": tilt}


def _clipping(x, sr, rng, p):
    threshold = _uniform(rng, p["threshold"])
    level = threshold * float(np.max(np.abs(x)))
    return np.clip(x, -level, level), {"threshold": threshold}


# name -> (libsndfile format, subtype, its sample rate (None: the input's), takes compression_level)
_CODECS = {
    "mulaw": ("WAV", "ULAW", 8000, False), "alaw": ("WAV", "ALAW", 8000, False),
    "gsm": ("WAV", "GSM610", 8000, False), "g721": ("WAV", "G721_32", 8000, False),
    "vorbis": ("OGG", "VORBIS", None, True), "opus": ("OGG", "OPUS", None, True),
}
_OPUS_RATES = (8000, 12000, 16000, 24000, 48000)


def _codec(x, sr, rng, p):
    import soundfile as sf

    name = str(rng.choice(p["codecs"]))
    fmt, subtype, rate, compressed = _CODECS[name]
    if rate is None:
        rate = sr if name != "opus" else min([r for r in _OPUS_RATES if r >= sr] or [48000])
    level = _uniform(rng, p.get("compression_level", [0.5, 0.5])) if compressed else None
    buf = io.BytesIO()
    kwargs = {"compression_level": level} if compressed else {}
    coded = np.clip(resample(x, sr, rate), -1.0, 1.0)  # the codecs take full-scale audio
    sf.write(buf, coded, rate, format=fmt, subtype=subtype, **kwargs)
    buf.seek(0)
    decoded = sf.read(buf, dtype="float32")[0]
    drawn = {"codec": name} if level is None else {"codec": name, "compression_level": level}
    return _fit(resample(decoded, rate, sr), x.shape[0]), drawn


def _packet_loss(x, sr, rng, p):
    rate = _uniform(rng, p["loss_rate"])
    size = max(1, int(round(float(p.get("packet_ms", 20.0)) * sr / 1000)))
    lost = rng.random(int(np.ceil(x.shape[0] / size))) < rate
    mask = np.repeat(~lost, size)[: x.shape[0]]
    return x * mask, {"loss_rate": rate, "lost_packets": int(lost.sum())}


STEP_TYPES: Dict[str, Tuple[Callable, Dict[str, Any]]] = {
    # type -> (function, its parameters with defaults; ``prob`` and ``type`` are common to all)
    "reverb": (_reverb, {"rt60": [0.2, 0.8], "drr_db": [0.0, 12.0], "rir_manifest": None, "simulator": "exponential"}),
    "noise": (_noise, {"snr_db": [5.0, 30.0], "noise_manifest": None, "colors": ["white", "pink", "brown"]}),
    "bandlimit": (_bandlimit, {"rate": [4000, 12000]}),
    "eq_tilt": (_eq_tilt, {"db_per_octave": [-3.0, 3.0]}),
    "clipping": (_clipping, {"threshold": [0.15, 0.6]}),
    "codec": (_codec, {"codecs": ["mulaw", "alaw", "gsm", "g721", "vorbis", "opus"], "compression_level": [0.3, 0.95]}),
    "packet_loss": (_packet_loss, {"loss_rate": [0.02, 0.15], "packet_ms": 20.0}),
}


class DegradationChain:
    """Steps with probabilities; ``apply(clean, sample_rate, rng) -> (degraded, applied)`` keeps length and alignment.

    ``applied`` lists, per step switched on, ``{"type": ..., <drawn values>}``, in chain order. Build with
    :meth:`from_spec`.
    """

    def __init__(self, steps: List[Dict[str, Any]], min_applied: int = 1, rir_cache_size: int = 256):
        self.steps = steps
        self.min_applied = int(min_applied)
        self._rir_cache: Dict[Tuple[str, int], np.ndarray] = {}
        self._rir_cache_size = int(rir_cache_size)
        for step in steps:  # manifests read once, here, not per pair
            step["_noises"] = _manifest_paths(step.get("noise_manifest"))
            step["_rirs"] = _manifest_paths(step.get("rir_manifest"))
            step["_load_rir"] = self._load_rir

    @classmethod
    def from_spec(cls, spec: Union[None, str, Sequence[Dict[str, Any]], Dict[str, Any]] = None) -> "DegradationChain":
        """From a list of step dicts, ``{"steps": [...], "min_applied": N}``, a YAML file of either, or ``None``
        (:data:`DEFAULT_DEGRADATIONS`). Unknown types or keys and bad probabilities raise ``ValueError``."""
        if isinstance(spec, str):
            import yaml

            with open(spec, "r", encoding="utf-8") as f:
                spec = yaml.safe_load(f)
        if spec is not None and hasattr(spec, "_metadata"):  # an OmegaConf node
            from omegaconf import OmegaConf

            spec = OmegaConf.to_container(spec, resolve=True)
        min_applied = 1
        if isinstance(spec, dict):
            min_applied = int(spec.get("min_applied", 1))
            spec = spec.get("steps")
        steps = []
        for i, raw in enumerate(DEFAULT_DEGRADATIONS if spec is None else spec):
            raw = dict(raw)
            kind = raw.pop("type", None)
            if kind not in STEP_TYPES:
                raise ValueError(f"degradation step {i}: unknown type {kind!r}; known: {', '.join(STEP_TYPES)}")
            prob = float(raw.pop("prob", 1.0))
            if not 0.0 <= prob <= 1.0:
                raise ValueError(f"degradation step {i} ({kind}): prob {prob} is not in [0, 1]")
            defaults = STEP_TYPES[kind][1]
            unknown = sorted(set(raw) - set(defaults))
            if unknown:
                raise ValueError(f"degradation step {i} ({kind}): unknown keys {unknown}; known: {sorted(defaults)}")
            if kind == "codec":
                bad = sorted(set(raw.get("codecs", [])) - set(_CODECS))
                if bad:
                    raise ValueError(f"degradation step {i} (codec): unknown codecs {bad}; known: {sorted(_CODECS)}")
            steps.append({"type": kind, "prob": prob, **defaults, **raw})
        return cls(steps, min_applied=min_applied)

    def _load_rir(self, path: str, sample_rate: int) -> np.ndarray:
        key = (path, sample_rate)
        if key not in self._rir_cache:
            if len(self._rir_cache) >= self._rir_cache_size:
                self._rir_cache.pop(next(iter(self._rir_cache)))
            self._rir_cache[key] = _read_audio(path, sample_rate)
        return self._rir_cache[key]

    def apply(self, clean: np.ndarray, sample_rate: int, rng: np.random.Generator):
        """Degrade ``clean`` float32 ``[T]``; returns ``(degraded [T] float32, applied)``."""
        x = np.asarray(clean, dtype=np.float32)
        on = rng.random(len(self.steps)) < np.array([s["prob"] for s in self.steps])
        missing = min(self.min_applied, len(self.steps)) - int(on.sum())
        if missing > 0:  # switch on random others, so no pair comes out clean
            off = np.flatnonzero(~on)
            on[rng.choice(off, size=missing, replace=False)] = True
        applied = []
        for step, use in zip(self.steps, on):
            if use:
                x, drawn = STEP_TYPES[step["type"]][0](x, sample_rate, rng, step)
                x = np.asarray(x, dtype=np.float32)
                applied.append({"type": step["type"], **drawn})
        return x, applied

    def degrade(self, clean: np.ndarray, sample_rate: int, seed: int, utt_id: str):
        """:meth:`apply` with :func:`utterance_rng` ``(seed, utt_id)``: the same pair for the same inputs."""
        return self.apply(clean, sample_rate, utterance_rng(seed, utt_id))
