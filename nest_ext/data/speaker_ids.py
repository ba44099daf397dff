"""Speaker IDs of separation examples: read from file names, a user's regular expression, or made up per file.

Dynamic mixing (:mod:`nest_ext.data.dynamic_mixing`) draws sources of *distinct* speakers, so it needs to know
who speaks in each source file. Where that comes from:

* a manifest's ``speaker_ids`` (``prepare_separation_data`` writes them), or a source pool's speaker key;
* the mixture's file name: the wsj0-mix / WHAM! pattern (``011a010b_0.6_20ao010t_-0.6.wav``: speakers
  ``011`` and ``20a``) and the LibriMix pattern (``103-1240-0003_1235-135887-0017.wav``: ``103``, ``1235``)
  -- and for one utterance of a source pool, LibriSpeech's ``103-1240-0000`` and WSJ0's ``011a010b`` -- or a
  regular expression given by the user (:func:`speaker_ids_from_name`);
* nothing known: with ``dynamic_mixing_speakers: auto`` each source file counts as its own speaker (two
  files of one real speaker may then be mixed; a warning says how many files this concerns), with ``ids``
  such sources are not used (:func:`resolve_speakers`).

:class:`SpeakerIdTally` counts, for a report, how many mixtures got IDs and why the others did not.

Example::

    >>> speaker_ids_from_name("011a010b_0.6_20ao010t_-0.6.wav", 2)
    (['011', '20a'], None)
    >>> speaker_ids_from_name("spkA-1_spkB-7.wav", 2, regex=r"(\\w+)-\\d+_(\\w+)-\\d+")
    (['spkA', 'spkB'], None)
    >>> speaker_ids_from_name("take3.wav", 2)[1]
    'name follows neither the wsj0-mix nor the LibriMix pattern (give a speaker-ID regex)'
"""
from __future__ import annotations

import os
import re
from collections import Counter
from typing import Dict, List, Optional, Sequence, Tuple

__all__ = [
    "DYNAMIC_MIXING_SPEAKERS",
    "SpeakerIdTally",
    "compile_speaker_regex",
    "resolve_speakers",
    "speaker_ids_from_filename",
    "speaker_ids_from_name",
]

# How dynamic mixing treats a source without a speaker ID: "auto" = its own speaker (warned), "ids" = unused.
DYNAMIC_MIXING_SPEAKERS = ("auto", "ids")

_LIBRI_UTT = re.compile(r"^(\d+)-\d+-\d+$")
_WSJ_UTT = re.compile(r"^[0-9a-z]{8}$", re.IGNORECASE)
NO_PATTERN = "name follows neither the wsj0-mix nor the LibriMix pattern (give a speaker-ID regex)"


def speaker_ids_from_filename(name: str, num_spks: Optional[int] = None) -> Optional[List[str]]:
    """Speaker IDs encoded in a wsj0-mix / WHAM! or LibriMix mixture file name; ``None`` if not recognised.

    >>> speaker_ids_from_filename("011a010b_0.6_20ao010t_-0.6.wav")
    ['011', '20a']
    >>> speaker_ids_from_filename("/x/Libri2Mix/mix_clean/103-1240-0003_1235-135887-0017.wav")
    ['103', '1235']
    >>> speaker_ids_from_filename("recording.wav") is None
    True
    >>> speaker_ids_from_filename("103-1240-0000.flac"), speaker_ids_from_filename("011a010b.wav")
    (['103'], ['011'])
    """
    return speaker_ids_from_name(name, num_spks)[0]


def compile_speaker_regex(regex: Optional[str]) -> Optional[re.Pattern]:
    """``regex`` compiled, with a clear error when it is invalid or has no group."""
    if regex is None:
        return None
    try:
        pattern = re.compile(regex)
    except re.error as e:
        raise ValueError(f"speaker-ID regex {regex!r} is not a valid regular expression: {e}") from None
    if pattern.groups < 1:
        raise ValueError(f"speaker-ID regex {regex!r} needs a group (...) around the speaker ID")
    return pattern


def _from_regex(stem: str, pattern: re.Pattern, num_spks: Optional[int]) -> Tuple[Optional[List[str]], Optional[str]]:
    if pattern.groups > 1:
        # one group per speaker, in source order
        m = pattern.search(stem)
        if m is None:
            return None, f"regex {pattern.pattern!r} does not match"
        speakers = list(m.groups())
        if any(s is None or s == "" for s in speakers):
            return None, f"regex {pattern.pattern!r} left a speaker group empty"
    else:
        # one group, matched once per speaker
        speakers = [s for s in pattern.findall(stem) if s]
        if not speakers:
            return None, f"regex {pattern.pattern!r} does not match"
    if num_spks is not None and len(speakers) != num_spks:
        return None, f"regex {pattern.pattern!r} gives {len(speakers)} speaker(s), the mixture has {num_spks} source(s)"
    return speakers, None


