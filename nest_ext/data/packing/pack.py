"""``pack_shards``: read the input, plan the shards, load audio in worker processes, hand items to the format's
:class:`~nest_ext.data.packing.writers.ShardWriter` in input order, publish markers, and write the merged index
files once every shard is complete. Nothing here depends on the output format.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import logging
import os
import time
from typing import Dict, List, Optional, Type

from nest_ext.data.packing.audio import load_item
from nest_ext.data.packing.inputs import DURATION_REASON, BadItem, PackingError, duration_problem, normalize_text, read_inputs
from nest_ext.data.packing.plan import assign_member_names, plan_hash, plan_shards, shuffle_utterances
from nest_ext.data.packing.separation import load_separation_item, read_separation_manifest
from nest_ext.data.packing.pool import completed_map, ordered_map
from nest_ext.data.packing.state import (
    STATE_DIR, SUMMARY, drop_marker, marker_path, read_complete_marker, stale_markers, write_marker,
)
from nest_ext.data.packing.writers import FORMATS, ShardWriter, get_writer
from nest_ext.parts.atomic_io import atomic_write, remove_temps
from nest_ext.parts.progress import Progress

logger = logging.getLogger("nest_ext.pack_shards")

# Items per shard. NeMo's tarred loader and lhotse's Shar (export_to_shar's default: 1000 cuts) work with
# hundreds to a few thousand examples a shard: shards are the unit that is shuffled and split over DDP ranks and
# DataLoader workers, so a corpus needs many more shards than world_size x num_workers (100k utterances: 100
# shards), while each shard stays a few hundred MB (1000 x 15 s of 16 kHz PCM_16 = 480 MB).
DEFAULT_SHARD_SIZE = 1000
TASKS = ("asr", "separation")
_WORKER_DIED = ("a packing worker process died{how}; completed shards are kept -- rerun with --skip-existing, "
                "with --num-workers 1 to see which file")


@dataclasses.dataclass
class PackSummary:
    """What a run did. ``bad`` lists every left-out entry (planning problems and unreadable audio)."""

    out_dir: str
    format: str
    num_input: int = 0
    num_planned: int = 0
    num_shards: int = 0
    num_written: int = 0
    duration_s: float = 0.0
    shards_done: List[int] = dataclasses.field(default_factory=list)
    shards_skipped: List[int] = dataclasses.field(default_factory=list)
    complete: bool = False
    bad: List[BadItem] = dataclasses.field(default_factory=list)
    elapsed_s: float = 0.0
    bytes_written: int = 0

    @property
    def num_bad(self) -> int:
        return len(self.bad)

    def describe(self) -> str:
        reasons: Dict[str, int] = {}
        for b in self.bad:
            key = b.reason.split(":")[0]
            reasons[key] = reasons.get(key, 0) + 1
        rate = self.num_written / self.elapsed_s if self.elapsed_s > 0 else float("nan")
        lines = [
            f"packed {self.num_written} utterances ({self.duration_s / 3600:.3f} h) into {self.out_dir} "
            f"[{self.format}]; shards written {len(self.shards_done)}, kept {len(self.shards_skipped)}, "
            f"total {self.num_shards}; {self.elapsed_s:.1f} s, {rate:.1f} utt/s",
            f"left out: {self.num_bad}" + (f" ({', '.join(f'{k}: {v}' for k, v in sorted(reasons.items()))})" if reasons else ""),
            "complete: manifests written" if self.complete else "not complete: shards of other processes still missing",
        ]
        return "\n".join(lines)


def _log_bad(b: BadItem) -> None:
    # Length filtering is asked for, not a fault: logged quietly (the summary counts it).
    level = logging.DEBUG if b.reason.startswith(DURATION_REASON) else logging.WARNING
    logger.log(level, "left out %s (%s) at %s: %s", b.utt_id, b.path, b.origin, b.reason)


def _strict_error(b: BadItem) -> PackingError:
    return PackingError(f"--strict: {b.origin}: utterance {b.utt_id!r} ({b.path}): {b.reason}")


def pack_shards(
    out_dir: str,
    wav_scp: Optional[str] = None,
    text: Optional[str] = None,
    manifest: Optional[str] = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
    num_workers: int = 1,
    shard_idx: int = 0,
    shard_count: int = 1,
    skip_existing: bool = False,
    text_norm: bool = False,
    sample_rate: Optional[int] = None,
    format: str = "nemo",
    strict: bool = False,
    allow_pipes: bool = False,
    pipe_timeout: Optional[float] = 300.0,
    shar_audio_format: str = "flac",
    progress: bool = True,
    task: str = "asr",
    shuffle: bool = True,
    seed: int = 0,
    min_duration: Optional[float] = None,
    max_duration: Optional[float] = None,
    segments: Optional[str] = None,
    utt2spk: Optional[str] = None,
    progress_every_s: float = 30.0,
) -> PackSummary:
    """Pack ``wav_scp`` (+ optional Kaldi ``text``, ``segments``, ``utt2spk``) or a NeMo ``manifest`` into shards
    in ``out_dir``; with ``task="separation"``, a separation ``manifest`` (mixture + sources (+ noise) of each
    example together, see ``packing/separation.py``).

    Examples are shuffled with ``seed`` before they are split into shards of ``shard_size`` (``shuffle=False``
    keeps input order). Entries outside ``[min_duration, max_duration]`` seconds are left out: at planning when
    the manifest gives a duration, else once decoded. This process writes shards ``i`` with
    ``i % shard_count == shard_idx``; ``num_workers`` processes
    decode/resample in parallel while this one writes in input order. With ``skip_existing``, shards
    whose marker matches this plan are kept. Bad audio is logged by utterance id and path and left
    out; with ``strict`` the first problem raises :class:`PackingError` instead. Returns a
    :class:`PackSummary`; ``summary.complete`` is True once all shards exist and the format's index
    files (nemo: merged manifest and ``data.list``; lhotse-shar: ``shar_index.json``; wenet: ``key_map.tsv``
    and ``data.list``) have been written.
    ``progress``: a bar on a terminal, otherwise a log line with count, rate and ETA every ``progress_every_s``.
    """
    t0 = time.perf_counter()
    writer_cls = get_writer(format)
    if task not in TASKS:
        raise PackingError(f"task must be one of {TASKS} (got {task!r})")
    if (wav_scp is None) == (manifest is None):
        raise PackingError("give exactly one input: wav_scp (Kaldi) or manifest (NeMo JSON lines)")
    if task == "separation" and manifest is None:
        raise PackingError("task 'separation' reads a separation manifest (prepare_separation_data's TR.json)")
    for name, value in (("text", text), ("segments", segments), ("utt2spk", utt2spk)):
        if value is not None and wav_scp is None:
            raise PackingError(f"{name} goes with wav_scp; a manifest carries its own keys")
    if min_duration is not None and max_duration is not None and min_duration > max_duration:
        raise PackingError(f"min_duration {min_duration} is above max_duration {max_duration}")
    if not (shard_count >= 1 and 0 <= shard_idx < shard_count):
        raise PackingError(f"need 0 <= shard_idx < shard_count (got {shard_idx}, {shard_count})")
    if sample_rate is not None and sample_rate <= 0:
        raise PackingError(f"sample_rate must be positive (got {sample_rate})")
    for p in (wav_scp, text, manifest, segments, utt2spk):
        if p is not None and not os.path.isfile(p):
            raise PackingError(f"input file not found: {p}")

    if task == "separation":
        utts, bad = read_separation_manifest(manifest)
    else:
        utts, bad = read_inputs(wav_scp=wav_scp, text=text, manifest=manifest, allow_pipes=allow_pipes,
                                segments=segments, utt2spk=utt2spk, sample_rate=sample_rate)
    num_input = len(utts) + len(bad)
    if text_norm:
        for u in utts:
            u.text = normalize_text(u.text)
    kept = []
    for u in utts:  # lengths the input states are filtered before planning, so shards stay full
        problem = duration_problem(u.duration, min_duration, max_duration)
        if problem:
            bad.append(BadItem(u.utt_id, u.source, u.origin, problem))
        else:
            kept.append(u)
    utts = kept
    for b in bad:
        _log_bad(b)
    if strict and any(not b.reason.startswith(DURATION_REASON) for b in bad):
        raise _strict_error(next(b for b in bad if not b.reason.startswith(DURATION_REASON)))
    if not utts:
        raise PackingError(f"no usable entry in {wav_scp or manifest}")
    assign_member_names(utts)  # in input order: names do not depend on the shuffle
    if shuffle:
        utts = shuffle_utterances(utts, seed)
    shards = plan_shards(utts, shard_size)
    # Every format-specific option is in every plan (None where the format ignores it), as it always was.
    format_options = {"shar_audio_format": shar_audio_format}
    writer_kwargs = {k: v for k, v in format_options.items() if k in writer_cls.options}
    options = {"sample_rate": sample_rate, "text_norm": text_norm,
               **{k: writer_kwargs.get(k) for k in format_options}}
    # Options that change which items a shard holds, only when set (older plans keep their hashes).
    options.update({k: v for k, v in (("min_duration", min_duration), ("max_duration", max_duration)) if v is not None})
    load_fn = load_separation_item if task == "separation" else load_item
    limits = (min_duration, max_duration)
    plans = [plan_hash(format, i, s, options) for i, s in enumerate(shards)]

    out_dir = os.path.abspath(out_dir)
    os.makedirs(os.path.join(out_dir, STATE_DIR), exist_ok=True)
    for d in sorted({os.path.dirname(p) for p in writer_cls.outputs(out_dir, 0)}):
        os.makedirs(d, exist_ok=True)
    summary = PackSummary(out_dir=out_dir, format=format, num_input=num_input, num_planned=len(utts),
                          num_shards=len(shards), bad=list(bad))
    mine = [i for i in range(len(shards)) if i % shard_count == shard_idx]
    todo = []
    for i in mine:
        for p in writer_cls.outputs(out_dir, i) + [marker_path(out_dir, i)]:
            remove_temps(p)  # leftovers of a killed run; only this process's shards
        if skip_existing and read_complete_marker(out_dir, i, plans[i]) is not None:
            summary.shards_skipped.append(i)
        else:
            todo.append(i)
    # Index files of every format: a folder packed before in another format must not look complete.
    index_names = sorted({n for cls in FORMATS.values() for n in cls.index_files} | {SUMMARY})
    for name in index_names:
        remove_temps(os.path.join(out_dir, name), only_orphans=True)
    if not skip_existing:
        # Outputs of an earlier run must not be read as this run's until it completes.
        for name in index_names:
            p = os.path.join(out_dir, name)
            if os.path.exists(p):
                os.remove(p)

    total = sum(len(shards[i]) for i in todo)
    bar = Progress(total, desc="packing", unit="utt", log_every_s=progress_every_s, enabled=progress, logger=logger)

    def on_item(nbytes):
        bar.update(1)
        summary.bytes_written += nbytes

    try:
        if writer_cls.parallel_shards and num_workers > 1 and len(todo) > 1:
            # The writer does the heavy work, so here a worker writes whole shards.
            jobs = ((out_dir, writer_cls, writer_kwargs, i, shards[i], plans[i], (sample_rate, pipe_timeout, *limits),
                     strict, load_fn) for i in todo)
            try:
                for i, n, marker in completed_map(_shard_job, jobs, num_workers):
                    bar.update(n)
                    summary.shards_done.append(i)
                    summary.bytes_written += sum(marker["files"].values())
            except concurrent.futures.process.BrokenProcessPool as e:
                raise PackingError(_WORKER_DIED.format(how="")) from e
            summary.shards_done.sort()
        else:
            # Workers decode in input order; this process writes, so any worker count gives the same bytes.
            work = ((u, sample_rate, pipe_timeout, *limits) for i in todo for u in shards[i])
            results = ordered_map(load_fn, work, num_workers)
            try:
                for i in todo:
                    _write_shard(out_dir, writer_cls, writer_kwargs, i, len(shards[i]), results, plans[i], strict,
                                 on_item)
                    summary.shards_done.append(i)
            except concurrent.futures.process.BrokenProcessPool as e:
                raise PackingError(_WORKER_DIED.format(how=" (killed, or crashed inside an audio decoder)")) from e
            finally:
                results.close()
    finally:
        bar.close()

    _finalize(out_dir, writer_cls, plans, summary)
    summary.elapsed_s = time.perf_counter() - t0
    logger.info("%s", summary.describe())
    return summary


def _write_shard(out_dir: str, writer_cls: Type[ShardWriter], writer_kwargs: Dict, i: int, count: int, results,
                 plan: str, strict: bool, on_item=None) -> None:
    """Write shard ``i`` from the next ``count`` of ``results`` (items or BadItems, in order), publish it,
    then its marker."""
    drop_marker(out_dir, i)
    writer = writer_cls(out_dir, i, **writer_kwargs)
    shard_bad, written, dur = [], 0, 0.0
    try:
        for _ in range(count):
            res = next(results)
            if isinstance(res, BadItem):
                if on_item is not None:
                    on_item(0)
                _log_bad(res)
                if strict and not res.reason.startswith(DURATION_REASON):
                    raise _strict_error(res)
                shard_bad.append(res)
                continue
            writer.add(res)
            written += 1
            dur += res.seconds
            if on_item is not None:
                on_item(res.nbytes)
        files = writer.commit()
    except BaseException:
        writer.abort()
        raise
    write_marker(out_dir, i, plan, files, written, dur, shard_bad)


def _shard_job(args):
    out_dir, writer_cls, writer_kwargs, i, utts, plan, load_args, strict, load_fn = args
    results = (load_fn((u, *load_args)) for u in utts)
    _write_shard(out_dir, writer_cls, writer_kwargs, i, len(utts), results, plan, strict)
    with open(marker_path(out_dir, i), encoding="utf-8") as f:
        return i, len(utts), json.load(f)


def _finalize(out_dir: str, writer_cls: Type[ShardWriter], plans: List[str], summary: PackSummary) -> None:
    """Count this job's results; if every shard is complete, write the merged outputs atomically."""
    markers = [read_complete_marker(out_dir, i, plan) for i, plan in enumerate(plans)]
    for i in sorted(set(summary.shards_done) | set(summary.shards_skipped)):
        m = markers[i]
        if m is None:
            continue
        summary.num_written += m["written"]
        summary.duration_s += m["duration"]
        summary.bad.extend(BadItem(**b) for b in m["bad"])
    if any(m is None for m in markers):
        return
    stale = stale_markers(out_dir, len(plans))
    if stale:
        logger.warning("%s holds shards of an earlier run with more shards (%s...); they are not in the new "
                       "manifests -- remove them or use a fresh --out-dir", out_dir, stale[0])
    index = writer_cls.finalize(out_dir, markers)
    all_bad = [b for m in markers for b in m["bad"]]
    report = {"num_shards": len(plans), "written": sum(m["written"] for m in markers),
              "duration_s": sum(m["duration"] for m in markers), "left_out_at_load": all_bad}
    index = [(name, index[name]) for name in writer_cls.index_files]
    # The summary goes just before the format's last index file, whose presence says the job is complete.
    index.insert(max(len(index) - 1, 0), (SUMMARY, json.dumps(report, indent=1, ensure_ascii=False).encode()))
    for name, data in index:
        atomic_write(os.path.join(out_dir, name), data)
    summary.complete = True
