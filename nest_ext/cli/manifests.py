"""Read a NeMo JSON-lines manifest strictly, for command lines that need every line (a tokenizer's text, a
test set): the first malformed line stops the tool with an error naming file and line, before any slow work.

Example::

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "m.json")
    >>> _ = open(path, "w").write('{"audio_filepath": "a.wav", "text": "hi"}\\n\\n{"audio_filepath": "b.wav"}\\n')
    >>> read_entries(path, required=("audio_filepath",))[1]["audio_filepath"]
    'b.wav'
    >>> read_entries(path, required=("text",))
    Traceback (most recent call last):
    ...
    ValueError: ...m.json:3: entry has no 'text'
"""
import json
from typing import List, Sequence


def read_entries(manifest: str, required: Sequence[str] = ()) -> List[dict]:
    """The entries of ``manifest`` (blank lines skipped); ``ValueError`` naming ``file:line`` for a line that is
    not a JSON object or lacks a key of ``required``."""
    entries = []
    with open(manifest, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{manifest}:{lineno}: not JSON ({e})") from None
            if not isinstance(entry, dict):
                raise ValueError(f"{manifest}:{lineno}: not a JSON object")
            missing = [k for k in required if k not in entry]
            if missing:
                raise ValueError(f"{manifest}:{lineno}: entry has no {' or '.join(repr(k) for k in missing)}")
            entries.append(entry)
    return entries
