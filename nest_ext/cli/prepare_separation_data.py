"""Write NeMo audio-to-audio manifests for speech separation corpora (wsj0-2mix/3mix, LibriMix, WHAM!/WHAMR!).

(Long file: one job, layout detection + per-file checks + the writer, with its Python API and command line.)

Layouts (``--layout auto`` recognises them):

* ``wsj0mix``: ``ROOT/{tr,cv,tt}/{mix,s1,s2[,s3]}/NAME.wav`` (``ROOT`` may also be the folder above
  ``wav8k/min``; ``--sample-rate`` and ``--mode`` pick the version).
* ``librimix``: ``ROOT/wav{8k,16k}/{min,max}/{train-360,train-100,dev,test}/{mix_clean,mix_both,mix_single,s1,s2[,s3],noise}``
  (``ROOT`` = ``Libri2Mix``/``Libri3Mix``, or the ``wav8k/min`` folder itself).
* ``wham``: wsj0-mix splits with ``mix_clean``/``mix_both``/``mix_single`` and ``s1``/``s2``; WHAMR!
  names them ``*_anechoic``/``*_reverb``. ``--mixture mix_both --reverb`` takes ``mix_both_reverb``
  as input; targets are the anechoic sources unless ``--reverb-targets``.

For every mixture each source must exist under the same file name, be readable, mono, with the same
number of frames and sample rate as the mixture (and the rate the folder name says, ``wav8k`` = 8000).
Mixtures failing a check are reported by file and left out; sources without a mixture are reported
too. ``--strict`` fails (exit 1) on any problem and writes no manifest. Manifests
(``OUT_DIR/<split>.json``) and the problem report (``OUT_DIR/prepare_report.json``) are written atomically.
Reading the file headers logs progress (count, rate, ETA) every ``--progress-every`` seconds off a terminal.

Manifest lines (the format of ``nest_ext.data.separation_dataset``)::

    {"input_filepath": ".../tr/mix/011a010b_0.6_20ao010t_-0.6.wav",
     "target_filepath": [".../tr/s1/011a...wav", ".../tr/s2/011a...wav"],
     "duration": 5.87, "speaker_ids": ["011", "20a"]}

Python API (lhotse-style: a function per corpus family, one for all)::

    from nest_ext.cli.prepare_separation_data import prepare_separation_manifests
    report = prepare_separation_manifests("/data/wsj0-mix/2speakers/wav8k/min", "manifests/wsj0-2mix")
    report.splits["tr"].num_written, report.splits["tr"].problems[:3]

Command line::

    nest-prepare-separation-data /data/wsj0-mix/2speakers/wav8k/min --out-dir manifests/wsj0-2mix
    nest-prepare-separation-data /data/Libri2Mix --out-dir manifests/libri2mix --sample-rate 16000 --mode min
    nest-prepare-separation-data /data/whamr/wav8k/min --out-dir manifests/whamr --mixture mix_both --reverb
    python tools/prepare_separation_data.py ROOT --out-dir OUT_DIR ...   # the same command from a checkout
    python tools/prepare_separation_data.py ROOT OUT_DIR ...             # older spelling: output as 2nd argument

Exit status: 0 when the manifests were written, 1 on a problem with ``--strict`` or an unknown tree, 2 on bad
arguments.
"""
from __future__ import annotations

import json
import logging
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import soundfile as sf

from nest_ext.cli.conventions import (
    DEFAULT_PROGRESS_EVERY_S, EXIT_FAILED, add_out_dir, add_progress, error, make_parser, progress, progress_every,
    setup_logging,
)
from nest_ext.data.speaker_ids import SpeakerIdTally, compile_speaker_regex, speaker_ids_from_name
from nest_ext.parts.atomic_io import atomic_write

logger = logging.getLogger(__name__)

WSJ_SPLITS = ("tr", "cv", "tt")
LIBRI_SPLITS = ("train-360", "train-100", "dev", "test")
AUDIO_EXTENSIONS = (".wav", ".flac")
WHAM_MIXTURES = ("mix_clean", "mix_both", "mix_single")


class PreparationError(RuntimeError):
    """Raised when the tree is not a known layout, or with ``strict`` when any problem was found."""


