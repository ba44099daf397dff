"""What every nest_ext command line shares: the common flags, one logging setup, and user-facing errors.

The convention itself is described in :mod:`nest_ext.cli` (this package's ``__init__``); these are its pieces:

* :func:`make_parser` (module docstring as ``--help`` text), :func:`add_out_dir` (``--out-dir`` plus the old
  spellings as aliases), :func:`add_device` / :func:`resolve_device` (``--device``, default CUDA when available),
  :func:`add_progress` / :func:`progress_every` / :func:`progress` (``--progress-every``, ``--no-progress``);
* :func:`setup_logging`: info, warnings and progress lines go to stderr through :mod:`logging`;
* :func:`error`: a user-facing failure is ``error: <message>`` on stderr and a non-zero exit status.

Example::

    >>> p = make_parser("Do something.\\n\\nDetails.")
    >>> _ = add_out_dir(p, "--output-dir", help="where results go")
    >>> p.parse_args(["--output-dir", "x"]).out_dir
    'x'
    >>> resolve_device("cpu")
    'cpu'
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Optional

EXIT_OK = 0
EXIT_FAILED = 1  # the job ran but did not do all of its work (a bad file, --strict met a problem, ...)
EXIT_USAGE = 2  # bad arguments or unusable input: nothing was done (argparse uses 2 as well)

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
DEFAULT_PROGRESS_EVERY_S = 30.0


def make_parser(doc: str, usage: Optional[str] = None) -> argparse.ArgumentParser:
    """A parser whose ``--help`` shows ``doc`` (the tool's module docstring) as written."""
    return argparse.ArgumentParser(description=doc, usage=usage, formatter_class=argparse.RawDescriptionHelpFormatter)


def add_out_dir(parser, *aliases: str, required: bool = True, default: Optional[str] = None,
                help: str = "output folder") -> argparse.Action:
    """``--out-dir DIR`` (``args.out_dir``); ``aliases`` are older spellings that keep working (``--output-dir``)."""
    return parser.add_argument("--out-dir", *aliases, dest="out_dir", metavar="DIR", required=required,
                               default=default, help=help)


def add_device(parser) -> argparse.Action:
    """``--device`` (``args.device``; None until :func:`resolve_device`)."""
    return parser.add_argument("--device", default=None, metavar="DEVICE",
                               help="torch device: cpu, cuda, cuda:1, ... (default: cuda when available, else cpu)")


def resolve_device(name: Optional[str]) -> str:
    """``name``, or ``cuda`` / ``cpu`` by availability when None; :class:`CliError` for a device that is not there."""
    import torch

    if name is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise CliError(f"--device {name!r} is not a torch device ({e})", EXIT_USAGE) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CliError(f"--device {name}: CUDA is not available on this machine (use --device cpu)", EXIT_USAGE)
    return name


def add_progress(parser, unit: str = "items", *aliases: str) -> None:
    """``--progress-every SECONDS`` (``aliases``: older spellings) and ``--no-progress``; :func:`progress_every`
    reads them back."""
    parser.add_argument("--progress-every", *aliases, dest="progress_every", type=float,
                        default=DEFAULT_PROGRESS_EVERY_S, metavar="SECONDS",
                        help=f"when stderr is not a terminal (batch jobs, SLURM logs): log done/total {unit}, rate "
                             f"and ETA every SECONDS (default {DEFAULT_PROGRESS_EVERY_S:g}); on a terminal a "
                             "progress bar is shown instead")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar and no progress lines")


def progress_every(args) -> Optional[float]:
    """Seconds between progress lines that ``args`` (from :func:`add_progress`) ask for; None: no progress."""
    return None if args.no_progress else max(0.0, args.progress_every)


def progress(every_s: Optional[float], total: Optional[int], desc: str, unit: str = "it",
             logger: Optional[logging.Logger] = None):
    """A :class:`~nest_ext.parts.progress.Progress`: a bar on a terminal, else a log line every ``every_s``
    seconds and one at the end; silent when ``every_s`` is None."""
    from nest_ext.parts.progress import Progress

    return Progress(total, desc=desc, unit=unit, log_every_s=every_s or 0.0, enabled=every_s is not None,
                    logger=logger)


def require_files(*paths: str, code: int = EXIT_USAGE) -> None:
    """:class:`CliError` naming every path in ``paths`` that is not a file (checked before any slow work)."""
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise CliError(f"file(s) not found: {', '.join(missing)}", code)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record is emitted (pytest's capture, a redirected stream)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):  # StreamHandler.__init__ assigns it; the property decides
        pass


def setup_logging(level: int = logging.INFO) -> None:
    """The one logging setup of the command lines: ``nest_ext.*`` loggers at ``level`` and, unless the program
    already configured logging (a handler on the root logger), one stderr handler with :data:`LOG_FORMAT`.

    NeMo keeps its own logger and handler; this neither doubles nor silences it.
    """
    root = logging.getLogger()
    if not root.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        root.addHandler(handler)
        root.setLevel(level)
    logging.getLogger("nest_ext").setLevel(level)


class CliError(Exception):
    """A failure to tell the user in one line: ``main`` returns ``error(e.message, e.code)``."""

    def __init__(self, message: str, code: int = EXIT_FAILED):
        super().__init__(message)
        self.message, self.code = message, code


def error(message, code: int = EXIT_FAILED) -> int:
    """Print ``error: <message>`` on stderr and return ``code`` (the exit status ``main`` returns)."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    return code