def speaker_ids_from_name(
    name: str, num_spks: Optional[int] = None, regex=None
) -> Tuple[Optional[List[str]], Optional[str]]:
    """``(speaker IDs, None)`` read from a mixture's file name, or ``(None, reason)``.

    Without ``regex``, the wsj0-mix / WHAM! and LibriMix naming patterns are recognised. ``regex`` (a string or
    compiled pattern) is searched in the file name without folder and extension: with one group per speaker
    (``(\\w{3})\\w{5}_[-.\\d]+_(\\w{3})``) its groups are the IDs in source order; with a single group it is
    matched repeatedly (``findall``) and each match is one speaker. The number of IDs must equal ``num_spks``
    when given.
    """
    stem = os.path.splitext(os.path.basename(name))[0]
    if regex is not None:
        pattern = regex if isinstance(regex, re.Pattern) else compile_speaker_regex(regex)
        return _from_regex(stem, pattern, num_spks)
    parts = stem.split("_")
    speakers: Optional[List[str]] = None
    if parts and all(_LIBRI_UTT.match(p) for p in parts):
        speakers = [_LIBRI_UTT.match(p).group(1) for p in parts]
    elif len(parts) == 1 and _WSJ_UTT.match(stem):
        speakers = [stem[:3]]  # one wsj0 utterance (a source pool of WSJ0 itself)
    elif len(parts) >= 2 and len(parts) % 2 == 0:
        utts, gains = parts[0::2], parts[1::2]
        try:
            [float(g) for g in gains]
        except ValueError:
            utts = []
        if utts and all(_WSJ_UTT.match(u) for u in utts):
            speakers = [u[:3] for u in utts]  # wsj0 utterance IDs start with the 3-character speaker ID
    if speakers is None:
        return None, NO_PATTERN
    if num_spks is not None and len(speakers) != num_spks:
        return None, f"name holds {len(speakers)} speaker(s), the mixture has {num_spks} source(s)"
    return speakers, None


class SpeakerIdTally:
    """Counts mixtures with and without speaker IDs, and the reasons, each with a first example.

    >>> t = SpeakerIdTally()
    >>> t.add("a.wav", ["1", "2"], None); t.add("b.wav", None, "no pattern"); t.add("c.wav", None, "no pattern")
    >>> t.num_with, t.num_total, t.describe()
    (1, 3, 'speaker IDs for 1 of 3 mixtures; 2 without: no pattern (2, e.g. b.wav)')
    >>> SpeakerIdTally.from_dict(t.as_dict()).describe() == t.describe()
    True
    """

    def __init__(self):
        self.num_with = 0
        self.num_total = 0
        self.reasons: Counter = Counter()
        self.examples: Dict[str, str] = {}

    def add(self, name: str, speakers: Optional[Sequence[str]], reason: Optional[str]) -> None:
        self.num_total += 1
        if speakers is not None:
            self.num_with += 1
            return
        reason = reason or "unknown"
        self.reasons[reason] += 1
        self.examples.setdefault(reason, name)

    def merge(self, other: "SpeakerIdTally") -> None:
        self.num_with += other.num_with
        self.num_total += other.num_total
        self.reasons.update(other.reasons)
        for reason, name in other.examples.items():
            self.examples.setdefault(reason, name)

    def as_dict(self) -> Dict:
        return {"with_speaker_ids": self.num_with, "mixtures": self.num_total,
                "without": [{"reason": r, "count": n, "example": self.examples[r]} for r, n in self.reasons.most_common()]}

    @classmethod
    def from_dict(cls, d: Dict) -> "SpeakerIdTally":
        """The tally :meth:`as_dict` wrote (e.g. read back from a report file)."""
        tally = cls()
        tally.num_with, tally.num_total = d["with_speaker_ids"], d["mixtures"]
        for w in d["without"]:
            tally.reasons[w["reason"]], tally.examples[w["reason"]] = w["count"], w["example"]
        return tally

    def describe(self) -> str:
        text = f"speaker IDs for {self.num_with} of {self.num_total} mixtures"
        if self.reasons:
            text += f"; {self.num_total - self.num_with} without: " + "; ".join(
                f"{r} ({n}, e.g. {self.examples[r]})" for r, n in self.reasons.most_common())
        return text


def resolve_speakers(
    paths: Sequence[str], speakers: Optional[Sequence[Optional[str]]], mode: str
) -> Tuple[List[Tuple[str, str]], int]:
    """``(path, speaker)`` for each source file dynamic mixing may use, and how many had no speaker ID.

    ``speakers`` gives each path's ID or None (or is None: none known). ``mode`` ``'auto'``: a file without an
    ID is its own speaker (its path is the ID); ``'ids'``: it is left out.

    >>> resolve_speakers(["a.wav", "b.wav"], ["7", None], "auto")
    ([('a.wav', '7'), ('b.wav', 'file:b.wav')], 1)
    >>> resolve_speakers(["a.wav", "b.wav"], None, "ids")
    ([], 2)
    """
    if mode not in DYNAMIC_MIXING_SPEAKERS:
        raise ValueError(f"dynamic_mixing_speakers must be one of {DYNAMIC_MIXING_SPEAKERS}, got {mode!r}")
    speakers = list(speakers) if speakers is not None else [None] * len(paths)
    out, unknown = [], 0
    for path, spk in zip(paths, speakers):
        if spk is None or spk == "":
            unknown += 1
            if mode == "ids":
                continue
            spk = f"file:{path}"  # a prefix no real speaker ID has
        out.append((path, str(spk)))
    return out, unknown
