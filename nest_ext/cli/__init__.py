"""nest_ext.cli: the command-line layer. This layer may import every other layer; nothing in the package imports it.

The convention every command line here follows (its pieces are in :mod:`nest_ext.cli.conventions`):

* **One module per command**, ``nest_ext/cli/<name>.py``: its docstring is the ``--help`` text (usage examples,
  exit status); ``build_parser()`` returns the ``argparse`` parser; ``main(argv=None) -> int`` parses, runs and
  returns the exit status. All logic lives in the module (or a helper module beside it, e.g. ``nemo_comparison``,
  ``synth``), so tests import it (``from nest_ext.cli import separate``) and call ``main([...])``.
* **Three ways to run it**, all the same ``main``: the console script ``nest-<name>`` (underscores become hyphens;
  listed in ``setup.py``'s ``console_scripts``), ``python -m nest_ext.cli.<name>``, and the thin wrapper
  ``python tools/<name>.py`` (``from nest_ext.cli.<name> import main``; ``raise SystemExit(main())``). No
  ``sys.path`` edits: ``make install`` installs the package (editable).
* **Shared flags, one spelling**: ``--out-dir DIR`` for the output folder (older spellings such as ``--out`` or
  ``--output-dir`` stay as aliases: ``add_out_dir(parser, "--out")``), ``--device`` where a model runs (default
  ``cuda`` when available, else ``cpu``: ``add_device`` / ``resolve_device``), ``--progress-every SECONDS`` and
  ``--no-progress`` on long jobs (``add_progress`` / ``progress_every`` / ``progress``). Every argument has help
  text and a metavar naming its kind (``FILE``, ``DIR``, ``N``, ``HZ``). Argument errors name the flag
  (``--wav-scp``, never the ``dest`` ``wav_scp``): checks argparse cannot express call ``parser.error(...)``
  with the flags' names.
* **Output streams**: results the user asked for (a summary table, "wrote X") are printed on stdout; info,
  warnings and progress go through :mod:`logging` (``logger = logging.getLogger(__name__)``), set up once by
  ``setup_logging()`` at the start of ``main`` (``nest_ext.*`` loggers at INFO, one stderr handler unless the
  program configured logging itself; NeMo's own logger is left as it is). Long jobs report progress with
  :class:`nest_ext.parts.progress.Progress`: a tqdm bar on a terminal, otherwise (SLURM and other batch logs)
  a line with count, rate and ETA every ``--progress-every`` seconds and one at the end.
* **Errors**: a failure the user can act on is one ``error: <message>`` on stderr (``error(message, code)``, or
  raise ``CliError`` inside and turn it into ``error`` in ``main``) and a non-zero exit status: 1 when the job ran
  but did not do all of its work (a bad input file, ``--strict`` met a problem), 2 for bad arguments or
  unusable input (argparse's own errors exit 2 too). No traceback for expected failures.

``train.py`` stays at the repository root (Hydra finds ``config/`` beside it); its logic is
:mod:`nest_ext.cli.train`.
"""
