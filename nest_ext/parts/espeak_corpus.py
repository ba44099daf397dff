"""Transcribed speech from ``espeak-ng`` (a formant synthesiser, Debian package ``espeak-ng``): ASR corpora
with real transcripts and many voices, made on the spot without downloads.

Each utterance is a random word sequence read by one voice (language, voice variant, speed and pitch
drawn from the seed), resampled to ``sample_rate`` with soxr. :data:`ENGLISH_WORDS` gives labelled
English speech; :func:`pseudo_sentence` gives syllable strings that other languages' voices read with
their own phonology, for unlabelled audio with more phonetic variety. Everything depends only on the
seed and the installed espeak-ng version.

Example::

    >>> import numpy as np
    >>> if espeak_binary():
    ...     x = synthesize("hello world", voice="en-us", sample_rate=16000)
    ...     print(x.dtype, 0.3 < len(x) / 16000 < 3.0)
    ... else:
    ...     print("float32 True")
    float32 True
    >>> sentence(np.random.default_rng(0), 3, 3).count(" ")
    2
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

__all__ = [
    "ENGLISH_WORDS", "ENGLISH_VOICES", "OTHER_LANGUAGES", "VARIANTS",
    "espeak_binary", "synthesize", "sentence", "pseudo_sentence", "vocabulary", "write_corpus",
]

# A small closed vocabulary: every test word also occurs in training, so WER measures acoustics, not OOV words.
ENGLISH_WORDS = """
a about after again air all also always and animal answer any apple are around ask away back bad ball be
because bed before begin best big bird black blue boat body book both box boy bread bring brother brown
build but buy by call came can car carry cat change child city clean close cold colour come could country
cut dark day did different do does dog door down draw drink drive dry each early earth east eat egg end
enough even evening every eye face fall family far farm fast father feel few field find fire first fish five
floor fly follow food foot for form four friend from front full game garden girl give glass go gold good
great green grow hand happy hard has have he head hear heart help her here high hill his hold home horse
hot hour house how hundred idea if in inside is it just keep kind king know lake land large last late
laugh learn leave left letter life light like line list little live long look love low made make man many
map may me mean men milk mind minute money month moon more morning mother mountain move much music must
my name near need never new next nice night nine no north nothing now number of off often old on once one
only open or orange other our out over page paper part party people picture piece place plant play point
poor press pull push put queen question quick rain read ready red right river road rock room round run
sad said same say school sea second see seven she ship short show side simple sing sister sit six sleep
slow small snow so some song soon sound south speak spring stand star start stay step still stone stop
story street strong summer sun table take talk tall teacher ten than that the their them then there these
they thing think this three through time to today together too top town tree true try turn two under up
use very voice wait walk wall want warm was watch water way we week well went were west what when where
which white who why wind window winter with woman wood word work world write year yellow yes you young
""".split()

ENGLISH_VOICES = ("en-us", "en-gb", "en-029", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd")
# Latin-script languages, so pseudo-words are read as words, not spelled out
OTHER_LANGUAGES = ("de", "fr", "es", "it", "nl", "pl", "pt", "sv", "cs", "ro", "hu", "fi", "tr", "id", "sw", "da")
VARIANTS = ("", "+m1", "+m2", "+m3", "+m4", "+m5", "+m6", "+m7", "+f1", "+f2", "+f3", "+f4", "+f5")

_ONSETS = "b c d f g h j k l m n p r s t v w z br pl st tr kr sp gr ch sh".split()
_VOWELS = "a e i o u a e i o u ai ou ie ea".split()
_CODAS = ["", "", "", "n", "s", "r", "l", "t", "m", "k"]


def espeak_binary() -> Optional[str]:
    """Path of ``espeak-ng`` (or ``espeak``) on PATH, None when neither is installed."""
    return shutil.which("espeak-ng") or shutil.which("espeak")


def sentence(rng: np.random.Generator, min_words: int = 4, max_words: int = 10,
             words: Sequence[str] = ENGLISH_WORDS) -> str:
    """A random sequence of ``min_words``-``max_words`` words from ``words``."""
    n = int(rng.integers(min_words, max_words + 1))
    return " ".join(str(w) for w in rng.choice(list(words), size=n))


def pseudo_sentence(rng: np.random.Generator, min_words: int = 4, max_words: int = 10) -> str:
    """Random pseudo-words of 1-3 consonant-vowel(-consonant) syllables."""
    out = []
    for _ in range(int(rng.integers(min_words, max_words + 1))):
        syllables = int(rng.integers(1, 4))
        out.append("".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(syllables)))
    return " ".join(out)


def synthesize(text: str, voice: str = "en-us", speed: int = 160, pitch: int = 50, sample_rate: int = 16000,
               binary: Optional[str] = None) -> np.ndarray:
    """``text`` read by espeak-ng: float32 [T] at ``sample_rate``. Raises RuntimeError naming the voice on failure."""
    import soundfile as sf
    import soxr

    binary = binary or espeak_binary()
    if binary is None:
        raise RuntimeError("espeak-ng is not installed (Debian/Ubuntu: apt-get install espeak-ng)")
    with tempfile.TemporaryDirectory() as tmp:
        wav = os.path.join(tmp, "u.wav")
        proc = subprocess.run([binary, "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", wav, "--", text],
                              capture_output=True, text=True)
        if proc.returncode != 0 or not os.path.exists(wav):
            raise RuntimeError(f"espeak-ng failed for voice {voice!r}: {proc.stderr.strip()[:300]}")
        audio, sr = sf.read(wav, dtype="float32")
    if audio.ndim > 1:
        audio = audio.mean(axis=1)
    if sr != sample_rate:
        audio = soxr.resample(audio, sr, sample_rate).astype(np.float32)
    return audio


def _draw_voice(rng: np.random.Generator, languages: Sequence[str],
                variants: Sequence[str] = VARIANTS) -> Dict[str, object]:
    return {"voice": str(rng.choice(list(languages))) + str(rng.choice(list(variants))),
            "speed": int(rng.integers(130, 191)), "pitch": int(rng.integers(25, 76))}


def vocabulary(size: int) -> List[str]:
    """``size`` words spread over :data:`ENGLISH_WORDS` (all of them when ``size`` is larger).

    >>> len(vocabulary(100)), vocabulary(3)
    (100, ['a', 'hard', 'ready'])
    """
    if size >= len(ENGLISH_WORDS):
        return list(ENGLISH_WORDS)
    return [ENGLISH_WORDS[i * len(ENGLISH_WORDS) // size] for i in range(size)]


def write_corpus(out_dir, name: str, num_utterances: int, seed: int, languages: Sequence[str] = ENGLISH_VOICES,
                 pseudo_words: bool = False, sample_rate: int = 16000, min_words: int = 4,
                 max_words: int = 10, words: Sequence[str] = ENGLISH_WORDS,
                 variants: Sequence[str] = VARIANTS) -> Path:
    """Synthesise ``num_utterances`` utterances into ``out_dir/name/`` and write ``out_dir/name.json``.

    Manifest lines: ``audio_filepath`` (absolute), ``duration``, ``text``, ``utt_id``, ``voice``. English
    word sequences from ``words`` by default, pseudo-words with ``pseudo_words`` (their ``text`` is not a
    transcript to train ASR on). Voices: one of ``languages`` with one of the espeak-ng ``variants``. Audio and manifest are written atomically; a finished corpus (manifest present) is
    reused as it is. Returns the manifest path.
    """
    import soundfile as sf

    from nest_ext.parts.atomic_io import atomic_path, atomic_write

    out_dir = Path(out_dir).resolve()
    manifest = out_dir / f"{name}.json"
    if manifest.exists():
        return manifest
    binary = espeak_binary()
    if binary is None:
        raise RuntimeError("espeak-ng is not installed (Debian/Ubuntu: apt-get install espeak-ng)")
    rng = np.random.default_rng(seed)
    audio_dir = out_dir / name
    audio_dir.mkdir(parents=True, exist_ok=True)
    lines: List[str] = []
    for i in range(num_utterances):
        text = pseudo_sentence(rng, min_words, max_words) if pseudo_words else sentence(rng, min_words, max_words, words)
        voice = _draw_voice(rng, languages, variants)
        audio = synthesize(text, sample_rate=sample_rate, binary=binary, **voice)
        path = audio_dir / f"{name}_{i:05d}.wav"
        with atomic_path(path, suffix=".tmp.wav") as tmp:
            sf.write(tmp, audio, sample_rate, subtype="PCM_16")
        lines.append(json.dumps({"audio_filepath": str(path), "duration": round(len(audio) / sample_rate, 4),
                                 "text": text, "utt_id": f"{name}-{i:05d}", **voice}))
    atomic_write(manifest, "\n".join(lines) + "\n")
    return manifest
