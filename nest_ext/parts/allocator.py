"""Keep freed CPU memory in the process (glibc), so large tensors stop costing page faults.

By default glibc's malloc serves blocks above its mmap threshold with fresh ``mmap`` pages and gives
freed memory back to the kernel when the top of the heap exceeds its trim threshold. A model that
allocates and frees the same 10-30 MB activations every layer then touches new pages each time: every
first touch of a 4 KiB page is a minor page fault (the kernel zeroes it). MossFormer2-S separating 2 s of
audio took 3,000-230,000 of them per call on our 2-core machine, depending on what the process had allocated
before; with the thresholds raised it took none, 2-5 % faster (``bench/allocator.py``, docs/benchmarks.md). This is the same cure as preloading jemalloc
or tcmalloc, as CPU inference guides recommend, without a library to install.

:func:`keep_freed_memory` raises both thresholds (``mallopt``) for the whole process: blocks up to 32 MiB
(glibc's largest mmap threshold) come from the heap and freed memory stays there for reuse. The cost is
memory the process keeps after a peak, which is why only our inference command-line tools call it, not the
library. On other C libraries (macOS, musl) it does nothing and returns ``False``.

Example (at the start of a command-line tool, before the model allocates):
    >>> from nest_ext.parts.allocator import keep_freed_memory
    >>> applied = keep_freed_memory()  # True on glibc
"""
import ctypes
import ctypes.util
import logging

logger = logging.getLogger(__name__)

__all__ = ["keep_freed_memory"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_MAX = 32 * 2 ** 20  # glibc's cap on 64-bit systems (HEAP_MAX_SIZE / 2)


def keep_freed_memory(mmap_threshold: int = MMAP_THRESHOLD_MAX, trim_threshold: int = 2 ** 31 - 1) -> bool:
    """Raise glibc's mmap and trim thresholds for this process; ``False`` where there is no glibc ``mallopt``."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        logger.debug("no glibc mallopt: the allocator is left as it is")
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 on success; setting the thresholds also turns off glibc's dynamic adjustment of them
    return bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(mallopt(_M_TRIM_THRESHOLD, trim_threshold))
