"""Progress of a long loop: a tqdm bar on a terminal, log lines otherwise (batch jobs, ``| tee``, CI logs).

A bar that redraws itself is useless in a log file, and silence for hours is worse; when stderr is not a
terminal, :class:`Progress` logs ``desc: done/total unit (percent), rate, ETA`` every ``log_every_s``
seconds and once at the end.

Example::

    >>> import logging
    >>> p = Progress(total=3, desc="decoding", unit="utt", log_every_s=0.0, logger=logging.getLogger("doctest"))
    >>> for _ in range(3):
    ...     p.update(1)
    >>> p.close()
    >>> p.done
    3
"""
import logging
import sys
import time
from typing import Optional


class Progress:
    """``update(n)`` after each piece of work, ``close()`` at the end (or use it as a context manager)."""

    def __init__(self, total: Optional[int], desc: str = "", unit: str = "it", log_every_s: float = 30.0,
                 enabled: bool = True, logger: Optional[logging.Logger] = None):
        self.total, self.desc, self.unit, self.log_every_s = total, desc, unit, log_every_s
        self.done = 0
        self.logger = logger or logging.getLogger("nest_ext")
        self.enabled = enabled
        self._bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True)
        self._start = self._last = time.monotonic()

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.enabled and time.monotonic() - self._last >= self.log_every_s:
            self._log()

    def _log(self) -> None:
        self._last = time.monotonic()
        elapsed = max(self._last - self._start, 1e-9)
        rate = self.done / elapsed
        line = f"{self.desc}: {self.done}"
        if self.total:
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            line += f"/{self.total} {self.unit} ({100.0 * self.done / self.total:.0f}%), ETA {eta:.0f} s"
        else:
            line += f" {self.unit}"
        self.logger.info(f"{line}, {rate:.2f} {self.unit}/s")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self.enabled:
            self._log()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