@dataclass
class SplitReport:
    """What happened to one split: its manifest, how many mixtures went in, and every problem by file."""

    split: str
    mixture_dir: str
    source_dirs: List[str]
    manifest: Optional[str] = None
    num_mixtures: int = 0
    num_written: int = 0
    problems: List[Dict[str, str]] = field(default_factory=list)  # {"file": path, "problem": text}
    speaker_ids: Dict = field(default_factory=dict)  # SpeakerIdTally.as_dict(): how many got IDs, why not the rest


@dataclass
class PrepareReport:
    layout: str
    base_dir: str
    splits: Dict[str, SplitReport] = field(default_factory=dict)

    @property
    def num_problems(self) -> int:
        return sum(len(s.problems) for s in self.splits.values())

    def summary(self, max_lines: int = 10) -> str:
        lines = [f"layout {self.layout} at {self.base_dir}"]
        for s in self.splits.values():
            lines.append(
                f"  {s.split}: {s.num_written}/{s.num_mixtures} mixtures written to {s.manifest or '(nothing written)'}"
                f", {len(s.problems)} problem(s)"
            )
            if s.speaker_ids:
                lines.append(f"    {SpeakerIdTally.from_dict(s.speaker_ids).describe()}")
            for p in s.problems[:max_lines]:
                lines.append(f"    {p['file']}: {p['problem']}")
            if len(s.problems) > max_lines:
                lines.append(f"    ... {len(s.problems) - max_lines} more in prepare_report.json")
        return "\n".join(lines)


def _audio_files(directory: str) -> List[str]:
    return sorted(n for n in os.listdir(directory) if n.lower().endswith(AUDIO_EXTENSIONS))


def _rate_from_path(path: str) -> Optional[int]:
    m = re.search(r"(?:^|[/\\])wav(\d+)k(?:[/\\]|$)", path)
    return int(m.group(1)) * 1000 if m else None


def _version_dirs(root: str, sample_rate: Optional[int], mode: Optional[str]) -> List[str]:
    """``root`` itself plus any ``wav{8,16}k/{min,max}`` folder below it that matches the options."""
    found = []
    for rate_dir in sorted(os.listdir(root)) if os.path.isdir(root) else []:
        m = re.fullmatch(r"wav(\d+)k", rate_dir)
        if not m or (sample_rate is not None and int(m.group(1)) * 1000 != sample_rate):
            continue
        for mode_dir in sorted(os.listdir(os.path.join(root, rate_dir))):
            if mode_dir in ("min", "max") and (mode is None or mode_dir == mode):
                found.append(os.path.join(root, rate_dir, mode_dir))
    return found


def _detect(root: str, layout: str, sample_rate: Optional[int], mode: Optional[str]) -> Tuple[str, str, List[str]]:
    """Find ``(layout, base_dir, splits)``."""
    candidates = [root]
    if not any(os.path.isdir(os.path.join(root, s)) for s in WSJ_SPLITS + LIBRI_SPLITS):
        candidates = _version_dirs(root, sample_rate, mode or "min")
        if len(candidates) > 1:
            raise PreparationError(
                f"{root} holds several versions ({', '.join(os.path.relpath(c, root) for c in candidates)}); "
                "choose with --sample-rate / --mode"
            )
    for base in candidates:
        splits = [s for s in WSJ_SPLITS + LIBRI_SPLITS if os.path.isdir(os.path.join(base, s))]
        if not splits:
            continue
        contents = set(os.listdir(os.path.join(base, splits[0])))
        if splits[0] in LIBRI_SPLITS:
            found = "librimix"
        elif "mix" in contents:
            found = "wsj0mix"
        elif any(c.startswith(WHAM_MIXTURES) for c in contents):
            found = "wham"
        else:
            continue
        if layout not in ("auto", found):
            raise PreparationError(f"{base} looks like a {found} tree, not {layout}")
        return (found if layout == "auto" else layout), base, splits
    raise PreparationError(
        f"{root}: no separation corpus found. Expected {{tr,cv,tt}}/{{mix,s1,s2}} (wsj0-mix), "
        f"{{tr,cv,tt}}/{{mix_clean,mix_both,s1,s2}} (WHAM!/WHAMR!) or "
        f"wav8k/min/{{train-360,dev,test}}/{{mix_clean,s1,s2}} (LibriMix)"
    )


def _pick_dir(split_dir: str, names: Sequence[str]) -> Optional[str]:
    for n in names:
        if os.path.isdir(os.path.join(split_dir, n)):
            return n
    return None


