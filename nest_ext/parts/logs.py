"""How nest_ext logs: one style for the whole package.

Every module takes a standard-library logger named after itself, ``logger = logging.getLogger(__name__)``, so
all records live under the ``nest_ext`` logger: an application configures them the usual Python way
(``logging.basicConfig``, levels per module), pytest's ``caplog`` sees them, and the command lines set them up
once (``nest_ext.cli.conventions.setup_logging``).

NeMo's own logger (``nemo_logger``) has its own handlers -- the console on rank 0 and, once ``exp_manager`` ran,
the run's ``nemo_log_globalrank-*.txt`` files -- and does not propagate. :func:`route_to_nemo_logger` adds one
handler to ``nest_ext`` that hands each record to those handlers, so in a NeMo training run (``train.py``) our
lines sit beside NeMo's, in the same format and the same files, once each.

Example::

    >>> import logging
    >>> route_to_nemo_logger()
    >>> route_to_nemo_logger()  # idempotent: one forwarding handler
    >>> sum(isinstance(h, NemoLoggerHandler) for h in logging.getLogger(PACKAGE_LOGGER).handlers)
    1
"""
from __future__ import annotations

import logging

__all__ = ["PACKAGE_LOGGER", "NEMO_LOGGER", "NemoLoggerHandler", "route_to_nemo_logger"]

PACKAGE_LOGGER = "nest_ext"
NEMO_LOGGER = "nemo_logger"  # the name NeMo's nemo.utils.logging uses for its stdlib logger


class NemoLoggerHandler(logging.Handler):
    """Hands a record to NeMo's logger's handlers (which filter by rank and level themselves)."""

    def emit(self, record: logging.LogRecord) -> None:
        nemo = logging.getLogger(NEMO_LOGGER)
        if nemo.isEnabledFor(record.levelno):
            nemo.handle(record)


def route_to_nemo_logger(level: int = logging.INFO) -> None:
    """Let ``nest_ext``'s records at ``level`` and above reach NeMo's log handlers as well (idempotent)."""
    package = logging.getLogger(PACKAGE_LOGGER)
    if not any(isinstance(h, NemoLoggerHandler) for h in package.handlers):
        package.addHandler(NemoLoggerHandler())
    if package.level == logging.NOTSET or package.level > level:
        package.setLevel(level)
