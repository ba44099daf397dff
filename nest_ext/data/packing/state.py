"""The crash-safe publish protocol of packing: which shards are complete, told by markers.

Every file is written under a hidden temporary name in its final folder (``nest_ext.parts.atomic_io``) and
renamed into place. Per shard the order is: drop the old marker, publish the shard's files, publish the
marker ``.pack_state/shard_{i:06d}.json`` last. A shard counts as complete only when its marker exists,
names the same plan (``plan.plan_hash``) and the sizes of the published files match -- so a kill at any
moment leaves at worst a temporary file (removed by the next run) or a shard without marker (redone). The
merged index files (manifest, ``data.list``...) are written, also atomically, only once every shard is
complete, by whichever process completes the last one.

Example::

    >>> import os, tempfile
    >>> d = tempfile.mkdtemp()
    >>> with open(os.path.join(d, "audio_0.tar"), "wb") as f:
    ...     _ = f.write(b"12345")
    >>> write_marker(d, 0, "PLAN", {"audio_0.tar": 5}, written=1, duration=0.5, bad=[])
    >>> read_complete_marker(d, 0, "PLAN")["written"], read_complete_marker(d, 0, "OTHER")
    (1, None)
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Dict, List, Optional, Sequence

from nest_ext.data.packing.inputs import BadItem
from nest_ext.parts.atomic_io import atomic_write

STATE_DIR = ".pack_state"
SUMMARY = "pack_summary.json"


def marker_path(out_dir: str, shard_id: int) -> str:
    return os.path.join(out_dir, STATE_DIR, f"shard_{shard_id:06d}.json")


def drop_marker(out_dir: str, shard_id: int) -> None:
    """From here on shard ``shard_id`` is incomplete until its new marker appears."""
    path = marker_path(out_dir, shard_id)
    if os.path.exists(path):
        os.remove(path)


def write_marker(out_dir: str, shard_id: int, plan: str, files: Dict[str, int], written: int, duration: float,
                 bad: Sequence[BadItem]) -> None:
    """Vouch for shard ``shard_id``: its plan, its published files ({path relative to ``out_dir``: size}),
    how many items and seconds it holds and which entries were left out while loading."""
    atomic_write(marker_path(out_dir, shard_id), json.dumps(
        {"plan": plan, "files": files, "written": written, "duration": duration,
         "bad": [dataclasses.asdict(b) for b in bad]}, indent=1, sort_keys=True).encode())


def read_complete_marker(out_dir: str, shard_id: int, plan: str) -> Optional[Dict]:
    """The marker of shard ``shard_id`` if it vouches for this plan and its files are all there, else None."""
    try:
        with open(marker_path(out_dir, shard_id), encoding="utf-8") as f:
            marker = json.load(f)
    except (OSError, ValueError):
        return None
    if marker.get("plan") != plan:
        return None
    for rel, size in marker.get("files", {}).items():
        p = os.path.join(out_dir, rel)
        if not os.path.isfile(p) or os.path.getsize(p) != size:
            return None
    return marker


def stale_markers(out_dir: str, num_shards: int) -> List[str]:
    """Markers of shards an earlier run with more shards left (ids ``>= num_shards``)."""
    return sorted(f for f in os.listdir(os.path.join(out_dir, STATE_DIR))
                  if re.fullmatch(r"shard_\d+\.json", f) and int(f[6:-5]) >= num_shards)