def _split_dirs(
    split_dir: str, layout: str, mixture: str, reverb: bool, reverb_targets: bool, num_spks: Optional[int]
) -> Tuple[str, List[str]]:
    """Mixture and source folder names of one split (raises if absent)."""
    if layout == "wsj0mix":
        mix_names = ["mix"]
    elif reverb:
        mix_names = [f"{mixture}_reverb"]
    else:
        mix_names = [mixture, f"{mixture}_anechoic"]
    mix_dir = _pick_dir(split_dir, mix_names)
    if mix_dir is None:
        raise PreparationError(f"{split_dir}: no mixture folder {' or '.join(mix_names)}")
    if num_spks is None:
        if mixture == "mix_single" and layout != "wsj0mix":
            num_spks = 1
        else:
            num_spks = 0
            while _pick_dir(split_dir, [f"s{num_spks + 1}", f"s{num_spks + 1}_anechoic", f"s{num_spks + 1}_reverb"]):
                num_spks += 1
    sources = []
    for k in range(1, num_spks + 1):
        names = [f"s{k}_reverb"] if reverb_targets else [f"s{k}", f"s{k}_anechoic"]
        d = _pick_dir(split_dir, names)
        if d is None:
            raise PreparationError(f"{split_dir}: no source folder {' or '.join(names)}")
        sources.append(d)
    if not sources:
        raise PreparationError(f"{split_dir}: no source folders s1, s2, ...")
    return mix_dir, sources


def _check_mixture(
    name: str, split_dir: str, mix_dir: str, source_dirs: List[str], expected_rate: Optional[int], regex=None
) -> Tuple[Optional[dict], List[Dict[str, str]], Optional[str]]:
    """Entry for one mixture, or the problems that keep it out; and why it has no speaker IDs (None if it has)."""
    mix_path = os.path.join(split_dir, mix_dir, name)
    paths = [mix_path] + [os.path.join(split_dir, d, name) for d in source_dirs]
    problems, infos = [], []
    for p in paths:
        if not os.path.isfile(p):
            problems.append({"file": p, "problem": f"missing (needed by mixture {mix_path})"})
            continue
        try:
            info = sf.info(p)
        except Exception as e:
            problems.append({"file": p, "problem": f"unreadable ({type(e).__name__}: {e})"})
            continue
        infos.append((p, info))
        if info.channels != 1:
            problems.append({"file": p, "problem": f"{info.channels} channels, expected mono"})
        if expected_rate is not None and info.samplerate != expected_rate:
            problems.append({"file": p, "problem": f"sample rate {info.samplerate} Hz, expected {expected_rate} Hz"})
    if infos and not problems:
        ref_path, ref = infos[0]
        for p, info in infos[1:]:
            if info.samplerate != ref.samplerate:
                problems.append(
                    {"file": p, "problem": f"sample rate {info.samplerate} Hz, mixture {ref_path} has {ref.samplerate} Hz"}
                )
            if info.frames != ref.frames:
                problems.append({"file": p, "problem": f"{info.frames} frames, mixture {ref_path} has {ref.frames}"})
        if ref.frames == 0:
            problems.append({"file": ref_path, "problem": "empty mixture"})
    if problems:
        return None, problems, None
    entry = {
        "input_filepath": paths[0],
        "target_filepath": paths[1:],
        "duration": round(infos[0][1].frames / infos[0][1].samplerate, 6),
    }
    speakers, reason = speaker_ids_from_name(name, len(source_dirs), regex)
    if speakers is not None:
        entry["speaker_ids"] = speakers
    return entry, [], reason


