"""What a command line that processes audio files accepts as inputs: files, folders and manifests, mixed.

* an audio file: itself, its outputs named after its file name;
* a folder: every audio file under it (recursively, sorted), outputs named by the path relative to the
  folder, so ``in/a/x.wav`` becomes ``OUT/a/x_s1.wav`` and equal file names in sub-folders do not collide;
* a manifest (``.json`` / ``.jsonl``, NeMo JSON lines): the ``input_filepath`` (separation manifests) or else
  ``audio_filepath`` of each entry, relative paths taken from the manifest's folder; outputs named by the
  path relative to the manifest's folder (by the file name for files outside it).

A malformed manifest line stops the tool before any work, naming file and line; files listed in a manifest
that are missing or unreadable are left to the processing step, which names and skips them.

Example::

    >>> import os, tempfile
    >>> d = tempfile.mkdtemp()
    >>> os.makedirs(os.path.join(d, "in", "a"))
    >>> for rel in ("in/a/x.wav", "in/y.flac", "in/notes.txt"):
    ...     _ = open(os.path.join(d, rel), "w").write("")
    >>> _ = open(os.path.join(d, "m.json"), "w").write('{"input_filepath": "in/y.flac"}\\n')
    >>> [i.name for i in collect_inputs([os.path.join(d, "in"), os.path.join(d, "m.json")])]
    ['a/x', 'y', 'in/y']
"""
import os
from typing import List, Sequence

from nest_ext.cli.conventions import EXIT_USAGE, CliError
from nest_ext.cli.manifests import read_entries
from nest_ext.models.separation_files import SeparationInput

__all__ = ["AUDIO_EXTENSIONS", "MANIFEST_EXTENSIONS", "collect_inputs"]

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".opus", ".aiff", ".aif")  # what soundfile decodes
MANIFEST_EXTENSIONS = (".json", ".jsonl")


def _folder(root: str) -> List[SeparationInput]:
    found = []
    for dirpath, _, filenames in os.walk(root):
        found += [os.path.join(dirpath, f) for f in filenames if f.lower().endswith(AUDIO_EXTENSIONS)]
    return [SeparationInput.of(p, root) for p in sorted(found)]


def _manifest(path: str) -> List[SeparationInput]:
    base = os.path.dirname(os.path.abspath(path))
    inputs = []
    for entry in read_entries(path):
        audio = entry.get("input_filepath", entry.get("audio_filepath"))
        if not isinstance(audio, str):
            raise ValueError(f"{path}: an entry has no 'input_filepath' or 'audio_filepath' string: {entry}")
        audio = os.path.normpath(os.path.join(base, audio))  # an absolute path stays as it is
        inside = os.path.commonpath([base, os.path.abspath(audio)]) == base
        inputs.append(SeparationInput.of(audio, base if inside else None))
    return inputs


def collect_inputs(args: Sequence[str]) -> List[SeparationInput]:
    """The audio files named by ``args`` (files, folders, manifests), in order.

    Raises:
        CliError: an argument that does not exist, a folder without audio files, a malformed manifest.
    """
    missing = [a for a in args if not os.path.exists(a)]
    if missing:
        raise CliError(f"not found: {', '.join(missing)}")
    inputs: List[SeparationInput] = []
    for arg in args:
        if os.path.isdir(arg):
            found = _folder(arg)
            if not found:
                raise CliError(f"{arg}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) in this folder", EXIT_USAGE)
            inputs += found
        elif arg.lower().endswith(MANIFEST_EXTENSIONS):
            try:
                inputs += _manifest(arg)
            except ValueError as err:
                raise CliError(str(err), EXIT_USAGE) from None
        else:
            inputs.append(SeparationInput.of(arg))
    return inputs
