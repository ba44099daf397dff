"""Separation manifests: NeMo audio-to-audio JSON lines (mixture + list of sources), parsed and checked.

See :mod:`nest_ext.data.separation_dataset` for the format. Entries that cannot be used are problems named by
``manifest:line`` (or reported to a :class:`~nest_ext.data.bad_audio.BadAudioReport`).

Example::

    >>> import json, os, tempfile
    >>> d = tempfile.mkdtemp()
    >>> _ = open(os.path.join(d, "m.json"), "w").write(json.dumps({"input_filepath": "mix.wav"}) + "\\n")
    >>> load_separation_manifest(os.path.join(d, "m.json"), check_files=False)[1][0].split(": ", 1)[1]
    "needs keys 'input_filepath' and 'target_filepath'"
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple, Union

from nest_ext.data.bad_audio import BadAudioReport
from nest_ext.data.json_lines import json_lines

__all__ = ["DEFAULT_INPUT_KEY", "DEFAULT_TARGET_KEY", "SeparationExample", "load_separation_manifest", "manifest_list"]

DEFAULT_INPUT_KEY = "input_filepath"
DEFAULT_TARGET_KEY = "target_filepath"


@dataclass
class SeparationExample:
    """One manifest line: mixture, its sources, where it came from."""

    input_filepath: str
    target_filepaths: List[str]
    duration: Optional[float]
    speaker_ids: Optional[List[str]]
    manifest: str
    line: int

    @property
    def where(self) -> str:
        return f"{self.manifest}:{self.line}"


def _resolve(path: str, manifest: str) -> str:
    if os.path.isabs(path):
        return path
    return os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(manifest)), path))


def manifest_list(manifest_filepath: Union[str, Sequence[str]]) -> List[str]:
    if isinstance(manifest_filepath, str):
        return [p.strip() for p in manifest_filepath.split(",") if p.strip()]
    return [str(p) for p in manifest_filepath]


def load_separation_manifest(
    manifest_filepath: Union[str, Sequence[str]],
    num_spks: Optional[int] = None,
    input_key: str = DEFAULT_INPUT_KEY,
    target_key: str = DEFAULT_TARGET_KEY,
    min_duration: Optional[float] = None,
    max_duration: Optional[float] = None,
    check_files: bool = True,
    on_bad_audio: str = "skip",
    report: Optional[BadAudioReport] = None,
) -> Tuple[List[SeparationExample], List[str]]:
    """Parse manifests into examples; returns ``(examples, problems)``.

    Entries that are malformed, have another number of targets than ``num_spks`` or name missing
    files become problems (``"manifest:line: reason"``) and are left out, or raise ``ValueError``
    when ``on_bad_audio == "error"``. With a ``report``, each problem also goes to it (by file and
    manifest line; it raises ``BadAudioError``, a ``ValueError``, under its own ``'error'`` policy).
    Entries outside ``[min_duration, max_duration]`` are dropped silently (that is filtering, not a problem).
    """
    examples: List[SeparationExample] = []
    problems: List[str] = []

    def problem(where: str, reason: str, files: Optional[str] = None):
        # files: the entry's bad audio files, when it names them; otherwise the manifest line is the problem
        if report is not None:
            report.add(files or manifest, reason, where, "manifest")
        elif on_bad_audio == "error":
            raise ValueError(f"{where}: {reason}" + (f" {files}" if files else ""))
        problems.append(f"{where}: {reason}" + (f" {files}" if files else ""))

    for manifest in manifest_list(manifest_filepath):
        if not os.path.isfile(manifest):
            raise FileNotFoundError(f"manifest {manifest} does not exist")
        for where, entry, error in json_lines(manifest):
            if error is not None:
                problem(where, error)
                continue
            if input_key not in entry or target_key not in entry:
                problem(where, f"needs keys '{input_key}' and '{target_key}'")
                continue
            targets = entry[target_key]
            targets = [targets] if isinstance(targets, str) else list(targets)
            if num_spks is not None and len(targets) != num_spks:
                problem(where, f"{len(targets)} target files, the config says num_spks={num_spks}")
                continue
            duration = entry.get("duration")
            if duration is not None:
                if min_duration is not None and duration < min_duration:
                    continue
                if max_duration is not None and duration > max_duration:
                    continue
            mix = _resolve(entry[input_key], manifest)
            targets = [_resolve(t, manifest) for t in targets]
            if check_files:
                missing = [p for p in [mix] + targets if not os.path.isfile(p)]
                if missing:
                    problem(where, "missing file(s)", ", ".join(missing))
                    continue
            speakers = entry.get("speaker_ids")
            if speakers is not None and len(speakers) != len(targets):
                problem(where, f"{len(speakers)} speaker_ids for {len(targets)} targets")
                continue
            examples.append(
                SeparationExample(mix, targets, duration, list(speakers) if speakers else None, manifest,
                                  int(where.rsplit(":", 1)[1]))
            )
    return examples, problems