def prepare_separation_manifests(
    root: str,
    output_dir: str,
    layout: str = "auto",
    splits: Optional[Sequence[str]] = None,
    num_spks: Optional[int] = None,
    mixture: str = "mix_clean",
    reverb: bool = False,
    reverb_targets: bool = False,
    sample_rate: Optional[int] = None,
    mode: Optional[str] = None,
    strict: bool = False,
    relative_paths: bool = False,
    num_workers: int = 8,
    speaker_id_regex: Optional[str] = None,
    progress_every_s: Optional[float] = DEFAULT_PROGRESS_EVERY_S,
) -> PrepareReport:
    """Check a corpus tree and write ``output_dir/<split>.json`` manifests plus ``prepare_report.json``.

    Args:
        root: the corpus folder (see the module docstring for the layouts).
        output_dir: where manifests go (created).
        layout: ``auto``, ``wsj0mix``, ``librimix`` or ``wham``.
        splits: which splits (default: all present).
        num_spks: sources per mixture (default: the number of ``sN`` folders; 1 for ``mix_single``).
        mixture: LibriMix/WHAM! mixture kind: ``mix_clean``, ``mix_both`` or ``mix_single``.
        reverb: WHAMR!: use the ``*_reverb`` mixtures. reverb_targets: reverberant targets too.
        sample_rate, mode: which ``wav{8k,16k}/{min,max}`` version when ``root`` holds several
            (also the rate every file must have; default: the rate the path names, if any).
        strict: raise :class:`PreparationError` on any problem, writing no manifest.
        relative_paths: write paths relative to ``output_dir`` instead of absolute ones.
        num_workers: threads reading file headers.
        speaker_id_regex: read speaker IDs from mixture names with this regex (one group per speaker, or one
            group matched once per speaker; see ``nest_ext.data.speaker_ids``) instead of the wsj0-mix/LibriMix
            patterns. How many mixtures got IDs, and why the others did not, is in the report.
        progress_every_s: seconds between progress lines when stderr is not a terminal (None: no progress).

    Returns:
        a :class:`PrepareReport` (per split: manifest path, counts, problems by file).
    """
    if mixture not in WHAM_MIXTURES:
        raise ValueError(f"mixture must be one of {WHAM_MIXTURES}, got {mixture!r}")
    root = os.path.abspath(root)
    regex = compile_speaker_regex(speaker_id_regex)
    found_layout, base, present = _detect(root, layout, sample_rate, mode)
    expected_rate = sample_rate or _rate_from_path(base)
    report = PrepareReport(layout=found_layout, base_dir=base)
    if splits:
        unknown = [s for s in splits if s not in present]
        if unknown:
            raise PreparationError(f"split(s) {unknown} not in {base} (present: {present})")
        present = list(splits)

    entries: Dict[str, List[dict]] = {}
    for split in present:
        split_dir = os.path.join(base, split)
        mix_dir, source_dirs = _split_dirs(split_dir, found_layout, mixture, reverb, reverb_targets, num_spks)
        sr = SplitReport(split=split, mixture_dir=os.path.join(split_dir, mix_dir), source_dirs=[os.path.join(split_dir, d) for d in source_dirs])
        names = _audio_files(os.path.join(split_dir, mix_dir))
        sr.num_mixtures = len(names)
        results = []
        with ThreadPoolExecutor(max_workers=max(1, num_workers)) as pool, \
                progress(progress_every_s, len(names), f"checking {split}", "mixtures", logger) as bar:
            for result in pool.map(lambda n: _check_mixture(n, split_dir, mix_dir, source_dirs, expected_rate, regex),
                                   names):
                results.append(result)
                bar.update(1)
        split_entries, tally = [], SpeakerIdTally()
        for name, (entry, problems, reason) in zip(names, results):
            if entry is not None:
                split_entries.append(entry)
                tally.add(name, entry.get("speaker_ids"), reason)
            sr.problems.extend(problems)
        sr.speaker_ids = tally.as_dict()
        mix_names = set(names)
        for d in source_dirs:
            for n in _audio_files(os.path.join(split_dir, d)):
                if n not in mix_names:
                    sr.problems.append({"file": os.path.join(split_dir, d, n), "problem": "source without a mixture"})
        if not names:
            sr.problems.append({"file": sr.mixture_dir, "problem": "no mixtures"})
        entries[split] = split_entries
        sr.num_written = len(split_entries)
        report.splits[split] = sr

    if strict and report.num_problems:
        raise PreparationError(f"{report.num_problems} problem(s) (strict: no manifest written)\n{report.summary()}")

    os.makedirs(output_dir, exist_ok=True)
    for split, split_entries in entries.items():
        path = os.path.join(output_dir, f"{split}.json")
        lines = []
        for e in split_entries:
            if relative_paths:
                e = dict(e)
                e["input_filepath"] = os.path.relpath(e["input_filepath"], output_dir)
                e["target_filepath"] = [os.path.relpath(t, output_dir) for t in e["target_filepath"]]
            lines.append(json.dumps(e))
        atomic_write(path, "".join(l + "\n" for l in lines))
        report.splits[split].manifest = path
    atomic_write(os.path.join(output_dir, "prepare_report.json"), json.dumps(asdict(report), indent=1) + "\n")
    return report


