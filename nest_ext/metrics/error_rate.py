"""Word and character error rates with their substitution / deletion / insertion counts, and the transcript
normalisation applied before scoring.

Counts come from Kaldi's Levenshtein alignment (``kaldialign``, what NeMo's ``word_error_rate_detail`` uses);
WER = (S + D + I) / N over a whole set, N = reference words (characters for CER). CER counts characters with
whitespace removed, as Mandarin (AISHELL) scoring does.

:func:`normalize_transcript` lower-cases and removes punctuation (an apostrophe inside a word stays: "don't"),
then collapses whitespace; either step can be switched off.

Example::

    >>> normalize_transcript("Hello, World!  It's  ME.")
    "hello world it's me"
    >>> c = error_counts(["the cat sat", "a dog"], ["the cat sat down", "the dog"])
    >>> (c.substitutions, c.deletions, c.insertions, c.ref_len), round(c.rate, 4)
    ((1, 1, 0, 6), 0.3333)
    >>> c.kaldi_line("WER")
    '%WER 33.33 [ 2 / 6, 0 ins, 1 del, 1 sub ]'
    >>> error_counts(["你好"], ["你 好 吗"], use_cer=True).deletions
    1
"""
import dataclasses
import re
import unicodedata
from typing import Iterable, List, Tuple

_SPACES = re.compile(r"\s+")


def normalize_transcript(text: str, lowercase: bool = True, punctuation: bool = True) -> str:
    """``text`` lower-cased (``lowercase``) and without punctuation (``punctuation``), whitespace collapsed."""
    if lowercase:
        text = text.lower()
    if punctuation:
        chars = list(text)
        for i, ch in enumerate(chars):
            if unicodedata.category(ch).startswith("P"):
                inside_word = (ch in "'’" and 0 < i < len(chars) - 1
                               and chars[i - 1].isalnum() and chars[i + 1].isalnum())
                if not inside_word:
                    chars[i] = " "
        text = "".join(chars)
    return _SPACES.sub(" ", text).strip()


def tokens(text: str, use_cer: bool = False) -> List[str]:
    """Words, or (``use_cer``) characters without whitespace."""
    return [c for c in text if not c.isspace()] if use_cer else text.split()


@dataclasses.dataclass
class ErrorCounts:
    """Edit operations summed over utterances; ``ref_len`` is N (reference words, or characters)."""

    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0
    ref_len: int = 0
    utterances: int = 0

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def rate(self) -> float:
        """(S + D + I) / N; ``inf`` when there are errors against an empty reference, 0 for none."""
        if self.ref_len == 0:
            return float("inf") if self.errors else 0.0
        return self.errors / self.ref_len

    def __add__(self, other: "ErrorCounts") -> "ErrorCounts":
        return ErrorCounts(*(a + b for a, b in zip(dataclasses.astuple(self), dataclasses.astuple(other))))

    def kaldi_line(self, name: str = "WER") -> str:
        """Kaldi ``compute-wer``'s summary line: ``%WER 4.11 [ 123 / 2990, 10 ins, 20 del, 93 sub ]``."""
        return (f"%{name} {100.0 * self.rate:.2f} [ {self.errors} / {self.ref_len}, {self.insertions} ins, "
                f"{self.deletions} del, {self.substitutions} sub ]")


def utterance_counts(hyp: str, ref: str, use_cer: bool = False) -> Tuple[ErrorCounts, List[Tuple[str, str]]]:
    """Counts for one utterance and its alignment (``(ref token, hyp token)`` pairs, ``*`` for a gap)."""
    from kaldialign import align, edit_distance

    r, h = tokens(ref, use_cer), tokens(hyp, use_cer)
    d = edit_distance(r, h)
    return ErrorCounts(d["sub"], d["del"], d["ins"], len(r), 1), align(r, h, "*")


def error_counts(hyps: Iterable[str], refs: Iterable[str], use_cer: bool = False) -> ErrorCounts:
    """Counts summed over a set of (hypothesis, reference) pairs."""
    hyps, refs = list(hyps), list(refs)
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses for {len(refs)} references")
    total = ErrorCounts()
    for h, r in zip(hyps, refs):
        total = total + utterance_counts(h, r, use_cer)[0]
    return total
