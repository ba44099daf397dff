"""JSON-lines manifests read line by line, each entry with where it came from, a broken line as an error.

Example::

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "m.json")
    >>> _ = open(path, "w").write('{"a": 1}\\n\\n{oops\\n')
    >>> [(where.rsplit(":", 1)[1], entry, error is not None) for where, entry, error in json_lines(path)]
    [('1', {'a': 1}, False), ('3', None, True)]
"""
from __future__ import annotations

import json
from typing import Dict, Iterator, Optional, Tuple

__all__ = ["json_lines"]


def json_lines(path: str) -> Iterator[Tuple[str, Optional[Dict], Optional[str]]]:
    """``(where "path:line", entry, None)`` for each non-blank line of a UTF-8 JSON-lines file, or
    ``(where, None, reason)`` for a line that is not JSON."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                yield where, json.loads(line), None
            except json.JSONDecodeError as e:
                yield where, None, f"not valid JSON ({e})"