def prepare_wsj0mix(root: str, output_dir: str, **kwargs) -> PrepareReport:
    """wsj0-2mix / wsj0-3mix: see :func:`prepare_separation_manifests`."""
    return prepare_separation_manifests(root, output_dir, layout="wsj0mix", **kwargs)


def prepare_librimix(root: str, output_dir: str, **kwargs) -> PrepareReport:
    """Libri2Mix / Libri3Mix: see :func:`prepare_separation_manifests`."""
    return prepare_separation_manifests(root, output_dir, layout="librimix", **kwargs)


def prepare_wham(root: str, output_dir: str, **kwargs) -> PrepareReport:
    """WHAM! / WHAMR!: see :func:`prepare_separation_manifests`."""
    return prepare_separation_manifests(root, output_dir, layout="wham", **kwargs)


def build_parser():
    parser = make_parser(__doc__.split("\n\n")[0])
    parser.add_argument("root", metavar="ROOT", help="corpus folder")
    parser.add_argument("output_dir", nargs="?", default=None, metavar="OUT_DIR",
                        help="older spelling of --out-dir (the output folder as second argument)")
    add_out_dir(parser, required=False, help="where <split>.json manifests and prepare_report.json go")
    parser.add_argument("--layout", default="auto", choices=["auto", "wsj0mix", "librimix", "wham"],
                        help="corpus layout (default auto: recognised from the tree)")
    parser.add_argument("--splits", nargs="+", default=None, metavar="SPLIT",
                        help="only these splits (default: every split found, e.g. tr cv tt)")
    parser.add_argument("--num-spks", type=int, default=None, metavar="N",
                        help="sources per mixture (default: the s1, s2, ... folders present)")
    parser.add_argument("--mixture", default="mix_clean", choices=list(WHAM_MIXTURES),
                        help="WHAM!/LibriMix: which mixtures are the input (default mix_clean)")
    parser.add_argument("--reverb", action="store_true", help="WHAMR!: reverberant mixtures")
    parser.add_argument("--reverb-targets", action="store_true", help="WHAMR!: reverberant targets")
    parser.add_argument("--sample-rate", type=int, default=None, metavar="HZ",
                        help="pick the wav8k/wav16k version and require this rate (default: the rate the path names)")
    parser.add_argument("--mode", default=None, choices=["min", "max"], help="pick the min or max version")
    parser.add_argument("--strict", action="store_true", help="fail on any problem, write nothing")
    parser.add_argument("--relative-paths", action="store_true",
                        help="write audio paths relative to the output folder (default: absolute)")
    parser.add_argument("--num-workers", type=int, default=8, metavar="N",
                        help="threads reading file headers (default 8)")
    parser.add_argument("--speaker-id-regex", default=None, metavar="REGEX",
                        help="regex for speaker IDs in mixture file names: one group per speaker, or one group "
                             "matched once per speaker (default: the wsj0-mix and LibriMix patterns)")
    add_progress(parser, unit="mixtures")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.output_dir is not None and args.out_dir is not None and args.output_dir != args.out_dir:
        parser.error(f"two output folders: --out-dir {args.out_dir} and OUT_DIR {args.output_dir}; give one")
    out_dir = args.out_dir or args.output_dir
    if out_dir is None:
        parser.error("the following arguments are required: --out-dir")
    setup_logging()
    try:
        report = prepare_separation_manifests(
            args.root,
            out_dir,
            layout=args.layout,
            splits=args.splits,
            num_spks=args.num_spks,
            mixture=args.mixture,
            reverb=args.reverb,
            reverb_targets=args.reverb_targets,
            sample_rate=args.sample_rate,
            mode=args.mode,
            strict=args.strict,
            relative_paths=args.relative_paths,
            num_workers=args.num_workers,
            speaker_id_regex=args.speaker_id_regex,
            progress_every_s=progress_every(args),
        )
    except (PreparationError, ValueError) as e:  # ValueError: an unusable --speaker-id-regex
        return error(e, EXIT_FAILED)
    print(report.summary())
    return 0


if __name__ == "__main__":  # python -m nest_ext.cli.prepare_separation_data
    raise SystemExit(main())
