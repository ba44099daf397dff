"""Speech from ``espeak-ng`` (a formant synthesiser, Debian package ``espeak-ng``) for demos, tests and
benchmarks that need words, many voices and no download: the one place that runs the synthesiser.

* :func:`synthesize`: one text read by one voice (speed, pitch), float32 ``[T]`` at ``sample_rate`` (soxr).
* :func:`espeak_sentences`: Harvard sentences (IEEE 1969, public domain) in :data:`TRAIN_VOICES` or
  :data:`HELD_OUT_VOICES`, trimmed, peak-normalised to ``level``, with a dither floor ``floor_db`` below full
  scale so that no reference is digital silence (log-spectral metrics are undefined there) -- restoration.
* :func:`write_corpus`: an ASR corpus with real transcripts (random word sequences from :data:`ENGLISH_WORDS`),
  or unlabelled audio of :func:`pseudo_sentence` syllable strings that other languages' voices read with their
  own phonology -- NEST pretraining and CTC fine-tuning.

Everything depends only on the arguments (seeds) and the installed espeak-ng version.

Example::

    >>> import numpy as np
    >>> if espeak_available():
    ...     x = synthesize("hello world", voice="en-us", sample_rate=16000)
    ...     (y,) = espeak_sentences(1, 16000, seconds=1.5)
    ...     print(x.dtype, 0.3 < len(x) / 16000 < 3.0, y.shape, 0.49 < float(abs(y).max()) < 0.51)
    ... else:
    ...     print("float32 True (24000,) True")
    float32 True (24000,) True
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
    "ENGLISH_WORDS", "ENGLISH_VOICES", "OTHER_LANGUAGES", "VARIANTS", "HARVARD_SENTENCES", "TRAIN_VOICES",
    "HELD_OUT_VOICES", "espeak_binary", "espeak_available", "synthesize", "espeak_sentences", "sentence",
    "pseudo_sentence", "vocabulary", "write_corpus",
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


def espeak_binary() -> Optional[str]:
    """Path of ``espeak-ng`` (or ``espeak``) on PATH, None when neither is installed."""
    return shutil.which("espeak-ng") or shutil.which("espeak")


def espeak_available() -> bool:
    return espeak_binary() is not None


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
        audio = synthesize(text, voice, speed=int(rng.integers(140, 181)), sample_rate=sample_rate)
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
