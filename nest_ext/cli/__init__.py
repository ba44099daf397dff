"""nest_ext.cli: the command-line layer. Each tool is a module with ``build_parser()`` and ``main(argv=None) -> int``,
installed as a ``nest-<tool>`` console script; ``tools/<tool>.py`` is a thin wrapper around the same ``main``.

This layer may import every other layer; nothing in the package imports it.
"""
